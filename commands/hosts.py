"""`service status`, `service restart <name|all>`, `system info`, `backup files`, `evidence`: the
Garden DX servers through the shipped Ansible playbooks (runbooks/hosts.py).

A restart is risky (a second person approves) except during an open P1 incident: then it runs at
once (break-glass) and says so on that incident's timeline. Work that changes the hosts holds the
`release` lock, so a restart, a file backup and a release never overlap across replicas.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from pydantic import Field

from commands.base import ApprovalText, Args, Context, Role
from commands.boundary import audit_record
from commands.command import Command
from commands.services import Services, utc_now
from core.errors import GardenBotError, RunbookFailed, UsageError
from core.formatting import format_bytes, format_duration, format_time
from core.reply import Element, Fields, Header, Level, Note, Reply, Status, Table, Text
from core.secrets import mask_text
from runbooks import hosts
from runbooks.backups import archives_past_retention
from runbooks.playbook_runner import HostsSetup, PlaybookRun, TaskEvent, TaskProgress
from store import incidents as incident_store
from store import releases as release_store

log = logging.getLogger(__name__)

HOSTS_LOCK = "release"  # releases, restarts and file backups: one at a time across every replica
EVIDENCE_LINES = 20  # error-log lines shown per host (the timeline keeps them all)
LOG_LINES = 5  # lines of each service's log shown per host


class ServiceArgs(Args):
    service: str = Field(title="name|all", max_length=128)


def hosts_setup(services: Services) -> HostsSetup:
    """The `hosts:` configuration as the playbooks take it; refused when no inventory is configured."""
    configured = services.settings.hosts
    if configured.inventory is None:
        raise RunbookFailed("target.not_configured", what="hosts.inventory / GARDENBOT_INVENTORY")
    return HostsSetup(inventory=configured.inventory, vars=configured.vars.model_dump(mode="json"))


def task_progress(ctx: Context, *, start: int = 0, span: int = 100, expected: int = 12) -> TaskProgress:
    """Each playbook task on each host as a progress line; the percentage grows with the tasks seen."""
    seen = 0

    async def show(event: TaskEvent) -> None:
        nonlocal seen
        if event.status == "started":
            seen += 1
        percent = start + min(span - 1, seen * span // max(1, expected))
        status = ctx.t(f"hosts.task.{event.status}")
        text = ctx.t("hosts.task_line", host=event.host, task=event.task, status=status)
        await ctx.progress(percent, text)

    return show


async def audit_run(ctx: Context, command: str, run: PlaybookRun) -> None:
    """Which playbook ran where and how it ended, in the audit beside the job's own records."""
    outcome = "succeeded" if run.ok else "failed"
    record = audit_record(
        ctx.request,
        command,
        "playbook_run",
        outcome,
        approver=ctx.approved_by,
        job_id=ctx.job_id,
        detail=run.audit(),
    )
    await ctx.services.audit.record(record)


def problem_lines(ctx: Context, problems: Mapping[str, str]) -> list[Element]:
    return [
        Text(ctx.t("hosts.problem", host=host, problem=mask_text(text)[:500]))
        for host, text in problems.items()
    ]


# --- service status -----------------------------------------------------------------------------


async def run_service_status(ctx: Context, args: Args) -> Reply:
    t = ctx.t
    zone = ctx.services.settings.zone
    report = await hosts.service_status(setup=hosts_setup(ctx.services))
    rows: list[tuple[str, ...]] = []
    levels: list[Level] = []
    for host, found in report.by_host.items():
        for state in found.services:
            since = format_time(state.since, zone) if state.since else "-"
            restarts = str(state.restarts) if state.restarts is not None else "-"
            rows.append((host, state.name, state.state, since, restarts))
            levels.append("ok" if state.active else "fail")
    down = levels.count("fail")
    healthy = report.ok and not down and bool(rows)
    summary = t("service.status_ok", count=len(rows)) if healthy else t("service.status_down", down=down)
    columns = (t("hosts.col.host"), t("service.col.service"), t("service.col.state"), t("service.col.since"))
    table = Table(columns=(*columns, t("service.col.restarts")), rows=tuple(rows), levels=tuple(levels))
    elements: list[Element] = [
        Header(t("service.status_header")),
        table,
        *problem_lines(ctx, report.problems),
    ]
    return Reply(
        status="succeeded" if healthy else "failed", summary=summary, elements=(Text(summary), *elements)
    )


# --- service restart ------------------------------------------------------------------------------


