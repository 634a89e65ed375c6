"""A job runner's queue and job files changed together: a job leaves pending.json and
its running/<id>.json appears in one transaction (journal mode), so a crash never
leaves a job in both places or in neither."""

from __future__ import annotations

import statefile

store = statefile.Store("queue")
statefile.enable_journal(store.root)  # once per store, on disk: every writer uses it


def start_next_job() -> int | None:
    def take(tx: statefile.Transaction) -> int | None:  # may run more than once
        pending = tx.read("pending.json", default=[])
        if not pending:
            return None
        job = int(pending.pop(0))
        tx.write("pending.json", pending)
        tx.write(f"running/{job}.json", {"id": job, "state": "running"})
        return job

    job, _receipt = store.transaction(take)  # both files change, or neither
    return job


def finish(job: int, version: str) -> None:
    # The operations of `statefile tx`; Conflict (nothing written) if the job's file
    # is no longer at `version`.
    store.apply(
        [
            {"op": "delete", "doc": f"running/{job}.json", "if_match": version},
            {"op": "append", "doc": "done.json", "pointer": "", "value": job},
        ]
    )
