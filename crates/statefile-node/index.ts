/**
 * statefile for Node.js: JSON state files that are written atomically and durably,
 * updated under a lock that works across threads and processes, versioned, backed up
 * and recovered after damage. Every file operation is a call into the statefile Rust
 * library (`native.d.ts`); this module turns values into JSON and back, checks them,
 * and turns failures into `StatefileError`s.
 *
 * Promise methods run on worker threads: the event loop never waits for file I/O, an
 * fsync or a lock. `...Sync` variants run on the calling thread, for scripts.
 */
import { getSystemErrorName } from 'node:util'
import { resolve as resolvePath } from 'node:path'
import { fileURLToPath } from 'node:url'

import * as native from './native'

/** Any value JSON can hold. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue }

/** Error codes of `StatefileError`, one per kind of failure of the library. */
export type ErrorCode =
  | 'NOT_FOUND'
  | 'CORRUPT'
  | 'CONFLICT'
  | 'LOCK_TIMEOUT'
  | 'NO_SPACE'
  | 'PERMISSION_DENIED'
  | 'INVALID_NAME'
  | 'DURABILITY'
  | 'SERIALIZE'
  | 'IO'

interface NativeFailure {
  code: ErrorCode | 'INVALID_ARGUMENT'
  message: string
  path?: string
  version?: string
  errno?: number
  pointer?: string
}

/**
 * A failure of a statefile operation. `code` says what kind (branch on it); `path` is
 * the file concerned; `version` the version found (for `CONFLICT`: the current one;
 * for `DURABILITY`: the version that was written but may not survive a power loss;
 * for `CORRUPT`: the damaged one); `errno` the operating system's error name
 * (`'ENOENT'`, `'EACCES'`, `'ENOSPC'`, ...) when one is underneath.
 */
export class StatefileError extends Error {
  readonly code: ErrorCode | string
  readonly path?: string
  readonly version?: string
  readonly errno?: string
  /** For a number JavaScript cannot hold exactly: where it is (a JSON Pointer). */
  readonly pointer?: string

  constructor(message: string, fields: { code: ErrorCode | string; path?: string; version?: string; errno?: string; pointer?: string }) {
    super(message)
    this.name = 'StatefileError'
    this.code = fields.code
    if (fields.path !== undefined) this.path = fields.path
    if (fields.version !== undefined) this.version = fields.version
    if (fields.errno !== undefined) this.errno = fields.errno
    if (fields.pointer !== undefined) this.pointer = fields.pointer
  }
}

function errnoName(errno: number | undefined): string | undefined {
  if (errno === undefined) return undefined
  try {
    return getSystemErrorName(-Math.abs(errno))
  } catch {
    return undefined
  }
}

function toError(f: NativeFailure): StatefileError {
  return new StatefileError(f.message, {
    code: f.code,
    path: f.path,
    version: f.version,
    // A missing document is ENOENT to fs-minded code even where no OS error is kept.
    errno: errnoName(f.errno) ?? (f.code === 'NOT_FOUND' ? 'ENOENT' : undefined),
    pointer: f.pointer,
  })
}

type Envelope<T> = { ok: T } | { error: NativeFailure } | { aborted: true }

function unwrap<T>(text: string): T {
  const r = JSON.parse(text) as Envelope<T>
  if ('ok' in r) return r.ok
  if ('error' in r) {
    if (r.error.code === 'INVALID_ARGUMENT') throw new TypeError(`statefile: ${r.error.message}`)
    throw toError(r.error)
  }
  throw new StatefileError('the update was abandoned; nothing was written', { code: 'IO' })
}

// ---------------------------------------------------------------------------------
// Values to JSON, refusing what JSON cannot hold instead of changing it

function describe(v: unknown): string {
  if (typeof v === 'bigint') return `the BigInt ${v}n`
  if (typeof v === 'function') return 'a function'
  if (typeof v === 'symbol') return 'a symbol'
  if (typeof v === 'number') return `the number ${v}`
  if (v === undefined) return 'undefined'
  if (v instanceof Map) return 'a Map'
  if (v instanceof Set) return 'a Set'
  if (Array.isArray(v)) return 'an array'
  if (v !== null && typeof v === 'object') return 'an object'
  return String(v)
}

