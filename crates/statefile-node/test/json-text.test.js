// A write hands the addon the JSON text JSON.stringify made, and the library writes it
// without building a serde_json::Value (src/text.rs): what lands on disk must be the
// value given, laid out as every other statefile write lays it out.
'use strict'
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { Doc, Store, StatefileError } = require('..')
const native = require('../native.js')
const { scratch, temps, test } = require('./helpers')

/** What statefile writes for `v`: serde_json's pretty layout (2 spaces) and a newline. */
// JSON.stringify's layout, with BigInts as their digits and -0 as -0 (statefile writes
// both as given; JSON.stringify refuses the one and writes the other as 0).
const pretty = (v) => JSON.stringify(v, (k, x) => typeof x === 'bigint' ? `@${x}@` : Object.is(x, -0) ? '@-0@' : x, 2).replace(/"@(-?\d+)@"/g, '$1') + '\n'

test('every write lays the value out as serde_json does, numbers, strings and key order as given', async (t) => {
  const dir = scratch(t)
  const p = path.join(dir, 'doc.json')
  const doc = new Doc(p)
  const value = {
    // JavaScript orders integer-like keys first, then the others as inserted.
    z: 1,
    a: 2,
    10: 'ten',
    2: 'two',
    numbers: [0, -0, 1.5, -2.25e-7, 1e21, 1e300, 5e-324, Number.MAX_VALUE, 2 ** 53, -(2 ** 53), 0.1 + 0.2, 123456789012345678901234567890n, -18446744073709551617n],
    strings: ['', 'quote " backslash \\ slash /', 'tab\tnew\nline\r\b\f', '\u0000\u0001\u001f\u007f', '\u2028\u2029', 'é ü 漢字', '\ud83d\ude00', '\\u0041 is not A'],
    empty: { a: [], o: {}, nested: [[], {}, [[]], [{}]] },
    literals: [true, false, null],
    dropped: undefined,
    when: new Date(0),
    custom: { toJSON: () => ({ made: 'by toJSON' }) },
    deep: { a: { b: { c: { d: [1, [2, [3, { e: 'f' }]]] } } } },
    'a key "with" escapes\n\u0001': { 'é': 1, '\\': 2, '': 3 }
  }
  const expected = pretty(value)
  assert.ok(expected.includes('"numbers": [\n    0,\n    -0,\n    1.5,\n    -2.25e-7,\n    1e+21,'), expected)
  assert.ok(expected.indexOf('"2": "two"') < expected.indexOf('"10": "ten"') && expected.indexOf('"10"') < expected.indexOf('"z"'))

  await doc.create(value)
  assert.equal(fs.readFileSync(p, 'utf8'), expected, 'create')
  fs.rmSync(p)
  await doc.write(value)
  assert.equal(fs.readFileSync(p, 'utf8'), expected, 'write')
  const { version } = doc.readVersionedSync()
  doc.writeSync({ other: true })
  doc.writeIfSync(doc.versionSync(), value)
  assert.equal(fs.readFileSync(p, 'utf8'), expected, 'writeIfSync')
  assert.equal(doc.versionSync(), version, 'the same bytes, the same version')
  const store = new Store(dir)
  await store.doc('in-store.json').write(value)
  assert.equal(fs.readFileSync(path.join(dir, 'in-store.json'), 'utf8'), expected, 'a Store document')
  await store.doc('in-store.json').update((d) => { d.numbers.push(1) })
  const updated = { ...JSON.parse(expected), dropped: undefined }
  updated.numbers = [...value.numbers, 1]
  assert.equal(fs.readFileSync(path.join(dir, 'in-store.json'), 'utf8'), pretty(updated), 'an update of it')

  // It reads back as the value given, -0 too.
  const back = await doc.read()
  assert.deepEqual(back.numbers, value.numbers)
  assert.ok(Object.is(back.numbers[1], -0))
  assert.deepEqual(back.strings, value.strings)
  assert.deepEqual(Object.keys(back), ['2', '10', 'z', 'a', 'numbers', 'strings', 'empty', 'literals', 'when', 'custom', 'deep', 'a key "with" escapes\n\u0001'])
})

test('the addon refuses JSON text that would not read back as itself, writing nothing', async (t) => {
  const dir = scratch(t)
  const p = path.join(dir, 'raw.json')
  const raw = new native.NativeDoc(p, {})
  const refused = [
    ['{"a":1,"a":2}', /an object repeats the key "a"/],
    ['{"a":1,"\\u0061":2}', /an object repeats the key "a"/],
    ['[{"x":{"b":1,"c":2,"b":3}}]', /an object repeats the key "b"/],
    [`{${Array.from({ length: 20 }, (_, i) => `"k${i}":${i}`).join(',')},"k7":0}`, /an object repeats the key "k7"/],
    ['{"a\\n":1,"a\\u000a":2}', /an object repeats the key "a\\n"/],
    ['{"$serde_json::private::Number":"5"}', /is reserved/],
    ['{"a":{"\\u0024serde_json::private::Number":"5"}}', /is reserved/],
    ['[1,', /EOF while parsing/],
    ['1 2', /trailing characters/],
    ['"\\ud800"', /hex escape/],
    ['['.repeat(200) + ']'.repeat(200), /recursion limit/]
  ]
  for (const [text, why] of refused) {
    for (const r of [raw.writeSync(text), await raw.write(text), raw.createSync(text)]) {
      const { error } = JSON.parse(r)
      assert.ok(error && error.code === 'SERIALIZE' && why.test(error.message), `${text}: ${r}`)
    }
  }
  assert.deepEqual(fs.readdirSync(dir), [], 'not even a lock file was created')
})

test('an object with the key serde_json reads as a number mark is refused, not stored as a number', async (t) => {
  const dir = scratch(t)
  const p = path.join(dir, 'mark.json')
  const doc = new Doc(p)
  const mark = '$serde_json::private::Number'
  const refused = (e) => e instanceof StatefileError && e.code === 'SERIALIZE' && /is reserved/.test(e.message)
  await assert.rejects(doc.write({ [mark]: '5' }), refused)
  assert.throws(() => doc.createSync({ n: { [mark]: '5' } }), refused)
  assert.deepEqual(fs.readdirSync(dir), [])
  // The text as a value (not a key) is a string like any other.
  await doc.write({ s: mark, list: [mark] })
  const before = fs.readFileSync(p, 'utf8')
  assert.deepEqual(await doc.read(), { s: mark, list: [mark] })
  // Nor through an update or a transaction.
  await assert.rejects(doc.update((d) => { d.s = { [mark]: '1' } }), refused)
  assert.equal(fs.readFileSync(p, 'utf8'), before)
  assert.deepEqual(temps(dir), [])
  const store = new Store(path.join(dir, 'tx'))
  await store.enableJournal()
  await assert.rejects(store.transaction([{ op: 'put', doc: 'mark.json', value: { [mark]: '2' } }]), refused)
  await assert.rejects(store.doc('mark.json').read(), { code: 'NOT_FOUND' })
})
