"""The Garden DX hosts as Prometheus sees them (node_exporter) and the API's current 5xx ratio,
read through Prometheus's HTTP API (`GET /api/v1/query`), for `health` when GARDEN_PROMETHEUS_URL
is set. The queries are the ones deploy/prometheus/rules/garden.rules.yml alerts on.
"""

from __future__ import annotations

from typing import Any

import httpx

from runbooks.health import CheckResult, Level, result

FILESYSTEMS = 'job="node-exporter",fstype!~"tmpfs|overlay|squashfs|ramfs|devtmpfs"'
DISK_QUERY = (
    f"100 * (1 - node_filesystem_avail_bytes{{{FILESYSTEMS}}} / node_filesystem_size_bytes{{{FILESYSTEMS}}})"
)
MEMORY_QUERY = (
    '100 * (1 - node_memory_MemAvailable_bytes{job="node-exporter"}'
    ' / node_memory_MemTotal_bytes{job="node-exporter"})'
)
ERRORS_QUERY = (
    'sum(rate(http_requests_total{job="garden-api",status=~"5.."}[5m]))'
    ' / sum(rate(http_requests_total{job="garden-api"}[5m]))'
)
ERROR_WARN_RATIO = 0.001  # the availability objective: 99.9 % of requests succeed
ERROR_FAIL_RATIO = 0.0144  # the fast-burn page: 14.4 times the budget


class PrometheusError(RuntimeError):
    """Prometheus answered, but not with a vector (an error status, a bad query)."""


async def query(http: httpx.AsyncClient, base_url: str, promql: str) -> list[tuple[dict[str, str], float]]:
    """An instant query's vector as (labels, value) pairs."""
    response = await http.get(f"{base_url.rstrip('/')}/api/v1/query", params={"query": promql})
    try:
        body: Any = response.json()
    except ValueError:
        raise PrometheusError(f"HTTP {response.status_code}, not JSON") from None
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error", "") if isinstance(body, dict) else ""
        raise PrometheusError(f"HTTP {response.status_code}: {str(error)[:160]}")
    data = body.get("data") or {}
    if data.get("resultType") != "vector":
        raise PrometheusError(f"a {data.get('resultType')!r} result, not a vector")
    return [(dict(item.get("metric") or {}), float(item["value"][1])) for item in data.get("result", [])]


def percent_level(percent: int, warn_percent: int, fail_percent: int) -> Level:
    return "fail" if percent >= fail_percent else "warn" if percent >= warn_percent else "ok"


def host_name(labels: dict[str, str]) -> str:
    """node_exporter's instance without its port: `db1.garden.internal:9100` → `db1.garden.internal`."""
    instance = labels.get("instance", "?")
    host, _, port = instance.rpartition(":")
    return host if host and port.isdigit() else instance


async def host_results(
    http: httpx.AsyncClient, base_url: str, *, warn: tuple[int, int], fail: tuple[int, int]
) -> list[CheckResult]:
    """Disk (the fullest file system of each host) and memory of every host, worst first.

    `warn` and `fail` are (disk, memory) percentages."""
    disks = await query(http, base_url, DISK_QUERY)
    memory = await query(http, base_url, MEMORY_QUERY)
    fullest: dict[str, tuple[float, str]] = {}
    for labels, value in disks:
        host = host_name(labels)
        if host not in fullest or value > fullest[host][0]:
            fullest[host] = (value, labels.get("mountpoint", "?"))
    results = [
        result(
            "host_disk",
            percent_level(int(value), warn[0], fail[0]),
            "health.figure.percent_used",
            detail=mountpoint,
            host=host,
            percent=int(value),
        )
        for host, (value, mountpoint) in sorted(fullest.items())
    ]
    for labels, value in sorted(memory, key=lambda item: host_name(item[0])):
        level = percent_level(int(value), warn[1], fail[1])
        host = host_name(labels)
        results.append(
            result("host_memory", level, "health.figure.percent_used", host=host, percent=int(value))
        )
    if not results:
        results.append(result("host_disk", "warn", "health.figure.no_series", detail="node_exporter"))
    return results


async def error_ratio_result(http: httpx.AsyncClient, base_url: str) -> CheckResult:
    """The API's share of 5xx answers over the last 5 minutes."""
    vector = await query(http, base_url, ERRORS_QUERY)
    if not vector or vector[0][1] != vector[0][1]:  # no traffic: 0/0 is NaN, or no series at all
        return result("errors_5xx", "info", "health.figure.no_traffic")
    ratio = vector[0][1]
    level: Level = "fail" if ratio >= ERROR_FAIL_RATIO else "warn" if ratio >= ERROR_WARN_RATIO else "ok"
    return result("errors_5xx", level, "health.figure.error_ratio", ratio=f"{ratio * 100:.2f}")
