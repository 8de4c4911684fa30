#!/usr/bin/env python3
"""System facts of a Garden DX host, read from /proc and the checkout, without gathering Ansible facts.

    python3 facts.py system --root /opt/garden-dx --ports 3000,8000,5432,6379 [--psql "psql" --db garden_dx]
    python3 facts.py chores
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REAL_FS = {
    "ext2",
    "ext3",
    "ext4",
    "xfs",
    "btrfs",
    "zfs",
    "vfat",
    "overlay",
    "f2fs",
    "jfs",
    "reiserfs",
    "nfs",
    "nfs4",
}
TIMEOUT_S = 60


def os_name() -> str:
    try:
        text = Path("/etc/os-release").read_text(encoding="utf-8")
    except OSError:
        return platform.system()
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    return values.get("PRETTY_NAME", platform.system()).strip('"')


def uptime_s() -> int:
    try:
        return int(float(Path("/proc/uptime").read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        return -1


def memory() -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            values[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return {}
    total, available = values.get("MemTotal", 0), values.get("MemAvailable", 0)
    return {"total_bytes": total, "available_bytes": available, "used_bytes": total - available}


def disks() -> list[dict[str, object]]:
    seen: set[str] = set()
    result: list[dict[str, object]] = []
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        mounts = ["/ / ext4 rw 0 0"]
    for line in mounts:
        fields = line.split()
        if len(fields) < 3 or fields[2] not in REAL_FS or fields[1] in seen:
            continue
        mount = fields[1].replace("\\040", " ")
        seen.add(fields[1])
        try:
            usage = shutil.disk_usage(mount)
        except OSError:
            continue
        percent = round(100 * usage.used / usage.total, 1) if usage.total else 0.0
        result.append(
            {"mount": mount, "total_bytes": usage.total, "used_bytes": usage.used, "percent": percent}
        )
    return result


def listening_ports() -> list[int]:
    ports: set[int] = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":  # TCP_LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return sorted(ports)


def app_version(root: str) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", root, "describe", "--tags", "--always"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except OSError:
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def database_size(psql: str, db: str) -> int | None:
    cmd = [*shlex.split(psql), "-XAtq", "-d", db, "-c", "SELECT pg_database_size(current_database())"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = out.stdout.strip()
    return int(text) if out.returncode == 0 and text.isdigit() else None


def system(args: argparse.Namespace) -> dict[str, object]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    listening = listening_ports()
    expected = [int(p) for p in args.ports.split(",") if p]
    return {
        "os": os_name(),
        "kernel": platform.release(),
        "uptime_s": uptime_s(),
        "cpu": {"count": os.cpu_count() or 0, "load": [round(x, 2) for x in load]},
        "memory": memory(),
        "disks": disks(),
        "ports": {
            "expected": expected,
            "listening": [p for p in expected if p in listening],
            "missing": [p for p in expected if p not in listening],
        },
        "database_bytes": database_size(args.psql, args.db) if args.psql else None,
        "app_version": app_version(args.root) if args.root else "",
    }


def upgradable() -> dict[str, int | None]:
    """`apt list --upgradable`: how many packages, and how many from a -security suite
    ("openssl/jammy-updates,jammy-security 3.0.2-0ubuntu1.18 amd64 [upgradable from: ...]")."""
    if shutil.which("apt") is None:
        return {"upgradable": None, "security": None}
    out = subprocess.run(["apt", "list", "--upgradable"], capture_output=True, text=True, timeout=TIMEOUT_S)
    lines = [line for line in out.stdout.splitlines() if "[upgradable from:" in line]
    security = [line for line in lines if "-security" in line.split(" ", 1)[0]]
    return {"upgradable": len(lines), "security": len(security)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["system", "chores"])
    parser.add_argument("--root", default="")
    parser.add_argument("--ports", default="3000,8000,5432,6379")
    parser.add_argument("--psql", default="")
    parser.add_argument("--db", default="garden_dx")
    args = parser.parse_args()
    result = system(args) if args.what == "system" else {**upgradable(), "disks": disks()}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
