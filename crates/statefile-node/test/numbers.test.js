// Numbers the library keeps exactly (issue 9 item 8), as JavaScript sees them: an
// integer a JavaScript number would round is read as a BigInt, and a BigInt is written
// as its digits; any other number a double would change (1e-400, 0.30000000000000000001)
// has no exact JavaScript type, so reading it fails, naming the place, instead of
// rounding it. An update never writes back a rounded number.
'use strict'
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { Doc, Store, StatefileError } = require('..')
const { scratch, test } = require('./helpers')

const refused = (pointer, shown) => (e) =>
  e instanceof StatefileError && e.code === 'SERIALIZE' && e.pointer === pointer &&
  e.message.includes(shown) && e.message.includes('cannot be held exactly by a JavaScript number')

// Integers JSON.parse would make other integers.
const BIG = [
  '123456789012345678901234567890',
  '18446744073709551616',
  '-9223372036854775809',
  '9007199254740993',
  '-9007199254740993',
  '1152921504606846976', // 2^60: its double prints as 1152921504606847000
]

// Regression (issue 9): 123456789012345678901234567890 was read as 1.2345678901234568e+29.
test('an integer a JavaScript number would round is read as a BigInt, and written back as it was', async (t) => {
  const dir = scratch(t)
  const p = path.join(dir, 'ids.json')
  const text = `{\n  "ok": 9007199254740992,\n  "ids": [\n    ${BIG.join(',\n    ')}\n  ],\n  "a/b": {\n    "~": ${BIG[0]},\n    "__proto__": ${BIG[1]}\n  }\n}\n`
  fs.writeFileSync(p, text)
  const doc = new Doc(p)
  const want = { ok: 2 ** 53, ids: BIG.map(BigInt), 'a/b': JSON.parse(`{"~": 0, "__proto__": 0}`) }
  want['a/b']['~'] = BigInt(BIG[0])
  Object.defineProperty(want['a/b'], '__proto__', { value: BigInt(BIG[1]), enumerable: true, writable: true, configurable: true })
  for (const v of [await doc.read(), doc.readSync(), (await doc.readVersioned()).value, doc.readVersionedSync().value]) {
    assert.deepEqual(v, want)
    assert.equal(typeof v.ids[0], 'bigint')
    assert.equal(Object.getPrototypeOf(v['a/b']), Object.prototype, 'a __proto__ key stays data')
    assert.deepEqual(Object.keys(v['a/b']), ['~', '__proto__'])
  }
  // Untouched, they are written back digit for digit; a BigInt added is its digits.
  await doc.update((d) => { assert.equal(typeof d.ids[2], 'bigint') })
  assert.equal(fs.readFileSync(p, 'utf8'), text)
  doc.updateSync((d) => { d.ids.push(d.ids[0] + 1n) })
  assert.equal(fs.readFileSync(p, 'utf8'), text.replace(`${BIG[5]}\n`, `${BIG[5]},\n    123456789012345678901234567891\n`))
  // The whole document.
  fs.writeFileSync(p, '-123456789012345678901234567890')
  assert.equal(await doc.read(), -123456789012345678901234567890n)
})

test('a BigInt is written as its digits, at any place and through every write', async (t) => {
  const dir = scratch(t)
  const p = path.join(dir, 'w.json')
  const doc = new Doc(p)
  const big = 2n ** 64n
  const value = { n: big, neg: -(10n ** 30n), list: [1n, big], s: 'not a BigInt: 5n', date: new Date(0) }
  await doc.write(value)
  assert.equal(fs.readFileSync(p, 'utf8'), '{\n  "n": 18446744073709551616,\n  "neg": -1000000000000000000000000000000,\n  "list": [\n    1,\n    18446744073709551616\n  ],\n  "s": "not a BigInt: 5n",\n  "date": "1970-01-01T00:00:00.000Z"\n}\n')
  // A BigInt a number holds exactly reads back as that number (JSON does not say which).
  assert.deepEqual(await doc.read(), { ...value, list: [1, big], date: '1970-01-01T00:00:00.000Z' })
  doc.writeSync(10n ** 40n)
  assert.equal(fs.readFileSync(p, 'utf8'), '10000000000000000000000000000000000000000\n')
  await doc.writeIf((await doc.readVersioned()).version, [big])
  assert.deepEqual(await doc.read(), [big])
  await new Doc(path.join(dir, 'c.json')).create({ c: -big })
  assert.deepEqual(new Doc(path.join(dir, 'c.json')).readSync(), { c: -big })
  await doc.update((d) => { d.push(-big) }, { default: [] })
  assert.deepEqual(await doc.read(), [big, -big])
  // A string that looks like the mark a BigInt gets on the way is left alone.
  const marks = { s: 'statefile-bigint-00000000-0000-0000-0000-000000000000:5', n: 1n }
  await doc.write(marks)
  assert.deepEqual(await doc.read(), { s: marks.s, n: 1 })
})

