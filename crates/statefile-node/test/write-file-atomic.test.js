// writeFileAtomic / writeFileAtomicSync: write-file-atomic's signature and behaviour
// (checked side by side against the real package), plus the directory fsync it lacks.
'use strict'
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { spawnSync } = require('node:child_process')
const realWfa = require('write-file-atomic')
const { Doc, writeFileAtomic, writeFileAtomicSync, StatefileError } = require('..')
const { PKG, scratch, temps, isRoot, tmpfs, sleep, test } = require('./helpers')

const mode = (p) => fs.statSync(p).mode & 0o7777
const umask = process.umask()
// write-file-atomic leaves temps named `file.<number>`; statefile `.file.sf-<random>.tmp`.
const leftovers = (dir) => fs.readdirSync(dir).filter((n) => /\.\d+$/.test(n) || /\.tmp$/.test(n))

const DATA = [
  ['a string', 'servers: 3\n', undefined],
  ['a string with an encoding argument', 'caf\u00e9', 'latin1'],
  ['a string with options.encoding', '68656c6c6f', { encoding: 'hex' }],
  ['a Buffer', Buffer.from([0, 1, 2, 255]), undefined],
  ['a view into a larger buffer', new Uint8Array(Buffer.from('xxhelloxx').buffer, Buffer.from('xxhelloxx').byteOffset + 2, 5), undefined],
  ['a number (String(data))', 42, undefined],
  ['null (an empty file)', null, undefined]
]

test('data and encodings are written byte for byte as write-file-atomic writes them', async (t) => {
  const dir = scratch(t)
  for (const [what, data, options] of DATA) {
    const theirs = path.join(dir, 'theirs.txt')
    const ours = path.join(dir, 'ours.txt')
    const oursSync = path.join(dir, 'ours-sync.txt')
    await realWfa(theirs, data, options)
    await writeFileAtomic(ours, data, options)
    writeFileAtomicSync(oursSync, data, options)
    assert.deepEqual(fs.readFileSync(ours), fs.readFileSync(theirs), what)
    assert.deepEqual(fs.readFileSync(oursSync), fs.readFileSync(theirs), `${what} (sync)`)
  }
  // A wider TypedArray: all its bytes. (write-file-atomic passes `data.length`, the
  // element count, as the byte count, and so writes only the first 3 of these 6 bytes.)
  const wide = new Uint16Array([1, 2, 0xffff])
  await writeFileAtomic(path.join(dir, 'wide'), wide)
  writeFileAtomicSync(path.join(dir, 'wide-sync'), wide)
  for (const f of ['wide', 'wide-sync']) {
    assert.deepEqual(fs.readFileSync(path.join(dir, f)), Buffer.from(wide.buffer))
  }
  await realWfa(path.join(dir, 'theirs-wide'), wide)
  assert.equal(fs.readFileSync(path.join(dir, 'theirs-wide')).length, 3, 'write-file-atomic truncates it')
  assert.deepEqual(leftovers(dir), [])
})

test('mode: kept from the replaced file, 0666 less the umask for a new one, or as given', async (t) => {
  const dir = scratch(t)
  const cases = [
    ['new file, no mode', false, undefined],
    ['existing 0640, no mode', 0o640, undefined],
    ['existing 0640, mode 0600', 0o640, { mode: 0o600 }],
    ['new file, mode 0604', false, { mode: 0o604 }]
  ]
  for (const [what, existing, options] of cases) {
    for (const [who, write] of [['write-file-atomic', (p) => realWfa(p, 'x', options)], ['statefile', (p) => writeFileAtomic(p, 'x', options)], ['statefile sync', async (p) => writeFileAtomicSync(p, 'x', options)]]) {
      const p = path.join(dir, `${who.replace(/ /g, '-')}.conf`)
      fs.rmSync(p, { force: true })
      if (existing !== false) {
        fs.writeFileSync(p, 'old')
        fs.chmodSync(p, existing)
      }
      await write(p)
      t.diagnostic(`${what}: ${who} -> ${mode(p).toString(8)}`)
    }
    const got = ['write-file-atomic', 'statefile', 'statefile-sync'].map((w) => mode(path.join(dir, `${w}.conf`)))
    assert.deepEqual(got.map((m) => m.toString(8)), Array(3).fill(got[0].toString(8)), what)
  }
  // And the expected values, not only equal ones.
  fs.rmSync(path.join(dir, 'statefile.conf'))
  await writeFileAtomic(path.join(dir, 'statefile.conf'), 'x')
  assert.equal(mode(path.join(dir, 'statefile.conf')), 0o666 & ~umask)
  await writeFileAtomic(path.join(dir, 'statefile.conf'), 'x', { mode: 0o600 })
  assert.equal(mode(path.join(dir, 'statefile.conf')), 0o600)
  await writeFileAtomic(path.join(dir, 'statefile.conf'), 'y')
  assert.equal(mode(path.join(dir, 'statefile.conf')), 0o600, 'kept')
  // mode: false, as write-file-atomic's sync version reads it: no chmod, so the mode a
  // new file gets (its async version throws on it).
  writeFileAtomicSync(path.join(dir, 'statefile.conf'), 'z', { mode: false })
  assert.equal(mode(path.join(dir, 'statefile.conf')), 0o666 & ~umask)
})

