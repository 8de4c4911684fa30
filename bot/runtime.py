"""Process wiring: settings in, a ready pipeline out. Start-up never fails because the store is down."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from pydantic import SecretStr

from bot.notify import notifier_for
from bot.scheduling import schedule_source
from commands.locks import lock_held_by_job
from commands.pipeline import Pipeline
from commands.policy import Policy
from commands.registry import Registry, build_registry
from commands.services import Services
from core.config import Settings
from runbooks import logworkers

if TYPE_CHECKING:
    from bot.embedded import EmbeddedServers
from core.errors import ConfigError, StoreUnavailable
from core.i18n import Translator
from core.secrets import mask_dsn
from store.audit import AuditLog, AuditRecord, parse_pinned_head
from store.coordination import Coordination
from store.db import Store
from store.jobs import Job, get_job, interrupt_orphans, recovery_note
from store.pending import PendingEnds

log = logging.getLogger(__name__)

AUDIT_KEY_FILE = "audit.key"  # the embedded demo's key, in its state dir, mode 0600


@dataclass
class StartupReport:
    migrations: list[str] = field(default_factory=list)
    interrupted: list[Job] = field(default_factory=list)


@dataclass
class Runtime:
    settings: Settings
    services: Services
    pipeline: Pipeline
    startup: StartupReport

    async def close(self) -> None:
        await self.pipeline.runner.shutdown()
        await self.services.http.aclose()
        await self.services.coordination.close()
        await self.services.store.close()
        await asyncio.to_thread(logworkers.close)


def with_embedded_default(settings: Settings) -> tuple[Settings, EmbeddedServers | None]:
    """With no DATABASE_URL and REDIS_URL, start private servers and point everything at them."""
    if settings.database_url is not None or settings.redis_url is not None:
        return settings, None
    from bot.embedded import start_embedded

    servers = start_embedded(settings.state_dir / "embedded")
    audit_key = settings.audit_key or SecretStr(demo_audit_key(settings.state_dir / AUDIT_KEY_FILE))
    target = settings.target.model_copy(
        update={
            "database_url": settings.target.database_url or SecretStr(servers.garden_database_url),
            "redis_url": settings.target.redis_url or SecretStr(servers.garden_redis_url),
        }
    )
    updated = settings.model_copy(
        update={
            "database_url": SecretStr(servers.database_url),
            "redis_url": SecretStr(servers.redis_url),
            "target": target,
            "pg_bin_dir": settings.pg_bin_dir or Path(servers.pg_bin_dir),
            "audit_key": audit_key,
        }
    )
    return updated, servers


def demo_audit_key(path: Path) -> str:
    """The embedded demo's audit key: made once (0600, only this user reads it), then reused."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(key + "\n")
    log.info("embedded demo: audit key created in %s", path)
    return key


def require_audit_key(settings: Settings) -> bytes:
    """A configured bot refuses to start without its audit key: an unkeyed chain proves nothing
    against whoever holds the database credentials, and a warning is too easy to miss."""
    if settings.audit_key is None:
        raise ConfigError(
            "GARDENBOT_AUDIT_KEY", "required: a secret of 32+ characters kept outside the database (README)"
        )
    return settings.audit_key.get_secret_value().encode()


async def open_runtime(settings: Settings, *, log_worker: bool = True) -> Runtime:
    """The wired pipeline; `log_worker`: start the worker `security` and `logs` read with
    (runbooks.logworkers) now, if an API log is configured (not for a one-shot command that
    reads no log)."""
    if settings.database_url is None or settings.redis_url is None:
        raise StoreUnavailable("store.not_configured")
    key = require_audit_key(settings)
    store = Store(settings.database_url.get_secret_value())
    await store.open()
    coordination = Coordination(settings.redis_url.get_secret_value(), prefix=settings.redis_prefix)
    unkeyed_until = settings.audit_unkeyed_until
    audit = AuditLog(
        store,
        settings.spool_path,
        key=key,
        unkeyed_until=parse_pinned_head(unkeyed_until) if unkeyed_until is not None else None,
    )
    services = Services(
        settings=settings,
        store=store,
        coordination=coordination,
        audit=audit,
        http=httpx.AsyncClient(timeout=settings.health.timeout_seconds, follow_redirects=False),
        policy=Policy(settings),
        notifier=notifier_for(settings),
    )
    services.schedules = schedule_source(store, settings)
    pipeline = Pipeline(services, build_registry())
    warn_about_roleless_approvers(services.policy)
    startup = await prepare_store(services, pipeline.registry)
    if log_worker and settings.logs.api is not None:  # ready by the first `security` or `logs`
        logworkers.warm_up()
    return Runtime(settings=settings, services=services, pipeline=pipeline, startup=startup)


