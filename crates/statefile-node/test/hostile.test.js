// Hostile input found by review: values that change while they are serialized, boxed
// primitives, invalid Dates, paths that would name another file, and documents too
// large for a JavaScript string. Each is written as it was read, or refused with a
// clear error; nothing is changed and no lock is held after.
'use strict'
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { Doc, Store, StatefileError, writeFileAtomic, writeFileAtomicSync } = require('..')
const { scratch, temps, test } = require('./helpers')

const isError = (code) => (e) => e instanceof StatefileError && e.code === code

test('a getter or Proxy that answers differently when read again cannot slip a non-JSON value past the checks', async (t) => {
  const dir = scratch(t)
  const p = path.join(dir, 'v.json')
  const doc = new Doc(p)
  await doc.write({ keep: true })
  const before = fs.readFileSync(p)
  // Each value is plain data the first time it is read, and not JSON the second time:
  // JSON.stringify, reading it again after the checks, would write null or {} in its
  // place, or drop the key. What is written must be what was read once (or the write a
  // TypeError): never a null or {} nobody gave.
  const flip = (second) => {
    let n = 0
    return () => (n++ === 0 ? 1 : second)
  }
  const cases = [
    ['a getter that turns NaN', () => { const g = flip(NaN); return { get a () { return g() } } }, { a: 1 }],
    ['a getter that turns into a function', () => { const g = flip(() => 1); return { get a () { return g() } } }, { a: 1 }],
    ['a getter that turns into a Map', () => { const g = flip(new Map([[1, 2]])); return { get a () { return g() } } }, { a: 1 }],
    ['a getter that adds a NaN key', () => { let n = 0; return { get a () { if (n++ === 0) this.b = NaN; return 1 } } }, { a: 1 }],
    ['an array element getter that turns undefined', () => {
      const g = flip(undefined)
      const arr = [1, 2]
      Object.defineProperty(arr, 0, { get: g, enumerable: true })
      return arr
    }, [1, 2]],
    ['a Proxy whose get turns Infinity', () => { const g = flip(Infinity); return new Proxy({ a: 1 }, { get: (o, k) => (k === 'a' ? g() : o[k]) }) }, { a: 1 }],
    ['a toJSON getter that breaks a value already checked', () => {
      const v = { a: { x: 1 }, b: {} }
      Object.defineProperty(v.b, 'toJSON', { enumerable: false, get () { v.a.x = NaN } })
      return v
    }, { a: { x: 1 }, b: {} }],
  ]
  for (const [what, make, once] of cases) {
    for (const sync of [false, true]) {
      const how = `${what} (${sync ? 'writeSync' : 'write'})`
      try {
        if (sync) doc.writeSync(make())
        else await doc.write(make())
      } catch (e) {
        assert.ok(e instanceof TypeError, `${how}: ${e}`)
        assert.deepEqual(fs.readFileSync(p), before, `${how}: nothing written`)
        continue
      }
      const stored = JSON.parse(fs.readFileSync(p, 'utf8'))
      fs.writeFileSync(p, before)
      assert.deepEqual(stored, once, `${how}: stored ${JSON.stringify(stored)}`)
    }
  }
  assert.deepEqual(fs.readFileSync(p), before)
  // The update path serializes the same way.
  await doc.update((d) => { const g = flip(NaN); Object.defineProperty(d, 'x', { get: g, enumerable: true }) })
  assert.deepEqual(await doc.read(), { keep: true, x: 1 })
  assert.deepEqual(temps(dir), [])
  // Plain data, getters that answer the same every time, and Proxies of plain data are
  // still written as they are.
  await doc.write({ get a () { return 1 }, b: [1, 'x', null] })
  assert.deepEqual(await doc.read(), { a: 1, b: [1, 'x', null] })
  await doc.write(new Proxy({ a: [1, 2], b: { c: 'd' } }, {}))
  assert.deepEqual(await doc.read(), { a: [1, 2], b: { c: 'd' } })
})

