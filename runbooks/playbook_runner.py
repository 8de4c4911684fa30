"""Run the shipped Ansible playbooks with ansible-runner, from asyncio, with progress and a timeout.

`run_playbook` runs one playbook of `runbooks/playbooks/` against the configured inventory with
`hosts.vars` as extra variables, in a worker thread. Each task's start and end on each host becomes a
`TaskEvent` handed to the caller's async callback, in order. The result is a `PlaybookRun`: which
playbook, which run, the status, and per host ok/failed/unreachable with the data the playbook's
`Result` task reported. Text that may reach a person is masked (`core.secrets.mask_text`).

The child (ansible-playbook and the modules it runs) gets a minimal environment: PATH, HOME,
locale, SSH agent and ANSIBLE_* settings only, never the bot's tokens, DSNs or audit key.
The same playbooks run by hand with `ansible-playbook` (docs/hosts.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import ansible_runner

from core.errors import RunbookFailed
from core.secrets import mask_text

log = logging.getLogger(__name__)

PLAYBOOKS = (
    "service_status",
    "service_restart",
    "version_check",
    "release",
    "backup_files",
    "prune_files",
    "evidence",
    "system_info",
    "monthly_chores",
    "maintenance_check",
)
DEFAULT_TIMEOUT_S = 600.0
# How often the runner thread looks at the cancel flag while the playbook is silent.
POLL_S = 0.2
STOP_GRACE_S = 5.0  # how long ansible-playbook gets to stop its workers before SIGKILL
PASSED_ENV = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "USER",
    "LOGNAME",
    "SSH_AUTH_SOCK",
)
RUNNER_ENV_PREFIXES = ("ANSIBLE_", "RUNNER_", "AWX_")
RUNNER_ENV_KEYS = ("ORIGINAL_STDOUT_CALLBACK", "AD_HOC_COMMAND_ID", "JOB_ID")
# Bookkeeping tasks (set_fact, debug, assert) are not steps a person follows.
QUIET_ACTIONS = frozenset(
    {
        "set_fact",
        "debug",
        "assert",
        "ansible.builtin.set_fact",
        "ansible.builtin.debug",
        "ansible.builtin.assert",
    }
)
RESULT_TASK = "Result"
MESSAGE_MAX = 2000

TaskStatus = Literal["started", "ok", "changed", "skipped", "failed", "ignored", "unreachable"]
HostStatus = Literal["ok", "failed", "unreachable"]
RunStatus = Literal["successful", "failed", "timeout", "canceled"]


@dataclass(frozen=True)
class TaskEvent:
    """One step of a playbook on one host: started, then how it ended."""

    task: str
    host: str
    status: TaskStatus
    message: str = ""


TaskProgress = Callable[[TaskEvent], Awaitable[None]]


@dataclass(frozen=True)
class HostsSetup:
    """What the `hosts:` configuration gives: the inventory and the playbooks' variables."""

    inventory: Path
    vars: Mapping[str, Any] = field(default_factory=dict)
    timeout_s: float | None = None  # None: each playbook's own limit


@dataclass(frozen=True)
class HostOutcome:
    host: str
    status: HostStatus
    data: Mapping[str, Any] = field(default_factory=dict)  # what the playbook's Result task reported
    failed_task: str = ""
    message: str = ""


@dataclass(frozen=True)
class PlaybookRun:
    run_id: str
    playbook: str
    status: RunStatus
    hosts: tuple[HostOutcome, ...]
    started_at: datetime
    duration_s: float
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "successful" and all(h.status == "ok" for h in self.hosts)

    def host(self, name: str) -> HostOutcome | None:
        return next((h for h in self.hosts if h.host == name), None)

    def audit(self) -> dict[str, Any]:
        """What the audit record says about this run: which, where, and how it ended per host."""
        return {
            "run_id": self.run_id,
            "playbook": self.playbook,
            "status": self.status,
            "hosts": {h.host: h.status for h in self.hosts},
            "duration_s": round(self.duration_s, 3),
        }


def playbook_path(name: str | Path) -> Path:
    """A shipped playbook by name (see PLAYBOOKS), or a playbook file given as a Path."""
    if isinstance(name, Path):
        return name
    if name not in PLAYBOOKS:
        raise ValueError(f"unknown playbook {name!r}")
    return Path(str(resources.files("runbooks") / "playbooks" / f"{name}.yml"))


