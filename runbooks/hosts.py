"""Work on the Garden DX servers, one shipped playbook each, with typed results per host.

Every function takes the `HostsSetup` (inventory and `hosts.vars`) and an optional progress callback
receiving `TaskEvent`s, and returns a `HostsReport[T]`: the `PlaybookRun` (for the audit: playbook,
run id, status per host) and, per host, what the playbook reported, parsed into `T`. A host that
failed without reporting anything appears in `report.problems` with the failed task's masked message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from core.errors import UsageError
from core.secrets import mask_text
from runbooks.playbook_runner import HostsSetup, PlaybookRun, TaskProgress, run_playbook

VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/+-]{0,127}")  # fullmatch: no trailing newline
SERVICE_NAME = re.compile(r"[A-Za-z0-9@_][A-Za-z0-9@._-]{0,127}")
# What a host may report as its archive, and what is ever sent back to a host to prune: an absolute
# path of plain names ending in an archive the role writes. Nothing Ansible would template (`{{`,
# `{%`) or a shell would read, no `..`: the path comes from the host and goes into extra vars.
ARCHIVE_PATH = re.compile(r"(?:/[A-Za-z0-9._-]{1,255})*/garden-files-[A-Za-z0-9._-]{1,200}\.tar\.gz")
INVENTORY_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")
# Each playbook's limit unless HostsSetup.timeout_s says otherwise.
TIMEOUTS_S = {"release": 1800.0, "backup_files": 1800.0, "service_restart": 300.0, "prune_files": 300.0}
DEFAULT_TIMEOUT_S = 300.0

T = TypeVar("T", bound=BaseModel)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


def _empty_is_none(value: Any) -> Any:
    """The playbooks say "nothing" as "" or {}."""
    return None if value in ("", {}) else value


class ServiceState(_Model):
    name: str
    active: bool
    state: str  # RUNNING, active/running, exited...
    since: datetime | None = None
    restarts: int | None = None  # None where the manager keeps no count

    _since = field_validator("since", mode="before")(_empty_is_none)


class HostServices(_Model):
    services: tuple[ServiceState, ...]


class HealthGate(_Model):
    healthy: bool
    answers: int
    streak: int
    elapsed_s: float
    last: str


class ServiceAction(_Model):
    name: str
    action: str
    ok: bool
    output: str = ""


class HostRestart(_Model):
    restarted: tuple[ServiceAction, ...]
    health: HealthGate


class AppVersion(_Model):
    commit: str
    describe: str


class HostVersion(_Model):
    exists: bool
    commit: str
    ref: str = ""
    current: AppVersion


class StepItem(_Model):
    step: str  # "npm ci", "pip install -r requirements.txt", "alembic upgrade head", "npm run build"
    dir: str = ""  # where it ran
    missing: str = ""  # the file whose absence skipped it


class ReleaseStep(_Model):
    step: Literal["deps", "migrate", "build"]
    ran: tuple[StepItem, ...]
    skipped: tuple[StepItem, ...]


class HostRelease(_Model):
    outcome: Literal["released", "rolled_back", "rollback_failed"]
    version: str
    previous: AppVersion
    now: AppVersion | None = None  # None when the rollback failed: state unknown
    migrations: Literal["not reached", "started", "ran", "skipped"]
    steps: tuple[ReleaseStep, ...] = ()
    health: HealthGate | None = None  # the release's gate, or the rollback's
    failed_step: str = ""
    error: str = ""

    _nothing = field_validator("now", "health", mode="before")(_empty_is_none)


class FileArchive(_Model):
    path: str
    size_bytes: int
    sha256: str
    included: tuple[str, ...]
    missing: tuple[str, ...]

    @field_validator("path")
    @classmethod
    def _archive_path(cls, value: str) -> str:
        if not is_archive_path(value):
            raise ValueError("not a path of an archive the role writes")
        return value


def is_archive_path(path: str) -> bool:
    return ARCHIVE_PATH.fullmatch(path) is not None and not {".", ".."} & set(path.split("/"))


class PrunedFiles(_Model):
    removed: tuple[str, ...]
    absent: tuple[str, ...]  # already gone: the catalog may say so too
    refused: tuple[str, ...]  # not an archive the role wrote in garden_backup_dir: left alone


class LogExcerpt(_Model):
    name: str
    source: str
    lines: tuple[str, ...]


class ErrorLog(_Model):
    path: str
    lines: tuple[str, ...]
    problem: str = ""


class HostEvidence(_Model):
    services: tuple[ServiceState, ...]
    error_log: ErrorLog
    logs: tuple[LogExcerpt, ...]


class Disk(_Model):
    mount: str
    total_bytes: int
    used_bytes: int
    percent: float


class Ports(_Model):
    expected: tuple[int, ...]
    listening: tuple[int, ...]
    missing: tuple[int, ...]


class Cpu(_Model):
    count: int
    load: tuple[float, ...]


class Memory(_Model):
    total_bytes: int = 0
    available_bytes: int = 0
    used_bytes: int = 0


class SystemFacts(_Model):
    os: str
    kernel: str
    uptime_s: int
    cpu: Cpu
    memory: Memory
    disks: tuple[Disk, ...]
    ports: Ports
    database_bytes: int | None
    app_version: str


class MaintenanceFlag(_Model):
    path: str
    set: bool


class HostChores(_Model):
    upgradable: int | None  # None where there is no apt
    security: int | None = None  # of those, from a -security suite
    disks: tuple[Disk, ...]


@dataclass(frozen=True)
class HostsReport(Generic[T]):
    run: PlaybookRun
    by_host: Mapping[str, T] = field(default_factory=dict)
    problems: Mapping[str, str] = field(default_factory=dict)  # host -> masked reason

    @property
    def ok(self) -> bool:
        return self.run.ok


def _report(run: PlaybookRun, model: type[T]) -> HostsReport[T]:
    by_host: dict[str, T] = {}
    problems: dict[str, str] = {}
    for host in run.hosts:
        try:
            if host.data:
                by_host[host.host] = model.model_validate(host.data)
        except ValidationError as exc:
            problems[host.host] = mask_text(f"unexpected report: {exc.errors()[0]['msg']}")
        if host.status != "ok" and host.host not in problems:
            problems[host.host] = host.message or host.status
    if not run.hosts and run.message:
        problems["*"] = run.message
    return HostsReport(run=run, by_host=by_host, problems=problems)


async def _run(
    playbook: str,
    model: type[T],
    *,
    setup: HostsSetup,
    progress: TaskProgress | None,
    extra_vars: Mapping[str, Any] | None = None,
) -> HostsReport[T]:
    timeout = setup.timeout_s or TIMEOUTS_S.get(playbook, DEFAULT_TIMEOUT_S)
    run = await run_playbook(
        playbook, setup=setup, extra_vars=extra_vars, progress=progress, timeout_s=timeout
    )
    return _report(run, model)


def check_version_name(version: str) -> str:
    """A tag, branch or commit name as a release accepts it; refuses option-like or odd text."""
    if not VERSION_NAME.fullmatch(version):
        raise UsageError("hosts.bad_version", version=version[:80])
    return version


async def service_status(
    *, setup: HostsSetup, progress: TaskProgress | None = None
) -> HostsReport[HostServices]:
    """Each of garden_services on each garden_app host: active or not, since when, restarts."""
    return await _run("service_status", HostServices, setup=setup, progress=progress)


async def restart_service(
    *, setup: HostsSetup, service: str, progress: TaskProgress | None = None
) -> HostsReport[HostRestart]:
    """Restart one of garden_services (or `all`), then wait for the health gate."""
    known = list(setup.vars.get("garden_services") or [])
    if service != "all" and (service not in known or not SERVICE_NAME.fullmatch(service)):
        raise UsageError("hosts.unknown_service", service=service[:80], known=", ".join(["all", *known]))
    return await _run(
        "service_restart", HostRestart, setup=setup, progress=progress, extra_vars={"garden_service": service}
    )


async def check_version(
    *, setup: HostsSetup, version: str, progress: TaskProgress | None = None
) -> HostsReport[HostVersion]:
    """Does every garden_app host's origin have this tag, branch or commit? A preflight: nothing changes."""
    extra = {"garden_version": check_version_name(version)}
    return await _run("version_check", HostVersion, setup=setup, progress=progress, extra_vars=extra)


