"""`restore <backup-id>`: admin, approved by a second person, safety backup alongside, atomic swap."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from commands.backup import (
    BACKUP_LOCK,
    BackupIdArgs,
    error_line,
    good_backup,
    pg_tools,
    sweep_leftovers,
    take_catalogued_backup,
    worded_progress,
)
from commands.base import ApprovalText, Context, Role
from commands.command import Command
from commands.services import Services
from core.errors import Conflict, GardenBotError, RunbookFailed
from core.formatting import format_bytes, format_duration, format_time
from core.i18n import Translator
from core.reply import Fields, Reply, Text
from core.secrets import mask_dsn, mask_text
from runbooks.backups import open_backup
from runbooks.health import check_database
from runbooks.pg_tools import admin_dsn, database_name, estimate_rows
from runbooks.progress import Step
from runbooks.restore import (
    RestoreOutcome,
    check_checksum,
    parallel_jobs,
    prune_old_databases,
    reopen_after_interrupted_swap,
    restore_backup,
    wait_for_api,
)
from store import jobs as job_store

log = logging.getLogger(__name__)

KEEP_BEFORE_DAYS = 7


async def describe_restore(ctx: Context, args: BackupIdArgs) -> ApprovalText:
    """What the approver must know: which backup, how big, its checksum, and what gets replaced."""
    svc = ctx.services
    record = await good_backup(svc, args.id)
    dsn = svc.target_database_url()
    # Catalog estimates, not count(*): a table locked by another session must not hold up the request.
    current = await estimate_rows(dsn)
    summary = ctx.t(
        "restore.describe",
        backup_id=record.id,
        taken=format_time(record.finished_at, svc.settings.zone),
        size=format_bytes(record.size_bytes),
        sha=(record.sha256 or "")[:16],
        database=database_name(dsn),
        where=mask_dsn(dsn),
        tables=current.tables,
        rows=current.rows,
    )
    # The approval is bound to this file: a changed file is refused when it is approved.
    return ApprovalText(summary=summary, binding={"sha256": record.sha256, "file_name": record.file_name})


async def run_restore(ctx: Context, args: BackupIdArgs) -> Reply:
    started = time.monotonic()  # the job starts when it is approved: recovery time counts from here
    svc = ctx.services
    record = await good_backup(svc, args.id)
    if ctx.binding and (
        ctx.binding.get("sha256") != record.sha256 or ctx.binding.get("file_name") != record.file_name
    ):
        raise Conflict("restore.binding_changed", backup_id=record.id)
    expected_sha = str(ctx.binding.get("sha256") or record.sha256)
    swept = await sweep_leftovers(ctx)  # an abandoned copy would hold a whole database's disk
    streams = StreamProgress(ctx, start=5, span=90)
    safety: list[int] = []

    async def safety_backup() -> None:
        try:
            backup_id, _ = await take_catalogued_backup(ctx, kind="safety", progress=streams.safety)
        except GardenBotError as exc:
            raise RunbookFailed("restore.safety_failed", detail=_short(ctx, exc)) from exc
        safety.append(backup_id)

    with open_backup(svc.settings.backup_dir / record.file_name) as backup:
        if record.size_bytes is not None and backup.size_bytes != record.size_bytes:
            raise RunbookFailed("restore.checksum_mismatch", file=record.file_name)
        # Checked before the safety backup, on the open file that pg_restore will read.
        await check_checksum(backup, expected_sha, progress=worded_progress(ctx, span=5))
        tools = await pg_tools(svc)
        dsn = svc.target_database_url()
        jobs = await parallel_jobs(admin_dsn(dsn), svc.settings.backup.configured_jobs)
        # The safety backup of the live database runs alongside pg_restore; the swap waits for both.
        outcome = await restore_backup(
            dsn=dsn,
            backup=backup,
            expected_sha256=expected_sha,
            expected_rows=record.row_counts,
            tools=tools,
            jobs=jobs,
            progress=streams.restore,
            before_swap=ctx.fence,
            alongside=safety_backup,
        )
    to_swap_ms = _ms_since(started)
    lines, healthy_at = await _after_swap(ctx, live=outcome.live)
    lines = [*swept, *lines]
    recovery = RecoveryTime(to_swap_ms, None if healthy_at is None else int((healthy_at - started) * 1000))
    return _restored_reply(
        ctx, record.id, outcome, safety_id=safety[0], jobs=jobs, recovery=recovery, lines=lines
    )


@dataclass(frozen=True)
class RecoveryTime:
    """From the approval (the job's start) to the swap, and to the first healthy /health after it."""

    to_swap_ms: int
    to_healthy_ms: int | None  # None: the API was not checked, or not healthy within the wait


def _restored_reply(
    ctx: Context,
    backup_id: int,
    outcome: RestoreOutcome,
    *,
    safety_id: int,
    jobs: int,
    recovery: RecoveryTime,
    lines: list[str],
) -> Reply:
    summary = ctx.t("restore.done", backup_id=backup_id, database=outcome.live)
    ids: dict[str, int | str] = {
        "backup_id": backup_id,
        "safety_backup_id": safety_id,
        "recovery_to_swap_ms": recovery.to_swap_ms,
    }
    if recovery.to_healthy_ms is not None:
        ids["recovery_to_healthy_ms"] = recovery.to_healthy_ms
    fields = (
        (ctx.t("restore.kept_as"), outcome.kept_as),
        (ctx.t("restore.safety_backup"), str(safety_id)),
        (ctx.t("restore.rows"), str(sum(outcome.row_counts.values()))),
        (ctx.t("restore.parallel_jobs"), str(jobs)),
        (ctx.t("backup.duration"), format_duration(outcome.duration_ms / 1000)),
        (ctx.t("restore.recovery_to_swap"), format_duration(recovery.to_swap_ms / 1000)),
        (ctx.t("restore.recovery_to_healthy"), _healthy_figure(ctx, recovery.to_healthy_ms)),
    )
    return Reply(
        status="succeeded",
        summary=summary,
        elements=(Text(summary), Fields(fields), *(Text(line) for line in lines)),
        ids=ids,
    )


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _healthy_figure(ctx: Context, to_healthy_ms: int | None) -> str:
    if to_healthy_ms is not None:
        return format_duration(to_healthy_ms / 1000)
    if ctx.services.settings.target.api_url is None:
        return ctx.t("restore.recovery_not_checked")
    return ctx.t("restore.recovery_not_reached")


STREAM_STEPS = frozenset({"dumping", "restoring"})  # steps whose percentage is the stream's own
DONE_STEPS = frozenset({"backup_written", "ready_to_swap"})  # a stream's last step
WHOLE_STEPS = frozenset({"swapping", "restored"})  # after both streams: the line is the whole job's


class StreamProgress:
    """The safety dump and the restore, side by side in one progress line, worded in the asker's
    language: "safety dump 40 % · restore 62 %"; whole-job steps (the swap) replace the line."""

    def __init__(self, ctx: Context, *, start: int, span: int) -> None:
        self.ctx = ctx
        self.start, self.span = start, span
        self.percent = {"safety": 0, "restore": 0}
        self.text = {stream: self._worded(stream, Step("dumping", 0)) for stream in self.percent}

    async def safety(self, step: Step) -> None:
        await self._update("safety", step)

    async def restore(self, step: Step) -> None:
        if step.key in WHOLE_STEPS:
            await self.ctx.progress(self.start + self.span, self.ctx.t(f"progress.{step.key}"))
            return
        await self._update("restore", step)

    def _worded(self, stream: str, step: Step) -> str:
        t = self.ctx.t
        label = t("restore.stream_safety") if stream == "safety" else t("restore.stream_restore")
        if step.key in DONE_STEPS:
            return t("restore.stream_done", stream=label)
        if step.key in STREAM_STEPS and step.percent >= 0:
            return t("restore.stream_percent", stream=label, percent=step.percent)
        params = {k: format_bytes(int(str(v))) if k.endswith("_bytes") else v for k, v in step.params.items()}
        return t("restore.stream_step", stream=label, step=t(f"progress.{step.key}", **params))

    async def _update(self, stream: str, step: Step) -> None:
        self.text[stream] = self._worded(stream, step)
        if step.key in DONE_STEPS:
            self.percent[stream] = 100
        elif step.percent >= 0:
            self.percent[stream] = step.percent
        text = self.ctx.t("restore.streams", safety=self.text["safety"], restore=self.text["restore"])
        both = self.percent["safety"] + self.percent["restore"]
        await self.ctx.progress(self.start + both * self.span // 200, text)


async def _after_swap(ctx: Context, *, live: str) -> tuple[list[str], float | None]:
    """The swap is done: nothing after it fails the restore; it is reported, not undone.

    Also the moment (monotonic) the API was first seen healthy, None if it was not.
    """
    t = ctx.t
    svc = ctx.services
    dsn = svc.target_database_url()
    lines: list[str] = []
    try:
        # Earlier restores' `_before_` copies are kept a week, then dropped.
        await prune_old_databases(admin_dsn=admin_dsn(dsn), live=live, keep_days=KEEP_BEFORE_DAYS)
    except Exception as exc:
        log.warning("restore: old copies of %s not pruned", live, exc_info=True)
        lines.append(t("restore.prune_failed", detail=_short(ctx, exc)))
    await ctx.progress(96, t("restore.step_health"))
    try:
        health = await check_database(dsn, timeout=svc.settings.health.timeout_seconds)
        lines.append(t("restore.health_ok", figure=health.figure))
    except Exception as exc:
        lines.append(t("restore.health_failed", detail=type(exc).__name__))
    line, healthy_at = await _api_line(ctx)
    lines.append(line)
    return lines, healthy_at


async def _api_line(ctx: Context) -> tuple[str, float | None]:
    """The API's /health after the swap, polled until healthy within the configured wait."""
    svc = ctx.services
    api_url = svc.settings.target.api_url
    if api_url is None:
        return ctx.t("restore.api_not_configured"), None
    await ctx.progress(98, ctx.t("restore.step_api"))
    wait = svc.settings.backup.restore_health_wait_seconds
    api = await wait_for_api(svc.http, api_url, limit_s=wait)
    seconds = f"{api.waited_ms / 1000:.1f}"
    if api.healthy:
        return ctx.t("restore.api_healthy", seconds=seconds), time.monotonic()
    return ctx.t("restore.api_unhealthy", seconds=seconds, figure=api.figure), None


def _short(ctx: Context, exc: Exception) -> str:
    if isinstance(exc, GardenBotError):
        return mask_text(ctx.t(exc.message_key, **exc.params))
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return mask_text(text)[:200]


async def recover_restores(services: Services, interrupted: Sequence[job_store.Job]) -> None:
    """A restore whose process died may have died in the swap, after it set live to refuse new
    sessions and before its `finally` allowed them again: then live accepts them again, and the
    job says so. A database that accepts connections is left as it is."""
    restores = [j for j in interrupted if j.command == "restore"]
    if not restores:
        return
    t = Translator(services.settings.locale)
    try:
        dsn = services.target_database_url()
        live = database_name(dsn)
        reopened = await reopen_after_interrupted_swap(admin_dsn=admin_dsn(dsn), live=live)
    except (GardenBotError, psycopg.Error) as exc:
        log.warning(
            "interrupted restore: whether the live database accepts connections is unknown", exc_info=True
        )
        note = t("restore.recovery_unchecked", detail=error_line(t, exc))
    else:
        if not reopened:
            return
        log.warning("interrupted restore: %s refused connections; allowed again", ", ".join(reopened))
        note = t("restore.recovery_reopened", databases=", ".join(reopened))
    for job in restores:
        await job_store.note_interrupted(services.store, job.id, note)


COMMANDS = (
    Command(
        name="restore",
        usage="restore <backup-id>",
        role=Role.ADMIN,
        args=BackupIdArgs,
        run=run_restore,
        risky=True,
        mutates=True,
        background=True,
        describe=describe_restore,
        lock=BACKUP_LOCK,
        recover=recover_restores,
    ),
)
