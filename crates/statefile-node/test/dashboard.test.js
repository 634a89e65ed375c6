// The TypeScript server-status dashboard's acceptance scenarios (shared/seeds story 4.5):
// its config files servers.json and dashboard-layout.json, written by its endpoints.
'use strict'
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { Doc, StatefileError } = require('..')
const { scratch, temps, child, waitFor, isRoot, tmpfs, test } = require('./helpers')

const mode = (p) => fs.statSync(p).mode & 0o7777

// The dashboard's endpoints, as it would write them with statefile.
function configApi (dir) {
  const servers = new Doc(path.join(dir, 'servers.json'))
  const layout = new Doc(path.join(dir, 'dashboard-layout.json'))
  const none = { default: { servers: [] } }
  return {
    servers,
    layout,
    addServer: (s) => servers.update((d) => { d.servers.push(s) }, none),
    editServer: (id, patch) => servers.update((d) => {
      const s = d.servers.find((x) => x.id === id)
      if (!s) throw Object.assign(new Error(`no server ${id}`), { status: 404 })
      Object.assign(s, patch)
    }),
    removeServer: (id) => servers.update((d) => { d.servers = d.servers.filter((x) => x.id !== id) }),
    addGroup: (g) => layout.update((d) => { d.groups.push(g) }, { default: { groups: [] } }),
    removeGroup: (id) => layout.update((d) => { d.groups = d.groups.filter((x) => x.id !== id) })
  }
}

test('config CRUD keeps mode 0600 (and the owner) of servers.json and dashboard-layout.json', async (t) => {
  const dir = scratch(t)
  const api = configApi(dir)
  await api.addServer({ id: 'a', host: '10.0.0.1', port: 22 })
  await api.addGroup({ id: 'g1', servers: ['a'] })
  for (const f of ['servers.json', 'dashboard-layout.json']) fs.chmodSync(path.join(dir, f), 0o600)
  if (isRoot()) fs.chownSync(path.join(dir, 'servers.json'), 4242, 4343)

  await api.addServer({ id: 'b', host: '10.0.0.2', port: 22 })
  await api.editServer('a', { port: 2222 })
  await api.removeServer('b')
  await api.addGroup({ id: 'g2', servers: [] })
  await api.removeGroup('g1')
  await assert.rejects(api.editServer('zz', { port: 1 }), (e) => e.status === 404)

  assert.deepEqual(await api.servers.read(), { servers: [{ id: 'a', host: '10.0.0.1', port: 2222 }] })
  assert.deepEqual(await api.layout.read(), { groups: [{ id: 'g2', servers: [] }] })
  for (const f of ['servers.json', 'dashboard-layout.json']) {
    assert.equal(mode(path.join(dir, f)).toString(8), '600', `${f} keeps 0600`)
  }
  if (isRoot()) {
    const st = fs.statSync(path.join(dir, 'servers.json'))
    assert.deepEqual([st.uid, st.gid], [4242, 4343], 'owner kept')
  } else {
    t.diagnostic('owner part skipped: not root')
  }
  // The files are plain pretty JSON any program reads; no temp file is left.
  assert.match(fs.readFileSync(path.join(dir, 'servers.json'), 'utf8'), /^\{\n {2}"servers": \[/)
  assert.deepEqual(temps(dir), [])
})

test('a failed write leaves no temp file and the original intact', async (t) => {
  const dir = scratch(t)
  const api = configApi(dir)
  await api.addServer({ id: 'a', host: 'h' })
  const p = path.join(dir, 'servers.json')
  const before = fs.readFileSync(p)

  // A value that is not JSON: a TypeError before any file is touched.
  await assert.rejects(api.servers.write({ servers: [{ id: 'x', port: NaN }] }), TypeError)
  // A callback that throws: nothing written, the same error comes back.
  const boom = new Error('validation failed')
  await assert.rejects(api.servers.update((d) => { d.servers.length = 0; throw boom }), (e) => e === boom)
  // An async callback that rejects after a while, holding the lock meanwhile.
  await assert.rejects(api.servers.update(async (d) => {
    d.servers.push({ id: 'y' })
    await new Promise((resolve) => setTimeout(resolve, 20))
    throw boom
  }), (e) => e === boom)
  // The callback leaves a value that is not JSON.
  await assert.rejects(api.servers.update((d) => { d.servers[0].seen = () => 1 }), TypeError)
  assert.deepEqual(fs.readFileSync(p), before)
  assert.deepEqual(temps(dir), [])
})

test('a write that runs out of space mid-file leaves no temp and the original intact', async (t) => {
  const m = tmpfs(t, '256k')
  if (m.skip) return t.skip(m.skip)
  const doc = new Doc(path.join(m.dir, 'servers.json'), { backups: 0 })
  await doc.write({ servers: [{ id: 'a' }] })
  const before = fs.readFileSync(path.join(m.dir, 'servers.json'))
  const big = { servers: Array.from({ length: 20000 }, (_, i) => ({ id: `server-${i}`, host: `10.0.${i % 256}.${i % 100}` })) }
  await assert.rejects(doc.write(big), (e) => e instanceof StatefileError && e.code === 'NO_SPACE' && e.errno === 'ENOSPC')
  assert.throws(() => doc.writeSync(big), (e) => e.code === 'NO_SPACE')
  assert.deepEqual(fs.readFileSync(path.join(m.dir, 'servers.json')), before)
  assert.deepEqual(temps(m.dir), [])
})

test('a reader never sees a partial file while 4 writer processes replace it', async (t) => {
  const dir = scratch(t)
  const p = path.join(dir, 'servers.json')
  const doc = new Doc(p)
  await doc.write({ writer: -1, seq: 0, servers: [] })
  // Each writer writes documents of different sizes (1 KB to 200 KB) whose content
  // says how long it is, so a torn or mixed file cannot pass for a complete one.
  const writers = [0, 1, 2, 3].map((w) => child(`
    const doc = new sf.Doc(process.argv[1]);
    (async () => {
      console.log('ready');
      for (let seq = 1; seq <= 60; seq++) {
        const n = 10 + ((seq * 37 + ${w} * 101) % 2000);
        const servers = Array.from({ length: n }, (_, i) => ({ id: ${w} * 100000 + i, host: 'h' + i }));
        await doc.write({ writer: ${w}, seq, n, servers });
      }
    })().catch((e) => { console.error(e); process.exit(1) });`, [p]))
  await Promise.all(writers.map((w) => waitFor(w, 'ready')))
  let running = writers.length
  const finished = Promise.all(writers.map((w) => w.done.then((r) => { running--; return r })))
  let reads = 0
  const seen = new Set()
  while (running > 0) {
    // The dashboard's own reader: plain fs + JSON.parse, no lock.
    const v = JSON.parse(fs.readFileSync(p, 'utf8'))
    if (v.writer >= 0) {
      assert.equal(v.servers.length, v.n, 'complete version')
      assert.equal(v.servers[v.n - 1].id, v.writer * 100000 + v.n - 1)
    }
    seen.add(`${v.writer}/${v.seq}`)
    // And statefile's read.
    const w = await doc.read()
    if (w.writer >= 0) assert.equal(w.servers.length, w.n)
    reads += 2
  }
  for (const r of await finished) assert.equal(r.code, 0, r.err)
  t.diagnostic(`${reads} reads, ${seen.size} distinct versions seen, all complete`)
  assert.ok(seen.size > 4, 'the reads overlapped the writes')
  assert.deepEqual(temps(dir), [])
})
