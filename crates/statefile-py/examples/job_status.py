"""A CSV job runner's job files: durable status updates, and reads that survive a
damaged file by falling back to its backup."""

from __future__ import annotations

import asyncio
from typing import Any

import statefile

store = statefile.Store("jobs", fallback=True)


def save_status(job_id: str, status: str, **fields: Any) -> str:
    doc = store.doc(f"{job_id}.json")

    def apply(job: dict[str, Any]) -> None:
        job.update(fields, status=status)

    doc.update(apply, default=lambda: {"id": job_id})
    return doc.version()


def get_job(job_id: str) -> dict[str, Any]:
    try:
        value, _version = store.doc(f"{job_id}.json").read_versioned()
    except statefile.NotFound:
        return {"id": job_id, "status": "unknown"}
    assert isinstance(value, dict)
    return value


async def poll(job_id: str) -> dict[str, Any]:
    # From asyncio: run the blocking call in a thread, so the event loop never waits
    # for a disk sync or a lock.
    return await asyncio.to_thread(get_job, job_id)


if __name__ == "__main__":
    save_status("abc123", "running")
    save_status("abc123", "done", rows=120)
    print(asyncio.run(poll("abc123")))
    print(store.verify()["healthy"])
