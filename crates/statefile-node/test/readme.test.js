// The README's Node example is real: it type-checks under `tsc --strict` against the
// package's generated types, and does what it says.
'use strict'
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { spawnSync } = require('node:child_process')
const { PKG, scratch, temps, test } = require('./helpers')

test('the README example compiles with tsc --strict and runs', async (t) => {
  const readme = fs.readFileSync(path.join(PKG, '..', '..', 'README.md'), 'utf8')
  const section = readme.slice(readme.indexOf('## From Node.js'))
  const example = section.match(/```ts\n([\s\S]*?)```/)[1]
  const dir = scratch(t, 'readme')
  fs.mkdirSync(path.join(dir, 'node_modules'))
  fs.symlinkSync(PKG, path.join(dir, 'node_modules', 'statefile'))
  fs.writeFileSync(path.join(dir, 'app.ts'), example)
  fs.writeFileSync(path.join(dir, 'main.ts'), `
    import { addServer } from './app'
    import { Doc, StatefileError } from 'statefile'
    async function main (): Promise<void> {
      const v1 = await addServer({ id: 'a', host: '10.0.0.1', port: 22 })
      await addServer({ id: 'b', host: '10.0.0.2', port: 22 })
      let duplicate = ''
      try { await addServer({ id: 'a', host: 'x', port: 1 }) } catch (e) { duplicate = (e as Error).message }
      const doc = new Doc('backend/servers.json')
      let conflict = ''
      try { await doc.writeIf(v1, { servers: [] }) } catch (e) { if (e instanceof StatefileError) conflict = e.code }
      console.log(JSON.stringify({ servers: await doc.read(), duplicate, conflict }))
    }
    main().catch((e) => { console.error(e); process.exit(1) })
  `)
  const tsc = path.join(PKG, 'node_modules', 'typescript', 'bin', 'tsc')
  const build = spawnSync(process.execPath, [tsc, '--strict', '--target', 'ES2022', '--module', 'commonjs', '--types', 'node', '--typeRoots', path.join(PKG, 'node_modules', '@types'), '--outDir', path.join(dir, 'out'), path.join(dir, 'main.ts')], { cwd: dir, encoding: 'utf8' })
  assert.equal(build.status, 0, build.stdout + build.stderr)
  fs.symlinkSync(path.join(dir, 'node_modules'), path.join(dir, 'out', 'node_modules'))
  const run = spawnSync(process.execPath, [path.join(dir, 'out', 'main.js')], { cwd: dir, encoding: 'utf8' })
  assert.equal(run.status, 0, run.stderr)
  const out = JSON.parse(run.stdout)
  assert.deepEqual(out.servers.servers.map((s) => s.id), ['a', 'b'])
  assert.equal(out.duplicate, 'duplicate a')
  assert.equal(out.conflict, 'CONFLICT')
  assert.deepEqual(temps(path.join(dir, 'backend')), [])
})