test('boxed primitives are stored as their primitive, and refused where the primitive would be', async (t) => {
  const dir = scratch(t)
  const p = path.join(dir, 'boxed.json')
  const doc = new Doc(p)
  await doc.write({ keep: true })
  const before = fs.readFileSync(p)
  /* eslint-disable no-new-wrappers */
  for (const [what, value, why] of [
    ['new Number(NaN)', { a: new Number(NaN) }, /NaN or Infinity/],
    ['new Number(Infinity)', [new Number(Infinity)], /NaN or Infinity/],
    ['new String with a lone surrogate', { a: new String('x\ud800') }, /lone surrogate/],
  ]) {
    await assert.rejects(doc.write(value), (e) => e instanceof TypeError && why.test(e.message) && /at \/(a|0)/.test(e.message), what)
    assert.throws(() => doc.writeSync(value), (e) => e instanceof TypeError && why.test(e.message), what)
    assert.deepEqual(fs.readFileSync(p), before, `${what}: nothing written`)
  }
  // What JSON can hold is written as the primitive, a boxed BigInt as its digits.
  await doc.write({ n: new Number(1.5), s: new String('x'), b: new Boolean(false), big: Object(2n ** 64n) })
  assert.equal(fs.readFileSync(p, 'utf8'), '{\n  "n": 1.5,\n  "s": "x",\n  "b": false,\n  "big": 18446744073709551616\n}\n')
  /* eslint-enable no-new-wrappers */
})

test('an invalid Date is refused, not stored as null', async (t) => {
  const dir = scratch(t)
  const p = path.join(dir, 'when.json')
  const doc = new Doc(p)
  await doc.write({ keep: true })
  const before = fs.readFileSync(p)
  await assert.rejects(doc.write({ at: new Date('not a date') }), (e) => e instanceof TypeError && /Invalid Date|invalid Date/.test(e.message) && /at \/at/.test(e.message))
  assert.throws(() => doc.writeSync([new Date(NaN)]), (e) => e instanceof TypeError && /at \/0/.test(e.message))
  assert.deepEqual(fs.readFileSync(p), before)
  // A valid Date is its ISO string, as toJSON makes it; null stays null.
  await doc.write({ at: new Date(0), none: null })
  assert.deepEqual(await doc.read(), { at: '1970-01-01T00:00:00.000Z', none: null })
})

test('a path or document name with a lone surrogate is a TypeError, not another file', async (t) => {
  const dir = scratch(t)
  // Converted to UTF-8 the surrogate would become U+FFFD: 'a\ud800' and 'a\udfff' the
  // same file, named by neither.
  const bad = path.join(dir, 'a\ud800.json')
  assert.throws(() => new Doc(bad), (e) => e instanceof TypeError && /lone surrogate/.test(e.message))
  await assert.rejects(writeFileAtomic(bad, 'x'), (e) => e instanceof TypeError && /lone surrogate/.test(e.message))
  assert.throws(() => writeFileAtomicSync(bad, 'x'), (e) => e instanceof TypeError && /lone surrogate/.test(e.message))
  assert.throws(() => new Store(path.join(dir, 'r\udc00')), (e) => e instanceof TypeError && /lone surrogate/.test(e.message))
  const store = new Store(dir)
  assert.throws(() => store.doc('b\ud800.json'), (e) => e instanceof TypeError && /lone surrogate/.test(e.message))
  assert.deepEqual(fs.readdirSync(dir), [])
})

test('a document too large for a JavaScript string is a StatefileError, and an update of it releases the lock', { timeout: 300_000 }, async (t) => {
  const dir = scratch(t)
  const p = path.join(dir, 'big.json')
  // One string of 2^29 characters: more than V8's longest string (2^29 - 24).
  const len = 2 ** 29
  const fd = fs.openSync(p, 'w')
  const chunk = Buffer.alloc(2 ** 24, 0x61)
  fs.writeSync(fd, '"')
  for (let i = 0; i < len / chunk.length; i++) fs.writeSync(fd, chunk)
  fs.writeSync(fd, '"')
  fs.closeSync(fd)
  const doc = new Doc(p, { lockTimeoutMs: 1000 })
  const tooLarge = (e) => isError('SERIALIZE')(e) && /too large/.test(e.message) && e.path === p
  await assert.rejects(doc.read(), tooLarge)
  await assert.rejects(doc.update((d) => { d.x = 1 }), tooLarge)
  // The update ended: its lock is free at once.
  const r = await doc.write({ small: true })
  assert.ok(r.lockWaitMs < 1000)
  assert.deepEqual(await doc.read(), { small: true })
  assert.deepEqual(temps(dir), [])
})