def version_found(report: HostsReport[HostVersion]) -> bool:
    """True when the check ran on at least one host and every host found the version."""
    return report.ok and bool(report.by_host) and all(v.exists for v in report.by_host.values())


async def release(
    *, setup: HostsSetup, version: str, progress: TaskProgress | None = None
) -> HostsReport[HostRelease]:
    """The manual's update, host by host, with maintenance flag, health gate and rollback on failure."""
    extra = {"garden_version": check_version_name(version)}
    report = await _run("release", HostRelease, setup=setup, progress=progress, extra_vars=extra)
    return HostsReport(run=report.run, by_host=report.by_host, problems=_release_problems(report))


def _release_problems(report: HostsReport[HostRelease]) -> dict[str, str]:
    """A failed release's reason is its failed step's error (JSON from the step, when it is)."""
    problems = dict(report.problems)
    for host, result in report.by_host.items():
        if result.outcome != "released":
            problems[host] = f"{result.failed_step}: {_error_text(result.error)}"
    return problems


def _error_text(error: str) -> str:
    try:
        parsed = json.loads(error)
    except ValueError:
        return error
    if isinstance(parsed, dict) and "error" in parsed:
        return str(parsed["error"])
    if isinstance(parsed, dict) and "last" in parsed:  # a health gate that did not pass
        return f"not healthy after {parsed.get('answers')} answers; last: {parsed.get('last')}"
    return error


