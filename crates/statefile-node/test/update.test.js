// Doc.update under attack: callbacks that never settle, throw, nest, or run by the
// hundred at once; updates from worker threads; a process that exits mid-update.
'use strict'
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { Worker } = require('node:worker_threads')
const { Doc, Store, StatefileError, writeFileAtomic, writeFileAtomicSync } = require('..')
const { PKG, scratch, temps, child, waitFor, sleep, test } = require('./helpers')

const isError = (code) => (e) => e instanceof StatefileError && e.code === code

test('a callback that never settles is abandoned after timeoutMs: lock released, nothing written', async (t) => {
  const dir = scratch(t)
  const p = path.join(dir, 'servers.json')
  const doc = new Doc(p, { lockTimeoutMs: 5000 })
  await doc.write({ servers: [] })
  const before = fs.readFileSync(p)
  const started = Date.now()
  let late
  await assert.rejects(doc.update((d) => {
    d.servers.push('never')
    late = d
    return new Promise(() => {}) // forgotten: never settles
  }, { timeoutMs: 300 }), (e) => isError('UPDATE_TIMEOUT')(e) && e.path === p && /300 ms/.test(e.message))
  assert.ok(Date.now() - started >= 300)
  assert.deepEqual(fs.readFileSync(p), before, 'nothing written')
  // The lock is free again at once, for this process and for others.
  const w = await new Doc(p, { lockTimeoutMs: 200 }).write({ servers: ['next'] })
  assert.ok(w.lockWaitMs < 200)
  const other = child('sf.writeFileAtomicSync(process.argv[1], "{}", { lockTimeoutMs: 200 })', [p])
  assert.equal((await other.done).code, 0, 'another process takes the lock')
  // What the abandoned callback does later changes nothing on disk.
  late.servers.push('later')
  assert.equal(fs.readFileSync(p, 'utf8'), '{}')

  // A callback that takes longer than the default would: Infinity lifts the limit; a
  // slow callback within the limit is fine; bad values are TypeErrors.
  const r = await doc.update(async (d) => { await sleep(50); d.ok = true; return 'slow' }, { timeoutMs: Infinity })
  assert.equal(r.result, 'slow')
  for (const bad of [-1, NaN, '100']) {
    await assert.rejects(doc.update(() => {}, { timeoutMs: bad }), TypeError, String(bad))
  }
  assert.deepEqual(temps(dir), [])
})

test('a forgotten callback keeps the process up until its timeout and then rejects, not a silent exit', async (t) => {
  const dir = scratch(t)
  const p = path.join(dir, 'jobs.json')
  await new Doc(p).write({ jobs: [] })
  const c = child(`
    new sf.Doc(process.argv[1]).update(() => new Promise(() => {}), { timeoutMs: 400 })
      .then(() => console.log('resolved'), (e) => console.log('rejected ' + e.code))`, [p])
  const r = await c.done
  assert.equal(r.code, 0, r.err)
  assert.equal(r.out.trim(), 'rejected UPDATE_TIMEOUT')
})

test('a callback that throws synchronously, returns a non-promise or a thenable', async (t) => {
  const dir = scratch(t)
  const doc = new Doc(path.join(dir, 'n.json'))
  await doc.write({ n: 0 })
  const boom = new Error('sync throw')
  await assert.rejects(doc.update((d) => { d.n = 99; throw boom }), (e) => e === boom)
  assert.equal((await doc.update((d) => { d.n++; return 42 })).result, 42)
  assert.equal((await doc.update((d) => { d.n++; return { then (ok) { ok('thenable') } } })).result, 'thenable')
  await assert.rejects(doc.update((d) => ({ then (_, fail) { d.n = -1; fail(boom) } })), (e) => e === boom)
  assert.deepEqual(await doc.read(), { n: 2 })
})

