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
import { AsyncLocalStorage } from 'node:async_hooks'
import { randomUUID } from 'node:crypto'
import { getSystemErrorName, types } from 'node:util'
import { resolve as resolvePath } from 'node:path'
import { fileURLToPath } from 'node:url'

import * as native from './native'

/** Any value JSON can hold. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue }

/**
 * Error codes of `StatefileError`: one per kind of failure of the library
 * (`NOT_APPLICABLE`: a transaction's patch or append that does not apply to the
 * document as it is), and two of this package's own: `UPDATE_TIMEOUT` (an `update`
 * callback did not settle within its `timeoutMs`) and `DEADLOCK` (a call that would
 * wait for a lock its own caller holds).
 */
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
  | 'NOT_APPLICABLE'
  | 'UPDATE_TIMEOUT'
  | 'DEADLOCK'

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
  /** For a number neither a JavaScript number nor a BigInt holds exactly: where it is (a JSON Pointer). */
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

/** A value as the native side shows it: `bigints` lists where it gave an integer as text. */
type Shown<T> = { value: T; bigints?: string[] }

/**
 * Make BigInts of the integers the native side gave as strings of digits (at the JSON
 * Pointers in `bigints`): those a JavaScript number would round (beyond 2^53, or like
 * 2^60, whose double prints as 1152921504606847000). Returns `shown` without `bigints`.
 */
function withBigInts<R extends Shown<unknown>>(shown: R): Omit<R, 'bigints'> {
  const { bigints, ...rest } = shown
  if (bigints === undefined) return rest
  for (const pointer of bigints) {
    if (pointer === '') {
      rest.value = BigInt(rest.value as string)
      continue
    }
    const tokens = pointer.slice(1).split('/').map((t) => t.replace(/~1/g, '/').replace(/~0/g, '~'))
    const last = tokens.pop() as string
    let parent = rest.value as Record<string, unknown>
    for (const t of tokens) parent = parent[t] as Record<string, unknown>
    // Redefined, not assigned: a key like `__proto__` stays plain data, in its place.
    Object.defineProperty(parent, last, { value: BigInt(parent[last] as string), writable: true, enumerable: true, configurable: true })
  }
  return rest
}

function unwrap<T>(text: string): T {
  return settle(JSON.parse(text) as Envelope<T>)
}

function settle<T>(r: Envelope<T>): T {
  if ('ok' in r) return r.ok
  if ('error' in r) {
    if (r.error.code === 'INVALID_ARGUMENT') throw new TypeError(`statefile: ${r.error.message}`)
    throw toError(r.error)
  }
  throw new StatefileError('the update was abandoned; nothing was written', { code: 'IO' })
}

// ---------------------------------------------------------------------------------
// Values to JSON, refusing what JSON cannot hold instead of changing it

/** The deepest nesting of arrays and objects statefile writes (and so reads back). */
const MAX_DEPTH = 127

function describe(v: unknown): string {
  if (typeof v === 'bigint') return `the BigInt ${v}n`
  if (typeof v === 'function') return 'a function'
  if (typeof v === 'symbol') return 'a symbol'
  if (typeof v === 'number') return `the number ${v}`
  if (typeof v === 'string') return 'a string'
  if (v === undefined) return 'undefined'
  if (Array.isArray(v)) return 'an array'
  if (v !== null && typeof v === 'object') {
    if (invalidDate(v)) return 'an invalid Date'
    const kind = builtin(v)
    return kind ?? 'an object'
  }
  return String(v)
}

/** Whether `v` is a Date whose time is NaN (`JSON.stringify` writes it as null). */
function invalidDate(v: unknown): boolean {
  return types.isDate(v) && Number.isNaN(Date.prototype.getTime.call(v))
}

/**
 * The primitive inside a Number, String, Boolean or BigInt object (as `JSON.stringify`
 * unboxes it, but read from its internal slot, so a `valueOf` of its own is not asked),
 * else `v`. A Symbol object stays: it is refused as a built-in.
 */
function unbox(v: unknown): unknown {
  if (v === null || typeof v !== 'object' || !types.isBoxedPrimitive(v)) return v
  if (types.isNumberObject(v)) return Number.prototype.valueOf.call(v)
  if (types.isStringObject(v)) return String.prototype.valueOf.call(v)
  if (types.isBooleanObject(v)) return Boolean.prototype.valueOf.call(v)
  if (types.isBigIntObject(v)) return BigInt.prototype.valueOf.call(v)
  return v
}

const INVALID_DATE = 'JSON has no invalid Date (JSON.stringify would store null)'

/**
 * What a built-in object is, when `JSON.stringify` would lose what it holds (writing `{}`
 * or index keys): its state lives in internal slots, not in properties. Checked with
 * `util.types`, so objects from other realms (`vm`, worker messages) are caught too.
 */
function builtin(v: object): string | undefined {
  if (types.isMap(v)) return 'a Map'
  if (types.isSet(v)) return 'a Set'
  if (types.isWeakMap(v) || types.isWeakSet(v)) return 'a WeakMap or WeakSet'
  if (types.isPromise(v)) return 'a Promise (await it first)'
  if (types.isRegExp(v)) return 'a RegExp'
  if (types.isNativeError(v)) return 'an Error'
  if (types.isAnyArrayBuffer(v)) return 'an ArrayBuffer'
  if (types.isArrayBufferView(v)) return 'a typed array or DataView'
  if (types.isSymbolObject(v)) return 'a Symbol object'
  if (v instanceof WeakRef) return 'a WeakRef'
  return undefined
}

/** Why `v` (after `toJSON`) cannot be stored at this place, or `undefined` if it can. */
function refusal(v: unknown, inArray: boolean, top: boolean): string | undefined {
  switch (typeof v) {
    case 'bigint':
      return undefined
    case 'function':
    case 'symbol':
      return 'it is not JSON'
    case 'number':
      return Number.isFinite(v) ? undefined : 'JSON has no NaN or Infinity'
    case 'string':
      return v.isWellFormed() ? undefined : 'it holds a lone surrogate (half of a UTF-16 pair), which UTF-8 JSON cannot store'
    case 'undefined':
      if (top) return 'undefined is not JSON'
      return inArray ? 'JSON has no undefined (an array would store null instead)' : undefined
    case 'object':
      if (v === null || Array.isArray(v)) return undefined
      if (builtin(v) !== undefined) return 'what it holds would be lost (JSON.stringify writes {} or index keys); convert it first'
      return undefined
    default:
      return undefined
  }
}

const TOO_DEEP = `it nests deeper than ${MAX_DEPTH} levels of arrays and objects, more than statefile reads back`
const BAD_KEY = 'its key holds a lone surrogate (half of a UTF-16 pair), which UTF-8 JSON cannot store'

