"""Availability, latency and the 5xx ratio read from Prometheus's HTTP API (a stand-in server)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from core.errors import TargetUnreachable
from runbooks.report import service_from_prometheus
from tests.support.prometheus_api import prometheus_api

TOKYO = ZoneInfo("Asia/Tokyo")
UNTIL = datetime(2026, 11, 30, 9, 0, tzinfo=TOKYO)
SINCE = UNTIL - timedelta(days=7)
VALUES: dict[str, float | None] = {
    "avg_over_time(up": 0.9995,
    "histogram_quantile(0.95": 0.85,
    "_sum": 0.21,
    'status=~"5.."': 0.0004,
}


async def test_the_week_and_each_day_come_from_promql() -> None:
    async with prometheus_api(VALUES) as prom, httpx.AsyncClient() as http:
        facts = await service_from_prometheus(http, prom.url, since=SINCE, until=UNTIL, zone=TOKYO)

    assert facts.source == "prometheus"
    assert facts.availability_percent == pytest.approx(99.95)
    assert facts.p95_ms == pytest.approx(850.0)
    assert facts.avg_ms == pytest.approx(210.0)
    assert facts.error_percent == pytest.approx(0.04)
    assert facts.days[0].day.isoformat() == "2026-11-23"
    assert len(facts.days) == 8  # 7 days from 09:00 touch 8 calendar days
    whole_week = [q for q, at in prom.queries if at == UNTIL.timestamp()]
    assert any("[604800s]" in q and 'job="garden-api"' in q for q in whole_week)
    assert any(q.startswith("histogram_quantile(0.95, sum by (le)") for q in whole_week)


async def test_no_series_means_no_data_not_zero() -> None:
    async with prometheus_api({}) as prom, httpx.AsyncClient() as http:
        facts = await service_from_prometheus(http, prom.url, since=SINCE, until=UNTIL, zone=TOKYO)
    assert (facts.availability_percent, facts.p95_ms, facts.error_percent) == (None, None, None)


async def test_a_query_prometheus_refuses_is_a_target_error() -> None:
    async with prometheus_api(VALUES) as prom, httpx.AsyncClient() as http:
        prom.fail_with = "parse error"
        with pytest.raises(TargetUnreachable) as caught:
            await service_from_prometheus(http, prom.url, since=SINCE, until=UNTIL, zone=TOKYO)
    assert caught.value.message_key == "report.prometheus_failed"


async def test_an_unreachable_prometheus_is_a_target_error() -> None:
    async with httpx.AsyncClient() as http:
        with pytest.raises(TargetUnreachable):
            await service_from_prometheus(http, "http://127.0.0.1:1", since=SINCE, until=UNTIL, zone=TOKYO)
