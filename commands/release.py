"""`release <version>` and `release list`: the manual's application update on the Garden DX hosts.

`release <version>` is an admin's, approved by a second person. Before anyone is asked, the
version must be in every host's origin (the version_check playbook). Once approved, one job (lock
`release`, one at a time across replicas): a database backup (the `backup` command's work, under
the backup lock), an archive of the application's files on each host, then the release playbook
(maintenance flag, checkout, dependencies, migrations, build, restart, health gate, rollback on
failure), each task a progress line. A rollback after migrations ran says so and offers a restore
of the pre-release backup as a button (`restore <id>`, which asks for its own approval); nothing
is ever restored on its own. Every attempt is a row in the store's `releases` (migration 0007).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from commands.backup import BACKUP_LOCK, take_catalogued_backup, worded_progress
from commands.base import ApprovalText, Args, Context, Role
from commands.command import Command
from commands.hosts import HOSTS_LOCK, archive_files, audit_run, hosts_setup, task_progress
from commands.locks import release_lock, take_lock
from commands.services import Services, utc_now
from core.errors import GardenBotError, NotFound, RunbookFailed
from core.formatting import format_duration, format_time
from core.i18n import Translator
from core.reply import Actions, Button, Confirm, Element, Fields, Header, Note, Reply, Status, Table, Text
from core.secrets import mask_text
from runbooks import hosts
from runbooks.hosts import VERSION_NAME, HostRelease, HostsReport, HostVersion
from store import releases as release_store
from store.releases import ReleaseEnd, ReleaseStatus

if TYPE_CHECKING:
    from store.jobs import Job

log = logging.getLogger(__name__)

RELEASE_TASKS = 30  # about how many tasks the release playbook reports on one host (for the percentage)
FLAG_CHECK_TIMEOUT_S = 120.0
OUTCOME_ORDER: tuple[ReleaseStatus, ...] = ("rollback_failed", "rolled_back", "released")
MIGRATION_ORDER = ("started", "ran", "not reached", "skipped")


class VersionArgs(Args):
    version: str = Field(title="version")

    @field_validator("version")
    @classmethod
    def _name(cls, v: str) -> str:
        if not VERSION_NAME.fullmatch(v):
            raise ValueError("a tag, branch or commit name (letters, digits, . _ / + -)")
        return v


# --- before the approval ---------------------------------------------------------------------------


async def check_version_exists(ctx: Context, args: VersionArgs) -> None:
    """The preflight: the version must be in every garden_app host's origin before anyone is asked.
    What it found is kept on the context for the approval text (the check runs once, not twice)."""
    report = await hosts.check_version(setup=hosts_setup(ctx.services), version=args.version)
    if not report.by_host and report.problems:
        problem = "; ".join(f"{h}: {p}" for h, p in report.problems.items())
        raise RunbookFailed("release.check_failed", problem=mask_text(problem)[:300])
    if not hosts.version_found(report):
        missing = [h for h, v in report.by_host.items() if not v.exists] or list(report.problems)
        raise NotFound("release.version_not_found", version=args.version, hosts=", ".join(missing))
    ctx.found = VersionChecked(version=args.version, report=report)


@dataclass(frozen=True)
class VersionChecked:
    """The preflight's answer for one version, handed to describe_release."""

    version: str
    report: HostsReport[HostVersion]


async def describe_release(ctx: Context, args: VersionArgs) -> ApprovalText:
    found = ctx.found
    if isinstance(found, VersionChecked) and found.version == args.version:
        report = found.report
    else:  # asked without the preflight (nothing in the pipeline does): check now
        report = await hosts.check_version(setup=hosts_setup(ctx.services), version=args.version)
    current = ", ".join(sorted({v.current.describe for v in report.by_host.values()})) or "?"
    commit = next((v.commit for v in report.by_host.values() if v.commit), "")
    summary = ctx.t(
        "release.describe",
        version=args.version,
        commit=commit[:12],
        current=current,
        hosts=len(report.by_host),
    )
    return ApprovalText(summary=summary, binding={"version": args.version, "commit": commit})


# --- the job -----------------------------------------------------------------------------------------


