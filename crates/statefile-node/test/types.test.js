// index.d.ts against the runtime: test/types/usage.ts calls every exported signature
// as a TypeScript user would; it must compile with `tsc --strict` against the
// package's own declarations (including its @ts-expect-error lines, so a type that
// became too loose fails too) and then run, checking each returned object has exactly
// the keys and field types its declaration names.
'use strict'
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { spawnSync } = require('node:child_process')
const { PKG, scratch, test } = require('./helpers')

test('index.d.ts: every signature compiles under --strict and matches what the runtime returns', async (t) => {
  const dir = scratch(t, 'types')
  fs.mkdirSync(path.join(dir, 'node_modules'))
  fs.symlinkSync(PKG, path.join(dir, 'node_modules', 'statefile'))
  fs.copyFileSync(path.join(__dirname, 'types', 'usage.ts'), path.join(dir, 'usage.ts'))
  const tsc = path.join(PKG, 'node_modules', 'typescript', 'bin', 'tsc')
  const build = spawnSync(process.execPath, [tsc, '--strict', '--noUnusedLocals', '--noImplicitReturns', '--esModuleInterop',
    '--target', 'ES2022', '--module', 'commonjs', '--types', 'node', '--typeRoots', path.join(PKG, 'node_modules', '@types'),
    '--outDir', path.join(dir, 'out'), path.join(dir, 'usage.ts')], { cwd: dir, encoding: 'utf8' })
  assert.equal(build.status, 0, build.stdout + build.stderr)
  fs.symlinkSync(path.join(dir, 'node_modules'), path.join(dir, 'out', 'node_modules'))
  const work = path.join(dir, 'work')
  fs.mkdirSync(work)
  await require(path.join(dir, 'out', 'usage.js')).main(work)
})
