"""A sample Garden DX host on this machine: a git-deployed HTTP app run by supervisord.

For the hosts tests and the embedded demo's shell (bot/demo_hosts.py). `build_sample_hosts(base)`
makes, under `base`:
- `origin.git`, a bare repository holding tagged versions of a tiny app (`v1`, `v2` and `v2-bad`,
  whose /health fails), as a release would find them;
- `garden-dx`, a checkout of origin at `v1`: the `garden_root`;
- `supervisord.conf` with `garden-backend` and `garden-frontend` (unix socket and logs in `base`);
- `inventory.ini`: this machine in `garden_app` and `garden_db`, `ansible_connection=local`.
`SampleHosts.vars()` are the matching `hosts.vars`. `running_sample_hosts(base)` also runs
supervisord for the duration of a `with` block.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import httpx

SERVICES = ("garden-backend", "garden-frontend")
VERSIONS = ("v1", "v2", "v2-bad")
UNIX_SOCKET_MAX = 100
START_TIMEOUT_S = 20.0
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a child gets when its parent thread ends
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Garden DX",
    "GIT_AUTHOR_EMAIL": "dev@garden-dx.example",
    "GIT_COMMITTER_NAME": "Garden DX",
    "GIT_COMMITTER_EMAIL": "dev@garden-dx.example",
    "GIT_CONFIG_NOSYSTEM": "1",
}

APP = '''"""Garden DX stand-in: GET /health, GET / (the version). Version {version}."""
import argparse, datetime, http.server, json

VERSION = "{version}"
HEALTHY = {healthy}


def log(path, level, message):
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"{{stamp}} {{level}} {{message}}\\n")


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            status = 200 if HEALTHY else 503
            body = {{"status": "healthy" if HEALTHY else "unhealthy", "version": VERSION}}
            if not HEALTHY:
                log(self.server.error_log, "ERROR", "health check failed: schema revision missing")
        else:
            status, body = 200, {{"app": "garden-dx", "role": self.server.role, "version": VERSION}}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


parser = argparse.ArgumentParser()
parser.add_argument("--role", required=True)
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--error-log", required=True)
args = parser.parse_args()
server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
server.role, server.error_log = args.role, args.error_log
log(args.error_log, "INFO", f"garden-{{args.role}} {{VERSION}} listening on {{args.port}}")
print(f"garden-{{args.role}} {{VERSION}} started", flush=True)
server.serve_forever()
'''

SUPERVISORD_CONF = """[unix_http_server]
file={socket}