async def run_release(ctx: Context, args: VersionArgs) -> Reply:
    svc = ctx.services
    release_id = await release_store.start_release(
        svc.store,
        job_id=ctx.job_id,
        version=args.version,
        requested_by=ctx.actor.user_id,
        approved_by=ctx.approved_by,
    )
    try:
        return await _release(ctx, args, release_id)
    except asyncio.CancelledError:
        end = ReleaseEnd(status="interrupted", error=flag_warning(ctx.services))
        with contextlib.suppress(GardenBotError):
            await asyncio.shield(release_store.finish_release(svc.store, release_id, end))
        raise
    except GardenBotError as exc:
        end = ReleaseEnd(status="failed", error=ctx.t(exc.message_key, **exc.params))
        with contextlib.suppress(GardenBotError):
            await release_store.finish_release(svc.store, release_id, end)
        raise


async def _release(ctx: Context, args: VersionArgs, release_id: int) -> Reply:
    svc = ctx.services
    backup_id = await _database_backup(ctx)
    await release_store.attach_backup(svc.store, release_id, backup_id)
    files = await archive_files(ctx, release_id=release_id, start=20, span=10)
    if files.status != "succeeded":
        raise RunbookFailed("release.files_failed", detail=files.summary)
    # What was approved is what runs: the commit the approver was shown, not what the name means now.
    approved = str(ctx.binding.get("commit") or args.version)
    report = await hosts.release(
        setup=hosts_setup(svc),
        version=approved,
        progress=task_progress(ctx, start=30, span=69, expected=RELEASE_TASKS),
    )
    await audit_run(ctx, "release", report.run)
    end = release_end(report)
    await release_store.finish_release(svc.store, release_id, end)
    return release_reply(ctx, args.version, release_id, backup_id, report, end)


async def _database_backup(ctx: Context) -> int:
    """The `backup` command's work, under the backup lock (no backup or restore runs beside it)."""
    svc = ctx.services
    holder = {"job_id": ctx.job_id, "requested_by": ctx.actor.user_id, "started_at": utc_now().isoformat()}
    lock = await take_lock(
        svc, BACKUP_LOCK, holder=holder, ttl_seconds=svc.settings.backup.timeout_seconds + 60
    )
    try:
        progress = worded_progress(ctx, start=0, span=20, stage_key="release.step_backup")
        backup_id, _written = await take_catalogued_backup(ctx, kind="safety", progress=progress)
    finally:
        await release_lock(svc, lock)
    return backup_id


def release_end(report: HostsReport[HostRelease]) -> ReleaseEnd:
    """The worst outcome over the hosts; `failed` when no host reached the release."""
    results = list(report.by_host.values())
    if not results:
        problem = "; ".join(f"{h}: {p}" for h, p in report.problems.items()) or report.run.message
        return ReleaseEnd(status="failed", error=problem or report.run.status, run_id=report.run.run_id)
    outcome = next(o for o in OUTCOME_ORDER if any(r.outcome == o for r in results))
    migrations = next((m for m in MIGRATION_ORDER if any(r.migrations == m for r in results)), None)
    failed = next((r for r in results if r.outcome != "released"), None)
    return ReleaseEnd(
        status=outcome,
        previous_version=_versions(r.previous.describe for r in results),
        current_version=_versions(r.now.describe if r.now else "?" for r in results),
        migrations=migrations,
        failed_step=failed.failed_step if failed else None,
        error="; ".join(f"{h}: {p}" for h, p in report.problems.items()) or None,
        run_id=report.run.run_id,
    )


def _versions(values: Iterable[str]) -> str:
    return ", ".join(sorted(set(values)))


def release_reply(
    ctx: Context,
    version: str,
    release_id: int,
    backup_id: int,
    report: HostsReport[HostRelease],
    end: ReleaseEnd,
) -> Reply:
    t = ctx.t
    summary = t(f"release.outcome.{end.status}", version=version, release_id=release_id)
    fields = [
        (t("release.previous"), end.previous_version or "-"),
        (t("release.current"), end.current_version or "-"),
        (t("release.migrations"), t(f"release.migrations.{_migrations_key(end.migrations)}")),
        (t("release.backup"), str(backup_id)),
        (t("release.took"), format_duration(report.run.duration_s)),
    ]
    if end.failed_step:
        fields.append((t("release.failed_step"), end.failed_step))
    elements: list[Element] = [Text(summary), Fields(tuple(fields)), *_step_lines(ctx, report)]
    if end.error:
        elements.append(Text(t("release.error", error=mask_text(end.error)[:800])))
    if end.status != "released" and end.migrations in ("ran", "started"):
        elements += _restore_offer(ctx, backup_id)
    status: Status = "succeeded" if end.status == "released" else "failed"
    return Reply(
        status=status,
        summary=summary,
        elements=tuple(elements),
        ids={"release_id": release_id, "backup_id": backup_id},
    )


def _migrations_key(migrations: str | None) -> str:
    return (migrations or "not reached").replace(" ", "_")


