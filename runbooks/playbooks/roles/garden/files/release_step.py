#!/usr/bin/env python3
"""The steps of a Garden DX release that touch the checkout: check, checkout, deps, migrate, build.

Run on the host by the release playbook; by hand, for example:
    python3 release_step.py check /opt/garden-dx v1.4.2
A step whose file the repository lacks (package.json, requirements.txt, alembic.ini) is skipped and
says so. The checkout's top directory, backend/ and frontend/ are looked at, in that order.
Tools come from GARDEN_PIP, GARDEN_NPM, GARDEN_ALEMBIC (default pip3, npm, alembic).
Prints one JSON document; exit 0 on success.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/+-]{0,127}$")
APP_DIRS = (".", "backend", "frontend")
STEP_TIMEOUT_S = 1800
OUTPUT_TAIL = 3000


class StepFailed(Exception):
    pass


def run(cmd: list[str], cwd: Path) -> str:
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=STEP_TIMEOUT_S)
    text = (out.stdout + out.stderr).strip()
    if out.returncode != 0:
        raise StepFailed(f"{' '.join(cmd)} exited {out.returncode}: {text[-OUTPUT_TAIL:]}")
    return text


def git(root: Path, *args: str) -> str:
    return run(["git", "-C", str(root), *args], cwd=root)


def tool(name: str, default: str) -> list[str]:
    return shlex.split(os.environ.get(name) or default)


def app_dirs(root: Path, marker: str) -> list[Path]:
    return [root / d for d in APP_DIRS if (root / d / marker).is_file()]


def describe(root: Path) -> dict[str, str]:
    return {
        "commit": git(root, "rev-parse", "HEAD"),
        "describe": git(root, "describe", "--tags", "--always"),
    }


def check(root: Path, version: str) -> dict[str, object]:
    """Does origin have this tag, branch or commit? Fetches tags and heads, changes nothing else."""
    current = describe(root)
    remote = git(root, "ls-remote", "--tags", "--heads", "origin", version).split()
    if remote:
        git(root, "fetch", "--quiet", "--tags", "origin")
        return {"exists": True, "commit": remote[0], "ref": remote[1], "current": current}
    git(root, "fetch", "--quiet", "--tags", "origin")
    try:
        commit = git(root, "rev-parse", "--verify", "--quiet", f"{version}^{{commit}}")
    except StepFailed:
        return {"exists": False, "commit": "", "ref": "", "current": current}
    return {"exists": True, "commit": commit, "ref": "", "current": current}


def checkout(root: Path, version: str) -> dict[str, object]:
    git(root, "-c", "advice.detachedHead=false", "checkout", "--quiet", "--force", version)
    return {
        "step": "checkout",
        "ran": [{"step": "git checkout", "dir": "."}],
        "skipped": [],
        "now": describe(root),
    }


def deps(root: Path) -> dict[str, object]:
    ran: list[dict[str, str]] = []
    skipped: list[dict[str, str]] = []
    npm_dirs = app_dirs(root, "package.json")
    for d in npm_dirs:
        run([*tool("GARDEN_NPM", "npm"), "ci", "--no-audit", "--no-fund"], cwd=d)
        ran.append({"step": "npm ci", "dir": str(d.relative_to(root))})
    if not npm_dirs:
        skipped.append({"step": "npm ci", "missing": "package.json"})
    pip_dirs = app_dirs(root, "requirements.txt")
    for d in pip_dirs:
        pip = tool("GARDEN_PIP", "pip3")
        run([*pip, "install", "--quiet", "--disable-pip-version-check", "-r", "requirements.txt"], cwd=d)
        ran.append({"step": "pip install -r requirements.txt", "dir": str(d.relative_to(root))})
    if not pip_dirs:
        skipped.append({"step": "pip install -r requirements.txt", "missing": "requirements.txt"})
    return {"step": "deps", "ran": ran, "skipped": skipped}


def migrate(root: Path) -> dict[str, object]:
    dirs = app_dirs(root, "alembic.ini")
    for d in dirs:
        run([*tool("GARDEN_ALEMBIC", "alembic"), "upgrade", "head"], cwd=d)
    ran = [{"step": "alembic upgrade head", "dir": str(d.relative_to(root))} for d in dirs]
    skipped = [] if dirs else [{"step": "alembic upgrade head", "missing": "alembic.ini"}]
    return {"step": "migrate", "ran": ran, "skipped": skipped}


def build(root: Path) -> dict[str, object]:
    dirs = app_dirs(root, "package.json")
    for d in dirs:
        run([*tool("GARDEN_NPM", "npm"), "run", "build"], cwd=d)
    ran = [{"step": "npm run build", "dir": str(d.relative_to(root))} for d in dirs]
    skipped = [] if dirs else [{"step": "npm run build", "missing": "package.json"}]
    return {"step": "build", "ran": ran, "skipped": skipped}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["check", "checkout", "deps", "migrate", "build", "describe"])
    parser.add_argument("root", type=Path)
    parser.add_argument("version", nargs="?", default="")
    args = parser.parse_args()
    if args.step in ("check", "checkout") and not VERSION.match(args.version):
        print(json.dumps({"error": f"not a version name: {args.version!r}"}))
        return 2
    try:
        if args.step == "check":
            result = check(args.root, args.version)
        elif args.step == "checkout":
            result = checkout(args.root, args.version)
        elif args.step == "describe":
            result = dict(describe(args.root))
        else:
            result = {"deps": deps, "migrate": migrate, "build": build}[args.step](args.root)
    except (StepFailed, subprocess.TimeoutExpired) as exc:
        print(json.dumps({"error": str(exc)}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