function pointerToken(key: string): string {
  return key.replace(/~/g, '~0').replace(/\//g, '~1')
}

/** Find where in `root` the refused value is, for the error message. */
function locate(root: unknown): { pointer: string; value: unknown; why: string; what?: string } | undefined {
  const seen = new Set<unknown>()
  const visit = (holder: unknown, key: string, raw: unknown, pointer: string, inArray: boolean, depth: number): ReturnType<typeof locate> => {
    if (!key.isWellFormed()) return { pointer, value: key, why: BAD_KEY, what: 'a key' }
    if (invalidDate(raw)) return { pointer, value: raw, why: INVALID_DATE }
    let v = raw
    if (v !== null && typeof v === 'object' && typeof (v as { toJSON?: unknown }).toJSON === 'function') {
      v = (v as { toJSON: (k: string) => unknown }).toJSON.call(holder, key)
    }
    v = unbox(v)
    const why = refusal(v, inArray, depth === 0)
    if (why !== undefined) return { pointer, value: v, why }
    if (v === null || typeof v !== 'object') return undefined
    if (seen.has(v)) return { pointer, value: v, why: 'it contains itself (a cycle)' }
    if (depth >= MAX_DEPTH) return { pointer, value: v, why: TOO_DEEP }
    seen.add(v)
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) {
        const r = visit(v, String(i), v[i], `${pointer}/${i}`, true, depth + 1)
        if (r) return r
      }
    } else {
      for (const k of Object.keys(v)) {
        const r = visit(v, k, (v as Record<string, unknown>)[k], `${pointer}/${pointerToken(k)}`, false, depth + 1)
        if (r) return r
      }
    }
    seen.delete(v)
    return undefined
  }
  return visit({ '': root }, '', root, '', false, 0)
}

/**
 * Whether `v` is plain data that `JSON.stringify` writes exactly as it is: strings
 * without lone surrogates, finite numbers, booleans, null, arrays without holes or
 * `undefined`, and objects whose prototype is `Object.prototype` or null and that have
 * no `toJSON`, at most `MAX_DEPTH` deep. A fast check (no callback per value, as a
 * replacer would be) for the common case; anything else takes the careful path.
 *
 * It runs no code of the value's own: a getter, a Proxy trap or a `toJSON` getter could
 * answer `JSON.stringify` (which reads everything again) differently, or change what
 * was checked already, so a Proxy, an accessor property or an own `toJSON` of any kind
 * is not plain. The careful path reads each value once, and writes what it checked.
 */
function plain(v: unknown, depth: number): boolean {
  switch (typeof v) {
    case 'string':
      return v.isWellFormed()
    case 'number':
      // -0 takes the careful path: JSON.stringify would write it as 0.
      return Number.isFinite(v) && !Object.is(v, -0)
    case 'boolean':
      return true
    case 'object': {
      if (v === null) return true
      if (depth >= MAX_DEPTH || types.isProxy(v)) return false
      if (Array.isArray(v)) {
        for (let i = 0; i < v.length; i++) {
          // undefined for a hole; no value for a getter.
          const x: unknown = Object.getOwnPropertyDescriptor(v, i)?.value
          if (x === undefined || !plain(x, depth + 1)) return false
        }
        return true
      }
      const proto: unknown = Object.getPrototypeOf(v)
      if ((proto !== Object.prototype && proto !== null) || Object.hasOwn(v, 'toJSON')) return false
      for (const k in v) {
        if (!k.isWellFormed()) return false
        const d = Object.getOwnPropertyDescriptor(v, k)
        // Inherited (an enumerable key added to Object.prototype), or a getter.
        if (d === undefined || !('value' in d)) return false
        if (d.value !== undefined && !plain(d.value, depth + 1)) return false
      }
      return true
    }
    default:
      return false
  }
}

class Refused extends Error {}

/**
 * What a BigInt (or -0) is written as while `JSON.stringify` runs, before its digits
 * replace the quoted string: random per process, so no string a program stores matches it.
 */
const BIGINT_MARK = `statefile-bigint-${randomUUID()}:`
const BIGINT_MARKED = new RegExp(`"${BIGINT_MARK}(-?[0-9]+)"`, 'g')

/**
 * `value` as JSON text, or a TypeError before any file is touched if JSON cannot hold
 * it as it is: a cycle, a function or symbol, NaN or Infinity, a built-in
 * whose content `JSON.stringify` drops (Map, Set, typed arrays, ArrayBuffer, Promise,
 * RegExp, Error), `undefined` at the top or in an array, a string or key with a lone
 * surrogate, or nesting deeper than 127 levels. The message names the JSON Pointer of
 * the first such value. `undefined` properties of objects are left out, as
 * `JSON.stringify` does (reading the property back gives `undefined` again); `toJSON`
 * methods (Dates, Buffers) are honoured. A BigInt is written as its digits, exactly;
 * -0 as `-0` (`JSON.stringify` writes 0, which reads back as another number).
 */
function toJson(value: unknown, what = 'the value'): string {
  if (!Object.hasOwn(Object.prototype, 'toJSON') && plain(value, 0)) return JSON.stringify(value)
  let text: string | undefined
  let marked = false
  try {
    // The holders from the top down to the value being written: how deep it is.
    const path: unknown[] = []
    text = JSON.stringify(value, function (this: unknown, key: string, found: unknown) {
      while (path.length > 0 && path[path.length - 1] !== this) path.pop()
      if (path.length === 0) path.push(this)
      // What is returned here is what is written: the primitive of a boxed one.
      const v = unbox(found)
      if (!key.isWellFormed() || refusal(v, Array.isArray(this), path.length === 1 && key === '') !== undefined) throw new Refused()
      // A Date's toJSON answers null for an invalid one: look at what it was called on
      // (without calling a getter or a Proxy trap again).
      if (v === null && !types.isProxy(this) && invalidDate(Object.getOwnPropertyDescriptor(this, key)?.value)) throw new Refused()
      if (v !== null && typeof v === 'object') {
        if (path.length > MAX_DEPTH) throw new Refused()
        path.push(v)
      }
      if (typeof v === 'bigint' || Object.is(v, -0)) {
        marked = true
        return `${BIGINT_MARK}${typeof v === 'bigint' ? v : '-0'}`
      }
      return v
    })
  } catch (e) {
    if (!(e instanceof Refused) && !(e instanceof TypeError)) throw e
    const found = locate(value)
    if (found === undefined) throw new TypeError(`statefile: cannot store ${what}: ${(e as Error).message}`)
    // A lone surrogate in the pointer itself is shown escaped, so the message prints.
    const at = found.pointer === '' ? '' : ` at ${found.pointer.replace(/\p{Surrogate}/gu, (c) => `\\u${c.charCodeAt(0).toString(16)}`)}`
    throw new TypeError(`statefile: cannot store ${what}: ${found.what ?? describe(found.value)}${at}: ${found.why}`)
  }
  if (text === undefined) {
    throw new TypeError(`statefile: cannot store ${what}: ${describe(value)} is not JSON`)
  }
  return marked ? text.replace(BIGINT_MARKED, '$1') : text
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
  /**
   * How many calls this write answered: concurrent writes of one document in this
   * process share one durable write (group commit), and each gets this same receipt.
   */
  batch: number
  /** How long this call waited in the document's queue before its write began. */
  queuedMs: number
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
    problem: 'stale-temp' | 'corrupt-document' | 'corrupt-backup' | 'unreadable' | 'journal-replay' | 'journal-skipped' | 'journal-damaged' | 'journal-sync-failed' | 'other'
    detail: string | null
    action: 'none' | 'removed' | 'restored' | 'moved-aside' | 'would' | 'failed' | 'replayed' | 'other'
    actionDetail: string | null
    fixed: boolean
  }>
  /** Journal mode: the state of the store's journal as the scan found it (empty otherwise). */
  journals: JournalStatus[]
}

