"""The minute probe: status and latency per path; healthy is 2xx, and "healthy" in the body for /health."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from runbooks.probes import probe_paths

NOW = datetime(2026, 11, 23, 0, 1, tzinfo=UTC)


def api(request: httpx.Request) -> httpx.Response:
    answers = {
        "/health": (200, '{"status": "healthy"}'),
        "/api/estimates": (200, "[]"),
        "/api/broken": (503, "unavailable"),
        "/degraded/health": (200, "degraded"),
    }
    if request.url.path == "/down":
        raise httpx.ConnectError("connection refused", request=request)
    status, body = answers.get(request.url.path, (404, "no"))
    return httpx.Response(status, text=body)


async def test_each_path_is_judged_by_its_own_rule() -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(api)) as http:
        results = await probe_paths(
            http, "http://garden.test", ["/health", "/api/estimates", "/api/broken", "/down"], now=NOW
        )

    by_path = {r.path: r for r in results}
    assert [(r.path, r.status_code, r.healthy) for r in results] == [
        ("/health", 200, True),
        ("/api/estimates", 200, True),
        ("/api/broken", 503, False),
        ("/down", None, False),
    ]
    assert by_path["/health"].latency_ms is not None and by_path["/health"].latency_ms >= 0
    assert by_path["/down"].latency_ms is None and "refused" in (by_path["/down"].error or "")
    assert {r.probed_at for r in results} == {NOW}


async def test_health_that_answers_2xx_without_saying_healthy_is_unhealthy() -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(api)) as http:
        [result] = await probe_paths(http, "http://garden.test/degraded", ["/health"], now=NOW)
    assert (result.status_code, result.healthy, result.error) == (200, False, "HTTP 200")