test('a document that is not an object or array cannot be changed in place: TypeError, not a silent no-op', async (t) => {
  const dir = scratch(t)
  for (const value of [1, 'text', true, null]) {
    const p = path.join(dir, `v${String(value)}.json`)
    const doc = new Doc(p)
    await doc.write(value)
    const before = fs.readFileSync(p)
    let ran = false
    await assert.rejects(doc.update((v) => { ran = true; return v }), (e) => e instanceof TypeError && /cannot change in place/.test(e.message), String(value))
    assert.throws(() => doc.updateSync((v) => { ran = true; return v }), TypeError)
    await assert.rejects(new Doc(path.join(dir, `d${String(value)}.json`)).update(() => {}, { default: value }), TypeError)
    assert.equal(ran, false)
    assert.deepEqual(fs.readFileSync(p), before)
    // The lock was released: a write goes straight through.
    assert.ok((await new Doc(p, { lockTimeoutMs: 100 }).write(value)).lockWaitMs < 100)
  }
})

test('a write of the same document from inside its update callback fails at once with DEADLOCK', async (t) => {
  const dir = scratch(t)
  const p = path.join(dir, 'layout.json')
  const doc = new Doc(p, { lockTimeoutMs: 20000, backups: 2 })
  await doc.write({ groups: [] })
  await doc.write({ groups: ['g0'] })
  const same = new Doc(path.relative(process.cwd(), p)) // another handle, another spelling
  const store = new Store(dir)
  const inside = [
    ['update', () => same.update((d) => { d.x = 1 })],
    ['write', () => same.write({})],
    ['writeIf', () => doc.writeIf('0'.repeat(64), {})],
    ['create', () => doc.create({})],
    ['delete', () => doc.delete()],
    ['restore', () => doc.restore(1)],
    ['a Store handle', () => store.doc('layout.json').write({})],
    ['writeFileAtomic', () => writeFileAtomic(p, '{}')],
    ['updateSync', async () => same.updateSync((d) => { d.x = 1 })],
    ['writeSync', async () => same.writeSync({})],
    ['writeFileAtomicSync', async () => writeFileAtomicSync(p, '{}')],
    ['a write after an await', async () => { await sleep(5); await same.write({}) }]
  ]
  for (const [what, call] of inside) {
    const started = Date.now()
    await assert.rejects(doc.update(async (d) => {
      d.groups.push(what)
      await call()
    }), (e) => isError('DEADLOCK')(e) && e.path === p && /inside an update callback of the same document/.test(e.message), what)
    assert.ok(Date.now() - started < 10000, `${what}: at once, not after a lock timeout`)
  }
  // The same inside updateSync.
  assert.throws(() => doc.updateSync(() => same.writeSync({})), isError('DEADLOCK'))
  assert.throws(() => doc.updateSync(() => same.updateSync(() => {})), isError('DEADLOCK'))
  assert.deepEqual(await doc.read(), { groups: ['g0'] }, 'none of those wrote anything')

  // What is allowed: other documents inside (nested updates too), and the same
  // document from code that merely started inside and runs after the callback settled.
  const other = new Doc(path.join(dir, 'other.json'))
  let later
  const r = await doc.update(async (d) => {
    await other.update(async (o) => { o.n = (await doc.read()).groups.length }, { default: {} })
    later = sleep(50).then(() => same.update((x) => { x.groups.push('later') }))
    d.groups.push('g1')
  })
  await later
  assert.deepEqual(await other.read(), { n: 1 })
  assert.deepEqual((await doc.read()).groups, ['g0', 'g1', 'later'])
  assert.ok(r.version)
  // Callbacks of different documents running at once each hold only their own: from
  // inside A's callback a write of A fails, a write of B waits for B's callback.
  const a = new Doc(path.join(dir, 'a.json'))
  const b = new Doc(path.join(dir, 'b.json'))
  let releaseB
  let bStarted
  const bHolds = new Promise((resolve) => { bStarted = resolve })
  const bRunning = b.update((d) => new Promise((resolve) => {
    releaseB = () => { d.by = 'b'; resolve() }
    bStarted()
  }), { default: {} })
  // b's callback runs (b's lock is held, b.json will exist) before a's starts: otherwise
  // a's inner b.update, which has no default, could take b's lock first and find no file.
  await bHolds
  await assert.rejects(a.update(async (d) => {
    setTimeout(() => releaseB(), 50)
    await b.update((x) => { x.from = 'a' }) // waits for b's callback, then runs
    d.done = true
    await a.write({}) // but this one would wait for itself
  }, { default: {} }), isError('DEADLOCK'))
  await bRunning
  assert.deepEqual(await b.read(), { by: 'b', from: 'a' })
  // And concurrent updates from unrelated code still queue for the lock, as always.
  await Promise.all([
    doc.update(async (d) => { await sleep(30); d.groups.push('a') }),
    doc.update((d) => { d.groups.push('b') })
  ])
  assert.deepEqual((await doc.read()).groups.slice(-2).sort(), ['a', 'b'])
  assert.deepEqual(temps(dir), [])
})

