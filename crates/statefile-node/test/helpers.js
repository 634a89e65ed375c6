// Shared helpers for the Node tests: scratch directories, child processes, mounts.
'use strict'
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawn, spawnSync } = require('node:child_process')
const nodeTest = require('node:test')

const PKG = path.resolve(__dirname, '..')

/** A fresh directory, removed when the test ends. */
function scratch (t, name = 'sf') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `statefile-node-${name}-`))
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** statefile's temp files (`.name.sf-<random>.tmp`) in `dir`. */
function temps (dir) {
  return fs.readdirSync(dir).filter((n) => /^\..*\.sf-[a-z2-7]{16}\.tmp$/.test(n))
}

/** Run `code` in a child node process that has `statefile` as `sf`; resolves on exit. */
function child (code, args = [], opts = {}) {
  const src = `const sf = require(${JSON.stringify(PKG)});\n${code}`
  const p = spawn(process.execPath, ['-e', src, '--', ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...opts })
  let out = ''
  let err = ''
  p.stdout.on('data', (d) => { out += d })
  p.stderr.on('data', (d) => { err += d })
  p.done = new Promise((resolve) => p.on('close', (code, signal) => resolve({ code, signal, out, err })))
  return p
}

/** Resolves when the child's stdout has printed `line`. */
function waitFor (p, line) {
  return new Promise((resolve, reject) => {
    let buf = ''
    const on = (d) => {
      buf += d
      if (buf.split('\n').includes(line)) {
        p.stdout.off('data', on)
        resolve()
      }
    }
    p.stdout.on('data', on)
    p.done.then((r) => reject(new Error(`child ended (${r.code ?? r.signal}) before printing ${line}: ${r.err}`)))
  })
}

const isRoot = () => process.getuid && process.getuid() === 0

/** Mount a tmpfs of `size` on a new directory; returns it, or a reason it cannot. */
function tmpfs (t, size) {
  if (!isRoot()) return { skip: 'needs root to mount a tmpfs' }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'statefile-node-tmpfs-'))
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0755`, 'tmpfs', dir], { encoding: 'utf8' })
  if (r.status !== 0) {
    fs.rmdirSync(dir)
    return { skip: `mount -t tmpfs failed: ${(r.stderr || r.error || '').toString().trim()}` }
  }
  t.after(() => {
    spawnSync('umount', ['-l', dir])
    fs.rmSync(dir, { recursive: true, force: true })
  })
  return { dir }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** How long one test may run unless it says otherwise (the slowest take ~30 s here). */
const TEST_TIMEOUT_MS = 120_000
/** How long a test file may keep running once all its tests ended. */
const LINGER_MS = 10_000
let lingerGuard = false

/**
 * `node:test`'s `test`, with a timeout for every test: a hang fails that test by name
 * after TEST_TIMEOUT_MS instead of stalling the run. A test that timed out can leave
 * handles (a child process, a native thread, a timer) that keep its file's process
 * alive: once every test of the file has ended, the file's process exits after
 * LINGER_MS if something still holds it (the run's exit status is already a failure:
 * the test was cancelled). package.json's --test-timeout bounds a file as a whole, for
 * a hang no timer can end (the event loop blocked in a ...Sync call).
 */
function test (name, options, fn) {
  if (typeof options === 'function') {
    fn = options
    options = {}
  }
  if (!lingerGuard) {
    lingerGuard = true
    nodeTest.after(() => {
      setTimeout(() => {
        console.error(`${path.basename(require.main?.filename ?? process.argv[1] ?? 'a test file')}: still running ${LINGER_MS} ms after its last test ended (a test that timed out left something behind); exiting`)
        process.exit(1)
      }, LINGER_MS).unref()
    })
  }
  return nodeTest(name, { timeout: TEST_TIMEOUT_MS, ...options }, fn)
}

module.exports = { PKG, scratch, temps, child, waitFor, isRoot, tmpfs, sleep, test }
