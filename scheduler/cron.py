"""Cron lines as APScheduler 3 triggers, and the fire times between two moments.

Cron's day-of-week counts from Sunday (0 and 7); APScheduler 3 counts from Monday, and its
`CronTrigger.from_crontab` passes numbers through unchanged. So the field is translated to day names.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
MAX_ENUMERATED = 50_000  # fires counted at most between two moments (a week of minutes is 10,080)
ONE_MICROSECOND = timedelta(microseconds=1)


def _day_values(token: str) -> list[int]:
    base, _, step_text = token.partition("/")
    step = int(step_text) if step_text else 1
    if base == "*":
        low, high = 0, 6
    elif "-" in base:
        low_text, high_text = base.split("-", 1)
        low, high = _day_number(low_text), _day_number(high_text)
    else:
        low = high = _day_number(base)
        if step_text:
            high = 6
    return [value % 7 for value in range(low, high + 1, step)]


def _day_number(text: str) -> int:
    lowered = text.lower()[:3]
    if lowered in DAY_NAMES:
        return DAY_NAMES.index(lowered)
    value = int(text)
    if not 0 <= value <= 7:
        raise ValueError(f"day of week {text!r} is not 0-7")
    return value


def day_of_week(field: str) -> str:
    """A cron day-of-week field (0 or 7 = Sunday, names allowed) as APScheduler day names."""
    if field in ("*", "?"):
        return "*"
    days = sorted({day for token in field.split(",") for day in _day_values(token)})
    return ",".join(DAY_NAMES[day] for day in days)


def cron_trigger(cron: str, zone: ZoneInfo, *, second: str = "0") -> CronTrigger:
    """A five-field cron line (minute hour day month day-of-week) in `zone`."""
    minute, hour, day, month, dow = cron.split()
    return CronTrigger(
        second=second,
        minute=minute,
        hour=hour,
        day=day if day != "?" else "*",
        month=month,
        day_of_week=day_of_week(dow),
        timezone=zone,
    )


def fires_between(trigger: CronTrigger, after: datetime, until: datetime) -> Iterator[datetime]:
    """Fire times t with after < t <= until, oldest first (at most MAX_ENUMERATED of them)."""
    moment = after + ONE_MICROSECOND
    for _ in range(MAX_ENUMERATED):
        fire: datetime | None = trigger.get_next_fire_time(None, moment)
        if fire is None or fire > until:
            return
        yield fire
        moment = fire + ONE_MICROSECOND


def latest_fire_until(trigger: CronTrigger, until: datetime, *, lookback: timedelta) -> datetime | None:
    """The newest fire time in (until - lookback, until], if any."""
    newest = None
    for fire in fires_between(trigger, until - lookback, until):
        newest = fire
    return newest


def next_fire(trigger: CronTrigger, now: datetime) -> datetime | None:
    """The first fire time after `now`."""
    fire: datetime | None = trigger.get_next_fire_time(None, now + ONE_MICROSECOND)
    return fire