// Regression: every paused update held a thread of napi's shared blocking pool (512);
// 600 updates of different documents whose callbacks read another document took them
// all, the reads waited for a thread, and nothing ever finished.
// Regression: such a callback waited until its own timeoutMs (60 s by default), because
// the earlier update's Promise settles only once its batch, which holds this callback's
// change, is written (group commit).
test('a callback awaiting an earlier, unwritten update of the same document fails at once with DEADLOCK', async (t) => {
  const dir = scratch(t)
  const doc = new Doc(path.join(dir, 'jobs.json'))
  // Whether `first` is still unwritten when `second`'s callback awaits it is a race
  // this test cannot steer (a fast write of `first` may land before): then awaiting it
  // is allowed and `second` is written too. Each attempt must end one of those two
  // ways, fast; at least one of 20 must meet the unwritten case and fail with DEADLOCK.
  let deadlocks = 0
  for (let attempt = 0; attempt < 20 && deadlocks === 0; attempt++) {
    await doc.write({ a: 0, b: 0 })
    const started = Date.now()
    const first = doc.update(async (d) => { d.a = 1 })
    const second = doc.update(async (d) => {
      await first
      d.b = 2
    }, { timeoutMs: 30_000 })
    const [one, two] = await Promise.allSettled([first, second])
    assert.equal(one.status, 'fulfilled', String(one.reason))
    assert.ok(Date.now() - started < 10_000, `failed fast, not after the callback's timeout (${Date.now() - started} ms)`)
    if (two.status === 'fulfilled') {
      assert.deepEqual(await doc.read(), { a: 1, b: 2 }, 'first written before second awaited it: both written')
      continue
    }
    deadlocks++
    assert.ok(isError('DEADLOCK')(two.reason), String(two.reason))
    assert.match(two.reason.message, /awaits an earlier update of the same document/)
    assert.deepEqual(await doc.read(), { a: 1, b: 0 }, 'the first update written, the second not')
  }
  assert.equal(deadlocks, 1, 'no attempt met the unwritten case')
  // A callback awaiting its own update's Promise: the same.
  let self
  self = doc.update(async (d) => { d.a = 5; await self }, { timeoutMs: 30_000 })
  await assert.rejects(self, isError('DEADLOCK'))
  assert.deepEqual(await doc.read(), { a: 1, b: 0 })
  assert.deepEqual(temps(dir), [])
})

test('a callback may await an update that has been written, or one of another document', async (t) => {
  const dir = scratch(t)
  const doc = new Doc(path.join(dir, 'jobs.json'))
  const other = new Doc(path.join(dir, 'other.json'))
  await doc.write({ n: 0 })
  await other.write({ n: 0 })
  const done = doc.update((d) => { d.n++ })
  await done
  const elsewhere = other.update(async (d) => { await sleep(5); d.n++ })
  const r = await doc.update(async (d) => {
    const [a, b] = await Promise.all([done, elsewhere])
    d.n += 10
    return [a.path, b.path].map((x) => path.basename(x))
  })
  assert.deepEqual(r.result, ['jobs.json', 'other.json'])
  assert.deepEqual(await doc.read(), { n: 11 })
  assert.deepEqual(await other.read(), { n: 1 })
  // The Promise update returns is a Promise, with then/catch/finally.
  const p = doc.update((d) => { d.n++ })
  assert.ok(p instanceof Promise)
  assert.equal((await p.then((x) => x.batch)) >= 1, true)
  await doc.update(() => { throw new Error('no') }).catch((e) => assert.equal(e.message, 'no')).finally(() => {})
})

