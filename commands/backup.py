"""`backup`, `backup list`, `backup verify <id>`: custom-format dumps, catalogued and checked."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import psycopg
from pydantic import Field, field_validator

from commands.base import Args, Context, Role
from commands.command import Command
from commands.locks import break_dead_holders, release_lock, take_lock
from commands.services import Services
from core.errors import Conflict, GardenBotError, NotFound, StoreUnavailable
from core.formatting import format_age, format_bytes, format_duration, format_time
from core.i18n import Translator
from core.reply import Element, Fields, Header, Reply, Table, Text
from core.secrets import mask_text
from runbooks.backups import (
    DUMP_SUFFIX,
    BackupFile,
    backup_file_name,
    cleanup_partials,
    partial_files,
    prune_backups,
    reconcile_backup_dir,
    take_backup,
)
from runbooks.pg_tools import PgTools, admin_dsn, database_name, find_pg_tools
from runbooks.progress import ProgressCallback as StepCallback
from runbooks.progress import Step
from runbooks.restore import parallel_jobs, sweep_scratch_databases
from runbooks.verify_backup import verify_backup
from store import backups as catalog
from store.jobs import Job
from store.pending import PendingEnds
from store.releases import FileArchiveRecord

log = logging.getLogger(__name__)

BACKUP_LOCK = "backup"  # backup, verify and restore: one at a time across every replica
MAX_ID = 10**15
LIST_LIMIT = 30  # rows shown by `backup list`
FILE_ARCHIVES_SHOWN = 10  # host file archives shown under the backups by `backup list`


def valid_backup_id(v: str) -> str:
    if not v.isdigit() or not 0 < int(v) < MAX_ID:
        raise ValueError("a backup id is the number shown by `backup list`, not a path or a name")
    return str(int(v))


class BackupIdArgs(Args):
    backup_id: str = Field(title="id")

    @field_validator("backup_id")
    @classmethod
    def _id(cls, v: str) -> str:
        return valid_backup_id(v)

    @property
    def id(self) -> int:
        return int(self.backup_id)


LATEST = "latest"


class VerifyArgs(Args):
    """A backup id, or `latest`: the newest good backup (what the nightly verification checks)."""

    backup_id: str = Field(title="id|latest")

    @field_validator("backup_id")
    @classmethod
    def _id(cls, v: str) -> str:
        return LATEST if v.lower() == LATEST else valid_backup_id(v)


async def chosen_backup(svc: Services, args: VerifyArgs) -> catalog.BackupRecord:
    if args.backup_id != LATEST:
        return await good_backup(svc, int(args.backup_id))
    newest = await catalog.newest_good_backup(svc.store)
    if newest is None:
        raise NotFound("backup.none_good")
    return await good_backup(svc, newest.id)


def worded_progress(
    ctx: Context, *, start: int = 0, span: int = 100, stage_key: str | None = None
) -> StepCallback:
    """A runbook's steps, worded in the asker's language (`progress.<key>`) and shown through
    ctx.progress, their percentage mapped into start..start+span (unknown stays -1 when unmapped)."""

    async def show(step: Step) -> None:
        params = {k: format_bytes(int(str(v))) if k.endswith("_bytes") else v for k, v in step.params.items()}
        text = ctx.t(f"progress.{step.key}", **params)
        if stage_key is not None:
            text = f"{ctx.t(stage_key)} — {text}"
        mapped = (start, span) != (0, 100)
        percent = start + max(0, step.percent) * span // 100 if mapped or step.percent >= 0 else -1
        await ctx.progress(percent, text)

    return show


async def pg_tools(services: Services) -> PgTools:
    return await find_pg_tools(services.settings.pg_bin_dir)


async def unused_file_name(svc: Services, label: str) -> str:
    """A file name no catalog row and no file uses yet: names have one-second resolution, and two
    backups in the same second (or a failed one a moment ago) would otherwise collide.
    Call it holding the backup lock, so nobody takes the name in between."""
    first = backup_file_name(label)
    name, n = first, 1
    while await catalog.file_name_taken(svc.store, name) or await asyncio.to_thread(
        (svc.settings.backup_dir / name).exists
    ):
        n += 1
        name = f"{first.removesuffix(DUMP_SUFFIX)}-{n}{DUMP_SUFFIX}"
    return name


async def take_catalogued_backup(
    ctx: Context, *, kind: Literal["regular", "safety"], progress: StepCallback
) -> tuple[int, BackupFile]:
    """Dump the target and record it; a failed or interrupted dump never counts as good."""
    svc = ctx.services
    dsn = svc.target_database_url()
    tools = await pg_tools(svc)
    label = database_name(dsn)
    name = await unused_file_name(svc, f"{label}-safety" if kind == "safety" else label)
    previous = await catalog.newest_good_backup(svc.store)
    backup_id = await catalog.start_backup_record(
        svc.store,
        job_id=ctx.job_id,
        kind=kind,
        database_name=label,
        file_name=name,
        created_by=ctx.actor.user_id,
    )
    try:
        written = await take_backup(
            dsn=dsn,
            backup_dir=svc.settings.backup_dir,
            tools=tools,
            label=label,
            file_name=name,
            expected_bytes=previous.size_bytes if previous else None,
            progress=progress,
            lock_wait_timeout_s=svc.settings.backup.lock_wait_timeout_seconds,
            timeout_s=svc.settings.backup.timeout_seconds,
            compress=svc.settings.backup.safety_compression if kind == "safety" else None,
        )
    except GardenBotError as exc:
        with contextlib.suppress(StoreUnavailable):  # the job's end, kept locally, fails the row later
            await catalog.fail_backup_record(svc.store, backup_id, ctx.t(exc.message_key, **exc.params))
        raise
    except BaseException:
        with contextlib.suppress(GardenBotError):
            await asyncio.shield(catalog.fail_backup_record(svc.store, backup_id, "interrupted"))
        raise
    try:
        await catalog.finish_backup_record(svc.store, backup_id, written)
    except StoreUnavailable:
        # The file is written and checked: the backup is good. The catalog hears it when the store is back.
        await PendingEnds(svc.settings.job_spool_path).backup_finished(backup_id, written)
    return backup_id, written


async def run_backup(ctx: Context, args: Args) -> Reply:
    t = ctx.t
    backup_id, written = await take_catalogued_backup(ctx, kind="regular", progress=worded_progress(ctx))
    try:
        pruned = await prune_expired(ctx.services)
    except StoreUnavailable:
        pruned = 0  # retention waits for the store; the backup itself is done
    fields: list[tuple[str, str]] = [
        (t("backup.id"), str(backup_id)),
        (t("backup.file"), written.path.name),
        (t("backup.size"), format_bytes(written.size_bytes)),
        (t("backup.duration"), format_duration(written.duration_ms / 1000)),
        (t("backup.tables"), str(written.table_count)),
        (t("backup.sha256"), written.sha256[:16] + "…"),
    ]
    if pruned:
        fields.append((t("backup.pruned"), str(pruned)))
    summary = t("backup.done", backup_id=backup_id, size=format_bytes(written.size_bytes))
    return Reply(
        status="succeeded",
        summary=summary,
        elements=(Text(summary), Fields(tuple(fields))),
        ids={"backup_id": backup_id},
    )


async def prune_expired(services: Services) -> int:
    """Delete backups past retention (never the newest good one) and mark them pruned."""
    good = await catalog.list_backups(services.store, limit=10_000, statuses=("good",))
    removed = await asyncio.to_thread(
        prune_backups,
        backup_dir=services.settings.backup_dir,
        entries=good,
        retention_days=services.settings.backup.retention_days,
    )
    if removed:
        await catalog.mark_pruned(services.store, [e.id for e in removed])
    return len(removed)


async def list_backups(ctx: Context, args: Args) -> Reply:
    t = ctx.t
    svc = ctx.services
    # The folder is checked against the whole catalog, not only the rows shown.
    view = await catalog.catalog_view(
        svc.store,
        limit=LIST_LIMIT,
        statuses=("good", "running", "failed", "interrupted"),
        archives=FILE_ARCHIVES_SHOWN,
    )
    records = view.shown
    now = datetime.now(UTC)
    rows = tuple(
        (
            str(r.id),
            format_time(r.finished_at or r.started_at, svc.settings.zone),
            format_bytes(r.size_bytes),
            format_duration(r.duration_ms / 1000) if r.duration_ms is not None else "-",
            t(f"backup.status.{r.status}") + (f" ({r.kind})" if r.kind != "regular" else ""),
            t(f"backup.verified.{r.verify_status or 'never'}"),
            format_age(now - (r.finished_at or r.started_at)),
        )
        for r in records
    )
    elements: list[Element] = [Header(t("backup.list_header"))]
    if rows:
        elements.append(
            Table(
                columns=(
                    "#",
                    t("backup.col.time"),
                    t("backup.col.size"),
                    t("backup.col.took"),
                    t("backup.col.status"),
                    t("backup.col.verified"),
                    t("backup.col.age"),
                ),
                rows=rows,
            )
        )
    else:
        elements.append(Text(t("backup.none")))
    problems = await asyncio.to_thread(_reconcile, svc, view.good, view.file_names, t)
    elements.extend(Text(p) for p in problems)
    elements.extend(_file_archives(ctx, view.archives))
    summary = t("backup.list_summary", count=len(rows), problems=len(problems))
    return Reply(status="succeeded", summary=summary, elements=tuple(elements))


def _file_archives(ctx: Context, archives: Sequence[FileArchiveRecord]) -> list[Element]:
    """Good archives of the application's files, which stay on the hosts (`backup files`, releases),
    and how long they are kept."""
    t = ctx.t
    if not archives:
        return []
    rows = tuple(
        (
            str(a.id),
            format_time(a.created_at, ctx.services.settings.zone),
            a.host,
            a.path,
            format_bytes(a.size_bytes),
        )
        for a in archives
    )
    columns = ("#", t("backup.col.time"), t("hosts.col.host"), t("files.col.path"), t("backup.col.size"))
    kept = ctx.services.settings.backup
    retention = t("files.retention", days=kept.files_retention_days, db_days=kept.retention_days)
    return [Header(t("files.list_header")), Table(columns=columns, rows=rows), Text(retention)]


def _reconcile(
    svc: Services, good: Sequence[catalog.BackupRecord], catalogued: set[str], t: Translator
) -> list[str]:
    found = reconcile_backup_dir(svc.settings.backup_dir, good, catalogued=catalogued)
    problems = [t("backup.untracked_file", file=p.name) for p in found.untracked_files]
    problems += [t("backup.partial_file", file=p.name) for p in found.partial_files]
    problems += [t("backup.missing_file", backup_id=i) for i in found.missing_files]
    problems += [t("backup.changed_file", backup_id=i, what=what) for i, what in found.changed_files]
    return problems


def error_line(t: Translator, exc: Exception) -> str:
    """An error in one short line for a reply, secrets masked."""
    said = t(exc.message_key, **exc.params) if isinstance(exc, GardenBotError) else str(exc).strip()
    return mask_text(said.splitlines()[0] if said else type(exc).__name__)[:200]


async def sweep_leftovers(ctx: Context) -> list[str]:
    """Drop the scratch and restore copies a killed verify or restore left on the target server
    (the job holds the backup lock, so none is being made now); the lines that say what went."""
    t = ctx.t
    dsn = ctx.services.target_database_url()
    try:
        swept = await sweep_scratch_databases(admin_dsn=admin_dsn(dsn), live=database_name(dsn))
    except (GardenBotError, psycopg.Error) as exc:
        log.warning("leftover scratch databases not swept", exc_info=True)
        return [t("backup.sweep_failed", detail=error_line(t, exc))]
    for name in swept.dropped:
        log.warning("dropped database %s, left by an interrupted verify or restore", name)
    lines = []
    if swept.dropped:
        lines.append(t("backup.swept", databases=", ".join(swept.dropped)))
    if swept.in_use:
        lines.append(t("backup.sweep_in_use", databases=", ".join(swept.in_use)))
    return lines


async def run_verify(ctx: Context, args: VerifyArgs) -> Reply:
    t = ctx.t
    svc = ctx.services
    record = await chosen_backup(svc, args)
    swept = [Text(line) for line in await sweep_leftovers(ctx)]
    tools = await pg_tools(svc)
    admin = admin_dsn(svc.target_database_url())
    outcome = await verify_backup(
        admin_dsn=admin,
        path=svc.settings.backup_dir / record.file_name,
        expected_rows=record.row_counts,
        expected_sha256=record.sha256,
        tools=tools,
        jobs=await parallel_jobs(admin, svc.settings.backup.configured_jobs),
        progress=worded_progress(ctx),
    )
    await catalog.record_verification(svc.store, record.id, passed=outcome.passed, detail=outcome.as_detail())
    if outcome.passed:
        summary = t("backup.verify_passed", backup_id=record.id, tables=len(outcome.row_counts))
        return Reply(
            status="succeeded",
            summary=summary,
            elements=(Text(summary), *swept),
            ids={"backup_id": record.id},
        )
    summary = t("backup.verify_failed", backup_id=record.id, problem=t(f"backup.problem.{outcome.problem}"))
    elements: list[Element] = [Text(summary)]
    if outcome.differences:
        elements.append(
            Table(
                columns=(t("backup.col.table"), t("backup.col.expected"), t("backup.col.found")),
                rows=tuple((d.table, str(d.expected), str(d.actual)) for d in outcome.differences[:20]),
            )
        )
    return Reply(status="failed", summary=summary, elements=(*elements, *swept), ids={"backup_id": record.id})


async def check_backup_usable(ctx: Context, args: VerifyArgs) -> None:
    await chosen_backup(ctx.services, args)


async def good_backup(svc: Services, backup_id: int) -> catalog.BackupRecord:
    record = await catalog.get_backup(svc.store, backup_id)
    if record.status != "good":
        raise Conflict("backup.not_good", backup_id=backup_id, status=record.status)
    if not (svc.settings.backup_dir / record.file_name).is_file():
        raise NotFound("backup.file_missing", file=record.file_name)
    return record


async def recover_interrupted(services: Services, interrupted: Sequence[Job]) -> list[Path]:
    """After a crash: catalog entries of dead jobs become interrupted, their lock is freed,
    partial files go."""
    job_ids = [j.id for j in interrupted]
    try:
        if job_ids:
            await catalog.mark_interrupted(services.store, job_ids=job_ids)
            await break_dead_holders(services, BACKUP_LOCK, job_ids)
        if not await asyncio.to_thread(partial_files, services.settings.backup_dir):
            return []  # nothing to clean: taking the lock anyway would refuse a backup typed meanwhile
        lock = await take_lock(
            services,
            BACKUP_LOCK,
            holder={"job_id": "cleanup"},
            ttl_seconds=services.settings.jobs.lock_ttl_seconds,
        )
    except (Conflict, StoreUnavailable):
        return []  # a backup is running somewhere (its partial file is not garbage), or Redis is down
    try:
        removed = await asyncio.to_thread(cleanup_partials, services.settings.backup_dir)
    finally:
        await release_lock(services, lock)
    for path in removed:
        log.warning("removed partial backup file %s left by an interrupted job", path.name)
    return removed


async def recover_backups(services: Services, interrupted: Sequence[Job]) -> None:
    """The backup commands' crash-recovery hook (see recover_interrupted)."""
    await recover_interrupted(services, interrupted)


COMMANDS = (
    Command(
        name="backup",
        role=Role.OPERATOR,
        run=run_backup,
        mutates=True,
        background=True,
        lock=BACKUP_LOCK,
        recover=recover_backups,
    ),
    Command(
        name="backup list",
        role=Role.VIEWER,
        run=list_backups,
    ),
    Command(
        name="backup verify",
        role=Role.OPERATOR,
        args=VerifyArgs,
        run=run_verify,
        preflight=check_backup_usable,
        mutates=True,
        background=True,
        lock=BACKUP_LOCK,
    ),
)