async def check_service(ctx: Context, args: ServiceArgs) -> None:
    """Before any approval: the hosts are configured and the name is one of garden_services or all."""
    setup = hosts_setup(ctx.services)
    known = list(setup.vars.get("garden_services") or [])
    if args.service != "all" and args.service not in known:
        raise UsageError("hosts.unknown_service", service=args.service[:80], known=", ".join(["all", *known]))


async def describe_restart(ctx: Context, args: ServiceArgs) -> ApprovalText:
    setup = hosts_setup(ctx.services)
    names = list(setup.vars.get("garden_services") or []) if args.service == "all" else [args.service]
    summary = ctx.t("service.restart_describe", services=", ".join(names), inventory=str(setup.inventory))
    return ApprovalText(summary=summary, binding={"service": args.service})


async def open_p1(ctx: Context, args: Args) -> dict[str, Any] | None:
    """Break-glass: during an open P1 incident a restart runs without waiting for a second person.

    The P1 must come from someone else (declared or acknowledged by another person): declaring a P1
    oneself is no way around the two-person rule, nor is doing it as another user at a console. Who
    is behind the request (the actor, an admin acting as them, the console's OS login) shares nobody
    with who is behind the declaration or the acknowledgement, as for an approval's decider."""
    me = ctx.request.people_behind()
    for incident in await incident_store.list_incidents(ctx.services.store):
        if incident.severity != "P1" or not incident.is_open:
            continue
        if not incident.declared_by_people() & me:
            return {"incident_id": incident.id, "severity": "P1", "vouched_by": incident.declared_by}
        if incident.acked_by is not None and not incident.acked_by_people() & me:
            return {"incident_id": incident.id, "severity": "P1", "vouched_by": incident.acked_by}
    return None


async def note_on_timeline(ctx: Context, incident_id: int, text: str, detail: dict[str, Any]) -> None:
    """One line on an incident's timeline: what this job did there, by whom, now."""
    await incident_store.note(
        ctx.services.store,
        incident_id,
        at=utc_now(),
        actor=ctx.actor.user_id,
        kind="action",
        text=text,
        detail={**detail, "job_id": ctx.job_id},
    )


async def note_break_glass(ctx: Context, command: str) -> str | None:
    """On the P1's timeline: who ran what without a second person. The note line for the reply."""
    why = ctx.binding.get("break_glass")
    if not isinstance(why, dict) or "incident_id" not in why:
        return None
    incident_id = int(why["incident_id"])
    text = ctx.t("service.break_glass_timeline", command=command, user=ctx.actor.user_id)
    await note_on_timeline(
        ctx, incident_id, text, {"command": command, "break_glass": True, "approval": "skipped"}
    )
    return ctx.t("service.break_glass_note", incident_id=incident_id)


async def run_restart(ctx: Context, args: ServiceArgs) -> Reply:
    t = ctx.t
    flagged = await note_break_glass(ctx, f"service restart {args.service}")
    report = await hosts.restart_service(
        setup=hosts_setup(ctx.services), service=args.service, progress=task_progress(ctx, expected=6)
    )
    await audit_run(ctx, "service restart", report.run)
    rows = []
    for host, result in report.by_host.items():
        for action in result.restarted:
            rows.append(
                (host, action.name, t("service.restarted") if action.ok else t("service.not_restarted"))
            )
        rows.append((host, t("service.health_gate"), _gate_text(ctx, result.health)))
    if report.ok:
        summary = t("service.restart_done", service=args.service, hosts=len(report.by_host))
    else:
        summary = t("service.restart_failed", service=args.service)
    columns = (t("hosts.col.host"), t("service.col.service"), t("service.col.state"))
    elements: list[Element] = [Text(summary), Table(columns=columns, rows=tuple(rows))]
    elements += problem_lines(ctx, report.problems)
    if flagged:
        elements.append(Note(flagged))
    return Reply(status="succeeded" if report.ok else "failed", summary=summary, elements=tuple(elements))


def _gate_text(ctx: Context, gate: hosts.HealthGate | None) -> str:
    if gate is None:
        return "-"
    key = "service.gate_passed" if gate.healthy else "service.gate_failed"
    return ctx.t(key, answers=gate.answers, seconds=f"{gate.elapsed_s:.1f}", last=mask_text(gate.last)[:120])


# --- system info ------------------------------------------------------------------------------------