/** Why `v` (after `toJSON`) cannot be stored at this place, or `undefined` if it can. */
function refusal(v: unknown, inArray: boolean, top: boolean): string | undefined {
  switch (typeof v) {
    case 'bigint':
      return 'JSON has no BigInt (store it as a string, or as a number if it fits)'
    case 'function':
    case 'symbol':
      return 'it is not JSON'
    case 'number':
      return Number.isFinite(v) ? undefined : 'JSON has no NaN or Infinity'
    case 'undefined':
      if (top) return 'undefined is not JSON'
      return inArray ? 'JSON has no undefined (an array would store null instead)' : undefined
    case 'object':
      if (v instanceof Map || v instanceof Set) return 'its entries would be lost (JSON.stringify writes {}); convert it first'
      return undefined
    default:
      return undefined
  }
}

function pointerToken(key: string): string {
  return key.replace(/~/g, '~0').replace(/\//g, '~1')
}

/** Find where in `root` the refused value is, for the error message. */
function locate(root: unknown): { pointer: string; value: unknown; why: string } | undefined {
  const seen = new Set<unknown>()
  const visit = (holder: unknown, key: string, raw: unknown, pointer: string, inArray: boolean, top: boolean): ReturnType<typeof locate> => {
    let v = raw
    if (v !== null && typeof v === 'object' && typeof (v as { toJSON?: unknown }).toJSON === 'function') {
      v = (v as { toJSON: (k: string) => unknown }).toJSON.call(holder, key)
    }
    const why = refusal(v, inArray, top)
    if (why !== undefined) return { pointer, value: v, why }
    if (v === null || typeof v !== 'object') return undefined
    if (seen.has(v)) return { pointer, value: v, why: 'it contains itself (a cycle)' }
    seen.add(v)
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) {
        const r = visit(v, String(i), v[i], `${pointer}/${i}`, true, false)
        if (r) return r
      }
    } else {
      for (const k of Object.keys(v)) {
        const r = visit(v, k, (v as Record<string, unknown>)[k], `${pointer}/${pointerToken(k)}`, false, false)
        if (r) return r
      }
    }
    seen.delete(v)
    return undefined
  }
  return visit({ '': root }, '', root, '', false, true)
}

class Refused extends Error {}

/**
 * `value` as JSON text, or a TypeError before any file is touched if it is not JSON:
 * a BigInt, a cycle, a function or symbol, NaN or Infinity, a Map or Set, `undefined`
 * at the top or in an array. `undefined` properties of objects are left out, as
 * `JSON.stringify` does (reading the property back gives `undefined` again); `toJSON`
 * methods (Dates, Buffers) are honoured.
 */
function toJson(value: unknown, what = 'the value'): string {
  let text: string | undefined
  try {
    text = JSON.stringify(value, function (this: unknown, _key: string, v: unknown) {
      if (refusal(v, Array.isArray(this), false) !== undefined) throw new Refused()
      return v
    })
  } catch (e) {
    if (!(e instanceof Refused) && !(e instanceof TypeError)) throw e
    const found = locate(value)
    if (found === undefined) throw new TypeError(`statefile: cannot store ${what}: ${(e as Error).message}`)
    const at = found.pointer === '' ? '' : ` at ${found.pointer}`
    throw new TypeError(`statefile: cannot store ${what}: ${describe(found.value)}${at}: ${found.why}`)
  }
  if (text === undefined) {
    throw new TypeError(`statefile: cannot store ${what}: ${describe(value)} is not JSON`)
  }
  return text
}

// ---------------------------------------------------------------------------------
// Documents

