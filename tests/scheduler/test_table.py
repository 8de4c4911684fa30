"""The schedule table: SPEC's names, the issue's default times, configured cron lines laid over them."""

from __future__ import annotations

from datetime import timedelta

from core.config import SCHEDULE_NAMES as CONFIGURABLE
from scheduler.table import DEFAULT_SCHEDULES, SCHEDULE_NAMES, build_table, find


def test_the_table_and_the_configuration_know_the_same_names() -> None:
    assert set(SCHEDULE_NAMES) == set(CONFIGURABLE)


def test_the_defaults_are_the_issues_times() -> None:
    crons = {s.name: s.cron for s in DEFAULT_SCHEDULES}
    assert crons == {
        "probe": "* * * * *",
        "morning_health": "0 9 * * *",
        "nightly_backup": "0 2 * * *",
        "backup_verify": "0 4 * * *",
        "wal_check": "0 */6 * * *",
        "tls_check": "0 8 * * *",
        "weekly_report": "0 9 * * 1",
        "monthly_report": "0 9 1 * *",
        "approval_sweep": "* * * * *",
        "escalation": "* * * * *",
    }
    nightly = find(DEFAULT_SCHEDULES, "nightly_backup")
    assert nightly is not None and nightly.commands == (
        "backup",
        "db maintain",
        "security keep",
    )  # then ANALYZE, then keep


def test_configured_crons_override_and_off_removes() -> None:
    table = build_table({"morning_health": "30 8 * * 1-5", "monthly_report": "off"})

    assert find(table, "morning_health") is not None
    assert find(table, "morning_health").cron == "30 8 * * 1-5"  # type: ignore[union-attr]
    assert find(table, "monthly_report") is None
    assert find(table, "file_backup") is None
    assert find(build_table({}, hosts_configured=True), "file_backup") is not None


def test_minute_schedules_have_short_grace_and_daily_ones_hours() -> None:
    grace = {s.name: s.grace for s in DEFAULT_SCHEDULES}
    assert grace["probe"] < timedelta(minutes=1) <= timedelta(hours=1) <= grace["nightly_backup"]
