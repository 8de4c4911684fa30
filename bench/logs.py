"""`security` and `logs` over generated API access and auth logs: throughput, memory, old-log cost.

    .venv/bin/python -m bench.logs [--window-mb 50] [--days 20] [--rounds 3] [--dir DIR] [--keep]
                                   [--against CHECKOUT]

Writes one day of API traffic (about --window-mb MB) and of logins, and the same day at the end of
a log --days days long (byte-identical last day). Each measurement runs in a fresh process, so its
peak RSS (VmHWM) is its own:
- the 24-hour window of the one-day log and of the long log (the binary search should make the
  long log cost the same: the older days are never read);
- every day of the long log at once (hours = 24 x days): the whole file read, to show memory flat;
- `grep -c ''` over the window's bytes, the floor of reading them at all.
Prints a markdown table; throughput is the window's bytes (as the runbook reports them) / time.
--against runs another revision's files (`git worktree add /tmp/before <rev>`) in turn with this
tree's, run for run, so both see the same load.
The log worker (runbooks.logworkers) is started and ready before the timed scan, as `serve` and
the console start it when they open; the "cold" rows start it with the scan instead (a window under
COLD_MIN_BYTES is then read in one process). Peak RSS is the larger of this process and its worker.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from runbooks import logworkers
from runbooks.log_report import summarize_logs
from runbooks.security import scan_security
from tests.support.applogs import write_api_log, write_auth_log

DAY = 86_400
END = datetime(2026, 11, 28, 0, 0, tzinfo=UTC)
API_LINE_BYTES = 76  # about, for sizing the traffic
WARM = hasattr(logworkers, "warm_up")  # a revision with a warm worker (run as the child of --against)


def vm_hwm_kib(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def peak_rss_kib() -> int:
    """Peak RSS of this process, or of a worker process (running or ended) if that was larger."""
    workers = [vm_hwm_kib(pid) for pid in logworkers.worker_pids()] if WARM else []
    return max([vm_hwm_kib(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, *workers])


def child(report: str, api: Path, auth: Path, hours: int, cold: bool = False) -> None:
    """Run one report in this (fresh) process and print what it cost as JSON. Unless `cold`, the
    log worker is started and ready first, as `serve` and the console start it when they open."""
    if WARM and not cold:
        logworkers.warm_up(wait=True)
    started = time.perf_counter()
    if report == "security":
        result = scan_security(auth_log=auth, api_log=api, hours=hours, now=END)
        sources, found = result.sources, len(result.request_bursts) + len(result.failed_login_bursts)
    else:
        summary = summarize_logs(error_log=None, api_log=api, hours=hours, now=END)
        sources, found = summary.sources, summary.requests
    seconds = time.perf_counter() - started
    window = sum(s.size - s.window_offset for s in sources)
    read = sum(s.bytes_read for s in sources)
    lines = sum(s.lines for s in sources)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "window": window,
                "read": read,
                "lines": lines,
                "found": found,
                "rss_kib": peak_rss_kib(),
            }
        )
    )


def run_child(
    report: str, api: Path, auth: Path, hours: int, checkout: Path | None, cold: bool = False
) -> dict[str, float]:
    """One report in a fresh process: of this tree, or of `checkout` (another revision's files)."""
    env = dict(os.environ, PYTHONPATH=str(checkout)) if checkout else None
    out = subprocess.run(
        [sys.executable, "-m", "bench.logs", "--child", report, str(api), str(auth), str(hours)]
        + (["--cold"] if cold else []),
        capture_output=True,
        text=True,
        check=True,
        cwd=checkout,
        env=env,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def summary(runs: list[dict[str, float]]) -> dict[str, float]:
    best = min(runs, key=lambda r: r["seconds"])
    best["seconds_median"] = statistics.median(r["seconds"] for r in runs)
    best["rss_kib"] = max(r["rss_kib"] for r in runs)
    return best


def measure(
    report: str, api: Path, auth: Path, hours: int, rounds: int, against: Path | None, cold: bool = False
) -> tuple[dict[str, float], dict[str, float] | None]:
    """This tree's runs, and `against`'s taken in turn with them (the same load for both)."""
    runs, before = [], []
    for _ in range(rounds):
        runs.append(run_child(report, api, auth, hours, None, cold))
        if against:
            before.append(run_child(report, api, auth, hours, against))
    return summary(runs), summary(before) if before else None


def grep_floor(paths: list[Path], rounds: int) -> tuple[float, int]:
    size = sum(p.stat().st_size for p in paths)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        for path in paths:
            subprocess.run(["grep", "-c", "", str(path)], capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return min(times), size


def generate(root: Path, window_mb: int, days: int) -> dict[str, Path]:
    per_second = max(1, round(window_mb * 1e6 / DAY / API_LINE_BYTES))
    start = END.timestamp() - days * DAY
    paths = {k: root / f"{k}.log" for k in ("api-day", "auth-day", "api-long", "auth-long")}
    for path in paths.values():
        path.unlink(missing_ok=True)
    write_api_log(paths["api-long"], start=start, seconds=(days - 1) * DAY, per_second=per_second, seed=3)
    write_auth_log(paths["auth-long"], start=start, seconds=(days - 1) * DAY, every=2, seed=4)
    write_api_log(paths["api-day"], start=END.timestamp() - DAY, seconds=DAY, per_second=per_second, seed=5)
    write_auth_log(paths["auth-day"], start=END.timestamp() - DAY, seconds=DAY, every=2, seed=6)
    for kind in ("api", "auth"):
        with paths[f"{kind}-long"].open("ab") as long, paths[f"{kind}-day"].open("rb") as day:
            shutil.copyfileobj(day, long, 8 << 20)
    return paths


def row(name: str, m: dict[str, float], floor_mb_s: float, before: dict[str, float] | None) -> str:
    mb_s = m["window"] / m["seconds"] / 1e6
    line = (
        f"| {name} | {m['window'] / 1e6:.0f} | {m['read'] / 1e6:.1f} | {m['seconds']:.2f} "
        f"({m['seconds_median']:.2f}) | {mb_s:.0f} | {mb_s / floor_mb_s:.2f} | {m['rss_kib'] / 1024:.0f} |"
    )
    if before:
        then = before["window"] / before["seconds"] / 1e6
        seconds = f"{before['seconds']:.2f} ({before['seconds_median']:.2f})"
        line += f" {seconds} | {then:.0f} | {mb_s / then:.1f} |"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window-mb", type=int, default=50)
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--child", nargs=4, metavar=("REPORT", "API", "AUTH", "HOURS"))
    parser.add_argument("--against", type=Path, help="another revision's files, run in turn with these")
    parser.add_argument("--cold", action="store_true", help="(child) without starting the worker first")
    args = parser.parse_args()
    if args.child:
        report, api, auth, hours = args.child
        child(report, Path(api), Path(auth), int(hours), args.cold)
        return
    root = args.dir or Path(tempfile.mkdtemp(prefix="bench-logs-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        paths = generate(root, args.window_mb, args.days)
        print(
            f"generated in {time.perf_counter() - started:.0f} s: "
            + ", ".join(f"{k} {p.stat().st_size / 1e6:.0f} MB" for k, p in paths.items()),
            file=sys.stderr,
        )
        grep_s, grep_bytes = grep_floor([paths["api-day"], paths["auth-day"]], args.rounds)
        grep_api_s, grep_api_bytes = grep_floor([paths["api-day"]], args.rounds)
        floors = {"security": grep_bytes / grep_s / 1e6, "logs": grep_api_bytes / grep_api_s / 1e6}
        print(
            f"grep -c '' over the day's bytes: {floors['security']:.0f} MB/s (api+auth), "
            f"{floors['logs']:.0f} MB/s (api)"
        )
        header = "| run | window MB | read MB | seconds best (median) | MB/s | x grep | peak RSS MB |"
        rule = "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
        if args.against:
            header += " before: seconds best (median) | before MB/s | x before |"
            rule += " ---: | ---: | ---: |"
        print("\n" + header + "\n" + rule)
        for report in ("security", "logs"):
            day, day_then = measure(
                report, paths["api-day"], paths["auth-day"], 24, args.rounds, args.against
            )
            long, long_then = measure(
                report, paths["api-long"], paths["auth-long"], 24, args.rounds, args.against
            )
            whole, whole_then = measure(
                report, paths["api-long"], paths["auth-long"], 24 * args.days, 1, args.against
            )
            cold, cold_then = measure(
                report, paths["api-day"], paths["auth-day"], 24, args.rounds, args.against, cold=True
            )
            print(row(f"{report} 24 h, 1-day log", day, floors[report], day_then))
            print(
                row(f"{report} 24 h, 1-day log, cold (worker not started)", cold, floors[report], cold_then)
            )
            print(row(f"{report} 24 h, {args.days}-day log", long, floors[report], long_then))
            print(row(f"{report} {24 * args.days} h, {args.days}-day log", whole, floors[report], whole_then))
            print(
                f"| {report}: {args.days}-day log / 1-day log, 24 h | | "
                f"{long['read'] / day['read']:.3f} | {long['seconds'] / day['seconds']:.2f} | | | |"
            )
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