// Regression: a sparse multi-GB file at a document's name was read and hashed whole
// (about 1 s per 64 MB) before being refused as too large for a string.
test('a sparse 4 GiB document is refused at once with code SERIALIZE, never read, and a write replaces it at once', async (t) => {
  const dir = scratch(t)
  const p = path.join(dir, 'sparse.json')
  fs.writeFileSync(p, '{}')
  fs.truncateSync(p, 4 * 2 ** 30)
  const doc = new Doc(p, { lockTimeoutMs: 1000 })
  const tooLarge = (e) => isError('SERIALIZE')(e) && /too large/.test(e.message) && e.path === p
  const started = Date.now()
  await assert.rejects(doc.read(), tooLarge)
  await assert.rejects(doc.update((d) => { d.x = 1 }), tooLarge)
  // A delete reports the version it removes, which is not computed for it: refused.
  await assert.rejects(doc.delete(), tooLarge)
  assert.equal(fs.statSync(p).size, 4 * 2 ** 30)
  // A write replaces it without reading it, keeping it aside as .sparse.json.corrupt.
  const r = await doc.write({ replaced: true })
  assert.equal(r.previous, null)
  assert.deepEqual(await doc.read(), { replaced: true })
  assert.equal(fs.statSync(path.join(dir, '.sparse.json.corrupt')).size, 4 * 2 ** 30)
  assert.deepEqual(await doc.backups(), [])
  assert.ok(Date.now() - started < 1000, `took ${Date.now() - started} ms`)
})

test('writeFileAtomic writes the bytes given at the call, whatever happens to the buffer after', async (t) => {
  const dir = scratch(t)
  const f = path.join(dir, 'layout.txt')
  // Alone, and queued behind an earlier write of the same file.
  for (const queued of [false, true]) {
    const earlier = queued ? writeFileAtomic(f, 'earlier') : Promise.resolve()
    const buf = Buffer.from('given')
    const w = writeFileAtomic(f, buf)
    buf.fill(0x58)
    await Promise.all([earlier, w])
    assert.equal(fs.readFileSync(f, 'utf8'), 'given', `changed after the call (queued: ${queued})`)
    const view = new Uint16Array([0x6968, 0x2121]) // 'hi!!' on little-endian
    const w2 = writeFileAtomic(f, view)
    structuredClone(view.buffer, { transfer: [view.buffer] }) // detached: length 0
    await w2
    assert.equal(fs.readFileSync(f, 'utf8'), 'hi!!', `detached after the call (queued: ${queued})`)
    const dv = new DataView(new Uint8Array([0x6f, 0x6b]).buffer)
    const w3 = writeFileAtomic(f, dv)
    dv.setUint8(0, 0x21)
    await w3
    assert.equal(fs.readFileSync(f, 'utf8'), 'ok', `a DataView changed after the call (queued: ${queued})`)
  }
  assert.deepEqual(temps(dir), [])
})

test('an update keeps the file\'s key order, index-like keys ("10", "2") included', async (t) => {
  const dir = scratch(t)
  const p = path.join(dir, 'config.json')
  // JavaScript lists index-like keys first, in numeric order, whatever the file says.
  fs.writeFileSync(p, '{\n  "name": "x",\n  "10": "ten",\n  "2": "two",\n  "codes": {\n    "404": "missing",\n    "default": "ok",\n    "200": "fine"\n  },\n  "list": [\n    {\n      "b": 1,\n      "1": 2\n    }\n  ]\n}\n')
  const doc = new Doc(p)
  await doc.update((d) => { d.name = 'y' })
  assert.equal(fs.readFileSync(p, 'utf8'), '{\n  "name": "y",\n  "10": "ten",\n  "2": "two",\n  "codes": {\n    "404": "missing",\n    "default": "ok",\n    "200": "fine"\n  },\n  "list": [\n    {\n      "b": 1,\n      "1": 2\n    }\n  ]\n}\n')
  assert.equal(doc.updateSync((d) => { d.list[0].b = 3 }).unchanged, false)
  assert.deepEqual(Object.entries(JSON.parse(fs.readFileSync(p, 'utf8')).list[0]), [['1', 2], ['b', 3]])
  assert.match(fs.readFileSync(p, 'utf8'), /"b": 3,\n\s*"1": 2/)
  // New keys go at the end (index-like ones last); deleted ones are gone; a key deleted
  // and added again moves to the end, as JavaScript has it.
  await doc.update((d) => { d['7'] = 'new'; delete d['10']; const c = d.codes; delete d.codes; d.codes = c; d.extra = true })
  assert.deepEqual(Object.keys(JSON.parse(fs.readFileSync(p, 'utf8'))), ['2', '7', 'name', 'list', 'codes', 'extra'])
  assert.match(fs.readFileSync(p, 'utf8').replace(/\s+/g, ''), /^\{"name":"y","2":"two","list":\[\{"b":3,"1":2\}\],"codes":\{"404":"missing","default":"ok","200":"fine"\},"extra":true,"7":"new"\}$/)
})