/** Options of a `Doc` (and, as defaults for its documents, of a `Store`). */
export interface DocOptions {
  /** Previous versions kept as `.name.bak`, `.name.bak.2`, ... (default 1; 0 for none). */
  backups?: number
  /**
   * `'full'` (default): fsync the file, rename, fsync the directory; a write that
   * returned survives a power loss. `'data'`: no directory fsync (a power loss may roll
   * the write back, never tear it). `'none'`: no fsync (a process crash is still safe;
   * a power loss may leave an empty file).
   */
  durability?: 'full' | 'data' | 'none'
  /** How long a write waits for the document's lock before `LOCK_TIMEOUT` (default 10000). */
  lockTimeoutMs?: number
  /** Create missing parent directories on write (default false; a Store's default is true). */
  createDirs?: boolean
  /** Reads of a damaged document return its newest good backup (marked `recovered`). */
  fallback?: boolean
}

/** What a write did. */
export interface Receipt {
  /** The file written (symlinks resolved). */
  path: string
  /** The version now on disk: the SHA-256 of its bytes, also usable as an HTTP ETag. */
  version: string
  /** The version it replaced, when known. */
  previous: string | null
  bytes: number
  durability: 'full' | 'data' | 'none'
  /** Where the replaced version was kept, if a backup was made. */
  backup: string | null
  created: boolean
  /** The bytes were the same as before (still written and synced). */
  unchanged: boolean
  /** How long the write waited for the lock. */
  lockWaitMs: number
}

/** `Doc.update`'s answer: the receipt of the write and what the callback returned. */
export interface UpdateResult<R> extends Receipt {
  result: R
}

/** A value with the version it was read at. */
export interface Versioned<T> {
  value: T
  version: string
  /** Set when the document was damaged and this came from a backup (option `fallback`). */
  recovered: { backup: number; path: string; damagedVersion: string; reason: string } | null
}

/** What `Doc.delete` did. */
export interface Deleted {
  version: string
  /** `.name.bak` (restorable), `.name.corrupt`, or null when backups are off. */
  keptAs: string | null
}

/** One kept previous version. */
export interface BackupInfo {
  /** 1 for the newest. */
  number: number
  path: string
  version: string
  len: number
  modified: Date
  /** Whether it is valid JSON (only those are restored). */
  parses: boolean
}

/** What `Store.verify`/`recover`/`open` found, and did. */
export interface Report {
  healthy: boolean
  needsRepair: boolean
  documents: number
  backups: number
  withoutBackup: number
  liveTemps: number
  findings: Array<{
    path: string
    problem: 'stale-temp' | 'corrupt-document' | 'corrupt-backup' | 'unreadable' | 'other'
    detail: string | null
    action: 'none' | 'removed' | 'restored' | 'moved-aside' | 'would' | 'failed' | 'other'
    actionDetail: string | null
    fixed: boolean
  }>
}

/** Options of `Doc.update`. */
export interface UpdateOptions<T> {
  /** Start from this value (or what this function returns) when the document does not exist. */
  default?: T | (() => T)
}

function checkOptions(o: DocOptions | undefined, where: string): native.DocOptions {
  if (o === undefined || o === null) return {}
  if (typeof o !== 'object') throw new TypeError(`${where}: options must be an object`)
  const out: native.DocOptions = {}
  if (o.backups !== undefined) {
    if (!Number.isSafeInteger(o.backups) || o.backups < 0 || o.backups > 0xffffffff) {
      throw new TypeError(`${where}: backups must be an integer >= 0, not ${String(o.backups)}`)
    }
    out.backups = o.backups
  }
  if (o.durability !== undefined) {
    if (!['full', 'data', 'none'].includes(o.durability)) {
      throw new TypeError(`${where}: durability must be 'full', 'data' or 'none', not ${String(o.durability)}`)
    }
    out.durability = o.durability
  }
  if (o.lockTimeoutMs !== undefined) {
    if (typeof o.lockTimeoutMs !== 'number' || !(o.lockTimeoutMs >= 0) || !Number.isFinite(o.lockTimeoutMs)) {
      throw new TypeError(`${where}: lockTimeoutMs must be a finite number >= 0, not ${String(o.lockTimeoutMs)}`)
    }
    out.lockTimeoutMs = o.lockTimeoutMs
  }
  if (o.createDirs !== undefined) out.createDirs = Boolean(o.createDirs)
  if (o.fallback !== undefined) out.fallback = Boolean(o.fallback)
  return out
}