async def run_system_info(ctx: Context, args: Args) -> Reply:
    t = ctx.t
    report = await hosts.system_info(setup=hosts_setup(ctx.services))
    elements: list[Element] = [Header(t("system.header"))]
    for host, facts in report.by_host.items():
        disks = ", ".join(f"{d.mount} {d.percent:.0f}%" for d in facts.disks[:6]) or "-"
        ports = ", ".join(str(p) for p in facts.ports.listening) or "-"
        missing = ", ".join(str(p) for p in facts.ports.missing)
        fields = (
            (t("system.os"), f"{facts.os} ({facts.kernel})"),
            (t("system.uptime"), format_duration(facts.uptime_s)),
            (t("system.cpu"), t("system.cpu_value", count=facts.cpu.count, load=_load(facts.cpu.load))),
            (t("system.memory"), _memory(facts.memory)),
            (t("system.disks"), disks),
            (
                t("system.ports"),
                ports + (f" ({t('system.ports_missing', ports=missing)})" if missing else ""),
            ),
            (
                t("system.database"),
                format_bytes(facts.database_bytes) if facts.database_bytes is not None else "-",
            ),
            (t("system.app_version"), facts.app_version or "-"),
        )
        elements += [Text(f"*{host}*"), Fields(fields)]
    elements += problem_lines(ctx, report.problems)
    summary = t("system.summary", hosts=len(report.by_host), problems=len(report.problems))
    return Reply(status="succeeded" if report.ok else "failed", summary=summary, elements=tuple(elements))


def _load(load: tuple[float, ...]) -> str:
    return " ".join(f"{value:.2f}" for value in load) or "-"


def _memory(memory: hosts.Memory) -> str:
    if not memory.total_bytes:
        return "-"
    return f"{format_bytes(memory.used_bytes)} / {format_bytes(memory.total_bytes)}"


# --- backup files -------------------------------------------------------------------------------------


async def archive_files(ctx: Context, *, release_id: int | None, start: int = 0, span: int = 100) -> Reply:
    """Archive garden_root and the configuration on every host; each archive recorded in the store."""
    t = ctx.t
    report = await hosts.backup_files(
        setup=hosts_setup(ctx.services), progress=task_progress(ctx, start=start, span=span, expected=4)
    )
    await audit_run(ctx, "backup files", report.run)
    rows = []
    ids: dict[str, int | str] = {}
    for host, archive in report.by_host.items():
        archive_id = await release_store.record_file_archive(
            ctx.services.store,
            job_id=ctx.job_id,
            release_id=release_id,
            host=host,
            archive=archive,
            created_by=ctx.actor.user_id,
        )
        ids.setdefault("file_backup_id", archive_id)
        rows.append(
            (str(archive_id), host, archive.path, format_bytes(archive.size_bytes), archive.sha256[:16] + "…")
        )
    ok = report.ok and bool(rows)
    summary = t("files.done", count=len(rows)) if ok else t("files.failed")
    columns = ("#", t("hosts.col.host"), t("files.col.path"), t("backup.col.size"), t("backup.sha256"))
    elements: list[Element] = [Text(summary), Table(columns=columns, rows=tuple(rows))]
    elements += problem_lines(ctx, report.problems)
    return Reply(status="succeeded" if ok else "failed", summary=summary, elements=tuple(elements), ids=ids)


async def run_backup_files(ctx: Context, args: Args) -> Reply:
    """Archive the files, then (only after a good archive on every host) prune the archives past
    backup.files_retention_days; a prune that fails warns and leaves the new archives standing."""
    reply = await archive_files(ctx, release_id=None)
    if reply.status != "succeeded":
        return reply
    try:
        lines = await prune_expired_archives(ctx)
    except GardenBotError as exc:
        log.warning("backup files: archives past retention not pruned (%s)", type(exc).__name__)
        detail = mask_text(ctx.t(exc.message_key, **exc.params))[:300]
        lines = [Text(ctx.t("files.prune_failed", detail=detail))]
    return replace(reply, elements=(*reply.elements, *lines))


async def prune_expired_archives(ctx: Context) -> list[Element]:
    """Delete the archives past retention on their hosts (each keeps its newest good one), mark the
    ones gone `pruned`, and audit the playbook run: `backup`'s prune (commands/backup.py) for archives
    that live on the hosts instead of in the backup directory."""
    svc = ctx.services
    days = svc.settings.backup.files_retention_days
    good = await release_store.list_file_archives(svc.store, limit=None, statuses=("good",))
    chosen = archives_past_retention(good, retention_days=days)
    if not chosen:
        return []
    paths: dict[str, list[str]] = {}
    for archive in chosen:
        paths.setdefault(archive.host, []).append(archive.path)
    report = await hosts.prune_files(setup=hosts_setup(svc), paths=paths)
    await audit_run(ctx, "backup files", report.run)
    gone = {
        (host, path) for host, found in report.by_host.items() for path in (*found.removed, *found.absent)
    }
    pruned = await release_store.mark_archives_pruned(
        svc.store, [a.id for a in chosen if (a.host, a.path) in gone]
    )
    lines: list[Element] = [Text(ctx.t("files.pruned", days=days, count=pruned))] if pruned else []
    lines += [
        Text(ctx.t("files.prune_refused", host=host, path=path))
        for host, found in report.by_host.items()
        for path in found.refused
    ]
    return lines + problem_lines(ctx, report.problems)


