"""Job ends the bot's store could not take: kept on local disk, written when the store is back.

A job that finishes while the store is down still has a result, and a backup it wrote is still
good. Its end (and the backup's outcome: size, checksum, row counts) goes to a local file, one
fsync'd JSON line each (the same file discipline as the audit spool, store/spool.py), and
`replay()` writes them into the store later: at start-up and whenever the store is seen again.
Replaying twice changes nothing: each write only moves a row that is not final yet.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from psycopg.types.json import Jsonb

from store import backups as catalog
from store import jobs as job_store
from store import locks as lock_rows
from store.backups import FinishedBackup
from store.db import Store
from store.spool import AuditSpool

log = logging.getLogger(__name__)


class PendingEnds:
    """The local file of job ends and backup outcomes waiting for the store."""

    def __init__(self, path: Path) -> None:
        self.spool = AuditSpool(path)

    def waiting(self) -> int:
        return self.spool.count()

    async def job_finished(
        self, job_id: int, *, status: str, result: dict[str, Any] | None, error: str | None
    ) -> None:
        await self.spool.append(
            {
                "kind": "job_finished",
                "job_id": job_id,
                "status": status,
                "result": result,
                "error": error,
                "at": _now(),
            }
        )
        log.warning("bot store down: the end of job %s is kept on local disk until it is back", job_id)

    async def backup_finished(self, backup_id: int, file: FinishedBackup) -> None:
        await self.spool.append(
            {
                "kind": "backup_finished",
                "backup_id": backup_id,
                "size_bytes": file.size_bytes,
                "sha256": file.sha256,
                "row_counts": file.row_counts,
                "pg_dump_version": file.pg_dump_version,
                "server_version": file.server_version,
                "duration_ms": file.duration_ms,
                "at": _now(),
            }
        )
        log.warning(
            "bot store down: backup %s is good; the catalog is told when the store is back", backup_id
        )

    async def replay(self, store: Store) -> int:
        """Write every waiting line in order, then empty the file. StoreUnavailable keeps them all."""
        if not self.spool.has_lines():
            return 0
        async with self.spool.taken() as batch:
            for line in batch.lines:
                await _apply(store, line)
            written = len(batch.lines)
            batch.clear()
        if written:
            log.info("%d job end(s) kept while the store was down are now stored", written)
        return written


async def _apply(store: Store, line: dict[str, Any]) -> None:
    at = datetime.fromisoformat(str(line["at"]))
    if line.get("kind") == "backup_finished":
        await _backup_good(store, line, at)
        return
    job_id = int(line["job_id"])
    status = str(line["status"])
    await job_store.record_spooled_end(
        store,
        job_id,
        status=status,
        result=line.get("result"),
        error=line.get("error"),
        finished_at=at,
    )
    await lock_rows.release_for_job(store, job_id)  # its release could not reach the store
    if status != "succeeded":
        await catalog.mark_interrupted(store, job_ids=[job_id])  # never leave its backup 'running'


async def _backup_good(store: Store, line: dict[str, Any], at: datetime) -> None:
    """The backup was written and checked: good, whatever recovery presumed meanwhile."""
    async with store.connection() as conn:
        await conn.execute(
            "UPDATE backups SET status = 'good', size_bytes = %s, sha256 = %s, row_counts = %s,"
            " pg_dump_version = %s, server_version = %s, duration_ms = %s, finished_at = %s,"
            " error = NULL WHERE id = %s AND status IN ('running', 'interrupted')",
            (
                int(line["size_bytes"]),
                str(line["sha256"]),
                Jsonb(dict(line.get("row_counts") or {})),
                line.get("pg_dump_version"),
                line.get("server_version"),
                line.get("duration_ms"),
                at,
                int(line["backup_id"]),
            ),
        )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")