def mask_data(value: Any) -> Any:
    """Every string inside a playbook's result, masked."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {str(k): mask_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_data(v) for v in value]
    return value


def child_env(prepared: Mapping[str, str]) -> dict[str, str]:
    """The environment ansible-playbook gets: ansible-runner's own settings and a few basics."""
    env = {k: v for k, v in prepared.items() if k.startswith(RUNNER_ENV_PREFIXES) or k in RUNNER_ENV_KEYS}
    env.update({k: os.environ[k] for k in PASSED_ENV if k in os.environ})
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.setdefault("HOME", tempfile.gettempdir())
    bin_dir = str(Path(sys.executable).parent)  # this environment's ansible-playbook
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    return env


def ansible_playbook_binary() -> str:
    here = Path(sys.executable).parent / "ansible-playbook"
    return str(here) if here.exists() else (shutil.which("ansible-playbook") or "ansible-playbook")


class _Collector:
    """Turns ansible-runner events (in its thread) into TaskEvents (for the loop) and host outcomes."""

    def __init__(self, emit: Callable[[TaskEvent], None]) -> None:
        self.emit = emit
        self.data: dict[str, Mapping[str, Any]] = {}
        self.failures: dict[str, tuple[str, str]] = {}
        self.stats: dict[str, dict[str, int]] = {}
        self.errors: list[str] = []  # ansible-playbook's own complaints (bad playbook, no hosts)
        self.playbook_pid: int | None = None

    def __call__(self, event: dict[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        if kind == "playbook_on_start" and isinstance(event.get("pid"), int):
            self.playbook_pid = event["pid"]
        if kind == "playbook_on_stats":
            for key in ("ok", "failures", "dark", "processed"):
                self.stats[key] = dict(data.get(key) or {})
            return True
        if kind in ("verbose", "error") and "ERROR" in str(event.get("stdout") or ""):
            self.errors.append(mask_text(str(event["stdout"]).strip())[-MESSAGE_MAX:])
            return True
        host, task = str(data.get("host") or ""), str(data.get("task") or "")
        res = data.get("res") or {}
        if kind == "runner_on_ok" and task == RESULT_TASK:
            self.data[host] = next((v for k, v in res.items() if k.startswith("garden_")), {})
        status = self._status(kind, data, res)
        if status is None or not host:
            return True
        message = mask_text(_message(res))[-MESSAGE_MAX:] if status in ("failed", "unreachable") else ""
        if status in ("failed", "unreachable"):
            self.failures[host] = (task, message)
        if data.get("task_action") not in QUIET_ACTIONS:
            self.emit(TaskEvent(task=task, host=host, status=status, message=message))
        return True

    @staticmethod
    def _status(kind: str, data: Mapping[str, Any], res: Mapping[str, Any]) -> TaskStatus | None:
        if kind == "runner_on_start":
            return "started"
        if kind == "runner_on_ok":
            return "changed" if res.get("changed") else "ok"
        if kind == "runner_on_failed":
            return "ignored" if data.get("ignore_errors") else "failed"
        if kind == "runner_on_skipped":
            return "skipped"
        if kind == "runner_on_unreachable":
            return "unreachable"
        return None

    def outcomes(self) -> tuple[HostOutcome, ...]:
        hosts = sorted(set(self.stats.get("processed", {})) | set(self.data) | set(self.failures))
        result = []
        for host in hosts:
            status: HostStatus = "ok"
            if self.stats.get("dark", {}).get(host):
                status = "unreachable"
            elif self.stats.get("failures", {}).get(host) or (not self.stats and host in self.failures):
                status = "failed"
            task, message = self.failures.get(host, ("", "")) if status != "ok" else ("", "")
            data = mask_data(self.data.get(host, {}))
            result.append(HostOutcome(host=host, status=status, data=data, failed_task=task, message=message))
        return tuple(result)


def _message(res: Mapping[str, Any]) -> str:
    parts = [str(res.get("msg") or ""), str(res.get("stderr") or ""), str(res.get("stdout") or "")]
    return "\n".join(p.strip() for p in parts if p and p.strip())


@dataclass(frozen=True)
class _Job:
    playbook: Path
    inventory: Path
    extravars: dict[str, Any]
    private_dir: str
    run_id: str
    limit: str | None
    timeout_s: float


def _run_in_thread(job: _Job, collector: _Collector, cancel: threading.Event) -> tuple[str, int | None]:
    """ansible-runner's blocking run; returns its status and ansible-playbook's exit code."""
    config = ansible_runner.RunnerConfig(
        private_data_dir=job.private_dir,
        playbook=str(job.playbook),
        inventory=str(job.inventory),
        extravars=job.extravars,
        limit=job.limit,
        ident=job.run_id,
        quiet=True,
        # ansible-runner's own limit, a little after ours: a backstop should our cancel not land.
        timeout=int(job.timeout_s) + 30,
        settings={"pexpect_timeout": POLL_S, "suppress_ansible_output": True},
    )
    config.prepare()
    config.env = child_env(config.env)
    if config.command and config.command[0] == "ansible-playbook":
        config.command[0] = ansible_playbook_binary()
    stopper = _Stopper(cancel, collector)
    runner = ansible_runner.Runner(config=config, event_handler=collector, cancel_callback=stopper)
    runner.run()
    return str(runner.status), runner.rc


class _Stopper:
    """ansible-runner's cancel callback. Ansible's workers run in their own sessions, so the SIGKILL
    ansible-runner sends to ansible-playbook's group would orphan them: SIGTERM first lets
    ansible-playbook stop its workers (and their commands) itself."""

    def __init__(self, cancel: threading.Event, collector: _Collector) -> None:
        self.cancel = cancel
        self.collector = collector
        self.signalled = False

    def __call__(self) -> bool:
        if not self.cancel.is_set():
            return False
        pid = self.collector.playbook_pid
        if pid and not self.signalled:
            self.signalled = True
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + STOP_GRACE_S
                while time.monotonic() < deadline and _alive(pid):
                    time.sleep(0.05)
        return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose; /proc says so where there is one.
    with contextlib.suppress(OSError):
        return " Z " not in Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1][:4]
    return True


async def _relay(queue: asyncio.Queue[TaskEvent | None], progress: TaskProgress | None) -> None:
    """Hand events to the caller in order; progress is cosmetic and never fails the run."""
    while (event := await queue.get()) is not None:
        if progress is None:
            continue
        try:
            await progress(event)
        except Exception:
            log.warning("progress callback failed for %s on %s", event.task, event.host, exc_info=True)


async def run_playbook(
    name: str | Path,
    *,
    setup: HostsSetup,
    extra_vars: Mapping[str, Any] | None = None,
    progress: TaskProgress | None = None,
    limit: str | None = None,
    timeout_s: float | None = None,
) -> PlaybookRun:
    """Run a shipped playbook; on timeout or cancellation ansible-playbook is stopped before returning."""
    if not setup.inventory.is_file():
        raise RunbookFailed("hosts.inventory_missing", path=str(setup.inventory))
    timeout = timeout_s or setup.timeout_s or DEFAULT_TIMEOUT_S
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[TaskEvent | None] = asyncio.Queue()

    def emit(event: TaskEvent) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, event)

    collector = _Collector(emit)
    job = _Job(
        playbook=playbook_path(name),
        inventory=setup.inventory,
        extravars={**setup.vars, **(extra_vars or {})},
        private_dir=tempfile.mkdtemp(prefix="gardenbot-ansible-"),
        run_id=uuid.uuid4().hex[:12],
        limit=limit,
        timeout_s=timeout,
    )
    cancel = threading.Event()
    started_at, clock = datetime.now(UTC), time.monotonic()
    relay = asyncio.create_task(_relay(queue, progress))
    worker = asyncio.ensure_future(asyncio.to_thread(_run_in_thread, job, collector, cancel))
    timed_out = False
    try:
        try:
            status, rc = await asyncio.wait_for(asyncio.shield(worker), timeout)
        except TimeoutError:
            timed_out = True
            cancel.set()
            status, rc = await worker
    except asyncio.CancelledError:
        cancel.set()
        await asyncio.wait({worker})
        raise
    finally:
        loop.call_soon_threadsafe(queue.put_nowait, None)
        with contextlib.suppress(asyncio.CancelledError):
            await relay
        shutil.rmtree(job.private_dir, ignore_errors=True)
    return _finish(
        job, collector, "timeout" if timed_out else status, rc, started_at, time.monotonic() - clock
    )


def _finish(
    job: _Job, collector: _Collector, status: str, rc: int | None, started_at: datetime, duration_s: float
) -> PlaybookRun:
    run_status: RunStatus = status if status in ("successful", "timeout", "canceled") else "failed"  # type: ignore[assignment]
    hosts = collector.outcomes()
    message = ""
    if run_status == "failed" and not hosts:
        message = f"ansible-playbook exited {rc} before any host ran: {' '.join(collector.errors[-3:])}"
    elif run_status == "timeout":
        message = f"stopped after {job.timeout_s:.0f} s"
    log.info(
        "playbook %s run %s: %s in %.1f s (%s)",
        job.playbook.stem,
        job.run_id,
        run_status,
        duration_s,
        ", ".join(f"{h.host}={h.status}" for h in hosts),
    )
    return PlaybookRun(
        run_id=job.run_id,
        playbook=job.playbook.stem,
        status=run_status,
        hosts=hosts,
        started_at=started_at,
        duration_s=duration_s,
        message=message,
    )