/** The state of a store's journal (`Store.journalStatus`, `Report.journals`). */
export interface JournalStatus {
  /** The directory holding `.statefile/`. */
  root: string
  /** The journal file. */
  path: string
  formatVersion: number
  /** Whether commits swap the new file in (`JournalOptions.swap`). */
  swap: boolean
  /** Bytes of its ring. */
  capacity: number
  /** Where the last checkpoint is (a log sequence number). */
  checkpointLsn: number
  /** The end of the valid records after it. */
  endLsn: number
  /** Records since the last checkpoint. */
  records: number
  /** Commits appended but not yet applied by their writers (0 when no process has it open). */
  inFlight: number
  /** Documents a replay would rewrite (`inFlight`: a live writer is applying it right now). */
  toReplay: Array<{ path: string; version: string | null; inFlight: boolean }>
  /** Damage before the end of the records: writes in the tree are refused until a person decides. */
  damage: { lsn: number; reason: string; laterRecords: number } | null
  /**
   * A sync of a document or backup whose bytes only the journal may hold failed, and the
   * file could not be rewritten from its record: checkpoints are refused until `recover()`
   * rewrites the files the journal holds.
   */
  syncFailed: boolean
  /** Whether `recover()` has something to do (replays no live writer is doing, damage, or a failed sync). */
  needsRepair: boolean
}

/** What a checkpoint did (`Store.checkpoint`, `Store.disableJournal`). */
export interface CheckpointReport {
  /** Bytes of the journal made free for reuse. */
  freed: number
  /** Documents synced to disk. */
  documents: number
  /** Directories synced. */
  directories: number
  /** Commits of writers that were gone, applied first. */
  adopted: number
}

/** How `Store.enableJournal` makes the journal. */
export interface JournalOptions {
  /**
   * Bytes of the ring that holds records (default 16 MiB; rounded up to 4 KiB, at least
   * 16 KiB). A document larger than a quarter of it is written without the journal; a
   * transaction larger than half of it is refused (`NO_SPACE`).
   */
  capacity?: number
  /** Permission bits of the journal's files (default 0o600): it holds copies of documents. */
  mode?: number
  /** At most this long between checkpoints while it is written to (default 60000). */
  checkpointAgeMs?: number
  /**
   * Commit by swapping the new file in (`renameat2` `RENAME_EXCHANGE`) rather than
   * renaming it over the document (default false): 7.5x the durable writes per second on
   * an ext4 without a journal (no gain on one with a journal), but after a power loss a
   * document written in the last seconds may be
   * empty or older on disk until statefile opens the store and replays the journal.
   * For stores that only statefile reads. Kept by the journal until it is disabled.
   */
  swap?: boolean
}

/**
 * A precondition of one operation of `Store.transaction`, checked under the locks
 * against the document as the operations before it left it: the document must be at
 * version `ifMatch` (or its strong ETag; a weak `W/"…"` never matches and is refused),
 * or (`ifNoneMatch: '*'`) must not exist. After a `put`, `patch` or `append` of it, it
 * exists at the version of the bytes written (the version the result reports for it);
 * after a `delete`, it does not exist. One failing fails the whole transaction with
 * `CONFLICT` naming the document and the operation (its `path`, and the `version` the
 * check found, if it exists); nothing is written.
 */
export interface TxPrecondition {
  ifMatch?: string
  ifNoneMatch?: '*'
}

/** A JSON Patch (RFC 6902) operation. */
export interface JsonPatchOperation {
  op: 'add' | 'remove' | 'replace' | 'move' | 'copy' | 'test'
  path: string
  value?: unknown
  from?: string
}

/**
 * One operation of `Store.transaction`: the operations of `statefile tx` (and of the
 * server's `POST /v1/tx`) with JavaScript spelling (`ifMatch`, `ifNoneMatch`,
 * `jsonPatch`; the CLI's `if_match`, `if_none_match` and `json_patch` are refused).
 * `doc` is a document name in the store (relative, `/`-separated).
 *
 * - `put`: replace the document with `value`.
 * - `patch` with `merge`: an RFC 7396 merge patch (a missing document starts as `{}`).
 * - `patch` with `jsonPatch`: an RFC 6902 JSON Patch (the document must exist).
 * - `append`: add `value` to the end of the array at `pointer` (default: the document
 *   itself; a missing document or array is created).
 * - `delete`: delete the document (it must exist).
 * - `get`: read it under the transaction's locks (it must exist).
 *
 * Operations apply in order; a later one sees what the earlier ones did.
 */
export type TxOp = TxPrecondition & (
  | { op: 'put'; doc: string; value: unknown }
  | { op: 'patch'; doc: string; merge: unknown }
  | { op: 'patch'; doc: string; jsonPatch: JsonPatchOperation[] }
  | { op: 'append'; doc: string; pointer?: string; value: unknown }
  | { op: 'delete'; doc: string }
  | { op: 'get'; doc: string }
)

/** What one operation of a committed transaction did. */
export interface TxResult {
  doc: string
  op: 'put' | 'patch' | 'append' | 'delete' | 'get'
  /**
   * The document's version after the transaction (`null`: deleted); for `get`, the
   * version of the value read (after the transaction's own write of the document,
   * the version it has once committed).
   */
  version: string | null
  /** `get`: the value read. */
  value?: any
  /** `append`: the new element's index. */
  index?: number
}

/** Options of `Doc.update`. */
export interface UpdateOptions<T> {
  /** Start from this value (or what this function returns) when the document does not exist. */
  default?: T | (() => T)
  /**
   * How long the callback may hold the document's lock (default 60000; `Infinity` for
   * no limit; `update` only). A callback that has not settled by then is abandoned: the
   * lock is released, nothing is written (whatever the callback does later), and
   * `update` rejects with `UPDATE_TIMEOUT`. So a forgotten promise cannot keep every
   * other writer of the document, in any process, waiting forever.
   */
  timeoutMs?: number
}

/**
 * An update callback (its document), or a transaction callback (`keys`: the documents
 * it has touched so far, so locked; `owner`: its session), and whether it runs now.
 */
interface Holding {
  key: string
  active: boolean
  keys?: Set<string>
  owner?: object
}

/**
 * The updates whose callbacks the current code runs inside (async context). Enabled
 * only while some callback runs: in Node 20 an enabled AsyncLocalStorage turns on
 * promise hooks for the whole process, which made every promise about 3x slower here.
 */
const holding = new AsyncLocalStorage<Holding[]>()
/** How many callbacks hold a lock now (frames not yet released). */
let held = 0

/**
 * Refuse, at once, a call that would wait for the lock an enclosing update callback of
 * the same document holds, or an enclosing transaction callback has taken: it would
 * wait until its lock timeout while the callback waits for it. Recognised by path (as
 * resolved when the Doc was made), so a second path to the same file (a symlink, a hard
 * link) is not recognised and still ends in `LOCK_TIMEOUT`. `self`: the transaction
 * making the call, whose own documents it may use again.
 */