function pathOf(p: string | URL, where: string): string {
  if (p instanceof URL) return fileURLToPath(p)
  if (typeof p !== 'string') throw new TypeError(`${where}: the path must be a string or a file: URL`)
  if (p.includes('\0')) throw new TypeError(`${where}: the path contains a NUL character`)
  return p
}

function isThenable(v: unknown): boolean {
  return v !== null && (typeof v === 'object' || typeof v === 'function') && typeof (v as { then?: unknown }).then === 'function'
}

function defaultJson<T>(o: UpdateOptions<T> | undefined): string | null {
  if (o === undefined || o === null || o.default === undefined) return null
  const d = typeof o.default === 'function' ? (o.default as () => T)() : o.default
  return toJson(d, 'the default value')
}

function restoreRef(ref: number | string | undefined): string {
  if (ref === undefined) return ''
  if (typeof ref === 'number') {
    if (!Number.isSafeInteger(ref) || ref < 1) throw new TypeError(`restore: a backup number is an integer >= 1, not ${ref}`)
    return String(ref)
  }
  if (typeof ref !== 'string' || ref === '' || /^[0-9]+$/.test(ref)) {
    throw new TypeError('restore: pass a backup number (1 = newest), a version string, or nothing for the newest good backup')
  }
  return ref
}

function toBackups(list: Array<Omit<BackupInfo, 'modified'> & { modifiedMs: number }>): BackupInfo[] {
  return list.map(({ modifiedMs, ...b }) => ({ ...b, modified: new Date(modifiedMs) }))
}

/** Set only while `Store.doc` constructs a `Doc` around a handle of its own. */
let storeHandle: native.NativeDoc | undefined

/**
 * One JSON document. Reads need no lock and always see a complete version. Writes take
 * the document's lock (`.name.json.lock`, shared with every other statefile program,
 * in any language), write a unique temp file beside it, fsync it, rename it over the
 * document and fsync the directory.
 *
 * ```ts
 * const doc = new Doc<Config>('servers.json', { createDirs: true })
 * await doc.update(async (data) => { data.servers.push(server) }, { default: { servers: [] } })
 * ```
 */
export class Doc<T = any> {
  readonly #native: native.NativeDoc

  constructor(path: string | URL, options?: DocOptions) {
    if (storeHandle !== undefined) {
      this.#native = storeHandle
      return
    }
    const p = pathOf(path, 'new Doc')
    const opts = checkOptions(options, 'new Doc')
    try {
      this.#native = new native.NativeDoc(p, opts)
    } catch (e) {
      const message = (e as Error).message
      if (message.startsWith('{')) throw unwrapThrown(message)
      throw new TypeError(`new Doc: ${message}`)
    }
  }

  /** The path the document was opened with. */
  get path(): string {
    return this.#native.path
  }

  /** The value. `NOT_FOUND` if it does not exist; `CORRUPT` if it is damaged (unless `fallback`). */
  async read(): Promise<T> {
    return (await this.readVersioned()).value
  }

  readSync(): T {
    return this.readVersionedSync().value
  }

