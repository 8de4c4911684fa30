"""Probe history: availability, mean and p95 latency over a window and per day, computed in SQL."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from store.db import Store
from store.probes import ProbeRecord, daily_stats, prune_probes, record_probes, window_stats

TOKYO = ZoneInfo("Asia/Tokyo")
START = datetime(2026, 11, 23, 0, 0, tzinfo=TOKYO)


def probe(minute: int, ms: float | None, *, healthy: bool = True, status: int | None = 200) -> ProbeRecord:
    return ProbeRecord("/health", START + timedelta(minutes=minute), status, healthy, ms)


async def test_window_stats_give_availability_mean_and_p95(store: Store) -> None:
    records = [probe(i, float(i + 1)) for i in range(100)]  # 1..100 ms
    records[10] = probe(10, 5000.0, healthy=False, status=503)
    records[20] = probe(20, None, healthy=False, status=None)  # no answer: no latency
    await record_probes(store, records)

    stats = await window_stats(store, since=START, until=START + timedelta(hours=2))

    assert (stats.samples, stats.healthy, stats.errors) == (100, 98, 2)
    assert stats.availability_percent == pytest.approx(98.0)
    assert stats.error_percent == pytest.approx(2.0)
    latencies = sorted(r.latency_ms for r in records if r.latency_ms is not None)
    assert stats.avg_ms == pytest.approx(sum(latencies) / len(latencies))
    # percentile_cont: linear interpolation between the two nearest ranks
    rank = 0.95 * (len(latencies) - 1)
    low = latencies[int(rank)]
    expected = low + (latencies[int(rank) + 1] - low) * (rank - int(rank))
    assert stats.p95_ms == pytest.approx(expected)


async def test_a_window_without_probes_has_no_availability(store: Store) -> None:
    stats = await window_stats(store, since=START, until=START + timedelta(days=7))
    assert (stats.samples, stats.availability_percent, stats.p95_ms) == (0, None, None)


async def test_daily_stats_group_by_the_configured_zones_calendar_day(store: Store) -> None:
    # 23:30 and 00:30 Tokyo are two days in Tokyo but one day (the 23rd, 14:30/15:30) in UTC.
    await record_probes(store, [probe(23 * 60 + 30, 10.0), probe(24 * 60 + 30, 30.0, healthy=False)])

    tokyo = await daily_stats(store, since=START, until=START + timedelta(days=2), zone="Asia/Tokyo")
    utc = await daily_stats(store, since=START, until=START + timedelta(days=2), zone="UTC")

    assert [(d.day.isoformat(), d.stats.availability_percent) for d in tokyo] == [
        ("2026-11-23", 100.0),
        ("2026-11-24", 0.0),
    ]
    assert [(d.day.isoformat(), d.stats.samples) for d in utc] == [("2026-11-23", 2)]


async def test_prune_drops_only_older_history(store: Store) -> None:
    await record_probes(store, [probe(0, 1.0), probe(60 * 24 * 40, 1.0)])
    assert await prune_probes(store, before=START + timedelta(days=30)) == 1