# --- evidence ------------------------------------------------------------------------------------------


async def gather_evidence(ctx: Context) -> tuple[Reply, dict[str, Any]]:
    """Service states, the error log's end and the services' logs per host: the reply, and the facts
    an incident's timeline keeps (`incident evidence <id>` calls this, then notes the facts)."""
    t = ctx.t
    report = await hosts.collect_evidence(
        setup=hosts_setup(ctx.services), progress=task_progress(ctx, expected=6)
    )
    await audit_run(ctx, "evidence", report.run)
    elements: list[Element] = [Header(t("evidence.header"))]
    facts: dict[str, Any] = {"run_id": report.run.run_id, "hosts": {}, "problems": dict(report.problems)}
    for host, found in report.by_host.items():
        states = ", ".join(f"{s.name} {s.state}" for s in found.services) or "-"
        errors = [line for line in found.error_log.lines if " ERROR " in line or " CRITICAL " in line]
        elements += [
            Text(f"*{host}*: {states}"),
            Text(t("evidence.error_log", path=found.error_log.path, count=len(errors))),
        ]
        elements += (
            [Text("```\n" + "\n".join(found.error_log.lines[-EVIDENCE_LINES:]) + "\n```")]
            if found.error_log.lines
            else []
        )
        for excerpt in found.logs:
            tail = "\n".join(excerpt.lines[-LOG_LINES:])
            elements.append(
                Text(f"{excerpt.name} ({excerpt.source}):\n```\n{tail}\n```" if tail else excerpt.name)
            )
        facts["hosts"][host] = found.model_dump(mode="json")
    elements += problem_lines(ctx, report.problems)
    summary = t("evidence.summary", hosts=len(report.by_host), problems=len(report.problems))
    status: Status = "succeeded" if report.ok else "failed"
    return Reply(status=status, summary=summary, elements=(Text(summary), *elements)), facts


async def attach_evidence(ctx: Context, incident_id: int) -> Reply:
    """`incident evidence <id>`: gather, then keep it on the incident's timeline."""
    await incident_store.get_incident(ctx.services.store, incident_id)
    reply, facts = await gather_evidence(ctx)
    text = ctx.t("evidence.timeline", summary=reply.summary)
    await note_on_timeline(ctx, incident_id, text, {"command": "evidence", **facts})
    return reply


async def run_evidence(ctx: Context, args: Args) -> Reply:
    """`evidence` with no incident to keep it: the same evidence, posted to the ops channel."""
    reply, _facts = await gather_evidence(ctx)
    note = await post_to_ops(ctx, reply)
    return replace(reply, elements=(*reply.elements, note)) if note is not None else reply


async def post_to_ops(ctx: Context, reply: Reply) -> Note | None:
    """Post the reply to the ops channel (unless it was asked there); a Note saying how it went."""
    svc = ctx.services
    ops = svc.settings.channels.ops
    if not ops or ctx.request.channel == ops:
        return None
    try:
        ref = await svc.notifier.post(ops, reply)
    except GardenBotError as exc:
        return Note(ctx.t("evidence.not_posted", error=ctx.t(exc.message_key, **exc.params)))
    except Exception as exc:  # Slack refused: the asker has the evidence all the same
        return Note(ctx.t("evidence.not_posted", error=type(exc).__name__))
    return Note(ctx.t("evidence.posted", channel=str(ref.get("channel") or ops)))


COMMANDS = (
    Command(name="service status", role=Role.VIEWER, run=run_service_status),
    Command(
        name="service restart",
        role=Role.OPERATOR,
        args=ServiceArgs,
        run=run_restart,
        preflight=check_service,
        risky=True,
        mutates=True,
        background=True,
        describe=describe_restart,
        lock=HOSTS_LOCK,
        waive_approval=open_p1,
    ),
    Command(name="system info", role=Role.VIEWER, run=run_system_info),
    Command(
        name="backup files",
        role=Role.OPERATOR,
        run=run_backup_files,
        mutates=True,
        background=True,
        lock=HOSTS_LOCK,
    ),
    Command(name="evidence", role=Role.OPERATOR, run=run_evidence, background=True),
)
