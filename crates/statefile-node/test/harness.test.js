// The test harness itself: a test that hangs fails by name after its timeout, and its
// file's process exits even though the hang left a handle open (an 11-minute stall
// of concurrency.test.js once held up a whole run).
'use strict'
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { spawnSync } = require('node:child_process')
const { scratch, test } = require('./helpers')

test('a hanging test fails by name and its file does not keep the run waiting', (t) => {
  const dir = scratch(t, 'harness')
  const file = path.join(dir, 'hang.test.js')
  fs.writeFileSync(file, `
    const { test } = require(${JSON.stringify(path.join(__dirname, 'helpers'))})
    test('this one hangs', { timeout: 500 }, async () => {
      setInterval(() => {}, 1000) // a handle the hang leaves open
      await new Promise(() => {})
    })
    test('this one passes', () => {})
  `)
  const started = Date.now()
  // Without NODE_TEST_CONTEXT, which makes a nested runner report to this one instead.
  const env = { ...process.env }
  delete env.NODE_TEST_CONTEXT
  const r = spawnSync(process.execPath, ['--test', file], { encoding: 'utf8', timeout: 100_000, env })
  const took = Date.now() - started
  assert.equal(r.error, undefined, 'the run ended by itself')
  assert.notEqual(r.status, 0, 'the run fails')
  assert.match(r.stdout, /not ok 1 - this one hangs/)
  assert.match(r.stdout, /timed out after 500ms/)
  assert.match(r.stdout, /ok 2 - this one passes/)
  assert.match(r.stdout + r.stderr, /still running 10000 ms after its last test ended/)
  assert.ok(took < 60_000, `ended in ${took} ms`)
})
