"""The embedded demo's shell carries the sample Garden DX host (bot/demo_hosts.py): `service
status`, `service restart` and `release` can be tried there, with nothing left behind afterwards.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.demo_hosts import running_demo_hosts, sweep_left_behind, with_demo_hosts
from bot.embedded import start_embedded, stop_embedded
from bot.runtime import Runtime, open_runtime
from commands.base import Actor, Request
from core.reply import Reply
from tests.support.runtime import GARDENBOT, REPO_ROOT, BotWorld, child_env, table_of

pytestmark = pytest.mark.slow

READY_TIMEOUT_S = 60.0


def ask(user: str, text: str) -> Request:
    return Request(actor=Actor(user_id=user), text=text, source="console", channel="C0OPS", locale="en")


async def until_running(rt: Runtime) -> Reply:
    """`service status` until both sample services run (the sample starts behind the prompt)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        reply = await rt.pipeline.handle(ask("U0INTERN", "service status"))
        if reply.status == "succeeded" or time.monotonic() > deadline:
            return reply


async def test_the_sample_host_runs_for_the_block_and_leaves_nothing_behind(bot_world: BotWorld) -> None:
    settings, demo = with_demo_hosts(bot_world.settings())
    assert demo is not None and settings.hosts.inventory == demo.sample.inventory

    async with running_demo_hosts(demo):
        rt = await open_runtime(settings)
        try:
            status = await until_running(rt)
        finally:
            await rt.close()
        supervisord = demo.supervisord

    assert status.status == "succeeded", status
    assert {row[1]: row[2] for row in table_of(status).rows} == {
        "garden-backend": "RUNNING",
        "garden-frontend": "RUNNING",
    }
    assert supervisord is not None
    assert supervisord.wait(timeout=30) is not None  # told to stop with the block, and gone
    assert not demo.sample.base.parent.exists()


def test_a_killed_shells_sample_directory_is_swept_but_not_a_running_ones(bot_world: BotWorld) -> None:
    settings = bot_world.settings()
    _, running = with_demo_hosts(settings)  # holds its lock, as a live shell does
    left = settings.state_dir / "demo-hosts-killed"
    (left / "garden").mkdir(parents=True)
    long_ago = time.time() - 3600
    assert running is not None
    for home in (left, running.sample.base.parent):
        os.utime(home, (long_ago, long_ago))

    swept = sweep_left_behind(settings.state_dir)

    assert swept == [left] and not left.exists()
    assert running.sample.base.parent.exists()
    assert running.in_use is not None
    os.close(running.in_use)


def test_configured_hosts_are_left_alone(bot_world: BotWorld, tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.ini"
    inventory.write_text("[garden_app]\nweb1\n", encoding="utf-8")
    bot_world.configure(hosts={"inventory": str(inventory)})

    settings, demo = with_demo_hosts(bot_world.settings())

    assert demo is None and settings.hosts.inventory == inventory


class Shell:
    """`gardenbot shell` in a child process, fed line by line, its output read as it comes."""

    def __init__(self, state_dir: Path) -> None:
        env = {"GARDENBOT_STATE_DIR": str(state_dir), "HOME": str(state_dir.parent)}
        self.log = state_dir.parent / "shell.stderr"
        self.err = self.log.open("wb")
        self.proc = subprocess.Popen(
            [str(GARDENBOT), "shell"],
            env=child_env(env),
            cwd=str(REPO_ROOT),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.err,
            text=True,
        )
        self.chunks: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.seen = ""

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while chunk := self.proc.stdout.read(1):
            self.chunks.put(chunk)

    def wait_for(self, text: str, timeout: float = 180.0) -> str:
        """Output up to and including `text` (and the prompt after it), consumed."""
        deadline = time.monotonic() + timeout
        while text not in self.seen or not self.seen.endswith("> "):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self.proc.poll() is not None and self.chunks.empty()):
                said = self.log.read_text(encoding="utf-8", errors="replace")[-3000:]
                raise AssertionError(f"{text!r} never came; output: {self.seen[-2000:]}\nstderr: {said}")
            try:
                self.seen += self.chunks.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                continue
        out, self.seen = self.seen, ""
        return out

    def end(self) -> int:
        """Close its input, wait for it to leave, and close its output."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        code = self.proc.wait(timeout=120)
        self.reader.join(timeout=10)
        self.proc.stdout.close()
        self.err.close()
        return code

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def say(self, line: str, until: str = "> ") -> str:
        self.send(line)
        return self.wait_for(until)


@pytest.fixture
def scratch() -> Iterator[Path]:
    # Not under pytest's basetemp (see tests/bot/test_embedded.py: scratch_dir): a concurrent pytest
    # session closes that to 0700, locking out the user pgserver runs PostgreSQL as when we are root.
    path = Path(tempfile.mkdtemp(prefix="gbt-demo-hosts-"))
    try:
        yield path
    finally:
        with contextlib.suppress(Exception):  # whatever a failed test left running: adopt and stop it
            stop_embedded(start_embedded(path / "state" / "embedded"))
        shutil.rmtree(path, ignore_errors=True)


def test_the_demo_shell_can_restart_and_release_on_the_sample_host(scratch: Path) -> None:
    shell = Shell(scratch / "state")
    try:
        shell.wait_for("Garden DX ops console")
        deadline = time.monotonic() + READY_TIMEOUT_S
        while "All 2 services are running" not in shell.say("service status"):
            assert time.monotonic() < deadline, "the sample host never came up"
            time.sleep(0.5)
        asked = shell.say("release v2", until="Approval needed: release")
        shell.say("as U0DEMOLEAD")
        released = shell.say("approve 1", until="Release 1: v2")
        shell.say("as U0DEMOADMIN")
        shell.say("service restart garden-backend", until="Approval needed: service restart")
        shell.say("as U0DEMOLEAD")
        restarted = shell.say("approve 2", until="estart")
        listing = shell.say("release list", until="released")
        shell.send("quit")
    finally:
        code = shell.end()

    assert "now at v1" in asked
    assert "v2 is live and healthy" in released
    assert "Restarted garden-backend on 1 hosts" in restarted
    assert "U0DEMOADMIN" in listing and "U0DEMOLEAD" in listing
    assert code == 0
    assert not list((scratch / "state").glob("demo-hosts-*"))  # the sample went with the shell