test('600 concurrent updates of 600 documents whose callbacks read another document all finish', { timeout: 120000 }, async (t) => {
  const dir = scratch(t)
  const config = new Doc(path.join(dir, 'config.json'))
  await config.write({ limit: 7 })
  const docs = Array.from({ length: 600 }, (_, i) => new Doc(path.join(dir, `job-${i}.json`), { durability: 'none', backups: 0 }))
  const results = await Promise.all(docs.map((doc, i) => doc.update(async (d) => {
    const c = await config.read()
    d.id = i
    d.limit = c.limit
  }, { default: {} })))
  assert.equal(results.length, 600)
  for (const i of [0, 299, 599]) assert.deepEqual(await docs[i].read(), { id: i, limit: 7 })
})

test('600 concurrent updates of one document whose callbacks read another: all applied once', { timeout: 120000 }, async (t) => {
  const dir = scratch(t)
  const config = new Doc(path.join(dir, 'config.json'))
  await config.write({ step: 1 })
  const doc = new Doc(path.join(dir, 'counter.json'), { durability: 'none', backups: 0, lockTimeoutMs: 100000 })
  await doc.write({ n: 0, seen: [] })
  await Promise.all(Array.from({ length: 600 }, (_, i) => doc.update(async (d) => {
    d.n += (await config.read()).step
    d.seen.push(i)
  })))
  const v = await doc.read()
  assert.equal(v.n, 600)
  assert.deepEqual([...v.seen].sort((a, b) => a - b), Array.from({ length: 600 }, (_, i) => i), 'each once')
})

test('worker threads: updates from workers and the main thread exclude each other; a terminated worker releases its lock', async (t) => {
  const dir = scratch(t)
  const p = path.join(dir, 'counter.json')
  const doc = new Doc(p, { lockTimeoutMs: 60000 })
  await doc.write({ n: 0 })
  const code = `
    const { workerData, parentPort } = require('node:worker_threads');
    const sf = require(${JSON.stringify(PKG)});
    const doc = new sf.Doc(workerData.p, { lockTimeoutMs: 60000 });
    if (workerData.hold) {
      doc.update(async () => { parentPort.postMessage('locked'); await new Promise(() => {}) }, { timeoutMs: Infinity });
    } else {
      Promise.all(Array.from({ length: 50 }, () => doc.update(async (d) => { const n = d.n; await null; d.n = n + 1 })))
        .then(() => parentPort.postMessage('done'), (e) => parentPort.postMessage(String(e)));
    }`
  const workers = [0, 1, 2].map(() => new Worker(code, { eval: true, workerData: { p } }))
  const answers = workers.map((w) => new Promise((resolve) => w.once('message', resolve)))
  await Promise.all(Array.from({ length: 50 }, () => doc.update((d) => { d.n++ })))
  assert.deepEqual(await Promise.all(answers), ['done', 'done', 'done'])
  await Promise.all(workers.map((w) => w.terminate()))
  assert.equal((await doc.read()).n, 200)

  const holder = new Worker(code, { eval: true, workerData: { p, hold: true } })
  assert.equal(await new Promise((resolve) => holder.once('message', resolve)), 'locked')
  await holder.terminate()
  const r = await new Doc(p, { lockTimeoutMs: 5000 }).update((d) => { d.n++ })
  assert.ok(r.lockWaitMs < 5000)
  assert.equal((await doc.read()).n, 201)
})

test('a process that exits while an update waits for its callback writes nothing and frees the lock', async (t) => {
  const dir = scratch(t)
  const p = path.join(dir, 'servers.json')
  await new Doc(p).write({ servers: [] })
  const before = fs.readFileSync(p)
  const c = child(`
    new sf.Doc(process.argv[1]).update(async (d) => {
      d.servers.push('half');
      console.log('locked');
      await new Promise((r) => setTimeout(r, 60000));
    });
    process.stdin.resume();
    process.stdin.on('data', () => process.exit(7));`, [p], { stdio: ['pipe', 'pipe', 'pipe'] })
  await waitFor(c, 'locked')
  await assert.rejects(new Doc(p, { lockTimeoutMs: 100 }).write({}), isError('LOCK_TIMEOUT'))
  c.stdin.write('exit\n')
  assert.equal((await c.done).code, 7)
  assert.deepEqual(fs.readFileSync(p), before)
  assert.ok((await new Doc(p, { lockTimeoutMs: 1000 }).write({ servers: ['next'] })).lockWaitMs < 1000)
})
