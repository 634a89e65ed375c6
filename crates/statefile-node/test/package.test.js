// The package as a user gets it: `npm pack` makes a tarball of exactly the built files,
// which installs without a network into a fresh project and works from CommonJS, ESM
// and TypeScript; so does the README's `npm install /path/to/crates/statefile-node`.
'use strict'
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { spawnSync } = require('node:child_process')
const { PKG, scratch, test } = require('./helpers')

const npm = (args, cwd) => {
  const r = spawnSync('npm', args, { cwd, encoding: 'utf8' })
  assert.equal(r.status, 0, `npm ${args.join(' ')}: ${r.stdout}${r.stderr}`)
  return r.stdout
}

/** A fresh project in `dir` with statefile installed from `spec`, used from CommonJS
 * and ESM, and with `types`, from TypeScript. */
function useIn (dir, spec, types) {
  fs.mkdirSync(dir)
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }))
  npm(['install', '--offline', '--no-audit', '--no-fund', '--loglevel=error', spec], dir)
  const run = (file, code) => {
    fs.writeFileSync(path.join(dir, file), code)
    const r = spawnSync(process.execPath, [file], { cwd: dir, encoding: 'utf8' })
    assert.equal(r.status, 0, `${file}: ${r.stderr}`)
    return r.stdout.trim()
  }
  assert.equal(run('cjs.js', `
    const { Doc, writeFileAtomicSync } = require('statefile')
    const doc = new Doc('servers.json')
    doc.writeSync({ servers: ['a'] })
    doc.updateSync((d) => { d.servers.push('b') })
    writeFileAtomicSync('note.txt', 'hi')
    console.log(JSON.stringify(doc.readSync()))`), '{"servers":["a","b"]}')
  assert.equal(run('esm.mjs', `
    import { Doc, Store, StatefileError } from 'statefile'
    try { await new Doc('missing.json').read() } catch (e) { console.log(e instanceof StatefileError, e.code, typeof Store) }`), 'true NOT_FOUND function')
  if (!types) return
  fs.writeFileSync(path.join(dir, 'app.ts'), `
    import { Doc, type Receipt } from 'statefile'
    const doc = new Doc<{ n: number }>('counter.json')
    export const r: Promise<Receipt> = doc.write({ n: 1 })
  `)
  const tsc = path.join(PKG, 'node_modules', 'typescript', 'bin', 'tsc')
  const r = spawnSync(process.execPath, [tsc, '--strict', '--noEmit', '--skipLibCheck', '--module', 'commonjs', '--target', 'ES2022', '--types', 'node',
    '--typeRoots', path.join(PKG, 'node_modules', '@types'), 'app.ts'], { cwd: dir, encoding: 'utf8' })
  assert.equal(r.status, 0, `the types ship with it: ${r.stdout}${r.stderr}`)
}

test('npm pack: a tarball of the built files that installs offline and works from CommonJS, ESM and TypeScript', (t) => {
  const dir = scratch(t, 'pack')
  const out = JSON.parse(npm(['pack', '--json', '--pack-destination', dir], PKG))
  const files = out[0].files.map((f) => f.path).sort()
  const addon = files.filter((f) => /^statefile\..*\.node$/.test(f))
  assert.equal(addon.length, 1, files.join(' '))
  assert.deepEqual(files, ['README.md', 'index.d.ts', 'index.js', 'native.d.ts', 'native.js', 'package.json', addon[0]].sort())
  const manifest = JSON.parse(fs.readFileSync(path.join(PKG, 'package.json'), 'utf8'))
  assert.equal(manifest.main, 'index.js')
  assert.equal(manifest.types, 'index.d.ts')
  assert.ok(manifest.engines.node.startsWith('>='))
  assert.equal(manifest.dependencies, undefined, 'nothing to fetch when installing')
  useIn(path.join(dir, 'from-tarball'), path.join(dir, out[0].filename), true)
})

test('the README\'s install step: npm install /path/to/crates/statefile-node', (t) => {
  useIn(path.join(scratch(t, 'folder'), 'app'), PKG, false)
})

test('npm pack refuses an unbuilt package instead of making a tarball without the addon', (t) => {
  const dir = scratch(t, 'unbuilt')
  for (const f of ['package.json', 'README.md']) fs.copyFileSync(path.join(PKG, f), path.join(dir, f))
  const r = spawnSync('npm', ['pack', '--dry-run'], { cwd: dir, encoding: 'utf8' })
  assert.notEqual(r.status, 0)
  assert.match(r.stderr, /npm run build/)
})
