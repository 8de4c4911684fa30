"""A tiny replica for tests and the benchmark: `python -m scheduler.demo --database-url URL --seconds 4`.

It runs one schedule that fires every second (cron "* * * * *", seconds "*") against the given bot
store, answers every submitted run at once, and prints one JSON line per fire it won:
{"fire_time": ISO, "started": ISO, "instance": NAME}. Two of them on one store show that each fire
runs once; the gap between fire_time and started is how late a run starts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from scheduler.seam import RunOutcome, ScheduledRun
from scheduler.service import Scheduler
from scheduler.table import ScheduleSpec
from store.db import Store


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scheduler.demo")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--zone", default="Asia/Tokyo")
    return parser.parse_args(argv)


async def _submit(run: ScheduledRun) -> RunOutcome:
    started = datetime.now(UTC)
    line = {"fire_time": run.fire_time.isoformat(), "started": started.isoformat()}
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()
    return RunOutcome(status="succeeded", text="demo")


async def run_demo(database_url: str, seconds: float, zone: str) -> None:
    store = Store(database_url, max_size=3)
    await store.open()
    try:
        await store.migrate()
        spec = ScheduleSpec("demo", "* * * * *", ("demo",), None, timedelta(seconds=5), second="*")
        scheduler = Scheduler(store=store, table=[spec], submit=_submit, zone=ZoneInfo(zone))
        await scheduler.start()
        await asyncio.sleep(seconds)
        await scheduler.shutdown()
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    asyncio.run(run_demo(args.database_url, args.seconds, args.zone))


if __name__ == "__main__":
    main()
