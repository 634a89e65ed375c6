// The Node rows of statefile-bench: statefile's npm package against write-file-atomic,
// steno and proper-lockfile, each run in its own process. Lives beside node_modules
// (installed by the bench) so ESM-only steno resolves; statefile is loaded from the
// path in STATEFILE_NODE.
//   node node-bench.js replace FILE N SIZE ALT   -> {"lat": {...}, "correct": bool}
//   node node-bench.js rmw FILE N ALT            -> {"total": s, "lost": n}
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const sf = require(process.env.STATEFILE_NODE)
const wfa = require('write-file-atomic')
const lockfile = require('proper-lockfile')

const [mode, file, nArg, a, b] = process.argv.slice(2)
const n = Number(nArg)

function doc (size, seq) {
  const k = Math.max(1, Math.floor(size / 64))
  const items = []
  for (let i = 0; i < k; i++) items.push({ id: i, name: 'item-' + String(i).padStart(6, '0'), ok: i % 3 === 0 })
  return { seq, updated: `2026-11-24T00:00:${String(seq % 60).padStart(2, '0')}Z`, items }
}

const pretty = (v) => JSON.stringify(v, null, 2) + '\n'

/** Put the directory of `file` in journal mode (one flush per durable write). */
function journal () {
  new sf.Store(path.dirname(file)).enableJournalSync()
}

// One durable replace of the value `v`, as each alternative's user writes it:
// serializing included.
async function replacer (alt) {
  switch (alt) {
    case 'statefile Doc.write (journal)': {
      journal()
      const d = new sf.Doc(file, { backups: 0 })
      return (v) => d.write(v)
    }
    case 'statefile Doc.writeSync (journal)': {
      journal()
      const d = new sf.Doc(file, { backups: 0 })
      return (v) => d.writeSync(v)
    }
    case 'statefile Doc.write': {
      const d = new sf.Doc(file, { backups: 0 })
      return (v) => d.write(v)
    }
    case 'statefile Doc.writeSync': {
      const d = new sf.Doc(file, { backups: 0 })
      return (v) => d.writeSync(v)
    }
    case 'statefile writeFileAtomic': return (v) => sf.writeFileAtomic(file, pretty(v))
    case 'statefile writeFileAtomicSync': return (v) => sf.writeFileAtomicSync(file, pretty(v))
    case 'write-file-atomic (async)': return (v) => wfa(file, pretty(v))
    case 'write-file-atomic (sync)': return (v) => wfa.sync(file, pretty(v))
    case 'steno': {
      const { Writer } = await import('steno')
      const w = new Writer(file)
      return (v) => w.write(pretty(v))
    }
    default: throw new Error(`unknown alternative ${alt}`)
  }
}

async function replace () {
  const size = Number(a)
  const write = await replacer(b)
  const lat = []
  let total = 0
  // n untimed writes first: the timed ones meet a steady state (see statefile-bench).
  for (let i = 0; i < 2 * n; i++) {
    const v = doc(size, i)
    const t = process.hrtime.bigint()
    await write(v)
    const us = Number(process.hrtime.bigint() - t) / 1000
    if (i < n) continue
    lat.push(us)
    total += us
  }
  lat.sort((x, y) => x - y)
  let correct = false
  try { correct = JSON.parse(fs.readFileSync(file, 'utf8')).seq === 2 * n - 1 } catch { correct = false }
  return { lat: { ops: n, total: total / 1e6, p50_us: lat[Math.floor(n * 0.5)], p99_us: lat[Math.min(n - 1, Math.floor(n * 0.99))] }, correct }
}

// `n` read-modify-writes in flight at once, each appending its own item.
async function rmw () {
  const alt = a
  fs.writeFileSync(file, JSON.stringify({ items: [] }))
  const one = {
    'statefile Doc.update': () => {
      const d = new sf.Doc(file, { backups: 0, lockTimeoutMs: 120000 })
      return (id) => d.update((v) => { v.items.push(id) })
    },
    'statefile Doc.update (journal)': () => {
      journal()
      const d = new sf.Doc(file, { backups: 0, lockTimeoutMs: 120000 })
      return (id) => d.update((v) => { v.items.push(id) })
    },
    'write-file-atomic + proper-lockfile': () => async (id) => {
      const release = await lockfile.lock(file, { retries: { retries: 100000, factor: 1, minTimeout: 1, maxTimeout: 10 } })
      try {
        const v = JSON.parse(await fs.promises.readFile(file, 'utf8'))
        v.items.push(id)
        await wfa(file, JSON.stringify(v))
      } finally {
        await release()
      }
    },
    'write-file-atomic (no lock)': () => async (id) => {
      const v = JSON.parse(await fs.promises.readFile(file, 'utf8'))
      v.items.push(id)
      await wfa(file, JSON.stringify(v))
    }
  }[alt]()
  const t = process.hrtime.bigint()
  await Promise.all(Array.from({ length: n }, (_, i) => one(`id-${i}`)))
  const total = Number(process.hrtime.bigint() - t) / 1e9
  const items = new Set(JSON.parse(fs.readFileSync(file, 'utf8')).items)
  return { total, lost: n - items.size }
}

;(mode === 'replace' ? replace() : rmw()).then(
  (r) => console.log(JSON.stringify(r)),
  (e) => { console.error(e); process.exit(1) }
)
