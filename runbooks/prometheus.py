"""Availability, latency and the 5xx ratio of the Garden DX API from Prometheus (PromQL over HTTP).

Instant queries (`GET /api/v1/query`) evaluated at a window's end over a range as long as the
window, with the metrics the FastAPI instrumentator exports (deploy/prometheus/prometheus.yml):
`up`, `http_requests_total{status}` and the `http_request_duration_seconds` histogram.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from core.errors import TargetUnreachable

JOB = "garden-api"


def availability_query(window: str, job: str = JOB) -> str:
    return f'avg(avg_over_time(up{{job="{job}"}}[{window}]))'


def p95_query(window: str, job: str = JOB) -> str:
    return (
        "histogram_quantile(0.95, sum by (le) "
        f'(rate(http_request_duration_seconds_bucket{{job="{job}"}}[{window}])))'
    )


def mean_query(window: str, job: str = JOB) -> str:
    return (
        f'sum(rate(http_request_duration_seconds_sum{{job="{job}"}}[{window}]))'
        f' / sum(rate(http_request_duration_seconds_count{{job="{job}"}}[{window}]))'
    )


def error_ratio_query(window: str, job: str = JOB) -> str:
    return (
        f'sum(rate(http_requests_total{{job="{job}",status=~"5.."}}[{window}]))'
        f' / sum(rate(http_requests_total{{job="{job}"}}[{window}]))'
    )


@dataclass(frozen=True)
class ApiWindow:
    """The API over one window, as Prometheus saw it; None where it has no data."""

    availability_percent: float | None
    avg_ms: float | None
    p95_ms: float | None
    error_percent: float | None


def range_of(since: datetime, until: datetime) -> str:
    return f"{max(1, int((until - since).total_seconds()))}s"


def _scalar(body: dict[str, Any]) -> float | None:
    if body.get("status") != "success":
        raise TargetUnreachable("report.prometheus_failed", detail=str(body.get("error", ""))[:200])
    data = body.get("data") or {}
    result = data.get("result")
    if data.get("resultType") == "scalar" and isinstance(result, list):
        sample = result
    elif isinstance(result, list) and result:
        sample = result[0].get("value")
    else:
        return None
    value = float(sample[1])
    return None if math.isnan(value) or math.isinf(value) else value


async def query(http: httpx.AsyncClient, base_url: str, promql: str, *, at: datetime) -> float | None:
    """One instant query's single value (the first series'); None when Prometheus has no data."""
    try:
        response = await http.get(
            f"{base_url.rstrip('/')}/api/v1/query", params={"query": promql, "time": f"{at.timestamp():.3f}"}
        )
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise TargetUnreachable("report.prometheus_unreachable", detail=type(exc).__name__) from None
    if not isinstance(body, dict):
        raise TargetUnreachable("report.prometheus_unreachable", detail="not a query answer")
    return _scalar(body)


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


async def api_window(
    http: httpx.AsyncClient, base_url: str, *, since: datetime, until: datetime
) -> ApiWindow:
    window = range_of(since, until)
    up = await query(http, base_url, availability_query(window), at=until)
    mean = await query(http, base_url, mean_query(window), at=until)
    p95 = await query(http, base_url, p95_query(window), at=until)
    errors = await query(http, base_url, error_ratio_query(window), at=until)
    return ApiWindow(_scaled(up, 100), _scaled(mean, 1000), _scaled(p95, 1000), _scaled(errors, 100))


async def api_days(
    http: httpx.AsyncClient, base_url: str, *, since: datetime, until: datetime, zone: ZoneInfo
) -> list[tuple[date, ApiWindow]]:
    """Per calendar day in `zone` that overlaps the window, each evaluated over that day."""
    days: list[tuple[date, ApiWindow]] = []
    day = since.astimezone(zone).date()
    while True:
        start = max(since, datetime.combine(day, datetime.min.time(), zone))
        end = min(until, datetime.combine(day + timedelta(days=1), datetime.min.time(), zone))
        if start >= until:
            break
        if end > start:
            days.append((day, await api_window(http, base_url, since=start, until=end)))
        day += timedelta(days=1)
    return days
