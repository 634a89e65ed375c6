// SIGKILL at random instants while a process writes a 1 MB document: whatever instant,
// the file is a complete version, and the next open cleans the dead writer's temp.
'use strict'
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { Doc, Store } = require('..')
const { scratch, temps, child, waitFor, sleep, test } = require('./helpers')

// A ~1 MB document whose content checks itself: n items, each naming seq and index.
const WRITER = `
  const [file, start] = process.argv.slice(1);
  const doc = new sf.Doc(file, { backups: 1 });
  const make = (seq) => ({ seq, n: 9000, items: Array.from({ length: 9000 }, (_, i) => ({ seq, i, pad: 'x'.repeat(80) })) });
  (async () => {
    console.log('ready');
    for (let seq = Number(start); ; seq++) {
      if (seq % 2) await doc.write(make(seq)); else doc.writeSync(make(seq));
    }
  })().catch((e) => { console.error(e); process.exit(1) });`

function check (v, what) {
  assert.equal(typeof v.seq, 'number', what)
  assert.equal(v.items.length, v.n, `${what}: complete`)
  for (const [i, it] of v.items.entries()) {
    if (it.seq !== v.seq || it.i !== i) assert.fail(`${what}: item ${i} is from another version`)
  }
}

test('SIGKILL during writes of a 1 MB document, 100 times: always valid JSON, one complete version', async (t) => {
  const dir = scratch(t)
  const file = path.join(dir, 'jobs.json')
  const first = { seq: 0, n: 0, items: [] }
  await new Doc(file).write(first)
  // How long one write takes with this build on this machine, so the kills spread
  // over a few writes whatever that is.
  const big = { seq: 0, n: 9000, items: Array.from({ length: 9000 }, (_, i) => ({ seq: 0, i, pad: 'x'.repeat(80) })) }
  const t0 = Date.now()
  await new Doc(path.join(dir, 'calibrate.json'), { backups: 1 }).write(big)
  const writeMs = Math.max(5, Date.now() - t0)
  fs.rmSync(path.join(dir, 'calibrate.json'))
  t.diagnostic(`one 1 MB write takes about ${writeMs} ms here`)
  let seq = 1
  let killedWithTemp = 0
  let tempsBefore = 0
  for (let round = 0; round < 100; round++) {
    const w = child(WRITER, [file, String(seq)])
    await waitFor(w, 'ready')
    // Kill at an instant anywhere among the first few writes.
    await sleep(Math.floor(Math.random() * 3 * writeMs))
    w.kill('SIGKILL')
    const r = await w.done
    assert.equal(r.signal, 'SIGKILL', r.err)
    const text = fs.readFileSync(file, 'utf8')
    const v = JSON.parse(text) // valid JSON, every time
    if (v.seq !== 0) check(v, `round ${round}`)
    const left = temps(dir).length
    if (left > tempsBefore) killedWithTemp++
    tempsBefore = left
    seq = v.seq + 1000
  }
  t.diagnostic(`${killedWithTemp} of 100 kills left a dead writer's temp file behind`)
  assert.ok(killedWithTemp > 0, 'some kills landed mid-write')
  // Opening the directory as a store removes the dead writers' temps.
  const report = await new Store(dir).open()
  assert.ok(report.findings.every((f) => f.problem === 'stale-temp' && f.fixed), JSON.stringify(report.findings))
  assert.deepEqual(temps(dir), [])
  check(await new Doc(file).read(), 'after recovery')
})
