// Every exported signature of the package, used as a TypeScript user would under
// --strict, with the runtime shapes checked against the declared types: each
// `Record<keyof X, ...>` below must name exactly X's keys (the compiler checks that),
// and the values returned at runtime must have exactly those keys and field types.
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { pathToFileURL } from 'node:url'

import {
  Doc,
  Store,
  Transaction,
  StatefileError,
  writeFileAtomic,
  writeFileAtomicSync,
} from 'statefile'
import type {
  BackupInfo,
  CheckpointReport,
  JournalOptions,
  JournalStatus,
  TransactionOptions,
  TransactionResult,
  TxDocument,
  TxOp,
  TxResult,
  Deleted,
  DocOptions,
  ErrorCode,
  JsonValue,
  Receipt,
  Report,
  UpdateOptions,
  UpdateResult,
  Versioned,
  WriteFileAtomicOptions,
} from 'statefile'

type Kind = 'string' | 'number' | 'boolean' | 'object' | 'string|null' | 'object|null' | 'date' | 'any'

/** `v` has exactly the keys of `shape`, each of the kind given. */
function shaped<T extends object>(v: T, shape: Record<keyof T, Kind>, what: string): T {
  assert.deepEqual(Object.keys(v).sort(), Object.keys(shape).sort(), `${what}: keys`)
  for (const [k, kind] of Object.entries(shape) as [string, Kind][]) {
    const x = (v as Record<string, unknown>)[k]
    const ok =
      kind === 'any' ||
      (kind === 'date' && x instanceof Date) ||
      (kind === 'string|null' && (x === null || typeof x === 'string')) ||
      (kind === 'object|null' && (x === null || typeof x === 'object')) ||
      typeof x === kind
    assert.ok(ok, `${what}.${k} should be ${kind}, is ${JSON.stringify(x)}`)
  }
  return v
}

const receiptShape: Record<keyof Receipt, Kind> = {
  path: 'string', version: 'string', previous: 'string|null', bytes: 'number', durability: 'string',
  backup: 'string|null', created: 'boolean', unchanged: 'boolean', lockWaitMs: 'number',
  batch: 'number', queuedMs: 'number',
}
const receipt = (r: Receipt, what: string): Receipt => shaped(r, receiptShape, what)
const updated = <R>(r: UpdateResult<R>, what: string): UpdateResult<R> =>
  shaped(r, { ...receiptShape, result: 'any' } satisfies Record<keyof UpdateResult<R>, Kind>, what)
const versioned = <T>(v: Versioned<T>, what: string): Versioned<T> =>
  shaped(v, { value: 'any', version: 'string', recovered: 'object|null' } satisfies Record<keyof Versioned<T>, Kind>, what)
const backupShape: Record<keyof BackupInfo, Kind> = {
  number: 'number', path: 'string', version: 'string', len: 'number', modified: 'date', parses: 'boolean',
}
const deleted = (d: Deleted, what: string): Deleted =>
  shaped(d, { version: 'string', keptAs: 'string|null' } satisfies Record<keyof Deleted, Kind>, what)
type Finding = Report['findings'][number]
const findingShape: Record<keyof Finding, Kind> = {
  path: 'string', problem: 'string', detail: 'string|null', action: 'string', actionDetail: 'string|null', fixed: 'boolean',
}
function report(r: Report, what: string): Report {
  shaped(r, {
    healthy: 'boolean', needsRepair: 'boolean', documents: 'number', backups: 'number',
    withoutBackup: 'number', liveTemps: 'number', findings: 'object', journals: 'object',
  } satisfies Record<keyof Report, Kind>, what)
  r.findings.forEach((f, i) => shaped(f, findingShape, `${what}.findings[${i}]`))
  r.journals.forEach((j, i) => journal(j, `${what}.journals[${i}]`))
  return r
}
function journal(j: JournalStatus, what: string): JournalStatus {
  return shaped(j, {
    root: 'string', path: 'string', formatVersion: 'number', swap: 'boolean', capacity: 'number', checkpointLsn: 'number',
    endLsn: 'number', records: 'number', inFlight: 'number', toReplay: 'object', damage: 'object|null', syncFailed: 'boolean', needsRepair: 'boolean',
  } satisfies Record<keyof JournalStatus, Kind>, what)
}
const checkpointed = (c: CheckpointReport, what: string): CheckpointReport =>
  shaped(c, { freed: 'number', documents: 'number', directories: 'number', adopted: 'number' } satisfies Record<keyof CheckpointReport, Kind>, what)

