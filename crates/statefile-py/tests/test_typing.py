"""Typed use of the package: mypy --strict checks this file (test.d/20-python.sh), and
pytest runs it, so the stubs describe what the package really returns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import statefile
from statefile.atomicwrites import AtomicWriter, atomic_write


def test_the_typed_api_as_a_service_uses_it(tmp_path: Path) -> None:
    doc: statefile.Doc = statefile.Doc(tmp_path / "jobs.json", backups=2, durability="full", lock_timeout=5.0)
    receipt: statefile.Receipt = doc.write({"jobs": []})
    version: str = receipt.version
    count: int = doc.update(lambda d: (d["jobs"].append(1), len(d["jobs"]))[1])
    assert count == 1
    block: statefile.Update = doc.update(default=dict)
    with block as data:
        data["jobs"].append(2)
    after: statefile.Receipt | None = block.receipt
    assert after is not None and after.previous is not None
    value, v2 = doc.read_versioned()
    assert isinstance(v2, str) and v2 != version
    versioned: statefile.Versioned = doc.read_versioned()
    recovered: statefile.Recovered | None = versioned.recovered
    assert recovered is None
    backups: list[statefile.Backup] = doc.backups()
    assert backups[0].number == 1
    deleted: statefile.Deleted = doc.delete()
    assert deleted.kept_as is not None
    doc.restore(1)
    current: Any = doc.read_or(None)
    assert current == value

    store = statefile.Store(tmp_path / "store")
    names: list[str] = store.list("")
    assert names == []
    report = store.verify()
    healthy: bool = report["healthy"]
    assert healthy and report["findings"] == []

    try:
        statefile.read_json(tmp_path / "nope.json")
    except statefile.NotFound as e:
        path: str | None = e.path
        assert path is not None

    with atomic_write(tmp_path / "x.txt", overwrite=True) as f:
        f.write("x")
    w = AtomicWriter(str(tmp_path / "y.txt"))
    with w.open() as f:
        f.write("y")


def test_the_typed_transaction_api(tmp_path: Path) -> None:
    status: statefile.JournalStatus = statefile.enable_journal(tmp_path, capacity=1 << 20)
    assert status["needs_repair"] is False
    store = statefile.Store(tmp_path)

    def move(tx: statefile.Transaction) -> int:
        a: Any = tx.read("a.json", default={"n": 5})
        version: str | None = tx.version("a.json")
        tx.expect("a.json", version)
        tx.write("a.json", {"n": a["n"] - 1})
        tx.write("b.json", {"n": 1})
        return int(a["n"])

    moved, receipt = store.transaction(move)
    n: int = moved
    docs: tuple[statefile.TxDocument, ...] = receipt.documents
    versions: dict[str, str | None] = receipt.versions
    assert n == 5 and len(docs) == 2 and versions["b.json"] is not None
    values: list[Any] = store.read_tx(["a.json", "b.json"])
    assert values == [{"n": 4}, {"n": 1}]
    results = store.apply([{"op": "get", "doc": "a.json"}])
    op: str = results[0]["op"]
    assert op == "get" and results[0]["value"] == {"n": 4}
    st: statefile.JournalStatus | None = statefile.journal_status(tmp_path)
    assert st is not None and st["records"] == 1
    ck: statefile.CheckpointReport = statefile.checkpoint(tmp_path)
    assert ck["documents"] == 2
    statefile.disable_journal(tmp_path)