[supervisord]
logfile={base}/supervisord.log
pidfile={base}/supervisord.pid
childlogdir={base}/logs

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{socket}
"""

PROGRAM = """
[program:{name}]
command={python} app.py --role {role} --port {port} --error-log {error_log}
directory={root}
startsecs=0
stopasgroup=true
killasgroup=true
stdout_logfile={base}/logs/{name}.out.log
stderr_logfile={base}/logs/{name}.err.log
"""


@dataclass(frozen=True)
class SampleHosts:
    base: Path
    origin: Path
    garden_root: Path
    supervisor_config: Path
    inventory: Path
    error_log: Path
    backend_port: int
    frontend_port: int
    python: str

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.backend_port}/health"

    @property
    def backend_url(self) -> str:
        return f"http://127.0.0.1:{self.backend_port}/"

    def vars(self) -> dict[str, Any]:
        """The `hosts.vars` for this sample, tools pointed at this Python environment."""
        return {
            "garden_root": str(self.garden_root),
            "garden_services": list(SERVICES),
            "garden_service_manager": "supervisor",
            "garden_health_url": self.health_url,
            "garden_supervisorctl": tool_path("supervisorctl"),
            "garden_supervisor_config": str(self.supervisor_config),
            "garden_pip": f"{self.python} -m pip",
            "garden_error_log": str(self.error_log),
            "garden_backup_dir": str(self.base / "file-backups"),
            "garden_config_paths": [str(self.supervisor_config)],
            "garden_maintenance_flag": str(self.base / "maintenance.flag"),
            "garden_health_timeout": 10,
        }


def tool_path(name: str) -> str:
    """A console script of this Python environment (supervisord, supervisorctl), else from PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else (shutil.which(name) or name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def git(cwd: Path, *args: str) -> None:
    env = {**GIT_ENV, "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd)}
    subprocess.run(
        ["git", "-c", "init.defaultBranch=main", *args], cwd=cwd, env=env, check=True, capture_output=True
    )


def write_version(work: Path, version: str) -> None:
    healthy = not version.endswith("-bad")
    (work / "app.py").write_text(APP.format(version=version, healthy=healthy), encoding="utf-8")
    (work / "VERSION").write_text(version + "\n", encoding="utf-8")
    if version != "v1":  # from v2 on the app has a (still empty) requirements.txt
        (work / "requirements.txt").write_text("# no third-party packages yet\n", encoding="utf-8")


def build_repositories(base: Path) -> tuple[Path, Path]:
    """origin.git with every version tagged, and garden-dx checked out at v1."""
    work, origin, root = base / "work", base / "origin.git", base / "garden-dx"
    work.mkdir(parents=True)
    git(work, "init", "--quiet")
    for version in VERSIONS:
        if version.endswith("-bad"):
            git(work, "checkout", "--quiet", "-b", f"broken-{version}", "v1")
        write_version(work, version)
        git(work, "add", "--all")
        git(work, "commit", "--quiet", "-m", f"Garden DX {version}")
        git(work, "tag", "-a", version, "-m", f"release {version}")
    git(base, "clone", "--quiet", "--bare", str(work), str(origin))
    git(base, "clone", "--quiet", str(origin), str(root))
    git(root, "-c", "advice.detachedHead=false", "checkout", "--quiet", "v1")
    shutil.rmtree(work)
    return origin, root


def supervisor_socket(base: Path) -> Path:
    path = base / "supervisor.sock"
    if len(str(path)) <= UNIX_SOCKET_MAX:
        return path
    return Path(tempfile.mkdtemp(prefix="gsv-")) / "s.sock"


def plan_sample_hosts(base: Path, *, python: str = sys.executable) -> SampleHosts:
    """Where the sample will live and which ports it takes: nothing is written yet."""
    return SampleHosts(
        base=base,
        origin=base / "origin.git",
        garden_root=base / "garden-dx",
        supervisor_config=base / "supervisord.conf",
        inventory=base / "inventory.ini",
        error_log=base / "logs" / "error.log",
        backend_port=free_port(),
        frontend_port=free_port(),
        python=python,
    )


def write_sample_hosts(sample: SampleHosts) -> SampleHosts:
    """Everything a release needs on disk under `sample.base` (which must not exist yet or be empty)."""
    base = sample.base
    base.mkdir(parents=True, exist_ok=True)
    build_repositories(base)
    sample.error_log.parent.mkdir(exist_ok=True)
    ports = {"backend": sample.backend_port, "frontend": sample.frontend_port}
    conf = SUPERVISORD_CONF.format(base=base, socket=supervisor_socket(base))
    for role, port in ports.items():
        conf += PROGRAM.format(
            name=f"garden-{role}",
            role=role,
            port=port,
            python=sample.python,
            root=sample.garden_root,
            base=base,
            error_log=sample.error_log,
        )
    sample.supervisor_config.write_text(conf, encoding="utf-8")
    host = f"localhost ansible_connection=local ansible_python_interpreter={sample.python}"
    sample.inventory.write_text(f"[garden_app]\n{host}\n\n[garden_db]\n{host}\n", encoding="utf-8")
    return sample


def build_sample_hosts(base: Path, *, python: str = sys.executable) -> SampleHosts:
    """Everything a release needs on disk under `base` (which must not exist yet or be empty)."""
    return write_sample_hosts(plan_sample_hosts(base, python=python))


def sample_hosts_possible() -> bool:
    """Whether this machine can run the sample: git on PATH and supervisor in this environment."""
    return shutil.which("git") is not None and find_spec("supervisor") is not None


def launch_supervisord(sample: SampleHosts, *, die_with_parent: bool = False) -> subprocess.Popen[bytes]:
    """supervisord in the foreground as our child, not waiting for the programs. With
    `die_with_parent` (Linux) it is sent SIGTERM when this process ends however it ends, so a
    killed demo leaves no sample app behind."""
    return subprocess.Popen(
        [tool_path("supervisord"), "--nodaemon", "-c", str(sample.supervisor_config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_term_with_parent if die_with_parent and sys.platform == "linux" else None,
    )


def _term_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start_supervisord(sample: SampleHosts) -> subprocess.Popen[bytes]:
    """supervisord in the foreground as our child; returns once the backend answers."""
    proc = launch_supervisord(sample)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"supervisord exited with {proc.returncode}; see {sample.base}/supervisord.log"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(sample.health_url, timeout=1.0).status_code == 200:
                return proc
        time.sleep(0.1)
    stop_supervisord(proc)
    raise RuntimeError(f"the sample app did not answer within {START_TIMEOUT_S:.0f} s")


def stop_supervisord(proc: subprocess.Popen[bytes]) -> None:
    """supervisord stops its programs on SIGTERM."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def running_sample_hosts(base: Path) -> Iterator[SampleHosts]:
    sample = build_sample_hosts(base)
    proc = start_supervisord(sample)
    try:
        yield sample
    finally:
        stop_supervisord(proc)
