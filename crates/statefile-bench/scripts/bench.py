"""Drives PyPI's atomicwrites the way its README shows (atomic_write(..., overwrite=True),
which fsyncs the file and its directory). Usage: bench.py replace FILE N SIZE | rmw FILE N ID"""
import json
import resource
import sys
import time

from atomicwrites import atomic_write

mode, path, n, extra = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]


def doc(size, seq):
    k = max(1, size // 64)
    return {"seq": seq, "updated": "2026-11-24T00:00:%02dZ" % (seq % 60),
            "items": [{"id": i, "name": "item-%06d" % i, "ok": i % 3 == 0} for i in range(k)]}


if mode == "replace":
    size = int(extra)
    lat = []
    # n untimed writes first: the timed ones meet a steady state (see statefile-bench).
    for i in range(2 * n):
        s = json.dumps(doc(size, i), indent=2) + "\n"
        t = time.perf_counter()
        with atomic_write(path, overwrite=True) as f:
            f.write(s)
        if i >= n:
            lat.append((time.perf_counter() - t) * 1e6)
    total = sum(lat) / 1e6
    lat.sort()
    try:
        with open(path) as f:
            correct = json.load(f)["seq"] == 2 * n - 1
    except Exception:
        correct = False
    print(json.dumps({"lat": {"ops": n, "total": total, "p50_us": lat[n // 2], "p99_us": lat[min(n - 1, int(n * 0.99))]},
                      "correct": correct, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
else:
    for i in range(n):
        try:
            with open(path) as f:
                v = json.load(f)
        except Exception:
            v = {"items": []}
        v["items"].append("%s-0-%d" % (extra, i))
        try:
            with atomic_write(path, overwrite=True) as f:
                f.write(json.dumps(v))
        except Exception:
            pass  # a racing writer: this update is lost
    print('{"ok": true}')
