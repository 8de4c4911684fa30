"""Sizes, durations, ages and times, formatted in one place."""

from __future__ import annotations

import unicodedata
import zoneinfo
from datetime import datetime, timedelta


def format_bytes(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def format_age(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def format_time(moment: datetime | None, zone: zoneinfo.ZoneInfo) -> str:
    """Local time in the configured zone with its abbreviation: 2026-11-28 09:00 JST."""
    if moment is None:
        return "-"
    local = moment.astimezone(zone)
    return local.strftime("%Y-%m-%d %H:%M ") + (local.tzname() or "")


def display_width(text: str) -> int:
    """Columns a monospace font gives the text: wide (CJK) characters take two, combining none."""
    width = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


PROGRESS_CELLS = 10


def progress_bar(percent: int) -> str:
    """`▓▓▓▓▓░░░░░ 50%`: a full bar only at 100 %."""
    percent = min(max(percent, 0), 100)
    filled = percent * PROGRESS_CELLS // 100
    return "▓" * filled + "░" * (PROGRESS_CELLS - filled) + f" {percent}%"


def pad(text: str, width: int) -> str:
    return text + " " * max(0, width - display_width(text))


def text_table(columns: tuple[str, ...], rows: tuple[tuple[str, ...], ...]) -> str:
    """Aligned columns for a monospace block, Japanese-aware."""
    widths = [display_width(c) for c in columns]
    for row in rows:
        for i, cell in enumerate(row[: len(widths)]):
            widths[i] = max(widths[i], display_width(cell))
    lines = ["  ".join(pad(c, widths[i]) for i, c in enumerate(columns)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(
        "  ".join(pad(cell, widths[i]) for i, cell in enumerate(row[: len(widths)])).rstrip() for row in rows
    )
    return "\n".join(lines)