test('chown: the given owner, else the replaced file\'s', async (t) => {
  if (!isRoot()) return t.skip('needs root to give files to another user')
  const dir = scratch(t)
  const p = path.join(dir, 'owned.json')
  await writeFileAtomic(p, '{}', { chown: { uid: 4242, gid: 4343 } })
  let st = fs.statSync(p)
  assert.deepEqual([st.uid, st.gid], [4242, 4343])
  writeFileAtomicSync(p, '{"a":1}')
  st = fs.statSync(p)
  assert.deepEqual([st.uid, st.gid], [4242, 4343], 'kept')
  await writeFileAtomic(p, '{}', { chown: false })
  st = fs.statSync(p)
  assert.deepEqual([st.uid, st.gid], [process.getuid(), process.getgid()], 'chown: false gives it the writer')
  // The real package agrees.
  const q = path.join(dir, 'theirs.json')
  await realWfa(q, '{}', { chown: { uid: 4242, gid: 4343 } })
  st = fs.statSync(q)
  assert.deepEqual([st.uid, st.gid], [4242, 4343])
})

test('callback style, .sync, fsync: false, and fs-style error codes', async (t) => {
  const dir = scratch(t)
  const p = path.join(dir, 'a.txt')
  await new Promise((resolve, reject) => writeFileAtomic(p, 'cb', (err) => err ? reject(err) : resolve()))
  assert.equal(fs.readFileSync(p, 'utf8'), 'cb')
  await new Promise((resolve, reject) => writeFileAtomic(p, 'cb2', { mode: 0o600 }, (err) => err ? reject(err) : resolve()))
  assert.equal(fs.readFileSync(p, 'utf8'), 'cb2')
  writeFileAtomic.sync(p, 'sync')
  assert.equal(fs.readFileSync(p, 'utf8'), 'sync')
  await writeFileAtomic(p, 'nosync', { fsync: false })
  assert.equal(fs.readFileSync(p, 'utf8'), 'nosync')

  const missing = path.join(dir, 'no-such-dir', 'a.txt')
  const err = await new Promise((resolve) => writeFileAtomic(missing, 'x', resolve))
  assert.ok(err instanceof StatefileError, String(err))
  assert.equal(err.code, 'ENOENT')
  await assert.rejects(writeFileAtomic(missing, 'x'), { code: 'ENOENT' })
  assert.throws(() => writeFileAtomicSync(missing, 'x'), { code: 'ENOENT' })
  assert.throws(() => writeFileAtomicSync(dir, 'x'), (e) => e instanceof StatefileError)
  assert.throws(() => writeFileAtomicSync(p, 'x', { tmpfileCreated: 'not a function' }), TypeError)
  assert.deepEqual(temps(dir), [])
})

test('tmpfileCreated: called with the temp file while it exists and is empty, awaited; a throw stops the write', async (t) => {
  const dir = scratch(t)
  const p = path.join(dir, 'servers.json')
  fs.writeFileSync(p, 'old')
  // What each variant's callback sees: the temp's directory, whether it exists, its size,
  // and the target's content at that moment.
  const look = (log) => (tmpfile) => {
    const st = fs.statSync(tmpfile)
    log.push({ dir: path.dirname(tmpfile), isFile: st.isFile(), size: st.size, target: fs.readFileSync(p, 'utf8') })
  }
  const theirs = []
  await realWfa(p, 'new', { tmpfileCreated: look(theirs) })
  fs.writeFileSync(p, 'old')
  realWfa.sync(p, 'new', { tmpfileCreated: look(theirs) })
  const ours = []
  const names = []
  fs.writeFileSync(p, 'old')
  await writeFileAtomic(p, 'new', { tmpfileCreated: (f) => { names.push(path.basename(f)); look(ours)(f) } })
  fs.writeFileSync(p, 'old')
  writeFileAtomicSync(p, 'new', { tmpfileCreated: (f) => { names.push(path.basename(f)); look(ours)(f) } })
  t.diagnostic(JSON.stringify({ theirs, ours }))
  assert.deepEqual(ours, theirs, 'the same view as write-file-atomic gives')
  assert.deepEqual(ours, [{ dir, isFile: true, size: 0, target: 'old' }, { dir, isFile: true, size: 0, target: 'old' }])
  for (const n of names) assert.match(n, /^\.servers\.json\.sf-[a-z2-7]{16}\.tmp$/)
  assert.notEqual(names[0], names[1])

  // The async variant awaits the callback: the write goes on only after it settled,
  // holding the file's lock meanwhile.
  let settled = false
  const slow = writeFileAtomic(p, 'after', {
    tmpfileCreated: async (f) => {
      await new Promise((resolve) => setTimeout(resolve, 100))
      assert.equal(fs.readFileSync(p, 'utf8'), 'new', 'not written before the callback settled')
      assert.ok(fs.existsSync(f))
      settled = true
    }
  })
  await sleep(20)
  await assert.rejects(new Doc(p, { lockTimeoutMs: 20, backups: 0 }).write({}), { code: 'LOCK_TIMEOUT' })
  await slow
  assert.ok(settled)
  assert.equal(fs.readFileSync(p, 'utf8'), 'after')

  // A throw or a rejection: that error, the temp removed, the file untouched; as with
  // write-file-atomic, whose behaviour is checked alongside.
  const boom = new Error('not now')
  for (const [who, write] of [
    ['statefile', (cb) => writeFileAtomic(p, 'x', { tmpfileCreated: cb })],
    ['statefile sync', async (cb) => writeFileAtomicSync(p, 'x', { tmpfileCreated: cb })],
    ['write-file-atomic', (cb) => realWfa(p, 'x', { tmpfileCreated: cb })]
  ]) {
    await assert.rejects(write(() => { throw boom }), (e) => e === boom, `${who}: a throw`)
    if (who !== 'statefile sync') {
      await assert.rejects(write(async () => { throw boom }), (e) => e === boom, `${who}: a rejection`)
    }
    assert.equal(fs.readFileSync(p, 'utf8'), 'after', who)
    assert.deepEqual(leftovers(dir), [], who)
  }
  // The sync variant does not await a returned Promise (nor does write-file-atomic's).
  let later = false
  writeFileAtomicSync(p, 'sync', { tmpfileCreated: async () => { await null; later = true } })
  assert.equal(later, false)
  assert.equal(fs.readFileSync(p, 'utf8'), 'sync')
  // A write of the same file from inside the callback would wait for itself.
  await assert.rejects(writeFileAtomic(p, 'x', { tmpfileCreated: () => writeFileAtomicSync(p, 'y') }), { code: 'DEADLOCK' })
  assert.equal(fs.readFileSync(p, 'utf8'), 'sync')
  assert.deepEqual(leftovers(dir), [])
})

