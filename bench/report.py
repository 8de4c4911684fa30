"""The weekly KPI report over a week of minute probes and a large log; scheduled-run lateness.

    .venv/bin/python -m bench.report [--log-mb 1000] [--log-days 20] [--rounds 3] [--replica-seconds 20]

Sets up a throwaway bot store holding 7 days of minute probes for 5 paths (10,080 rows per path),
a backup catalog, the sample garden_dx, and an API + auth log of about --log-mb MB spread over
--log-days days (the report's week at its end). Each report runs in a fresh process, so its peak
RSS (VmHWM) is its own: without the logs; with them and no security day kept yet (the report reads
the week from the logs and keeps its finished days); with the days kept (as after the nightly
`security keep`: only today until the report's 09:00 is read from the logs). Then two
`python -m scheduler.demo` replicas fire every second on one store for --replica-seconds: how late
each run starts after its fire time (claim included), and that no fire ran twice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg

from bench.logs import API_LINE_BYTES, DAY, vm_hwm_kib
from commands.report_sources import gather_report
from core.config import load_settings
from runbooks.chart import render_chart
from runbooks.sample_garden import create_sample_garden
from store.db import Store
from tests.support.applogs import write_api_log, write_auth_log
from tests.support.servers import throwaway_database

NOW = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)
PATHS = ("/health", "/api/estimates", "/api/price-master", "/api/companies", "/api/pdf")


def fill_probes(url: str) -> int:
    """7 days of minute probes per path, by COPY; about 1 in 2000 unhealthy."""
    start = NOW - timedelta(days=7)
    rows = 0
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY probe_results (path, probed_at, status_code, healthy, latency_ms) FROM STDIN"
        ) as copy:
            for minute in range(7 * 24 * 60):
                at = start + timedelta(minutes=minute)
                for i, path in enumerate(PATHS):
                    bad = (minute * 7 + i) % 2000 == 0
                    ms = 40.0 + (minute * 31 + i * 17) % 400 + (1500 if minute % 997 == 0 else 0)
                    copy.write_row((path, at, 503 if bad else 200, not bad, ms))
                    rows += 1
        for day in range(7):
            cur.execute(
                "INSERT INTO backups (kind, database_name, file_name, status, started_at, finished_at,"
                " created_by)"
                " VALUES ('regular', 'garden_dx', %s, %s, %s, %s, 'scheduler')",
                (
                    f"b{day}.dump",
                    "good" if day else "failed",
                    NOW - timedelta(days=day, hours=6),
                    NOW - timedelta(days=day, hours=5),
                ),
            )
    return rows


def write_logs(root: Path, log_mb: int, days: int) -> tuple[Path, Path]:
    api, auth = root / "api.log", root / "auth.log"
    per_second = max(1, round(log_mb * 1e6 / (days * DAY) / API_LINE_BYTES))
    start = NOW.timestamp() - days * DAY
    write_api_log(api, start=start, seconds=days * DAY, per_second=per_second, seed=3)
    write_auth_log(auth, start=start, seconds=days * DAY, every=2, seed=4)
    return api, auth


async def forget_security_days(store: Store) -> None:
    async with store.connection() as conn:
        await conn.execute("DELETE FROM security_days")


def child(store_url: str, garden_url: str, api: str, auth: str, kept: str) -> None:
    """One weekly report (and its chart) in this fresh process; prints its cost as JSON.

    kept "no": the kept security days are dropped first (untimed), so the report reads the week."""
    env = {"DATABASE_URL": store_url, "GARDEN_DATABASE_URL": garden_url, "GARDENBOT_STATE_DIR": "/tmp"}
    settings = load_settings(env, Path("/nonexistent.yml"))
    if api:
        settings = settings.model_copy(
            update={"logs": settings.logs.model_copy(update={"api": Path(api), "auth": Path(auth)})}
        )

    async def run() -> dict[str, float]:
        store = Store(store_url, max_size=4)
        await store.open()
        try:
            if kept == "no":
                await forget_security_days(store)
            started = time.perf_counter()
            async with httpx.AsyncClient() as http:
                report = await gather_report("weekly", settings=settings, store=store, http=http, now=NOW)
            gathered = time.perf_counter()
            png = render_chart(report.days)
            done = time.perf_counter()
            render_chart(report.days)  # a serve process has drawn before: fonts loaded, caches warm
            warm = time.perf_counter() - done
        finally:
            await store.close()
        assert report.service is not None and report.usage is not None
        return {
            "seconds": done - started,
            "gather": gathered - started,
            "chart": done - gathered,
            "chart_warm": warm,
            "png_kb": len(png) / 1024,
            "availability": report.service.availability_percent or 0,
            "p95": report.service.p95_ms or 0,
            "security": -1 if report.security is None else report.security.events,
            "kept_days": 0 if report.security is None else report.security.kept_days,
            "failed_logins": -1 if report.security is None else report.security.failed_logins,
        }

    result = asyncio.run(run())
    print(json.dumps({**result, "rss_kib": vm_hwm_kib()}))


def measure(
    store_url: str, garden_url: str, api: str, auth: str, rounds: int, kept: str = "yes"
) -> dict[str, float]:
    runs = []
    for _ in range(rounds):
        out = subprocess.run(
            [sys.executable, "-m", "bench.report", "--child", store_url, garden_url, api, auth, kept],
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(out.stdout))
    best = min(runs, key=lambda r: r["seconds"])
    best["median"] = statistics.median(r["seconds"] for r in runs)
    best["rss_kib"] = max(r["rss_kib"] for r in runs)
    return best


def replicas(store_url: str, seconds: float) -> dict[str, float]:
    """Two demo replicas on one store: lateness of each won fire, and fires run twice."""
    subprocess.run(
        [sys.executable, "-m", "scheduler.demo", "--database-url", store_url, "--seconds", "0"], check=True
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "scheduler.demo", "--database-url", store_url, "--seconds", str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    lines = [json.loads(line) for p in procs for line in p.communicate()[0].splitlines()]
    late = sorted(
        (datetime.fromisoformat(x["started"]) - datetime.fromisoformat(x["fire_time"])).total_seconds()
        for x in lines
    )
    twice = sum(1 for _, n in Counter(x["fire_time"] for x in lines).items() if n > 1)
    return {
        "fires": len(lines),
        "twice": twice,
        "p50": statistics.median(late),
        "p95": late[int(0.95 * (len(late) - 1))],
        "max": late[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log-mb", type=int, default=1000)
    parser.add_argument("--log-days", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--replica-seconds", type=float, default=20)
    parser.add_argument("--child", nargs=5, metavar=("STORE", "GARDEN", "API", "AUTH", "KEPT"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    root = Path(tempfile.mkdtemp(prefix="bench-report-"))
    try:
        with (
            throwaway_database("gbt_bench") as store_url,
            throwaway_database("gbt_bench_garden") as garden_url,
        ):
            run_bench(args, root, store_url, garden_url)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_bench(args: argparse.Namespace, root: Path, store_url: str, garden_url: str) -> None:
    async def prepare() -> None:
        store = Store(store_url, max_size=2)
        await store.open()
        await store.migrate()
        await store.close()
        async with await psycopg.AsyncConnection.connect(garden_url, autocommit=True) as conn:
            await create_sample_garden(conn)

    asyncio.run(prepare())
    rows = fill_probes(store_url)
    started = time.perf_counter()
    api, auth = write_logs(root, args.log_mb, args.log_days)
    size = (api.stat().st_size + auth.stat().st_size) / 1e6
    print(
        f"{rows} probe rows; logs {size:.0f} MB over {args.log_days} days"
        f" (written in {time.perf_counter() - started:.0f} s)",
        file=sys.stderr,
    )
    print(
        "| weekly report | seconds best (median) | gather | chart first (warm) | peak RSS MB"
        " | failed logins / security events / days kept |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, a, b, kept in (
        ("probes, catalog, garden_dx (no logs)", "", "", "yes"),
        (f"… and a {size:.0f} MB log, no day kept: the week read", str(api), str(auth), "no"),
        (f"… and a {size:.0f} MB log, 7 days kept: today read", str(api), str(auth), "yes"),
    ):
        m = measure(store_url, garden_url, a, b, args.rounds, kept)
        print(
            f"| {name} | {m['seconds']:.2f} ({m['median']:.2f}) | {m['gather']:.2f}"
            f" | {m['chart']:.2f} ({m['chart_warm']:.2f}) | {m['rss_kib'] / 1024:.0f} |"
            f" {m['failed_logins']:.0f} / {m['security']:.0f} / {m['kept_days']:.0f} |"
        )
    r = replicas(store_url, args.replica_seconds)
    print(
        f"\ntwo replicas, {r['fires']} fires in {args.replica_seconds:.0f} s, {r['twice']} run twice;"
        f" start after fire time: p50 {r['p50'] * 1000:.0f} ms, p95 {r['p95'] * 1000:.0f} ms,"
        f" max {r['max'] * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