interface Server { id: string; port: number }
interface Config { servers: Server[]; note?: string }

export async function main(dir: string): Promise<void> {
  const file = path.join(dir, 'servers.json')
  const options: DocOptions = { backups: 2, durability: 'full', lockTimeoutMs: 5000, createDirs: false, fallback: false }
  const doc = new Doc<Config>(file, options)
  const path1: string = doc.path
  assert.equal(path1, file)

  // Writes, each returning a Receipt.
  const created: Receipt = receipt(await doc.create({ servers: [] }), 'create')
  assert.equal(created.created, true)
  receipt(doc.writeSync({ servers: [{ id: 'a', port: 1 }] }), 'writeSync')
  const w: Receipt = receipt(await doc.write({ servers: [{ id: 'a', port: 2 }] }), 'write')
  receipt(await doc.writeIf(w.version, { servers: [{ id: 'a', port: 3 }], note: 'n' }), 'writeIf')
  receipt(doc.writeIfSync(doc.versionSync(), { servers: [] }), 'writeIfSync')

  // Reads.
  const value: Config = await doc.read()
  const valueSync: Config = doc.readSync()
  assert.deepEqual(value, valueSync)
  const v: Versioned<Config> = versioned(await doc.readVersioned(), 'readVersioned')
  versioned(doc.readVersionedSync(), 'readVersionedSync')
  const version: string = await doc.version()
  assert.equal(version, v.version)

  // Updates: the callback's result, sync or async, comes back typed.
  const u: UpdateResult<number> = updated(await doc.update((d) => { d.servers.push({ id: 'b', port: 4 }); return d.servers.length }), 'update')
  const n: number = u.result
  assert.equal(n, 1)
  const ua: UpdateResult<string> = updated(await doc.update(async (d) => { d.note = 'async'; return 'done' }, { timeoutMs: 1000 }), 'update async')
  const s1: string = ua.result
  assert.equal(s1, 'done')
  const us: UpdateResult<boolean> = updated(doc.updateSync((d) => d.servers.length > 0), 'updateSync')
  assert.equal(us.result, true)
  const uo: UpdateOptions<Config> = { default: () => ({ servers: [] }), timeoutMs: Infinity }
  updated(await new Doc<Config>(path.join(dir, 'fresh.json')).update((d) => { d.servers.push({ id: 'c', port: 5 }) }, uo), 'update default')

  // Backups, restore, delete.
  const backups: BackupInfo[] = await doc.backups()
  assert.ok(backups.length > 0)
  backups.forEach((b, i) => shaped(b, backupShape, `backups[${i}]`))
  doc.backupsSync().forEach((b, i) => shaped(b, backupShape, `backupsSync[${i}]`))
  receipt(await doc.restore(1), 'restore(number)')
  receipt(doc.restoreSync(backups[0]!.version), 'restoreSync(version)')
  receipt(await doc.restore(), 'restore()')
  const del: Deleted = deleted(await doc.delete(), 'delete')
  assert.ok(del.keptAs !== null)
  receipt(await doc.restore(), 'restore after delete')
  deleted(doc.deleteSync(), 'deleteSync')

  // Errors: StatefileError with typed fields; codes are ErrorCodes.
  try {
    await doc.read()
    assert.fail('the document was deleted')
  } catch (e) {
    assert.ok(e instanceof StatefileError && e instanceof Error)
    const code: ErrorCode | string = e.code
    const p: string | undefined = e.path
    const errno: string | undefined = e.errno
    const ver: string | undefined = e.version
    const ptr: string | undefined = e.pointer
    assert.equal(code, 'NOT_FOUND')
    assert.equal(p, file)
    assert.equal(errno, 'ENOENT')
    assert.equal(ver, undefined)
    assert.equal(ptr, undefined)
    assert.equal(e.name, 'StatefileError')
    assert.match(e.stack ?? '', /StatefileError: /)
  }
  const mine = new StatefileError('custom', { code: 'CONFLICT', version: 'v' })
  assert.equal(mine.version, 'v')

  // A URL path, and any JSON value.
  const any = new Doc<JsonValue>(pathToFileURL(path.join(dir, 'any.json')))
  receipt(any.writeSync([1, 'two', { three: null }, true]), 'JsonValue')
  const j: JsonValue = any.readSync()
  assert.deepEqual(j, [1, 'two', { three: null }, true])
  // Doc without a type argument: values are `any`.
  const loose = new Doc(path.join(dir, 'loose.json'))
  loose.writeSync({ x: 1 })
  assert.equal(loose.readSync().x, 1)

  // Stores.
  const store = new Store(pathToFileURL(path.join(dir, 'store')), { backups: 0 })
  const root: string = store.root
  assert.equal(root, path.join(dir, 'store'))
  const job = store.doc<{ id: number }>('jobs/1.json')
  receipt(await job.write({ id: 1 }), 'store doc write')
  const id: number = (await job.read()).id
  assert.equal(id, 1)
  const names: string[] = await store.list()
  assert.deepEqual(names, ['jobs/1.json'])
  assert.deepEqual(store.listSync('jobs/'), ['jobs/1.json'])
  report(await store.open(), 'open')
  report(store.openSync(), 'openSync')
  fs.writeFileSync(path.join(dir, 'store', 'jobs', '1.json'), '{"id": ')
  const bad: Report = report(await store.verify(), 'verify')
  assert.equal(bad.healthy, false)
  report(store.verifySync(), 'verifySync')
  report(await store.recover(), 'recover')
  report(store.recoverSync(), 'recoverSync')

  // Journal mode and transactions (the damaged job written again first).
  receipt(await job.write({ id: 1 }), 'rewrite')
  const jopts: JournalOptions = { capacity: 1 << 20, mode: 0o600, checkpointAgeMs: 60_000 }
  const on: JournalStatus = journal(await store.enableJournal(jopts), 'enableJournal')
  assert.equal(on.needsRepair, false)
  journal(store.enableJournalSync(), 'enableJournalSync')
  const ops: TxOp[] = [
    { op: 'put', doc: 'jobs/2.json', value: { id: 2 }, ifNoneMatch: '*' },
    { op: 'patch', doc: 'jobs/1.json', merge: { state: 'moved' }, ifMatch: await job.version() },
    { op: 'patch', doc: 'jobs/1.json', jsonPatch: [{ op: 'add', path: '/n', value: 1 }] },
    { op: 'append', doc: 'log.json', pointer: '/moves', value: 1 },
    { op: 'get', doc: 'jobs/1.json' },
  ]
  const results: TxResult[] = await store.transaction(ops)
  const txShape: Record<keyof TxResult, Kind> = { doc: 'string', op: 'string', version: 'string|null', value: 'any', index: 'number' }
  const pick = (r: TxResult): Partial<Record<keyof TxResult, Kind>> => Object.fromEntries(Object.keys(r).map((k) => [k, txShape[k as keyof TxResult]]))
  results.forEach((r, i) => shaped(r, pick(r) as Record<keyof TxResult, Kind>, `transaction[${i}]`))
  assert.equal(results[3]!.index, 0)
  assert.equal(results[4]!.value.state, 'moved')
  const synced: TxResult[] = store.transactionSync([{ op: 'delete', doc: 'jobs/2.json' }])
  assert.equal(synced[0]!.version, null)
  const both: Array<Versioned<{ id: number }> | null> = await store.readTx<{ id: number }>(['jobs/1.json', 'jobs/2.json'])
  versioned(both[0]!, 'readTx')
  assert.equal(both[0]!.value.id, 1)
  assert.equal(both[1], null)
  assert.equal(store.readTxSync(['jobs/1.json']).length, 1)
  const st: JournalStatus | null = await store.journalStatus()
  journal(st!, 'journalStatus')
  journal(store.journalStatusSync()!, 'journalStatusSync')
  report(await store.verify(), 'verify in journal mode')
  const topts: TransactionOptions = { timeoutMs: 5000 }
  const cb: TransactionResult<number> = await store.transaction(async (tx: Transaction) => {
    const attempt: number = tx.attempt
    assert.ok(attempt >= 1)
    const j = await tx.read<{ id: number }>('jobs/1.json')
    const rv: { value: { id: number }; version: string } | undefined = await tx.readVersioned<{ id: number }>('jobs/1.json')
    await tx.expect('jobs/1.json', rv!.version)
    await tx.expect('jobs/3.json', null)
    await tx.write('jobs/3.json', { id: 3 })
    return j!.id
  }, topts)
  shaped(cb, { result: 'number', documents: 'object' } satisfies Record<keyof TransactionResult<number>, Kind>, 'transaction(fn)')
  cb.documents.forEach((d: TxDocument, i) => shaped(d, { name: 'string', path: 'string', version: 'string|null', previous: 'string|null' } satisfies Record<keyof TxDocument, Kind>, `documents[${i}]`))
  const del3: TransactionResult<void> = await store.transaction(async (tx) => { await tx.delete('jobs/3.json') })
  assert.equal(del3.documents[0]!.version, null)
  checkpointed(await store.checkpoint(), 'checkpoint')
  checkpointed(store.checkpointSync(), 'checkpointSync')
  checkpointed(await store.disableJournal(), 'disableJournal')
  store.enableJournalSync()
  checkpointed(store.disableJournalSync(), 'disableJournalSync')

  // writeFileAtomic, in every form write-file-atomic takes.
  const out = path.join(dir, 'out.txt')
  const wopts: WriteFileAtomicOptions = { mode: 0o600, chown: false, encoding: 'utf8', fsync: true, lockTimeoutMs: 1000, tmpfileCreated: (t: string) => { assert.ok(fs.existsSync(t)) } }
  const done: Promise<void> = writeFileAtomic(out, 'a')
  await done
  await writeFileAtomic(out, Buffer.from('b'), wopts)
  await writeFileAtomic(pathToFileURL(out), new Uint8Array([99]), 'latin1')
  await new Promise<void>((resolve, reject) => { void writeFileAtomic(out, 'd', (err?: Error) => err ? reject(err) : resolve()) })
  await new Promise<void>((resolve, reject) => { void writeFileAtomic(out, 'e', { mode: false }, (err?: Error) => err ? reject(err) : resolve()) })
  await writeFileAtomic(out, 'f', { tmpfileCreated: async () => { await new Promise((r) => setTimeout(r, 1)) } })
  const nothing: void = writeFileAtomicSync(out, 'g', { encoding: 'hex', mode: 0o644 })
  assert.equal(nothing, undefined)
  writeFileAtomic.sync(out, 'h')
  writeFileAtomicSync(out, '6869', 'hex')
  assert.equal(fs.readFileSync(out, 'utf8'), 'hi')
}