def _step_lines(ctx: Context, report: HostsReport[HostRelease]) -> list[Element]:
    lines: list[Element] = []
    for host, result in report.by_host.items():
        for step in result.steps:
            ran = ", ".join(i.step for i in step.ran) or "-"
            skipped = ", ".join(
                ctx.t("release.skipped_item", step=i.step, missing=i.missing) for i in step.skipped
            )
            text = ctx.t("release.step_line", host=host, step=step.step, ran=ran)
            lines.append(Text(text + (f"; {skipped}" if skipped else "")))
    return lines


def _restore_offer(ctx: Context, backup_id: int) -> list[Element]:
    """Migrations ran and the code was rolled back: the database may be ahead of it. A person decides."""
    t = ctx.t
    confirm = Confirm(
        title=t("release.restore_confirm_title"),
        text=t("release.restore_confirm_text", backup_id=backup_id),
        confirm=t("release.restore_confirm_yes"),
        deny=t("release.restore_confirm_no"),
    )
    button = Button(
        action_id="restore_backup",
        label=t("release.restore_button", backup_id=backup_id),
        value=str(backup_id),
        style="danger",
        confirm=confirm,
    )
    return [Note(t("release.migrations_ran_rolled_back", backup_id=backup_id)), Actions((button,))]


# --- release list ----------------------------------------------------------------------------------


async def list_releases(ctx: Context, args: Args) -> Reply:
    t = ctx.t
    zone = ctx.services.settings.zone
    records = await release_store.list_releases(ctx.services.store)
    rows = tuple(
        (
            str(r.id),
            r.version,
            r.requested_by,
            r.approved_by or "-",
            format_time(r.started_at, zone),
            t(f"release.status.{r.status}"),
            format_duration(r.duration_ms / 1000) if r.duration_ms is not None else "-",
            r.failed_step or (mask_text(r.error)[:120] if r.error and r.status != "released" else "-"),
        )
        for r in records
    )
    if not rows:
        return Reply(status="succeeded", summary=t("release.none"), elements=(Text(t("release.none")),))
    columns = (
        "#",
        t("release.col.version"),
        t("release.col.asked"),
        t("release.col.approved"),
        t("release.col.when"),
        t("release.col.result"),
        t("release.col.took"),
        t("release.col.failed_step"),
    )
    summary = t("release.list_summary", count=len(rows))
    return Reply(
        status="succeeded", summary=summary, elements=(Header(t("release.list_header")), Table(columns, rows))
    )


# --- after a crash -----------------------------------------------------------------------------------


def flag_warning(services: Services) -> str:
    """What is known without asking the hosts: the flag may still be set, and where to look."""
    configured = services.settings.hosts.vars
    extra = configured.model_extra or {}
    path = str(extra.get("garden_maintenance_flag") or f"{configured.garden_root}/maintenance.flag")
    return Translator(services.settings.locale)("release.flag_unknown", path=path)


async def flag_state(services: Services) -> str:
    """Ask the hosts whether the maintenance flag is set (a read-only playbook); else the warning."""
    t = Translator(services.settings.locale)
    try:
        setup = hosts_setup(services)
        report = await asyncio.wait_for(hosts.maintenance_flag(setup=setup), FLAG_CHECK_TIMEOUT_S)
    except (GardenBotError, TimeoutError):
        return flag_warning(services)
    if not report.by_host:
        return flag_warning(services)
    set_on = [f"{h} ({f.path})" for h, f in report.by_host.items() if f.set]
    if set_on:
        return t("release.flag_set", hosts=", ".join(set_on))
    return t("release.flag_clear", hosts=", ".join(report.by_host))


async def recover_releases(services: Services, interrupted: Sequence[Job]) -> None:
    """A release whose process died: its row becomes interrupted, saying whether the flag is still set."""
    job_ids = [j.id for j in interrupted if j.command == "release"]
    if not job_ids:
        return
    state = await flag_state(services)
    marked = await release_store.interrupt_releases(services.store, job_ids=job_ids, error=state)
    for record in marked:
        log.warning("release %s (%s) was interrupted: %s", record.id, record.version, state)


COMMANDS = (
    Command(
        name="release",
        role=Role.ADMIN,
        args=VersionArgs,
        run=run_release,
        preflight=check_version_exists,
        risky=True,
        mutates=True,
        background=True,
        describe=describe_release,
        lock=HOSTS_LOCK,
        recover=recover_releases,
    ),
    Command(name="release list", role=Role.VIEWER, run=list_releases),
)
