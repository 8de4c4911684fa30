"""What the bot adds to a playbook: ansible-runner from asyncio against ansible-playbook run by hand.

    .venv/bin/python bench/hosts.py                      # 5 rounds of service_status, 2 releases
    .venv/bin/python bench/hosts.py --rounds 7 --playbook system_info --releases 4

Builds the sample Garden DX host (runbooks/sample_hosts.py: a git-deployed app under supervisord,
ansible_connection=local) in a temporary directory. Then, round by round, the same playbook with the
same inventory and variables runs once by hand (`ansible-playbook ... -e @vars.json`, output to
/dev/null) and once through `runbooks.playbook_runner.run_playbook`, in alternating order; the
medians and the median of the paired differences are printed. Finally releases alternate v1 -> v2
-> v1 ...; each one's wall time is split into its tasks' own time (start to end, from the progress
events) and the rest (Ansible start-up, the runner, between tasks), and the health gate's time is
set against the least it can take ((consecutive - 1) x interval).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runbooks import hosts
from runbooks.playbook_runner import HostsSetup, TaskEvent, run_playbook
from runbooks.sample_hosts import SampleHosts, running_sample_hosts

PLAYBOOKS = Path(__file__).resolve().parent.parent / "runbooks" / "playbooks"


def cpu_s() -> float:
    """CPU seconds of this process and its waited-for children (ansible-playbook and its workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def by_hand(sample: SampleHosts, playbook: str, vars_file: Path) -> tuple[float, float]:
    cpu = cpu_s()
    started = time.perf_counter()
    ansible_playbook = str(Path(sys.executable).parent / "ansible-playbook")
    subprocess.run(
        [ansible_playbook, "-i", str(sample.inventory), f"{playbook}.yml", "-e", f"@{vars_file}"],
        cwd=PLAYBOOKS,
        stdout=subprocess.DEVNULL,
        check=True,
    )
    return time.perf_counter() - started, cpu_s() - cpu


async def through_runner(setup: HostsSetup, playbook: str) -> tuple[float, float]:
    cpu = cpu_s()
    started = time.perf_counter()
    run = await run_playbook(playbook, setup=setup)
    if not run.ok:
        raise SystemExit(f"{playbook} failed: {run}")
    return time.perf_counter() - started, cpu_s() - cpu


async def compare(
    sample: SampleHosts, setup: HostsSetup, playbook: str, rounds: int, vars_file: Path
) -> None:
    """Wall and CPU seconds per round, by hand and through the runner, in alternating order."""
    hand: list[tuple[float, float]] = []
    runner: list[tuple[float, float]] = []
    for n in range(rounds):
        if n % 2 == 0:
            hand.append(await asyncio.to_thread(by_hand, sample, playbook, vars_file))
            runner.append(await through_runner(setup, playbook))
        else:
            runner.append(await through_runner(setup, playbook))
            hand.append(await asyncio.to_thread(by_hand, sample, playbook, vars_file))
        print(
            f"  round {n + 1}: by hand {hand[-1][0]:.2f} s ({hand[-1][1]:.2f} s CPU), "
            f"runner {runner[-1][0]:.2f} s ({runner[-1][1]:.2f} s CPU)",
            flush=True,
        )
    print(f"\n| {playbook} ({rounds} rounds, medians) | wall s | CPU s |")
    print("| --- | ---: | ---: |")
    for label, rows in (
        ("ansible-playbook by hand", hand),
        ("run_playbook (ansible-runner, asyncio)", runner),
    ):
        wall_s, cpu_s_ = statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
        print(f"| {label} | {wall_s:.2f} | {cpu_s_:.2f} |")
    wall = statistics.median(r[0] - h[0] for r, h in zip(runner, hand, strict=True))
    cpu = statistics.median(r[1] - h[1] for r, h in zip(runner, hand, strict=True))
    print(f"| overhead: median of paired differences | {wall:+.2f} | {cpu:+.2f} |")


async def one_release(setup: HostsSetup, version: str) -> tuple[float, float, float, int]:
    """Wall time, the tasks' own time, the health gate's time and its answers."""
    starts: dict[tuple[str, str], float] = {}
    spent: list[float] = []

    async def progress(event: TaskEvent) -> None:
        key = (event.task, event.host)
        if event.status == "started":
            starts[key] = time.perf_counter()
        elif key in starts:
            spent.append(time.perf_counter() - starts.pop(key))

    started = time.perf_counter()
    report = await hosts.release(setup=setup, version=version, progress=progress)
    wall = time.perf_counter() - started
    result = next(iter(report.by_host.values()))
    if result.outcome != "released" or result.health is None:
        raise SystemExit(f"release {version}: {report.problems}")
    return wall, sum(spent), result.health.elapsed_s, result.health.answers


async def releases(setup: HostsSetup, count: int) -> None:
    rows = []
    for n in range(count):
        version = "v2" if n % 2 == 0 else "v1"
        rows.append(await one_release(setup, version))
        wall, steps, gate, answers = rows[-1]
        print(
            f"  release {version}: {wall:.2f} s, tasks {steps:.2f} s, gate {gate:.2f} s ({answers} answers)"
        )
    consecutive = int(setup.vars.get("garden_health_consecutive", 3))
    interval = float(setup.vars.get("garden_health_interval", 0.25))
    wall = statistics.median(r[0] for r in rows)
    steps = statistics.median(r[1] for r in rows)
    gate = statistics.median(r[2] for r in rows)
    print(f"\n| release ({count} runs, medians) | s |")
    print("| --- | ---: |")
    print(f"| wall time | {wall:.2f} |")
    print(f"| its tasks, start to end | {steps:.2f} |")
    print(f"| beyond its own steps (wall - tasks) | {wall - steps:.2f} |")
    print(f"| health gate | {gate:.2f} (least possible {(consecutive - 1) * interval:.2f}) |")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--playbook", default="service_status", choices=["service_status", "system_info"])
    parser.add_argument("--releases", type=int, default=2)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="bench-hosts-") as tmp,
        running_sample_hosts(Path(tmp) / "garden") as sample,
    ):
        setup = HostsSetup(inventory=sample.inventory, vars=sample.vars())
        vars_file = Path(tmp) / "vars.json"
        vars_file.write_text(json.dumps(sample.vars()), encoding="utf-8")
        await compare(sample, setup, args.playbook, args.rounds, vars_file)
        if args.releases:
            await releases(setup, args.releases)


if __name__ == "__main__":
    asyncio.run(main())
