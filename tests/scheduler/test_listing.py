"""`schedule list`: next fire from the cron line in the zone, last result from the store."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from scheduler.listing import list_schedules
from scheduler.table import build_table
from store import schedule_runs
from store.db import Store

TOKYO = ZoneInfo("Asia/Tokyo")
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=TOKYO)  # a Sunday


async def test_each_schedule_shows_its_next_fire_and_newest_run(store: Store) -> None:
    fire = datetime(2026, 11, 29, 2, 0, tzinfo=TOKYO)
    run_id = await schedule_runs.claim_run(store, schedule="nightly_backup", fire_time=fire, claimed_by="t")
    assert run_id is not None
    await schedule_runs.finish_run(store, run_id, status="failed", error="disk full")

    listing = {s.name: s for s in await list_schedules(store, build_table({}), zone=TOKYO, now=NOW)}

    assert listing["weekly_report"].next_fire == datetime(2026, 11, 30, 9, 0, tzinfo=TOKYO)
    assert listing["nightly_backup"].next_fire == datetime(2026, 11, 30, 2, 0, tzinfo=TOKYO)
    last = listing["nightly_backup"].last_run
    assert last is not None and (last.status, last.error, last.fire_time) == ("failed", "disk full", fire)
    assert listing["probe"].last_run is None
