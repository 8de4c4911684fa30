"""Prove a backup restores: restore it into a scratch database, compare row counts, drop it."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from core.errors import RunbookFailed
from runbooks.backups import ProgressCallback, report, sha256_of
from runbooks.pg_tools import PgTools
from runbooks.restore import (
    RowCountDifference,
    check_restored_database,
    drop_database,
    restore_into_new_database,
)


@dataclass(frozen=True)
class VerifyOutcome:
    """passed is False with a problem key when the backup would not give back what it recorded."""

    passed: bool
    problem: str | None  # checksum_mismatch, file_missing, restore_failed, row_counts_differ
    detail: str
    differences: tuple[RowCountDifference, ...]
    row_counts: dict[str, int]
    duration_ms: int

    def as_detail(self) -> dict[str, object]:
        """For the catalog's verify_detail column."""
        return {
            "problem": self.problem,
            "detail": self.detail,
            "tables": len(self.row_counts),
            "differences": [
                {"table": d.table, "expected": d.expected, "actual": d.actual} for d in self.differences
            ],
            "duration_ms": self.duration_ms,
        }


def scratch_database_name() -> str:
    return f"gardenbot_verify_{secrets.token_hex(4)}"


async def verify_backup(
    *,
    admin_dsn: str,
    path: Path,
    expected_rows: Mapping[str, int],
    tools: PgTools,
    expected_sha256: str | None = None,
    jobs: int = 1,
    progress: ProgressCallback | None = None,
) -> VerifyOutcome:
    """Restore into a throwaway database on the target server and count; always drops it.

    A backup that is not as recorded is a failed outcome; an unreachable server raises.
    """
    started = time.monotonic()

    def outcome(
        problem: str | None,
        detail: str = "",
        differences: tuple[RowCountDifference, ...] = (),
        rows: dict[str, int] | None = None,
    ) -> VerifyOutcome:
        return VerifyOutcome(
            passed=problem is None,
            problem=problem,
            detail=detail,
            differences=differences,
            row_counts=rows or {},
            duration_ms=int((time.monotonic() - started) * 1000),
        )

    if not await asyncio.to_thread(path.is_file):
        return outcome("file_missing", path.name)
    if expected_sha256 is not None:
        await report(progress, 0, "checking the checksum")
        if await asyncio.to_thread(sha256_of, path) != expected_sha256:
            return outcome("checksum_mismatch", path.name)
    scratch = scratch_database_name()
    try:
        await restore_into_new_database(
            admin_dsn=admin_dsn,
            path=path,
            new_name=scratch,
            tools=tools,
            jobs=jobs,
            progress=progress,
        )
    except RunbookFailed as exc:
        return outcome("restore_failed", str(exc))
    try:
        await report(progress, 99, "counting rows")
        rows, differences = await check_restored_database(
            admin_dsn=admin_dsn, name=scratch, expected_rows=expected_rows
        )
    finally:
        await asyncio.shield(drop_database(admin_dsn, scratch))
    await report(progress, 100, "verified" if not differences else "row counts differ")
    return outcome("row_counts_differ" if differences else None, "", differences, rows)