def warn_about_roleless_approvers(policy: Policy) -> None:
    """Approver is a flag on operator or admin; a listed approver without one decides nothing."""
    idle = policy.approvers_without_role()
    if idle:
        log.warning(
            "approvers without an operator or admin role cannot decide approvals: %s"
            " (give them a role under roles:, or a user group's members must hold one)",
            ", ".join(idle),
        )


async def prepare_store(services: Services, registry: Registry) -> StartupReport:
    """Migrate, write the spooled audit records and job ends, and mark jobs of dead processes
    interrupted (silent past the stale limit and not holding their lock)."""
    report = StartupReport()
    try:
        report.migrations = await services.store.migrate()
        await services.audit.drain_spool()
        await PendingEnds(services.settings.job_spool_path).replay(services.store)
        report.interrupted = await sweep_interrupted(services, registry)
        await registry.start(services)
    except StoreUnavailable:
        log.warning(
            "bot store %s unreachable: read-only commands only, audit goes to %s",
            mask_dsn(services.store.dsn),
            services.settings.spool_path,
        )
    for job in report.interrupted:
        log.warning("job %s (%s) was interrupted: %s", job.id, job.command, job.error)
    return report


async def sweep_interrupted(services: Services, registry: Registry) -> list[Job]:
    """Mark the jobs of dead processes interrupted (silent past the stale limit and not holding
    their lock) and let their commands clean up after them (partial files, locks)."""
    interrupted = await interrupt_orphans(
        services.store,
        me=services.instance,
        stale_after_seconds=services.settings.jobs.stale_after_seconds,
        lock_held=partial(lock_held_by_job, services),
    )
    await registry.recover(services, interrupted)
    # Read again: a command's recovery may have noted on its job what it found and did.
    interrupted = [await get_job(services.store, job.id) for job in interrupted]
    for job in interrupted:
        await services.audit.record(interrupted_record(job, found_by=services.instance.id))
    return interrupted


def interrupted_line(t: Translator, job: Job) -> str:
    """The job was interrupted, and what its command's recovery found and did about it."""
    line = t("job.interrupted_at_start", job_id=job.id, command=job.command)
    note = recovery_note(job)
    return f"{line} {note}" if note else line


def interrupted_record(job: Job, *, found_by: str) -> AuditRecord:
    """The end of a job whose process stopped: its `job_finished`, written by whoever found it."""
    return AuditRecord.new(
        correlation_id=job.correlation_id,
        source=job.source,
        actor=job.requested_by,
        approver=job.approved_by,
        channel=job.channel,
        command=job.command,
        event="job_finished",
        outcome="interrupted",
        detail={
            "job_id": job.id,
            "reason": "job.interrupted",
            "found_by": found_by,
            **({"recovery": note} if (note := recovery_note(job)) else {}),
        },
    )


async def keep_sweeping(
    runtime: Runtime,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    on_interrupted: Callable[[list[Job]], Awaitable[None]] | None = None,
) -> None:
    """While serving: a replica killed mid-job must not leave its job 'running' until some restart.

    Every stale limit, the jobs of processes gone meanwhile are marked interrupted and cleaned up,
    and `on_interrupted` is told of them (Slack: the ops channel and each job's message).
    """
    every = runtime.settings.jobs.stale_after_seconds
    while True:
        await sleep(every)
        try:
            found = await sweep_interrupted(runtime.services, runtime.pipeline.registry)
            for job in found:
                log.warning("job %s (%s) was interrupted: %s", job.id, job.command, job.error)
            if found and on_interrupted is not None:
                await on_interrupted(found)
        except StoreUnavailable:
            continue  # the next round tries again
        except Exception:
            log.exception("sweeping interrupted jobs failed")