/** Misuse the compiler must refuse (never called: each line is a type error). */
export function typeErrors(doc: Doc<Config>, store: Store): void {
  // @ts-expect-error: not a Config
  void doc.write({ servers: 'none' })
  // @ts-expect-error: writeIf takes the version first
  doc.writeIfSync({ servers: [] }, 'v')
  // @ts-expect-error: the default must be a Config
  void doc.update(() => undefined, { default: { servers: 1 } })
  // @ts-expect-error: updateSync's callback gets a Config
  doc.updateSync((d: string) => d)
  // @ts-expect-error: durability is 'full', 'data' or 'none'
  void new Doc('x.json', { durability: 'fast' })
  // @ts-expect-error: restore takes a number or a version
  void doc.restore({ n: 1 })
  // @ts-expect-error: a store's documents are named by strings
  store.doc(1)
  // @ts-expect-error: mode is a number or false
  void writeFileAtomic('x', 'x', { mode: '0600' })
  // @ts-expect-error: an unknown op
  void store.transaction([{ op: 'frobnicate', doc: 'a.json' }])
  // @ts-expect-error: a put needs a value
  void store.transaction([{ op: 'put', doc: 'a.json' }])
  // @ts-expect-error: the CLI's spelling is not this package's
  void store.transaction([{ op: 'delete', doc: 'a.json', if_match: 'v' }])
  // @ts-expect-error: ifNoneMatch takes only '*'
  store.transactionSync([{ op: 'delete', doc: 'a.json', ifNoneMatch: true }])
  // @ts-expect-error: a transaction callback's tx has no update
  void store.transaction(async (tx) => { await tx.update('a.json') })
  // @ts-expect-error: expect takes a version or null
  void store.transaction(async (tx) => { await tx.expect('a.json', undefined) })
  // @ts-expect-error: readTx takes names
  void store.readTx('a.json')
  // @ts-expect-error: chown needs both ids
  writeFileAtomicSync('x', 'x', { chown: { uid: 1 } })
}