function refuseNested(key: string, what: string, self?: object): void {
  const frames = held === 0 ? undefined : holding.getStore()
  if (frames === undefined) return
  for (const h of frames) {
    if (!h.active || (self !== undefined && h.owner === self)) continue
    if (h.key === key && h.keys === undefined) {
      throw new StatefileError(
        `statefile: ${what} of ${key} from inside an update callback of the same document would wait for the lock that callback holds (and time out): change the value the callback was given instead`,
        { code: 'DEADLOCK', path: key },
      )
    }
    if (h.keys?.has(key)) {
      throw new StatefileError(
        `statefile: ${what} of ${key} from inside a transaction callback that has locked it would wait for the lock that transaction holds (and time out): use the callback's tx instead`,
        { code: 'DEADLOCK', path: key },
      )
    }
  }
}

/**
 * Run `fn` marked as holding `frame.key`'s lock, for `refuseNested`: it and everything
 * it starts, until `release(frame)`.
 */
function whileHolding<R>(frame: Holding, fn: () => R): R {
  frame.active = true
  held++
  return holding.run([...(held > 1 ? holding.getStore() ?? [] : []), frame], fn)
}

/** `frame`'s callback settled: code it started no longer holds the lock. */
function release(frame: Holding): void {
  if (!frame.active) return
  frame.active = false
  held--
  if (held === 0) holding.disable()
}

/** How far an `update` has come, for `PendingUpdate`. */
interface UpdateProgress {
  settled: boolean
  /** Once its callback could run (the lock held, the value read). */
  session?: native.UpdateSession
}

/**
 * The Promise `update` returns. Awaiting it from inside an update callback of the same
 * document while it cannot settle (its write waits for that callback's batch, or for
 * the lock that callback holds) rejects at once with `DEADLOCK`: otherwise both would
 * wait until the callback's `timeoutMs`.
 */
class PendingUpdate<T> extends Promise<T> {
  static override get [Symbol.species](): PromiseConstructor {
    return Promise
  }

  #key = ''
  #progress: UpdateProgress = { settled: true }

  static of<T>(run: Promise<T>, key: string, progress: UpdateProgress): Promise<T> {
    const p = new PendingUpdate<T>((resolve, reject) => { run.then(resolve, reject) })
    p.#key = key
    p.#progress = progress
    return p
  }