test('concurrent calls on one file are serialized in call order: the last call\'s data stays', async (t) => {
  const dir = scratch(t)
  const p = path.join(dir, 'state.json')
  const calls = Array.from({ length: 40 }, (_, i) => writeFileAtomic(p, JSON.stringify({ i, pad: 'x'.repeat(i * 500) })))
  await Promise.all(calls)
  assert.equal(JSON.parse(fs.readFileSync(p, 'utf8')).i, 39)
  // Also through a relative path and a URL to the same file.
  const rel = path.relative(process.cwd(), p)
  await Promise.all([writeFileAtomic(p, '1'), writeFileAtomic(rel, '2'), writeFileAtomic(new URL(`file://${p}`), '3')])
  assert.equal(fs.readFileSync(p, 'utf8'), '3')
  assert.deepEqual(temps(dir), [])
})

test('a failed write removes its temp file and leaves the file untouched', async (t) => {
  const m = tmpfs(t, '128k')
  if (m.skip) return t.skip(m.skip)
  const p = path.join(m.dir, 'servers.json')
  await writeFileAtomic(p, 'original')
  const big = Buffer.alloc(256 * 1024, 'x')
  await assert.rejects(writeFileAtomic(p, big), (e) => e instanceof StatefileError && e.code === 'ENOSPC')
  assert.throws(() => writeFileAtomicSync(p, big), { code: 'ENOSPC' })
  assert.equal(fs.readFileSync(p, 'utf8'), 'original')
  assert.deepEqual(temps(m.dir), [])
})

test('the rename is made durable: the directory is fsynced after it (strace)', (t) => {
  if (spawnSync('strace', ['-V']).status !== 0) return t.skip('strace is not installed')
  const dir = scratch(t)
  const p = path.join(dir, 'servers.json')
  const log = path.join(dir, 'trace')
  const code = `const sf = require(${JSON.stringify(PKG)});
    sf.writeFileAtomic(process.argv[1], 'x'.repeat(5000)).then(() => sf.writeFileAtomicSync(process.argv[1], 'y'));`
  const r = spawnSync('strace', ['-f', '-y', '-o', log, '-e', 'trace=fsync,fdatasync,rename,renameat,renameat2', process.execPath, '-e', code, '--', p], { encoding: 'utf8' })
  assert.equal(r.status, 0, r.stderr)
  const lines = fs.readFileSync(log, 'utf8').split('\n')
    // With -f a call may be split in two lines; the first one has the arguments.
    .filter((l) => /fsync|rename/.test(l) && !/resumed/.test(l))
  const events = lines.map((l) => {
    if (/rename/.test(l) && l.includes('servers.json')) return 'rename'
    if (/fsync\(\d+<[^>]*\.servers\.json\.sf-[a-z2-7]{16}\.tmp>/.test(l)) return 'fsync temp'
    if (new RegExp(`fsync\\(\\d+<${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}>`).test(l)) return 'fsync dir'
    return null
  }).filter(Boolean)
  assert.deepEqual(events, ['fsync temp', 'rename', 'fsync dir', 'fsync temp', 'rename', 'fsync dir'], fs.readFileSync(log, 'utf8'))
})
