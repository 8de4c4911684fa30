"""The embedded demo's sample Garden DX host, for `gardenbot shell` only.

In the demo (embedded servers, nobody configured, no `hosts.inventory`) the shell is given the
sample host of runbooks/sample_hosts.py: a git checkout at v1 of a tiny app run by supervisord, so
`service status`, `service restart` and `release v2` (or the failing `v2-bad`) can be tried.

Nothing of it delays the prompt: the hosts' settings are only paths and ports, known at once; the
repositories are written and supervisord started in the background while the shell is already
up (a host command asked in that first moment says the services are not running yet). The sample
lives in a directory of its own under the state directory and goes when the shell ends, without
making the shell wait for supervisord to finish stopping; supervisord is also tied to the shell's
process (Linux), so a killed shell leaves no app behind, and the next demo shell removes the
directory a killed one left. Without git or the
`supervisor` package (it comes with '.[embedded]') the shell is the demo it always was.
`gardenbot run` never starts it: a one-shot command would pay for the sample's start and stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import Hosts, HostVars, Settings
from runbooks.sample_hosts import (
    SampleHosts,
    launch_supervisord,
    plan_sample_hosts,
    sample_hosts_possible,
    stop_supervisord,
    write_sample_hosts,
)

log = logging.getLogger(__name__)

PREFIX = "demo-hosts-"
IN_USE = ".in-use"  # flock held by the shell whose sample this is
SWEEP_AFTER_S = 60.0  # a directory younger than this may be a starting shell's, not yet locked


@dataclass
class DemoHosts:
    sample: SampleHosts
    supervisord: Any = None  # the Popen of supervisord once started
    in_use: int | None = None  # the descriptor of the held lock on the sample's directory


def with_demo_hosts(settings: Settings) -> tuple[Settings, DemoHosts | None]:
    """The demo shell's settings pointing at a sample host (not yet built), or as they were."""
    if settings.hosts.inventory is not None or not sample_hosts_possible():
        return settings, None
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    sweep_left_behind(settings.state_dir)
    home = Path(tempfile.mkdtemp(prefix=PREFIX, dir=settings.state_dir))
    in_use = os.open(home / IN_USE, os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(in_use, fcntl.LOCK_EX)
    sample = plan_sample_hosts(home / "garden")
    hosts = Hosts(inventory=sample.inventory, vars=HostVars(**sample.vars()))
    return settings.model_copy(update={"hosts": hosts}), DemoHosts(sample, in_use=in_use)


def sweep_left_behind(state_dir: Path) -> list[Path]:
    """Remove the sample directories of shells that were killed (nobody holds their lock)."""
    removed = []
    for home in state_dir.glob(f"{PREFIX}*"):
        if time.time() - home.stat().st_mtime < SWEEP_AFTER_S:
            continue  # another shell may be between making it and locking it
        try:
            fd = os.open(home / IN_USE, os.O_CREAT | os.O_RDWR, 0o600)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a running shell's
        finally:
            os.close(fd)
        shutil.rmtree(home, ignore_errors=True)
        removed.append(home)
    return removed


@contextlib.asynccontextmanager
async def running_demo_hosts(demo: DemoHosts | None) -> AsyncIterator[None]:
    """Build and start the sample in the background for the duration of the block; then stop it
    and remove its directory."""
    if demo is None:
        yield
        return
    starting = asyncio.create_task(_start(demo), name="demo-hosts")
    try:
        yield
    finally:
        await _stop(demo, starting)


async def _start(demo: DemoHosts) -> None:
    try:
        await asyncio.to_thread(write_sample_hosts, demo.sample)
    except Exception as exc:  # git refused, the disk is full: the shell goes on without the sample
        log.warning("demo: the sample host could not be written (%s)", type(exc).__name__)
        return
    # From this (the event loop's) thread: the child is tied to it, and it lives as long as the shell.
    demo.supervisord = launch_supervisord(demo.sample, die_with_parent=True)


async def _stop(demo: DemoHosts, starting: asyncio.Task[None]) -> None:
    with contextlib.suppress(Exception):
        await starting
    proc = demo.supervisord
    if proc is not None and proc.poll() is None:
        # SIGTERM: supervisord stops its programs and leaves within about a second of its own. The
        # shell does not wait for that second; a daemon thread reaps it if the shell is still here.
        proc.terminate()
        threading.Thread(target=stop_supervisord, args=(proc,), name="demo-hosts-stop", daemon=True).start()
    await asyncio.to_thread(shutil.rmtree, demo.sample.base.parent, True)
    if demo.in_use is not None:
        os.close(demo.in_use)
