"""Cron lines become APScheduler triggers that fire when cron would, in the configured zone."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from scheduler.cron import cron_trigger, day_of_week, fires_between, latest_fire_until, next_fire

TOKYO = ZoneInfo("Asia/Tokyo")


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("1", "mon"),
        ("0", "sun"),
        ("7", "sun"),
        ("1-5", "mon,tue,wed,thu,fri"),
        ("0,6", "sun,sat"),
        ("*/2", "sun,tue,thu,sat"),
        ("MON", "mon"),
        ("*", "*"),
    ],
)
def test_cron_day_of_week_counts_from_sunday(field: str, expected: str) -> None:
    assert day_of_week(field) == expected


def test_the_weekly_report_cron_fires_on_monday_morning_in_tokyo() -> None:
    trigger = cron_trigger("0 9 * * 1", TOKYO)
    sunday_noon = datetime(2026, 11, 29, 12, 0, tzinfo=TOKYO)

    fire = next_fire(trigger, sunday_noon)

    assert fire == datetime(2026, 11, 30, 9, 0, tzinfo=TOKYO)
    assert fire is not None and fire.weekday() == 0


def test_the_monthly_report_fires_on_the_first() -> None:
    fire = next_fire(cron_trigger("0 9 1 * *", TOKYO), datetime(2026, 11, 29, tzinfo=TOKYO))
    assert fire == datetime(2026, 12, 1, 9, 0, tzinfo=TOKYO)


def test_a_week_of_minutes_is_10080_fires_after_the_first() -> None:
    start = datetime(2026, 11, 23, 0, 0, tzinfo=TOKYO)
    fires = list(fires_between(cron_trigger("* * * * *", TOKYO), start, start + timedelta(days=7)))
    assert len(fires) == 10_080
    assert fires[0] == start + timedelta(minutes=1)
    assert fires[-1] == start + timedelta(days=7)


def test_the_latest_fire_names_the_minute_just_passed() -> None:
    trigger = cron_trigger("* * * * *", TOKYO)
    now = datetime(2026, 11, 23, 10, 5, 0, 300_000, tzinfo=TOKYO)

    assert latest_fire_until(trigger, now, lookback=timedelta(seconds=30)) == now.replace(microsecond=0)
    assert latest_fire_until(cron_trigger("0 2 * * *", TOKYO), now, lookback=timedelta(hours=1)) is None
