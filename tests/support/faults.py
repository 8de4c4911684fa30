"""Faults for the job-lock and store-down tests: a private redis-server that can be killed and
restarted empty, and a pg_dump that waits at a gate so a backup job runs exactly as long as a test
wants (the real pg_dump does the work once the gate opens).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.support.serve import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass
class PrivateRedis:
    """A redis-server of one test's own, no persistence: a restart comes back empty."""

    port: int
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError), redis.Redis(port=self.port) as client:
                if client.ping():
                    return
            time.sleep(0.02)
        raise RuntimeError("private redis-server did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True)


@contextlib.contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis(port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.kill()


@dataclass
class GatedPgDump:
    """A pg_bin folder whose pg_dump touches `started`, waits for `gate`, then runs the real one
    (or fails, when `fail` exists); pg_dump and pg_restore record their arguments in `dump_args`
    and `restore_args`."""

    folder: Path

    @property
    def gate(self) -> Path:
        return self.folder / "gate"

    @property
    def started(self) -> Path:
        return self.folder / "started"

    @property
    def fail(self) -> Path:
        return self.folder / "fail"

    @property
    def restore_args(self) -> Path:
        return self.folder / "pg_restore.args"

    @property
    def dump_args(self) -> Path:
        return self.folder / "pg_dump.args"

    @property
    def waiting_pid(self) -> int:
        """The pid of the newest pg_dump waiting at the gate (the shell script, before it execs)."""
        return int((self.folder / "pg_dump.pid").read_text().strip())

    def open(self) -> None:
        self.gate.touch()

    def close(self) -> None:
        self.gate.unlink(missing_ok=True)
        self.started.unlink(missing_ok=True)

    def wait_started(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.started.exists():
            if time.monotonic() > deadline:
                raise AssertionError("pg_dump never started")
            time.sleep(0.02)


def gated_pg_dump(folder: Path) -> GatedPgDump:
    folder.mkdir(parents=True, exist_ok=True)
    real = PG_BIN / "pg_dump"
    version = subprocess.run(
        [str(real), "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    script = folder / "pg_dump"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "--version" ]; then echo "{version}"; exit 0; fi\n'
        f'echo "$@" >> "{folder}/pg_dump.args"\n'
        f'echo $$ > "{folder}/pg_dump.pid"\n'
        f'touch "{folder}/started"\n'
        f'while [ ! -e "{folder}/gate" ]; do sleep 0.05; done\n'
        f'if [ -e "{folder}/fail" ]; then echo "pg_dump: error: simulated failure" >&2; exit 1; fi\n'
        f'exec "{real}" "$@"\n'
    )
    script.chmod(0o755)
    restore = folder / "pg_restore"
    restore.write_text(
        f'#!/bin/sh\necho "$@" >> "{folder}/pg_restore.args"\nexec "{PG_BIN / "pg_restore"}" "$@"\n'
    )
    restore.chmod(0o755)
    for tool in ("psql",):
        target = shutil.which(tool, path=str(PG_BIN))
        if target is not None:
            (folder / tool).symlink_to(target)
    return GatedPgDump(folder)
