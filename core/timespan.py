"""Time spans as people type them: `7d`, `24h`, `30m`, `2w`, or an ISO time."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

RELATIVE = re.compile(r"^(\d{1,4})([mhdw])$")
UNIT = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str, *, now: datetime | None = None) -> datetime:
    """`7d`, `24h`, `30m`, `2w`, or an ISO time (naive means UTC)."""
    now = now or datetime.now(UTC)
    match = RELATIVE.match(value.strip().lower())
    if match:
        return now - timedelta(**{UNIT[match.group(2)]: int(match.group(1))})
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError("a span like 7d, 24h, 30m or an ISO time like 2026-11-01T09:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
