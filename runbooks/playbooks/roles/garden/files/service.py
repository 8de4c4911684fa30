#!/usr/bin/env python3
"""Garden DX services under systemd, docker compose or supervisord: state, start, stop, restart, logs.

Run on the host by the playbooks (Ansible's `script` module); by hand, for example:
    python3 service.py --manager supervisor state garden-backend garden-frontend
Prints one JSON document on stdout. Settings come from the environment the playbook sets:
GARDEN_ROOT, GARDEN_SUPERVISORCTL, GARDEN_SUPERVISOR_CONFIG, GARDEN_COMPOSE, GARDEN_COMPOSE_FILE.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

NAME = re.compile(r"^[A-Za-z0-9@_][A-Za-z0-9@._-]{0,127}$")
UPTIME = re.compile(r"uptime (?:(\d+) days?, )?(\d+):(\d\d):(\d\d)")
LOG_LINES = 200
LOG_BYTES = 65536
COMMAND_TIMEOUT_S = 120


def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        cwd=os.environ.get("GARDEN_ROOT") or None,
    )


def supervisorctl(*args: str) -> list[str]:
    base = shlex.split(os.environ.get("GARDEN_SUPERVISORCTL") or "supervisorctl")
    conf = os.environ.get("GARDEN_SUPERVISOR_CONFIG")
    return base + (["-c", conf] if conf else []) + list(args)


def compose(*args: str) -> list[str]:
    base = shlex.split(os.environ.get("GARDEN_COMPOSE") or "docker compose")
    path = os.environ.get("GARDEN_COMPOSE_FILE")
    return base + (["-f", path] if path else []) + list(args)


def iso(moment: datetime | None) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds") if moment else ""


def boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


def systemd_state(name: str) -> dict[str, object]:
    # The monotonic stamp (microseconds since boot) reads the same in every systemd version.
    props = ["ActiveState", "SubState", "ActiveEnterTimestampMonotonic", "NRestarts"]
    out = run(["systemctl", "show", name, *[f"--property={p}" for p in props]])
    values = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    active = values.get("ActiveState") == "active"
    stamp = values.get("ActiveEnterTimestampMonotonic", "")
    since = None
    if active and stamp.isdigit() and int(stamp) > 0:
        since = datetime.fromtimestamp(boot_time() + int(stamp) / 1e6, timezone.utc)
    restarts = values.get("NRestarts", "")
    return {
        "active": active,
        "state": f"{values.get('ActiveState', 'unknown')}/{values.get('SubState', 'unknown')}",
        "since": iso(since),
        "restarts": int(restarts) if restarts.isdigit() else None,
    }


def compose_state(name: str) -> dict[str, object]:
    ids = run(compose("ps", "--all", "--quiet", name)).stdout.split()
    if not ids:
        return {"active": False, "state": "absent", "since": "", "restarts": None}
    info = json.loads(run(["docker", "inspect", ids[0]]).stdout or "[{}]")[0]
    state = info.get("State", {})
    return {
        "active": state.get("Status") == "running",
        "state": state.get("Status", "unknown"),
        "since": state.get("StartedAt", "")[:19] + "+00:00" if state.get("StartedAt") else "",
        "restarts": info.get("RestartCount"),
    }


def supervisor_state(name: str) -> dict[str, object]:
    out = run(supervisorctl("status", name)).stdout.strip()
    fields = out.split()
    state = fields[1] if len(fields) > 1 else "unknown"
    since = None
    match = UPTIME.search(out)
    if state == "RUNNING" and match:
        days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
        since = datetime.now(timezone.utc) - timedelta(
            days=days, hours=hours, minutes=minutes, seconds=seconds
        )
    # supervisord keeps no restart counter: count spawns in its own log (since it last started).
    main_log = run(supervisorctl("maintail", f"-{LOG_BYTES}")).stdout
    spawns = main_log.count(f"spawned: '{name}' ")
    return {
        "active": state == "RUNNING",
        "state": state,
        "since": iso(since),
        "restarts": max(spawns - 1, 0),
    }


STATE = {"systemd": systemd_state, "compose": compose_state, "supervisor": supervisor_state}


def act(manager: str, action: str, name: str) -> dict[str, object]:
    if manager == "systemd":
        cmd = ["systemctl", action, name]
    elif manager == "compose":
        cmd = compose("up", "--detach", name) if action == "start" else compose(action, name)
    else:
        cmd = supervisorctl(action, name)
    out = run(cmd)
    text = (out.stdout + out.stderr).strip()
    already = action == "stop" and "not running" in text.lower()
    return {"name": name, "action": action, "ok": out.returncode == 0 or already, "output": text[-2000:]}


def logs(manager: str, name: str, minutes: int) -> dict[str, object]:
    if manager == "systemd":
        cmds = [["journalctl", "--no-pager", "-o", "short-iso", "-u", name, "--since", f"-{minutes}min"]]
    elif manager == "compose":
        cmds = [compose("logs", "--no-color", "--timestamps", "--since", f"{minutes}m", name)]
    else:
        # supervisord's process logs carry no time of their own: the tail stands for "recent".
        cmds = [
            supervisorctl("tail", f"-{LOG_BYTES}", name),
            supervisorctl("tail", f"-{LOG_BYTES}", name, "stderr"),
        ]
    lines: list[str] = []
    for cmd in cmds:
        out = run(cmd)
        lines.extend((out.stdout or out.stderr).splitlines())
    return {"name": name, "source": manager, "lines": lines[-LOG_LINES:]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manager", choices=sorted(STATE), required=True)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("action", choices=["state", "start", "stop", "restart", "logs"])
    parser.add_argument("names", nargs="+")
    args = parser.parse_args()
    bad = [n for n in args.names if not NAME.match(n)]
    if bad:
        print(json.dumps({"error": f"not a service name: {bad[0]!r}"}))
        return 2
    if args.action == "state":
        result: list[dict[str, object]] = [{"name": n, **STATE[args.manager](n)} for n in args.names]
    elif args.action == "logs":
        result = [logs(args.manager, n, args.minutes) for n in args.names]
    else:
        result = [act(args.manager, args.action, n) for n in args.names]
    print(json.dumps({"services": result, "at": iso(datetime.now(timezone.utc)), "epoch": time.time()}))
    return 0 if all(r.get("ok", True) for r in result) else 1


if __name__ == "__main__":
    sys.exit(main())
