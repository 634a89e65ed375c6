// Concurrent read-modify-write from one process and from several: no update lost,
// none applied twice; the event loop keeps running while a call waits for a lock.
'use strict'
const assert = require('node:assert/strict')
const path = require('node:path')
const { Doc, StatefileError, writeFileAtomic, writeFileAtomicSync } = require('..')
const { scratch, temps, child, waitFor, sleep, test } = require('./helpers')

test('50 concurrent updates in one process: all kept, none twice', async (t) => {
  const dir = scratch(t)
  const doc = new Doc(path.join(dir, 'resData.json'))
  await doc.write({ cases: [] })
  const results = await Promise.all(Array.from({ length: 50 }, (_, i) => doc.update(async (d) => {
    // Yield inside the critical section: the lock, not luck, keeps the others out.
    await sleep(1)
    d.cases.push(`case-${i}`)
    return d.cases.length - 1
  })))
  const { cases } = await doc.read()
  assert.equal(cases.length, 50)
  assert.equal(new Set(cases).size, 50)
  // Each call's result is the index its case landed at.
  results.forEach((r, i) => assert.equal(cases[r.result], `case-${i}`))
  // Updates in flight together share durable writes (group commit): the calls one
  // write answered hold consecutive indices, and the last write's version is the
  // document's.
  const byVersion = new Map()
  for (const r of results) byVersion.set(r.version, [...(byVersion.get(r.version) ?? []), r.result])
  for (const [version, at] of byVersion) {
    at.sort((a, b) => a - b)
    assert.equal(at[at.length - 1] - at[0] + 1, at.length, `the calls written as ${version} are consecutive`)
  }
  for (const r of results) assert.equal(r.batch, byVersion.get(r.version).length, 'a receipt says how many calls its write answered')
  assert.equal(results.find((r) => r.result === 49).version, await doc.version())
  assert.deepEqual(temps(dir), [])
})

test('4 processes x 100 updates each: all 400 kept, none twice', async (t) => {
  const dir = scratch(t)
  const p = path.join(dir, 'resData.json')
  await new Doc(p).write({ cases: [] })
  const kids = [0, 1, 2, 3].map((w) => child(`
    const doc = new sf.Doc(process.argv[1], { lockTimeoutMs: 60000 });
    (async () => {
      // Half of the updates in flight at once inside the process too.
      for (let round = 0; round < 10; round++) {
        await Promise.all(Array.from({ length: 10 }, (_, i) =>
          doc.update((d) => { d.cases.push('${w}-' + (round * 10 + i)) })));
      }
    })().catch((e) => { console.error(e); process.exit(1) });`, [p]))
  for (const k of kids) {
    const r = await k.done
    assert.equal(r.code, 0, r.err)
  }
  const { cases } = await new Doc(p).read()
  assert.equal(cases.length, 400)
  assert.equal(new Set(cases).size, 400)
  for (let w = 0; w < 4; w++) {
    for (let i = 0; i < 100; i++) assert.ok(cases.includes(`${w}-${i}`), `${w}-${i}`)
  }
})

test('sync updates from 4 processes interleave with async ones without loss', async (t) => {
  const dir = scratch(t)
  const p = path.join(dir, 'counter.json')
  await new Doc(p).write({ n: 0 })
  const kids = [0, 1, 2, 3].map((w) => child(`
    const doc = new sf.Doc(process.argv[1], { lockTimeoutMs: 60000 });
    for (let i = 0; i < 50; i++) doc.updateSync((d) => { d.n += 1 });`, [p]))
  const doc = new Doc(p, { lockTimeoutMs: 60000 })
  await Promise.all(Array.from({ length: 50 }, () => doc.update((d) => { d.n += 1 })))
  for (const k of kids) assert.equal((await k.done).code, 0)
  assert.equal((await doc.read()).n, 250)
})