  /** The value with its version (for `writeIf`, or an ETag). */
  async readVersioned(): Promise<Versioned<T>> {
    return unwrap<Versioned<T>>(await this.#native.read())
  }

  readVersionedSync(): Versioned<T> {
    return unwrap<Versioned<T>>(this.#native.readSync())
  }

  /** Replace the document with `value`, atomically and durably. */
  async write(value: T): Promise<Receipt> {
    const json = toJson(value)
    return unwrap<Receipt>(await this.#native.write(json))
  }

  writeSync(value: T): Receipt {
    return unwrap<Receipt>(this.#native.writeSync(toJson(value)))
  }

  /** Compare-and-swap: `CONFLICT` (with the current `version`) unless it is still at `version`. */
  async writeIf(version: string, value: T): Promise<Receipt> {
    const json = toJson(value)
    return unwrap<Receipt>(await this.#native.writeIf(String(version), json))
  }

  writeIfSync(version: string, value: T): Receipt {
    return unwrap<Receipt>(this.#native.writeIfSync(String(version), toJson(value)))
  }

  /** Write only if the document does not exist yet (`CONFLICT` otherwise). */
  async create(value: T): Promise<Receipt> {
    const json = toJson(value)
    return unwrap<Receipt>(await this.#native.create(json))
  }

  createSync(value: T): Receipt {
    return unwrap<Receipt>(this.#native.createSync(toJson(value)))
  }

  /** Delete it (moved to `.name.bak` when backups are on, so `restore` undoes it). */
  async delete(): Promise<Deleted> {
    return unwrap<Deleted>(await this.#native.delete())
  }

  deleteSync(): Deleted {
    return unwrap<Deleted>(this.#native.deleteSync())
  }

  /** The current version (SHA-256 of the file). */
  async version(): Promise<string> {
    return unwrap<string>(await this.#native.version())
  }

  versionSync(): string {
    return unwrap<string>(this.#native.versionSync())
  }

  /** The kept previous versions, newest first. */
  async backups(): Promise<BackupInfo[]> {
    return toBackups(unwrap(await this.#native.backups()))
  }

  backupsSync(): BackupInfo[] {
    return toBackups(unwrap(this.#native.backupsSync()))
  }

  /** Restore a backup: by number (1 = newest), by version, or the newest good one. */
  async restore(ref?: number | string): Promise<Receipt> {
    return unwrap<Receipt>(await this.#native.restore(restoreRef(ref)))
  }

  restoreSync(ref?: number | string): Receipt {
    return unwrap<Receipt>(this.#native.restoreSync(restoreRef(ref)))
  }

  /**
   * Locked read-modify-write. `fn` gets the current value and changes it in place; it
   * may be async. The document stays locked (against every writer, in this process and
   * others) until `fn` settles; then the changed value is written. If `fn` throws or
   * rejects, nothing is written and `update` rejects with that error. Resolves to the
   * write's receipt and `result`, what `fn` returned.
   *
   * `NOT_FOUND` if the document does not exist and no `default` is given; `CORRUPT` if
   * it is damaged (restore it first); `LOCK_TIMEOUT` if the lock is not free in time.
   * A write to the same document from inside `fn` waits for the lock `fn` holds, and so
   * ends in `LOCK_TIMEOUT`: change `data` instead. A number JavaScript cannot hold
   * exactly makes the update fail (`SERIALIZE`) before `fn` runs, rather than round it.
   */
  async update<R>(fn: (data: T) => R | Promise<R>, options?: UpdateOptions<T>): Promise<UpdateResult<Awaited<R>>> {
    if (typeof fn !== 'function') throw new TypeError('update: the callback must be a function')
    const start = defaultJson(options)
    const session = await this.#native.beginUpdate(start)
    const { value } = unwrap<{ value: T }>(session.current)
    let result: Awaited<R>
    let json: string
    try {
      result = await fn(value)
      json = toJson(value, 'the updated value')
    } catch (e) {
      await session.abort()
      throw e
    }
    const receipt = unwrap<Receipt>(await session.commit(json))
    return { ...receipt, result }
  }

  /** As `update`, on the calling thread; `fn` must be synchronous. */
  updateSync<R>(fn: (data: T) => R, options?: UpdateOptions<T>): UpdateResult<R> {
    if (typeof fn !== 'function') throw new TypeError('updateSync: the callback must be a function')
    const start = defaultJson(options)
    let thrown: { error: unknown } | undefined
    let result: R | undefined
    const text = this.#native.updateSync(start, (current: string): string | null => {
      try {
        const { value } = JSON.parse(current) as { value: T }
        result = fn(value)
        if (isThenable(result)) {
          throw new TypeError('updateSync: the callback returned a Promise; use update() for async callbacks')
        }
        return toJson(value, 'the updated value')
      } catch (e) {
        thrown = { error: e }
        return null
      }
    })
    if (thrown !== undefined) throw thrown.error
    return { ...unwrap<Receipt>(text), result: result as R }
  }
}

function unwrapThrown(message: string): StatefileError {
  try {
    unwrap(message)
  } catch (e) {
    if (e instanceof StatefileError) return e
  }
  return new StatefileError(message, { code: 'IO' })
}

// ---------------------------------------------------------------------------------
// Stores

/**
 * A directory tree of documents. It is opened (and cleaned up after crashed writers)
 * on its first operation, off the event loop; `open()` does that explicitly and says
 * what it found.
 */
export class Store {
  readonly #native: native.NativeStore
  readonly root: string

  constructor(root: string | URL, options?: DocOptions) {
    this.root = pathOf(root, 'new Store')
    this.#native = new native.NativeStore(this.root, checkOptions(options, 'new Store'))
  }

  /** The document `name` (relative, `/`-separated, e.g. `'jobs/42.json'`). */
  doc<T = any>(name: string): Doc<T> {
    if (typeof name !== 'string') throw new TypeError('Store.doc: the name must be a string')
    storeHandle = this.#native.doc(name)
    try {
      return new Doc<T>(name)
    } finally {
      storeHandle = undefined
    }
  }

  /** Open the store now; what recovery found and cleaned. */
  async open(): Promise<Report> {
    return unwrap<Report>(await this.#native.open())
  }

  openSync(): Report {
    return unwrap<Report>(this.#native.openSync())
  }

  /** The names of the documents starting with `prefix`, sorted. */
  async list(prefix = ''): Promise<string[]> {
    return unwrap<string[]>(await this.#native.list(String(prefix)))
  }

  listSync(prefix = ''): string[] {
    return unwrap<string[]>(this.#native.listSync(String(prefix)))
  }

  /** Check every document, temp file and backup; changes nothing. */
  async verify(): Promise<Report> {
    return unwrap<Report>(await this.#native.verify())
  }

  verifySync(): Report {
    return unwrap<Report>(this.#native.verifySync())
  }

  /** Repair what `verify` reports: remove dead temps, restore damaged documents. */
  async recover(): Promise<Report> {
    return unwrap<Report>(await this.#native.recover())
  }

  recoverSync(): Report {
    return unwrap<Report>(this.#native.recoverSync())
  }
}

// ---------------------------------------------------------------------------------
// writeFileAtomic: write-file-atomic's API on statefile's protocol

/** `write-file-atomic`'s options. */
export interface WriteFileAtomicOptions {
  /** Owner to give the file; default: the replaced file's. `false`: the writer's own. */
  chown?: { uid: number; gid: number } | false
  /** Permission bits; default: the replaced file's, or 0o666 less the umask. `false`: the latter. */
  mode?: number | false
  /** For string data (default `'utf8'`). */
  encoding?: BufferEncoding
  /** `false`: no fsync of the file (nor of its directory). Default true. */
  fsync?: boolean
  /** How long to wait for another writer of the same file (default 60000 ms). */
  lockTimeoutMs?: number
}

type Data = string | NodeJS.ArrayBufferView | null | undefined | { toString(): string }

function atomicArgs(filename: string | URL, data: Data, options: WriteFileAtomicOptions | BufferEncoding | undefined, where: string): [string, Buffer, native.AtomicOptions] {
  const path = pathOf(filename, where)
  const o: WriteFileAtomicOptions = typeof options === 'string' ? { encoding: options } : options ?? {}
  if (typeof o !== 'object') throw new TypeError(`${where}: options must be an object or an encoding`)
  if ((o as { tmpfileCreated?: unknown }).tmpfileCreated !== undefined) {
    throw new TypeError(`${where}: the tmpfileCreated option is not supported (the temp file is created and removed inside statefile)`)
  }
  let bytes: Buffer
  if (ArrayBuffer.isView(data)) {
    bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  } else if (data === null || data === undefined) {
    bytes = Buffer.alloc(0)
  } else {
    bytes = Buffer.from(String(data), o.encoding ?? 'utf8')
  }
  const out: native.AtomicOptions = { lockTimeoutMs: 60_000, createMode: 0o666 }
  if (typeof o.mode === 'number' && o.mode !== 0) {
    out.mode = o.mode
  } else if (o.mode === false || o.mode === 0) {
    // write-file-atomic then leaves the temp file's mode as open(2) made it.
    out.mode = 0o666 & ~process.umask()
  } else if (o.mode !== undefined && o.mode !== null) {
    throw new TypeError(`${where}: mode must be a number or false`)
  }
  if (o.chown) {
    const { uid, gid } = o.chown
    if (!Number.isSafeInteger(uid) || !Number.isSafeInteger(gid) || uid < 0 || gid < 0) {
      throw new TypeError(`${where}: chown must be { uid, gid } with integer ids`)
    }
    out.uid = uid
    out.gid = gid
  } else if (o.chown === false && process.getuid && process.getgid) {
    out.uid = process.getuid()
    out.gid = process.getgid()
  }
  if (o.fsync === false) out.fsync = false
  if (o.lockTimeoutMs !== undefined) out.lockTimeoutMs = checkOptions({ lockTimeoutMs: o.lockTimeoutMs }, where).lockTimeoutMs
  return [path, bytes, out]
}

const FS_CODES: Record<string, string> = { NOT_FOUND: 'ENOENT', NO_SPACE: 'ENOSPC', PERMISSION_DENIED: 'EACCES' }

/**
 * As fs errors do, `code` is the OS error name (`'ENOENT'`, `'EACCES'`, ...): the one
 * underneath, or the usual one for the kind of failure.
 */
function fsStyle(e: unknown): unknown {
  if (e instanceof StatefileError) {
    const code = e.errno ?? FS_CODES[e.code]
    if (code !== undefined) {
      return new StatefileError(e.message, { code, path: e.path, version: e.version, errno: code })
    }
  }
  return e
}

/** The pending writeFileAtomic calls of each file (by absolute path), in call order. */
const queues = new Map<string, Promise<void>>()

/**
 * `write-file-atomic`'s `writeFile(filename, data, options?, callback?)`, on statefile's
 * protocol: the data goes to a unique temp file beside `filename` that gets the old
 * file's owner and mode (or `options.chown` / `options.mode`), is fsynced, renamed over
 * `filename`, and then the directory is fsynced too (which write-file-atomic never
 * does, so its rename can be lost to a power loss). Concurrent calls on one file, in
 * this process or another, are serialized by the file's lock (`.name.lock` beside it).
 * On failure the temp file is removed and the file is untouched. Returns a Promise;
 * with a callback, also calls it with the error or nothing.
 */
export function writeFileAtomic(filename: string | URL, data: Data, options?: WriteFileAtomicOptions | BufferEncoding | ((err?: Error) => void), callback?: (err?: Error) => void): Promise<void> {
  if (typeof options === 'function') {
    callback = options
    options = undefined
  }
  const run = async (): Promise<void> => {
    const [path, bytes, opts] = atomicArgs(filename, data, options as WriteFileAtomicOptions | BufferEncoding | undefined, 'writeFileAtomic')
    const key = resolvePath(path)
    // Calls on one file take turns in call order, as write-file-atomic's do, so the
    // last call's data is what stays; the lock alone would not keep that order.
    const before = queues.get(key) ?? Promise.resolve()
    let done!: () => void
    const mine = new Promise<void>((resolve) => { done = resolve })
    const tail = before.then(() => mine)
    queues.set(key, tail)
    try {
      await before
      unwrap(await native.writeFileAtomic(path, bytes, opts))
    } catch (e) {
      throw fsStyle(e)
    } finally {
      done()
      if (queues.get(key) === tail) queues.delete(key)
    }
  }
  const promise = run()
  if (callback) {
    const cb = callback
    return promise.then(
      () => cb(),
      (e: Error) => cb(e),
    )
  }
  return promise
}

/** `write-file-atomic`'s `writeFileSync`: as `writeFileAtomic`, on the calling thread. */
export function writeFileAtomicSync(filename: string | URL, data: Data, options?: WriteFileAtomicOptions | BufferEncoding): void {
  const [path, bytes, opts] = atomicArgs(filename, data, options, 'writeFileAtomicSync')
  try {
    unwrap(native.writeFileAtomicSync(path, bytes, opts))
  } catch (e) {
    throw fsStyle(e)
  }
}

// `require('write-file-atomic').sync` has a twin here too.
writeFileAtomic.sync = writeFileAtomicSync