  override then<A = T, B = never>(onFulfilled?: ((value: T) => A | PromiseLike<A>) | null, onRejected?: ((reason: unknown) => B | PromiseLike<B>) | null): Promise<A | B> {
    const progress = this.#progress
    // Waiting is safe once the update has ended natively: its outcome is on its way.
    if (!progress.settled && !(progress.session?.ended ?? false) && insideCallbackOf(this.#key)) {
      const e = new StatefileError(
        `statefile: an update callback of ${this.#key} awaits an earlier update of the same document that has not been written: that update waits for this callback's batch (group commit) or lock, so neither would settle. Await the earlier update before starting this one`,
        { code: 'DEADLOCK', path: this.#key },
      )
      return Promise.reject(e).then(onFulfilled, onRejected)
    }
    return super.then(onFulfilled, onRejected)
  }
}

/** Whether the running code is inside an update callback (lock held) of `key`. */
function insideCallbackOf(key: string): boolean {
  const frames = held === 0 ? undefined : holding.getStore()
  return frames !== undefined && frames.some((h) => h.active && h.key === key)
}

/** `update` changes the value in place, which only an object or array allows. */
function refusePrimitive(value: unknown, where: string): void {
  if (value === null || typeof value !== 'object') {
    throw new TypeError(
      `${where}: the document holds ${value === null ? 'null' : describe(value)}, which the callback cannot change in place (nothing was written); store an object (e.g. { "count": 0 }) or use writeIf(version, value)`,
    )
  }
}

function updateTimeout(o: UpdateOptions<unknown> | undefined): number {
  const t = o?.timeoutMs
  if (t === undefined) return 60_000
  if (typeof t !== 'number' || !(t >= 0)) throw new TypeError(`update: timeoutMs must be a number >= 0 (or Infinity), not ${String(t)}`)
  return t
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
  if (!p.isWellFormed()) throw new TypeError(`${where}: the path holds a lone surrogate (half of a UTF-16 pair), which names no file: as UTF-8 it would become U+FFFD, another name`)
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
let storeHandle: { native: native.NativeDoc; key: string } | undefined

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
  /** The absolute path, for recognising calls made inside this document's update. */
  readonly #key: string

  constructor(path: string | URL, options?: DocOptions) {
    if (storeHandle !== undefined) {
      this.#native = storeHandle.native
      this.#key = storeHandle.key
      return
    }
    const p = pathOf(path, 'new Doc')
    this.#key = resolvePath(p)
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

  /**
   * The value. `NOT_FOUND` if it does not exist; `CORRUPT` if it is damaged (unless
   * `fallback`). Integers a JavaScript number cannot hold exactly are BigInts; other
   * numbers a double would change (`1e-400`) are `SERIALIZE`, naming their `pointer`.
   */
  async read(): Promise<T> {
    return (await this.readVersioned()).value
  }

  readSync(): T {
    return this.readVersionedSync().value
  }

  /** The value with its version (for `writeIf`, or an ETag). */
  async readVersioned(): Promise<Versioned<T>> {
    return withBigInts(unwrap<Versioned<T>>(await this.#native.read()))
  }

  readVersionedSync(): Versioned<T> {
    return withBigInts(unwrap<Versioned<T>>(this.#native.readSync()))
  }

  /** Replace the document with `value`, atomically and durably. */
  async write(value: T): Promise<Receipt> {
    refuseNested(this.#key, 'a write')
    const json = toJson(value)
    return unwrap<Receipt>(await this.#native.write(json))
  }

  writeSync(value: T): Receipt {
    refuseNested(this.#key, 'a write')
    return unwrap<Receipt>(this.#native.writeSync(toJson(value)))
  }

  /**
   * Compare-and-swap: `CONFLICT` (with the current `version`) unless it is still at
   * `version` (as `version()` gives it, or its ETag in double quotes). A weak ETag
   * (`W/"…"`) never matches, as in an HTTP If-Match: a TypeError.
   */
  async writeIf(version: string, value: T): Promise<Receipt> {
    refuseNested(this.#key, 'a write')
    const json = toJson(value)
    return unwrap<Receipt>(await this.#native.writeIf(String(version), json))
  }

  writeIfSync(version: string, value: T): Receipt {
    refuseNested(this.#key, 'a write')
    return unwrap<Receipt>(this.#native.writeIfSync(String(version), toJson(value)))
  }

  /** Write only if the document does not exist yet (`CONFLICT` otherwise). */
  async create(value: T): Promise<Receipt> {
    refuseNested(this.#key, 'a write')
    const json = toJson(value)
    return unwrap<Receipt>(await this.#native.create(json))
  }

  createSync(value: T): Receipt {
    refuseNested(this.#key, 'a write')
    return unwrap<Receipt>(this.#native.createSync(toJson(value)))
  }

  /** Delete it (moved to `.name.bak` when backups are on, so `restore` undoes it). */
  async delete(): Promise<Deleted> {
    refuseNested(this.#key, 'a delete')
    return unwrap<Deleted>(await this.#native.delete())
  }

  deleteSync(): Deleted {
    refuseNested(this.#key, 'a delete')
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
    refuseNested(this.#key, 'a restore')
    return unwrap<Receipt>(await this.#native.restore(restoreRef(ref)))
  }

  restoreSync(ref?: number | string): Receipt {
    refuseNested(this.#key, 'a restore')
    return unwrap<Receipt>(this.#native.restoreSync(restoreRef(ref)))
  }

  /**
   * Locked read-modify-write. `fn` gets the current value and changes it in place; it
   * may be async. The document stays locked (against every writer, in this process and
   * others) until `fn` settles; then the changed value is written. If `fn` throws or
   * rejects, nothing is written and `update` rejects with that error. Resolves to the
   * write's receipt and `result`, what `fn` returned (returning a new value does not
   * replace the document: change the one given).
   *
   * `NOT_FOUND` if the document does not exist and no `default` is given; `CORRUPT` if
   * it is damaged (restore it first); `LOCK_TIMEOUT` if the lock is not free in time;
   * `UPDATE_TIMEOUT` if `fn` has not settled after `timeoutMs` (default 60 s: the lock
   * is released and nothing written). A write, delete, restore or update of the same
   * document from inside `fn` would wait for the lock `fn` holds: it fails at once with
   * `DEADLOCK`. A document that is not an object or array (a number, a string, null)
   * cannot be changed in place: a TypeError, before `fn` runs. An integer a JavaScript
   * number cannot hold exactly is a BigInt in `fn`'s value (written back as it was);
   * any other number a double would change (`1e-400`) makes the update fail
   * (`SERIALIZE`) before `fn` runs, rather than round it.
   *
   * Concurrent updates of one document in this process share one durable write (group
   * commit): an update's Promise settles only once every change of its batch is
   * written. So `fn` must not await the Promise of an earlier `update` of the same
   * document that has not settled yet: that update waits for `fn`'s own batch (or for
   * the lock `fn` holds). Such an `await` rejects at once with `DEADLOCK` instead of
   * waiting out `timeoutMs`. (An earlier update whose write has ended is awaited as
   * usual.) To order two updates, await the first before starting the second.
   */
  update<R>(fn: (data: T) => R | Promise<R>, options?: UpdateOptions<T>): Promise<UpdateResult<Awaited<R>>> {
    const progress: UpdateProgress = { settled: false }
    const run = this.#update(fn, options, progress)
    return PendingUpdate.of(run, this.#key, progress)
  }

  async #update<R>(fn: (data: T) => R | Promise<R>, options: UpdateOptions<T> | undefined, progress: UpdateProgress): Promise<UpdateResult<Awaited<R>>> {
    try {
      return await this.#updateOnce(fn, options, progress)
    } finally {
      progress.settled = true
    }
  }

  async #updateOnce<R>(fn: (data: T) => R | Promise<R>, options: UpdateOptions<T> | undefined, progress: UpdateProgress): Promise<UpdateResult<Awaited<R>>> {
    if (typeof fn !== 'function') throw new TypeError('update: the callback must be a function')
    refuseNested(this.#key, 'an update')
    const timeoutMs = updateTimeout(options)
    const start = defaultJson(options)
    const session = await this.#native.beginUpdate(start)
    progress.session = session
    let result: Awaited<R>
    let json: string
    let timer: NodeJS.Timeout | undefined
    const frame: Holding = { key: this.#key, active: false }
    try {
      // Inside the try: whatever fails from here on ends the update and frees its lock
      // at once (an error shown instead of a value has ended it already).
      const { value } = withBigInts(unwrap<Shown<T>>(session.current))
      refusePrimitive(value, 'update')
      const running = new Promise<Awaited<R>>((resolve, reject) => {
        whileHolding(frame, () => {
          try {
            return Promise.resolve(fn(value))
          } catch (e) {
            return Promise.reject(e)
          }
        }).then(resolve, reject)
        if (timeoutMs !== Infinity) {
          timer = setTimeout(() => {
            reject(new StatefileError(
              `statefile: the update callback of ${this.#key} did not settle within ${timeoutMs} ms; it was abandoned (the lock is released, nothing was written)`,
              { code: 'UPDATE_TIMEOUT', path: this.#key },
            ))
          }, timeoutMs)
        }
      })
      result = await running
      json = toJson(value, 'the updated value')
    } catch (e) {
      await session.abort()
      throw e
    } finally {
      clearTimeout(timer)
      release(frame)
    }
    const receipt = unwrap<Receipt>(await session.commit(json))
    return { ...receipt, result }
  }

  /** As `update`, on the calling thread; `fn` must be synchronous (no `timeoutMs`). */
  updateSync<R>(fn: (data: T) => R, options?: UpdateOptions<T>): UpdateResult<R> {
    if (typeof fn !== 'function') throw new TypeError('updateSync: the callback must be a function')
    refuseNested(this.#key, 'an update')
    const start = defaultJson(options)
    let thrown: { error: unknown } | undefined
    let result: R | undefined
    const text = this.#native.updateSync(start, (current: string): string | null => {
      try {
        const { value } = withBigInts(unwrap<Shown<T>>(current))
        refusePrimitive(value, 'updateSync')
        const frame: Holding = { key: this.#key, active: false }
        try {
          result = whileHolding(frame, () => fn(value))
        } finally {
          release(frame)
        }
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

/** Options of `Store.transaction(fn)`. */
export interface TransactionOptions {
  /**
   * How long the callback may hold the documents' locks, over all its runs (default
   * 60000; `Infinity` for no limit). Past it the transaction is abandoned: the locks are
   * released, nothing is written (whatever the callback does later), and `transaction`
   * rejects with `UPDATE_TIMEOUT`. A `tx` call waiting for a lock at that moment cannot
   * be cut short: the locks are released, and `transaction` rejects, when that wait
   * ends (at the latest after the store's lock timeout).
   */
  timeoutMs?: number
}

/** What a committed `Store.transaction(fn)` did to one document. */
export interface TxDocument {
  /** Its name in the store, as the transaction named it. */
  name: string
  path: string
  /** Its new version (`null`: deleted). */
  version: string | null
  /** The version it replaced (`null`: it did not exist). */
  previous: string | null
}

/** `Store.transaction(fn)`'s answer: what `fn` returned, and the documents written or deleted (by path). */
export interface TransactionResult<R> {
  result: R
  documents: TxDocument[]
}

/** The library started the transaction again: this run of the callback is over. */
class TxRestart extends Error {
  constructor(readonly attempt: number) {
    super('statefile: the transaction starts again (a document sorted before one it had locked): this run of the callback is over')
    this.name = 'TxRestart'
  }
}

/**
 * The documents of a running `Store.transaction(fn)`, as `fn` sees them. Each document
 * is locked when first touched (and stays locked until the transaction ends); reads see
 * the transaction's own writes; writes and deletes are kept until `fn` settles, then
 * committed together as one journal record. Every method returns a Promise.
 *
 * A method that fails (a missing document to delete, a damaged one, a lock timeout, a
 * failed `expect`) ends the transaction: it rejects with that error, and so does
 * `transaction`, whatever `fn` does next; nothing is written. A transaction touches at
 * most 1000 documents (each stays locked until it ends): the 1001st is a TypeError.
 */
export class Transaction {
  readonly #session: native.TxSession
  readonly #root: string
  /** Which run of the callback this is (1 for the first). */
  readonly attempt: number
  /** Shared with `Store.transaction`: whether this run is over, and the next run's number if the library started again. */
  readonly #state: { over: boolean; restart?: number }
  /** The documents the transaction has locked, for `refuseNested`. */
  readonly #frame: Holding | undefined

  /** Made by `Store.transaction` only. */
  constructor(session: native.TxSession, attempt: number, root: string, state: { over: boolean; restart?: number }, frame?: Holding) {
    this.#session = session
    this.attempt = attempt
    this.#root = root
    this.#state = state
    this.#frame = frame
  }

  async #call<T>(op: string, name: string, arg?: string): Promise<T> {
    const state = this.#state
    if (state.restart !== undefined) throw new TxRestart(state.restart)
    if (state.over) throw new StatefileError(`statefile: ${op} of ${name}: the transaction's callback has settled; its tx can no longer be used`, { code: 'IO' })
    const r = JSON.parse(await this.#session.call(this.attempt, op, name, arg)) as Envelope<T> | { restart: number }
    if ('restart' in r) {
      state.restart ??= r.restart
      throw new TxRestart(state.restart)
    }
    return settle(r)
  }

  #name(name: unknown, what: string): string {
    const n = txName(name, `transaction: ${what}: the name`)
    const key = resolvePath(this.#root, n)
    refuseNested(key, `a transaction's ${what}`, this.#frame?.owner)
    this.#frame?.keys?.add(key)
    return n
  }

  /**
   * The document's value as this transaction sees it (its own writes included), read
   * under its lock; `undefined` if it does not exist.
   */
  async read<T = any>(name: string): Promise<T | undefined> {
    return (await this.readVersioned<T>(name))?.value
  }

  /**
   * As `read`, with the version of the value read: the document's on disk, or, after
   * this transaction wrote it, the version it will have once the transaction commits
   * (as a `get` operation answers). `expect` checks the version on disk when the
   * transaction locked the document.
   */
  async readVersioned<T = any>(name: string): Promise<{ value: T; version: string } | undefined> {
    const r = await this.#call<(Shown<T> & { version: string }) | null>('read', this.#name(name, 'read'))
    if (r === null) return undefined
    const { value, version } = withBigInts(r)
    return { value, version }
  }

  /** Write `value` when the transaction commits. */
  async write(name: string, value: unknown): Promise<void> {
    const n = this.#name(name, 'write')
    await this.#call<null>('write', n, toJson(value))
  }

  /**
   * Delete the document when the transaction commits (`NOT_FOUND` if it does not exist as
   * the transaction sees it; one it wrote is deleted, one it created then not written).
   */
  async delete(name: string): Promise<void> {
    await this.#call<null>('delete', this.#name(name, 'delete'))
  }

  /**
   * A precondition, checked under the lock: the document is at `version` (`null`: does
   * not exist) as this transaction sees it, what `read` resolves to: after its own
   * `write`, at the version of the bytes written (the document's once committed); after
   * its own `delete`, missing. Otherwise the transaction fails with `CONFLICT` naming the
   * document. A weak ETag (`W/"…"`) never matches, as in an HTTP If-Match: a TypeError.
   */
  async expect(name: string, version: string | null): Promise<void> {
    if (version !== null && typeof version !== 'string') throw new TypeError('transaction: expect: the version must be a string or null')
    await this.#call<null>('expect', this.#name(name, 'expect'), version ?? undefined)
  }
}

/** The most operations (and documents of `readTx`) one transaction may hold. */
const MAX_TX_OPS = 1000

/** JavaScript's spelling of an operation's keys, to the one of `statefile tx`. */
const TX_KEYS: Record<string, string> = {
  op: 'op',
  doc: 'doc',
  value: 'value',
  merge: 'merge',
  jsonPatch: 'json_patch',
  pointer: 'pointer',
  ifMatch: 'if_match',
  ifNoneMatch: 'if_none_match',
}
const TX_VALUES = new Set(['value', 'merge', 'jsonPatch'])
const CLI_SPELLING: Record<string, string> = { if_match: 'ifMatch', if_none_match: 'ifNoneMatch', json_patch: 'jsonPatch' }

function txName(name: unknown, what: string): string {
  if (typeof name !== 'string') throw new TypeError(`${what} must be a string (a document name), not ${describe(name)}`)
  if (!name.isWellFormed()) throw new TypeError(`${what} holds a lone surrogate (half of a UTF-16 pair)`)
  return name
}

/**
 * The operations as the JSON text the library's parser takes (that parser checks what
 * each operation needs: a missing `value`, an unknown `op`, a bad pointer or version,
 * a name outside the store). Here: the shape, the spelling, and every value as
 * `toJson` writes it (a TypeError before anything is touched).
 */
function txJson(ops: unknown, where: string, root: string): string {
  if (!Array.isArray(ops)) throw new TypeError(`${where}: the operations must be an array, not ${describe(ops)}`)
  if (ops.length === 0) throw new TypeError(`${where}: the transaction has no operations`)
  if (ops.length > MAX_TX_OPS) throw new TypeError(`${where}: the transaction has ${ops.length} operations; at most ${MAX_TX_OPS}`)
  const out: string[] = []
  for (let i = 0; i < ops.length; i++) {
    const item: unknown = ops[i]
    const at = `${where}: operation ${i}`
    if (item === null || typeof item !== 'object' || Array.isArray(item)) throw new TypeError(`${at} must be an object, not ${describe(item)}`)
    const fields: string[] = []
    for (const [k, v] of Object.entries(item)) {
      if (v === undefined) continue
      const key = TX_KEYS[k]
      if (key === undefined) {
        const better = CLI_SPELLING[k]
        throw new TypeError(better ? `${at}: "${k}" is spelled "${better}" here` : `${at}: unknown key "${k}" (op, doc, value, merge, jsonPatch, pointer, ifMatch, ifNoneMatch)`)
      }
      let text: string
      if (TX_VALUES.has(k)) {
        text = toJson(v, `${at}'s ${k}`)
      } else {
        if (typeof v !== 'string') throw new TypeError(`${at}: "${k}" must be a string, not ${describe(v)}`)
        text = JSON.stringify(k === 'doc' ? txName(v, `${at}'s doc`) : v)
      }
      fields.push(`${JSON.stringify(key)}:${text}`)
    }
    const doc = (item as { doc?: unknown }).doc
    if (typeof doc === 'string') refuseNested(resolvePath(root, doc), 'a transaction')
    out.push(`{${fields.join(',')}}`)
  }
  return `[${out.join(',')}]`
}

function txResults(list: Array<TxResult & { bigints?: string[] }>): TxResult[] {
  return list.map((r) => (r.value === undefined ? r : (withBigInts(r as TxResult & Shown<unknown>) as TxResult)))
}

function txNames(names: unknown, where: string, root: string): string[] {
  if (!Array.isArray(names)) throw new TypeError(`${where}: the names must be an array of strings, not ${describe(names)}`)
  if (names.length > MAX_TX_OPS) throw new TypeError(`${where}: ${names.length} documents; at most ${MAX_TX_OPS}`)
  return names.map((n, i) => {
    const name = txName(n, `${where}: name ${i}`)
    refuseNested(resolvePath(root, name), 'a consistent read')
    return name
  })
}

function readResults<T>(list: Array<(Versioned<T> & { bigints?: string[] }) | null>): Array<Versioned<T> | null> {
  return list.map((r) => (r === null ? null : withBigInts(r)))
}

function journalOptions(o: JournalOptions | undefined): native.JournalOpts {
  if (o === undefined || o === null) return {}
  if (typeof o !== 'object') throw new TypeError('enableJournal: options must be an object')
  const out: native.JournalOpts = {}
  if (o.capacity !== undefined) {
    if (!Number.isSafeInteger(o.capacity) || o.capacity < 0) throw new TypeError(`enableJournal: capacity must be an integer number of bytes >= 0, not ${String(o.capacity)}`)
    out.capacity = o.capacity
  }
  if (o.mode !== undefined) {
    if (!Number.isInteger(o.mode) || o.mode < 0 || o.mode > 0o7777) throw new TypeError(`enableJournal: mode must be permission bits (0 to 0o7777), not ${String(o.mode)}`)
    out.mode = o.mode
  }
  if (o.checkpointAgeMs !== undefined) {
    if (typeof o.checkpointAgeMs !== 'number' || !(o.checkpointAgeMs >= 0) || !Number.isFinite(o.checkpointAgeMs)) {
      throw new TypeError(`enableJournal: checkpointAgeMs must be a finite number >= 0, not ${String(o.checkpointAgeMs)}`)
    }
    out.checkpointAgeMs = o.checkpointAgeMs
  }
  if (o.swap !== undefined) {
    if (typeof o.swap !== 'boolean') throw new TypeError(`enableJournal: swap must be a boolean, not ${String(o.swap)}`)
    out.swap = o.swap
  }
  return out
}

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
    if (!name.isWellFormed()) throw new TypeError('Store.doc: the name holds a lone surrogate (half of a UTF-16 pair), which names no file: as UTF-8 it would become U+FFFD, another name')
    storeHandle = { native: this.#native.doc(name), key: resolvePath(this.root, name) }
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

  /**
   * Apply `ops` as one transaction: each document they touch is locked (in one global
   * order, so transactions never deadlock), the operations are applied in order, each
   * precondition checked against the document as the operations before it left it, and
   * all the changes are committed as one journal record: every document changes, or
   * none does, also across a crash at any moment.
   * Resolves to one result per operation (the version each document has now, the
   * values the `get`s read).
   *
   * The store must be in journal mode (`enableJournal`, or `statefile journal enable`):
   * otherwise `INVALID_NAME`, nothing written. A failed precondition: `CONFLICT` naming
   * the document and the operation (`path`, and the `version` the check found: after an
   * earlier write of the document, that write's). A `get`, `delete` or `jsonPatch`
   * of a missing document: `NOT_FOUND`. A patch or append that does not apply:
   * `NOT_APPLICABLE`. A malformed operation (not an array of at most 1000 objects,
   * documents in more than 4000 distinct directories, an unknown op or key, a value JSON cannot hold, a bad pointer or version, a name
   * outside the store): a TypeError or `INVALID_NAME`, before anything is touched.
   * Readers that take no lock may, for the moment of the renames, see some documents
   * new and others old: `readTx` sees one consistent state.
   */
  async transaction(ops: TxOp[]): Promise<TxResult[]>
  /**
   * Run `fn` as one transaction over the documents it reads and writes through `tx`
   * (see `Transaction`), and commit its writes as one journal record when it settles:
   * every document changes or none does, also across a crash. Resolves to what `fn`
   * returned and the documents written. If `fn` throws or rejects, nothing is written and
   * `transaction` rejects with that error; if a `tx` method fails, the transaction fails
   * with that error whatever `fn` does.
   *
   * `fn` MAY RUN MORE THAN ONCE: documents are locked in one global order (so
   * transactions never deadlock), and when `fn` touches a document that sorts before
   * one it already locked, the library starts over with all of them locked first. The
   * `tx` call then rejects with an internal error (let it propagate, or at least do not
   * go on), whatever the earlier run did is dropped, and `fn` is called again with a
   * fresh `tx` (`tx.attempt` counts the runs). So `fn` should only read and write
   * through `tx`, with no other side effects. The locks are held while `fn` runs, at
   * most `timeoutMs` (default 60 s, then `UPDATE_TIMEOUT`, nothing written). A call
   * from inside `fn` that would wait for a lock the transaction holds (a `Doc` write,
   * delete, restore or update of a document `tx` has touched, another transaction or
   * `readTx` of it) fails at once with `DEADLOCK` (by path, as for `update`: reached
   * through another path to the same file, it waits and ends in `LOCK_TIMEOUT`). The
   * store must be in journal mode for a transaction that writes (`INVALID_NAME`
   * otherwise).
   */
  async transaction<R>(fn: (tx: Transaction) => R | Promise<R>, options?: TransactionOptions): Promise<TransactionResult<Awaited<R>>>
  async transaction<R>(ops: TxOp[] | ((tx: Transaction) => R | Promise<R>), options?: TransactionOptions): Promise<TxResult[] | TransactionResult<Awaited<R>>> {
    if (typeof ops === 'function') return this.#runTransaction(ops, options)
    const json = txJson(ops, 'transaction', this.root)
    return txResults(unwrap(await this.#native.transaction(json)))
  }

  async #runTransaction<R>(fn: (tx: Transaction) => R | Promise<R>, options: TransactionOptions | undefined): Promise<TransactionResult<Awaited<R>>> {
    const t = options?.timeoutMs
    const timeoutMs = t === undefined ? 60_000 : t
    if (typeof timeoutMs !== 'number' || !(timeoutMs >= 0)) throw new TypeError(`transaction: timeoutMs must be a number >= 0 (or Infinity), not ${String(t)}`)
    const session = this.#native.beginTransaction()
    // The documents every run has touched stay locked (a restart locks them all first).
    const frame: Holding = { key: this.root, active: false, keys: new Set(), owner: session }
    let timer: NodeJS.Timeout | undefined
    let timedOut = false
    const deadline = new Promise<never>((_, reject) => {
      if (timeoutMs === Infinity) return
      timer = setTimeout(() => {
        timedOut = true
        reject(new StatefileError(
          `statefile: the transaction callback did not settle within ${timeoutMs} ms; it was abandoned (the locks are released, nothing was written)`,
          { code: 'UPDATE_TIMEOUT', path: this.root },
        ))
      }, timeoutMs)
    })
    try {
      for (let attempt = 1; ;) {
        const state: { over: boolean; restart?: number } = { over: false }
        const tx = new Transaction(session, attempt, this.root, state, frame)
        let outcome: { ok: true; value: Awaited<R> } | { ok: false; error: unknown }
        try {
          const run = whileHolding(frame, () => (async () => fn(tx))())
          outcome = { ok: true, value: await Promise.race([run, deadline]) }
        } catch (error) {
          outcome = { ok: false, error }
        } finally {
          release(frame)
        }
        state.over = true
        if (timedOut && !outcome.ok) {
          // Ends the current run, whichever it is (a stale one is answered `restart`,
          // and closing the session below ends the new one): nothing is written.
          await session.call(state.restart ?? attempt, 'abort')
          throw outcome.error
        }
        if (state.restart !== undefined) {
          attempt = state.restart
          continue
        }
        if (!outcome.ok) {
          // Answered once the locks are released: aborted, or the failure that ended it.
          await session.call(attempt, 'abort')
          throw outcome.error
        }
        // The failure of a tx method the callback caught, if one ended the transaction.
        const documents = unwrap<TxDocument[]>(await session.call(attempt, 'commit'))
        return { result: outcome.value, documents }
      }
    } finally {
      clearTimeout(timer)
      session.close()
    }
  }

  transactionSync(ops: TxOp[]): TxResult[] {
    return txResults(unwrap(this.#native.transactionSync(txJson(ops, 'transactionSync', this.root))))
  }

  /**
   * Read the documents `names` under their locks (taken in the global order), so the
   * values are one consistent state: no transaction is half visible. Each is
   * `{ value, version }`, or `null` if it does not exist. Works with or without
   * journal mode. At most 1000 names.
   */
  async readTx<T = any>(names: string[]): Promise<Array<Versioned<T> | null>> {
    const list = txNames(names, 'readTx', this.root)
    return readResults<T>(unwrap(await this.#native.readTx(list)))
  }

  readTxSync<T = any>(names: string[]): Array<Versioned<T> | null> {
    return readResults<T>(unwrap(this.#native.readTxSync(txNames(names, 'readTxSync', this.root))))
  }

  /**
   * Turn on journal mode for the store (as `statefile journal enable`): a durable write
   * then costs one flush of the journal instead of two (file, then directory), and
   * `transaction` works. It is a property of the directory on disk: every statefile
   * writer of the tree, in any process or language, uses it from then on. Enabling a
   * store that has a journal already changes nothing. Resolves to its status.
   */
  async enableJournal(options?: JournalOptions): Promise<JournalStatus> {
    return unwrap<JournalStatus>(await this.#native.enableJournal(journalOptions(options)))
  }

  enableJournalSync(options?: JournalOptions): JournalStatus {
    return unwrap<JournalStatus>(this.#native.enableJournalSync(journalOptions(options)))
  }

  /** Checkpoint everything (every document durable in its own file), then remove the journal. `NOT_FOUND` if there is none. */
  async disableJournal(): Promise<CheckpointReport> {
    return unwrap<CheckpointReport>(await this.#native.disableJournal())
  }

  disableJournalSync(): CheckpointReport {
    return unwrap<CheckpointReport>(this.#native.disableJournalSync())
  }

  /** Make every document the journal covers durable in its own file, and free its space. `NOT_FOUND` without a journal. */
  async checkpoint(): Promise<CheckpointReport> {
    return unwrap<CheckpointReport>(await this.#native.checkpoint())
  }

  checkpointSync(): CheckpointReport {
    return unwrap<CheckpointReport>(this.#native.checkpointSync())
  }

  /** The journal's state, or `null` when the store is not in journal mode. Changes nothing. */
  async journalStatus(): Promise<JournalStatus | null> {
    return unwrap<JournalStatus | null>(await this.#native.journalStatus())
  }

  journalStatusSync(): JournalStatus | null {
    return unwrap<JournalStatus | null>(this.#native.journalStatusSync())
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
  /**
   * Called with the temp file's path once it exists (empty, mode 0600, the file's lock
   * held), before its content is written, as write-file-atomic calls it. The async
   * `writeFileAtomic` awaits what it returns; `writeFileAtomicSync` does not. If it
   * throws (or rejects), the temp file is removed, the file is untouched and the write
   * fails with that error.
   */
  tmpfileCreated?: (tmpfile: string) => unknown
}

type Data = string | NodeJS.ArrayBufferView | null | undefined | { toString(): string }

interface AtomicArgs {
  path: string
  /** The absolute path: the key of the per-file queue and of `refuseNested`. */
  key: string
  bytes: Buffer
  opts: native.AtomicOptions
  tmpfileCreated?: (tmpfile: string) => unknown
}

function atomicArgs(filename: string | URL, data: Data, options: WriteFileAtomicOptions | BufferEncoding | undefined, where: string, copy = false): AtomicArgs {
  const path = pathOf(filename, where)
  const key = resolvePath(path)
  refuseNested(key, where)
  const o: WriteFileAtomicOptions = typeof options === 'string' ? { encoding: options } : options ?? {}
  if (typeof o !== 'object') throw new TypeError(`${where}: options must be an object or an encoding`)
  const tmpfileCreated = o.tmpfileCreated ?? undefined
  if (tmpfileCreated !== undefined && typeof tmpfileCreated !== 'function') {
    throw new TypeError(`${where}: tmpfileCreated must be a function`)
  }
  let bytes: Buffer
  if (ArrayBuffer.isView(data)) {
    // The async write reaches the addon later (after a microtask at least, or a write
    // queued before it): it takes the bytes as they are now, not as the caller's buffer
    // is then (changed, or detached to nothing).
    const view = Buffer.from(data.buffer, data.byteOffset, data.byteLength)
    bytes = copy ? Buffer.copyBytesFrom(view) : view
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
  return { path, key, bytes, opts: out, tmpfileCreated }
}

/** One write, as `writeFileAtomic` makes it once its turn on the file has come. */
async function writeOnce(a: AtomicArgs): Promise<void> {
  if (a.tmpfileCreated === undefined) {
    unwrap(await native.writeFileAtomic(a.path, a.bytes, a.opts))
    return
  }
  // The write pauses once its temp file exists (lock held) until the callback settled.
  const session = await native.beginWriteFileAtomic(a.path, a.bytes, a.opts)
  const { tmpfile } = unwrap<{ tmpfile: string }>(session.current)
  const created = a.tmpfileCreated
  const frame: Holding = { key: a.key, active: false }
  try {
    await whileHolding(frame, () => created(tmpfile))
  } catch (e) {
    await session.abort()
    throw e
  } finally {
    release(frame)
  }
  unwrap(await session.proceed())
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
    const args = atomicArgs(filename, data, options as WriteFileAtomicOptions | BufferEncoding | undefined, 'writeFileAtomic', true)
    const key = args.key
    // Calls on one file take turns in call order, as write-file-atomic's do, so the
    // last call's data is what stays; the lock alone would not keep that order.
    const before = queues.get(key) ?? Promise.resolve()
    let done!: () => void
    const mine = new Promise<void>((resolve) => { done = resolve })
    const tail = before.then(() => mine)
    queues.set(key, tail)
    try {
      await before
      await writeOnce(args)
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
  const { path, key, bytes, opts, tmpfileCreated } = atomicArgs(filename, data, options, 'writeFileAtomicSync')
  let thrown: { error: unknown } | undefined
  const created = tmpfileCreated === undefined
    ? undefined
    : (tmpfile: string): boolean => {
        const frame: Holding = { key, active: false }
        try {
          // As write-file-atomic's sync version: a returned Promise is not awaited.
          whileHolding(frame, () => tmpfileCreated(tmpfile))
          return true
        } catch (e) {
          thrown = { error: e }
          return false
        } finally {
          release(frame)
        }
      }
  let text: string
  try {
    text = native.writeFileAtomicSync(path, bytes, opts, created)
  } catch (e) {
    throw fsStyle(e)
  }
  if (thrown !== undefined) throw thrown.error
  try {
    unwrap(text)
  } catch (e) {
    throw fsStyle(e)
  }
}

// `require('write-file-atomic').sync` has a twin here too.
writeFileAtomic.sync = writeFileAtomicSync