test('the event loop keeps running while a write waits for a lock held by another process', async (t) => {
  const dir = scratch(t)
  const p = path.join(dir, 'servers.json')
  await new Doc(p).write({ servers: [] })
  // Another process takes the document's lock and holds it for 1.5 s.
  const holder = child(`
    const doc = new sf.Doc(process.argv[1]);
    doc.update(async (d) => {
      console.log('locked');
      await new Promise((r) => setTimeout(r, 1500));
      d.servers.push('from-holder');
    }).then(() => console.log('released'));`, [p])
  await waitFor(holder, 'locked')

  let ticks = 0
  // Cleared however the update ends: an interval left running when the awaited call
  // throws keeps this file's process alive for ever (a run once hung here 11 minutes).
  const timer = setInterval(() => { ticks++ }, 10)
  const doc = new Doc(p)
  const started = Date.now()
  let receipt
  try {
    receipt = await doc.update((d) => { d.servers.push('from-me') })
  } finally {
    clearInterval(timer)
  }
  const waited = Date.now() - started
  assert.equal((await holder.done).code, 0)

  assert.ok(receipt.lockWaitMs > 800, `the write waited for the lock (${receipt.lockWaitMs} ms)`)
  // A blocked event loop would fire the 10 ms timer at most once or twice.
  assert.ok(ticks >= waited / 10 / 4, `${ticks} ticks in ${waited} ms`)
  assert.deepEqual((await doc.read()).servers, ['from-holder', 'from-me'])

  // The same wait with a short timeout: LOCK_TIMEOUT, nothing written.
  const again = child(`
    const doc = new sf.Doc(process.argv[1]);
    doc.update(async () => { console.log('locked'); await new Promise((r) => setTimeout(r, 1500)) });`, [p])
  await waitFor(again, 'locked')
  const impatient = new Doc(p, { lockTimeoutMs: 100 })
  await assert.rejects(impatient.write({ servers: [] }), (e) => e instanceof StatefileError && e.code === 'LOCK_TIMEOUT' && e.path.endsWith('.servers.json.lock'))
  await again.done
  assert.deepEqual((await doc.read()).servers, ['from-holder', 'from-me'])
})

test('the event loop keeps running during fsync-heavy async writes', async (t) => {
  const dir = scratch(t)
  // 1 MB each: the file I/O and fsyncs of these writes take a while; the JSON is made
  // beforehand (stringifying is JavaScript's own work, on its thread by nature).
  const bytes = Buffer.alloc(1 << 20, 'x')
  const value = { items: Array.from({ length: 2000 }, (_, i) => ({ i, pad: 'y'.repeat(40) })) }
  const docs = [0, 1, 2, 3].map((i) => new Doc(path.join(dir, `doc-${i}.json`), { backups: 1 }))
  // How often a 10 ms timer fires on this machine now, with nothing else running (a
  // loaded machine fires it less often than every 10 ms).
  const rate = async (work) => {
    let ticks = 0
    const timer = setInterval(() => { ticks++ }, 10)
    const started = Date.now()
    try {
      await work()
    } finally {
      clearInterval(timer)
    }
    const elapsed = Date.now() - started
    return { ticks, elapsed, perSecond: ticks / elapsed * 1000 }
  }
  const idle = await rate(() => sleep(1000))
  const busy = await rate(() => Promise.all([
    ...docs.map(async (d) => { for (let k = 0; k < 5; k++) await d.write(value) }),
    ...[0, 1, 2, 3].map(async (i) => {
      for (let k = 0; k < 5; k++) await writeFileAtomic(path.join(dir, `blob-${i}.bin`), bytes)
    }),
    // With a default: this may run before the first write has created doc-0.json.
    (async () => { for (let k = 0; k < 20; k++) await docs[0].update((d) => { d.n = k }, { default: {} }) })()
  ]))
  // The control, measured the same way on the same machine at the same time: the same
  // writes done on the event loop's thread (the Sync variants), which stop the timer for
  // each write's duration.
  const blocked = await rate(async () => {
    for (const d of docs) for (let k = 0; k < 5; k++) d.writeSync(value)
    await sleep(0)
    for (let i = 0; i < 4; i++) for (let k = 0; k < 5; k++) writeFileAtomicSync(path.join(dir, `blob-${i}.bin`), bytes)
    await sleep(0)
    for (let k = 0; k < 20; k++) docs[0].updateSync((d) => { d.n = k })
  })
  t.diagnostic(`idle: ${idle.ticks} ticks in ${idle.elapsed} ms; writing: ${busy.ticks} ticks in ${busy.elapsed} ms; on the loop's thread: ${blocked.ticks} ticks in ${blocked.elapsed} ms`)
  // A machine under load fires the timer less often than idle, whatever the writes do,
  // so the figure that shows where the writes run is the comparison with the control:
  // async writes leave the timer running, blocking ones stop it.
  assert.ok(blocked.ticks <= 3, `the control blocked the loop: ${blocked.ticks} ticks`)
  assert.ok(busy.ticks >= Math.max(5, 3 * blocked.ticks) && busy.perSecond >= idle.perSecond / 10,
    `the timer fired ${busy.ticks} times (${busy.perSecond.toFixed(0)}/s) while writing, ${idle.perSecond.toFixed(0)}/s idle, ${blocked.ticks} on the loop's thread`)
  assert.deepEqual(temps(dir), [])
})
