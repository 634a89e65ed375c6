// rev15 review of c9dde71: the helper threads blocked in flock for a lock another
// process holds come from a per-process pool whose idle threads are kept 5 s. A Node
// process must still exit at once when its work is done, with such threads idle or
// blocked for good in a flock (the holder here: flock(1), a real other process).
// A passing test is evidence; a failing one is a finding.
'use strict'
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { spawn, spawnSync } = require('node:child_process')
const test = require('node:test')
const { scratch, child } = require('./helpers')

/** flock(1) holding `lock` for `seconds` in another process; resolves once it holds. */
async function holder (lock, seconds) {
  const p = spawn('flock', ['-x', lock, 'sleep', String(seconds)], { stdio: 'ignore' })
  for (let i = 0; i < 2000; i++) {
    if (spawnSync('flock', ['-n', lock, 'true']).status !== 0) return p
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
  p.kill()
  throw new Error('flock(1) never took the lock')
}


for (const how of ['writeSync', 'write']) {
  test(`exits at once after a contended ${how} (its helper thread kept idle)`, async (t) => {
    const dir = scratch(t)
    const p = path.join(dir, 'a.json')
    fs.writeFileSync(p, '{"n":0}')
    fs.writeFileSync(path.join(dir, '.a.json.lock'), '')
    const h = await holder(path.join(dir, '.a.json.lock'), 1.5)
    const start = Date.now()
    const c = child(`
      const doc = new sf.Doc(process.argv[1], { lockTimeoutMs: 10000 })
      Promise.resolve(${how === 'write' ? 'doc.write({ n: 1 })' : 'doc.writeSync({ n: 1 })'})
        .then((r) => console.log('done', r.lockWaitMs))`, [p])
    const r = await c.done
    const took = (Date.now() - start) / 1000
    h.kill()
    assert.equal(r.code, 0, r.err)
    assert.ok(Number(r.out.trim().split(' ')[1]) > 0, r.out)
    assert.ok(took < 4, `the process took ${took}s to exit`)
    assert.deepEqual(JSON.parse(fs.readFileSync(p, 'utf8')), { n: 1 })
  })
}

test('exits at once with a helper blocked for good in a flock another process holds', async (t) => {
  const dir = scratch(t)
  const p = path.join(dir, 'a.json')
  fs.writeFileSync(p, '{"n":0}')
  fs.writeFileSync(path.join(dir, '.a.json.lock'), '')
  const h = await holder(path.join(dir, '.a.json.lock'), 30)
  try {
    const start = Date.now()
    const c = child(`
      const doc = new sf.Doc(process.argv[1], { lockTimeoutMs: 100 })
      doc.write({ n: 1 }).then(() => console.log('wrote'), (e) => console.log('gave up', e.code))`, [p])
    const r = await c.done
    const took = (Date.now() - start) / 1000
    assert.equal(r.code, 0, r.err)
    assert.match(r.out.trim(), /^gave up/)
    assert.ok(took < 3, `the process took ${took}s to exit`)
  } finally {
    h.kill()
  }
})