// Each beyond a double's precision or range, and not an integer; JSON.parse would make
// it another number.
const INEXACT = [
  '1e-400',
  '-1.5e400',
  '1e999999999',
  '0.30000000000000000001',
  '3.141592653589793238462643383279',
  '2e-324',
  '1.8446744073709551616e19',
]

test('a non-integer a JavaScript number would change is refused at its pointer, read or update', async (t) => {
  const dir = scratch(t)
  for (const [i, n] of INEXACT.entries()) {
    const p = path.join(dir, `n${i}.json`)
    const text = `{"ok": [1, 0.1, ${BIG[0]}], "deep": {"list": [2.5, ${n}]}}\n`
    fs.writeFileSync(p, text)
    const doc = new Doc(p)
    // The library keeps exponents as `e+`: the message shows the number as stored.
    const shown = n.replace(/e(\d)/, 'e+$1')
    await assert.rejects(doc.read(), refused('/deep/list/1', shown), n)
    assert.throws(() => doc.readSync(), refused('/deep/list/1', shown), n)
    await assert.rejects(doc.readVersioned(), refused('/deep/list/1', shown), n)
    let ran = false
    await assert.rejects(doc.update((d) => { ran = true; d.ok = true }), refused('/deep/list/1', shown), n)
    assert.throws(() => doc.updateSync((d) => { ran = true; d.ok = true }), refused('/deep/list/1', shown), n)
    assert.equal(ran, false, 'the callback never sees a rounded value')
    assert.equal(fs.readFileSync(p, 'utf8'), text, `${n}: nothing written`)
  }
})

test('the top-level value and very long numbers are named without printing them whole', async (t) => {
  const dir = scratch(t)
  const top = path.join(dir, 'top.json')
  fs.writeFileSync(top, '1e-400')
  await assert.rejects(new Doc(top).read(), (e) => refused('', '1e-400')(e) && /at the top/.test(e.message))
  const long = path.join(dir, 'long.json')
  const digits = '7'.repeat(100_000)
  fs.writeFileSync(long, `{"n": 0.${digits}}`)
  await assert.rejects(new Doc(long).read(), (e) =>
    refused('/n', '(100002 characters)')(e) && e.message.length < 1000)
  // An integer of a million digits is a BigInt, and goes back as it came, in seconds.
  const huge = `-${'9'.repeat(1_000_000)}`
  fs.writeFileSync(long, `{"n": ${huge}}`)
  const started = Date.now()
  const doc = new Doc(long)
  assert.equal(await doc.read().then((v) => v.n === BigInt(huge)), true)
  await doc.update((d) => { d.m = d.n })
  assert.equal(fs.readFileSync(long, 'utf8'), `{\n  "n": ${huge},\n  "m": ${huge}\n}\n`)
  assert.ok(Date.now() - started < 60_000, `${Date.now() - started} ms`)
})

test('numbers JavaScript writes back as the same number are numbers: 1.0, 1E2, -0, 2^53, the ends of the range', async (t) => {
  const dir = scratch(t)
  const p = path.join(dir, 'ok.json')
  fs.writeFileSync(p, '[1.0, 1E2, -0, 0.1, 9007199254740992, -9007199254740992, 100000000000000000000, 5e-324, 1.7976931348623157e308, 0.30000000000000004, 0e999999999, 1e21]')
  const doc = new Doc(p)
  const v = await doc.read()
  assert.deepEqual(v, [1, 100, -0, 0.1, 2 ** 53, -(2 ** 53), 1e20, 5e-324, Number.MAX_VALUE, 0.1 + 0.2, 0, 1e21])
  assert.ok(Object.is(v[2], -0))
  // An update writes JavaScript's spelling of the same numbers; -0 stays -0 (which
  // JSON.stringify would write as 0).
  await doc.update((d) => { d.push('x') })
  const back = JSON.parse(fs.readFileSync(p, 'utf8'))
  assert.deepEqual(back, [...v, 'x'])
  assert.ok(Object.is(back[2], -0) && Object.is(back[10], 0))
})

test('-0 is stored as -0, not as the 0 JSON.stringify writes: at the top, inside, boxed, in a transaction', async (t) => {
  const dir = scratch(t)
  const doc = new Doc(path.join(dir, 'z.json'))
  for (const [value, text] of [[-0, '-0'], [{ a: -0, b: [0, -0] }, '{"a":-0,"b":[0,-0]}'], [[new Number(-0)], '[-0]']]) {
    await doc.write(value)
    const raw = fs.readFileSync(doc.path, 'utf8')
    assert.equal(JSON.stringify(JSON.parse(raw, (k, x) => (Object.is(x, -0) ? '-0' : x))).replace(/"-0"/g, '-0'), text, raw)
    doc.writeSync(value)
    assert.equal(fs.readFileSync(doc.path, 'utf8'), raw, 'writeSync writes what write wrote')
  }
  const read = await doc.read()
  assert.ok(Object.is(read[0], -0), 'read back as -0')
  const store = new Store(dir)
  await store.enableJournal()
  await store.transaction([{ op: 'put', doc: 't.json', value: { n: -0 } }])
  assert.ok(Object.is((await store.doc('t.json').read()).n, -0))
})
