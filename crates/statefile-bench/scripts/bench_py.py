"""The Python rows of the benchmark: statefile's Python package against what a Python
service would otherwise use, each the way its documentation shows. Run by
statefile-bench (src/py.rs) with a virtualenv's python that has statefile, atomicwrites
and filelock installed (crates/statefile-py/scripts/venv.sh). Every operation timed
includes serializing the dict, as a service saving its state pays for it.

Usage:
  bench_py.py check
  bench_py.py replace ALT DIR SIZE N       one JSON line: latencies, correctness
  bench_py.py setup ALT DIR                prepare DIR for `rmw` (journal mode for a journal ALT)
  bench_py.py rmw ALT DIR ID THREADS N     ID's THREADS threads append N items each
  bench_py.py count ALT DIR                one JSON line: items present, distinct
"""

import json
import os
import sqlite3
import sys
import threading
import time

REPLACE = [
    "statefile",
    "statefile (1 backup, the default)",
    "statefile (journal)",
    "statefile.atomicwrites (drop-in)",
    "atomicwrites (PyPI)",
    "json.dump (no fsync)",
    "sqlite3 (WAL, synchronous=FULL)",
]
RMW = ["statefile", "statefile (journal)", "filelock + atomicwrites", "sqlite3 (WAL, synchronous=FULL)"]


def doc(size, seq):
    k = max(1, size // 64)
    return {
        "seq": seq,
        "updated": "2026-11-24T00:00:%02dZ" % (seq % 60),
        "items": [{"id": i, "name": "item-%06d" % i, "ok": i % 3 == 0} for i in range(k)],
    }


def sqlite_open(d):
    c = sqlite3.connect(os.path.join(d, "bench.sqlite"), timeout=300, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=FULL")
    c.execute("CREATE TABLE IF NOT EXISTS docs (name TEXT PRIMARY KEY, body TEXT NOT NULL)")
    return c


def replacer(alt, d):
    path = os.path.join(d, "doc.json")
    if alt.startswith("statefile") and "atomicwrites" not in alt:
        import statefile

        setup(alt, d)
        doc_ = statefile.Doc(path, backups=1 if "1 backup" in alt else 0)
        return doc_.write, lambda: statefile.read_json(path)
    if "atomicwrites" in alt:
        if alt.startswith("statefile"):
            from statefile.atomicwrites import atomic_write
        else:
            from atomicwrites import atomic_write

        def write(v):
            with atomic_write(path, overwrite=True) as f:
                json.dump(v, f, indent=2)
                f.write("\n")

        return write, lambda: json.load(open(path))
    if alt.startswith("json.dump"):

        def write(v):
            with open(path, "w") as f:
                json.dump(v, f, indent=2)
                f.write("\n")

        return write, lambda: json.load(open(path))
    c = sqlite_open(d)

    def write(v):
        c.execute("INSERT OR REPLACE INTO docs (name, body) VALUES ('doc', ?)", (json.dumps(v),))

    return write, lambda: json.loads(c.execute("SELECT body FROM docs WHERE name = 'doc'").fetchone()[0])


def replace(alt, d, size, n):
    write, read = replacer(alt, d)
    # n untimed writes first: the timed ones meet a steady state (see statefile-bench).
    for i in range(n):
        write(doc(size, n + i))
    values = [doc(size, i) for i in range(n)]
    lat = []
    start = time.perf_counter()
    for v in values:
        t = time.perf_counter()
        write(v)
        lat.append((time.perf_counter() - t) * 1e6)
    total = time.perf_counter() - start
    lat.sort()
    try:
        correct = read() == values[-1]
    except Exception:
        correct = False
    out = {"ops": n, "total": total, "p50_us": lat[n // 2], "p99_us": lat[min(n - 1, int(n * 0.99))]}
    print(json.dumps({"lat": out, "correct": correct}))


def setup(alt, d):
    """A journal alternative's store is in journal mode (once, before any writer)."""
    if "journal" in alt:
        import statefile

        statefile.enable_journal(d)


def appender(alt, d):
    path = os.path.join(d, "doc.json")
    if alt.startswith("statefile"):
        import statefile

        doc_ = statefile.Doc(path, backups=0, lock_timeout=600)
        return lambda item: doc_.update(lambda v: v["items"].append(item), default=lambda: {"items": []})
    if alt.startswith("filelock"):
        from atomicwrites import atomic_write
        from filelock import FileLock

        lock = FileLock(path + ".lock", timeout=600)

        def append(item):
            with lock:
                try:
                    with open(path) as f:
                        v = json.load(f)
                except FileNotFoundError:
                    v = {"items": []}
                v["items"].append(item)
                with atomic_write(path, overwrite=True) as f:
                    json.dump(v, f)

        return append
    local = threading.local()

    def append(item):
        c = getattr(local, "c", None)
        if c is None:
            c = local.c = sqlite_open(d)
        c.execute("BEGIN IMMEDIATE")
        row = c.execute("SELECT body FROM docs WHERE name = 'doc'").fetchone()
        v = json.loads(row[0]) if row else {"items": []}
        v["items"].append(item)
        c.execute("INSERT OR REPLACE INTO docs (name, body) VALUES ('doc', ?)", (json.dumps(v),))
        c.execute("COMMIT")

    return append


def rmw(alt, d, ident, threads, n):
    append = appender(alt, d)
    errors = []

    def run(t):
        try:
            for i in range(n):
                append("%s-%d-%d" % (ident, t, i))
        except Exception as e:  # a lost update, counted by `count`
            errors.append(repr(e))

    ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    start = time.time()  # after the imports and setup: the rate is of the appends
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print(json.dumps({"ok": not errors, "errors": errors[:3], "start": start, "end": time.time()}))


def count(alt, d):
    try:
        if alt.startswith("sqlite3"):
            body = sqlite_open(d).execute("SELECT body FROM docs WHERE name = 'doc'").fetchone()[0]
            items = json.loads(body)["items"]
        else:
            with open(os.path.join(d, "doc.json")) as f:
                items = json.load(f)["items"]
    except Exception:
        items = []
    print(json.dumps({"present": len(items), "distinct": len(set(items))}))


def main():
    mode = sys.argv[1]
    if mode == "check":
        import atomicwrites  # noqa: F401
        import filelock  # noqa: F401
        import statefile

        print(json.dumps({"ok": True, "statefile": statefile.__file__}))
    elif mode == "replace":
        replace(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    elif mode == "setup":
        setup(sys.argv[2], sys.argv[3])
    elif mode == "rmw":
        rmw(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
    elif mode == "count":
        count(sys.argv[2], sys.argv[3])
    elif mode == "list":
        print(json.dumps({"replace": REPLACE, "rmw": RMW}))


if __name__ == "__main__":
    main()