async def backup_files(
    *, setup: HostsSetup, progress: TaskProgress | None = None
) -> HostsReport[FileArchive]:
    """A .tar.gz of garden_root and the configuration on each host: path, size, SHA-256."""
    return await _run("backup_files", FileArchive, setup=setup, progress=progress)


async def prune_files(
    *, setup: HostsSetup, paths: Mapping[str, Sequence[str]], progress: TaskProgress | None = None
) -> HostsReport[PrunedFiles]:
    """Delete these archives (host -> paths) in garden_backup_dir; only archives the role wrote.
    A path or host name not in the shapes the role writes never reaches the playbook (the host
    reported the path, and Ansible templates extra vars)."""
    asked = {
        host: [path for path in found if is_archive_path(path)]
        for host, found in paths.items()
        if INVENTORY_HOST.fullmatch(host)
    }
    asked = {host: found for host, found in asked.items() if found}
    return await _run(
        "prune_files", PrunedFiles, setup=setup, progress=progress, extra_vars={"garden_prune_paths": asked}
    )


async def collect_evidence(
    *, setup: HostsSetup, progress: TaskProgress | None = None
) -> HostsReport[HostEvidence]:
    """Service states, the end of the error log and the services' recent logs, masked."""
    return await _run("evidence", HostEvidence, setup=setup, progress=progress)


async def system_info(*, setup: HostsSetup, progress: TaskProgress | None = None) -> HostsReport[SystemFacts]:
    """OS, kernel, uptime, CPU, memory, disks, listening ports, database size, app version per host."""
    return await _run("system_info", SystemFacts, setup=setup, progress=progress)


async def monthly_chores(
    *, setup: HostsSetup, progress: TaskProgress | None = None
) -> HostsReport[HostChores]:
    """Upgradable packages and disk usage per mount on every host."""
    return await _run("monthly_chores", HostChores, setup=setup, progress=progress)


async def maintenance_flag(
    *, setup: HostsSetup, progress: TaskProgress | None = None
) -> HostsReport[MaintenanceFlag]:
    """Whether the maintenance flag is set on each garden_app host (after a release was cut short)."""
    return await _run("maintenance_check", MaintenanceFlag, setup=setup, progress=progress)
