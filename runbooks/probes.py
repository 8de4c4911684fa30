"""The minute probe: GET each configured path under the target API, its status and how long it took.

Healthy means a 2xx answer, and for /health also "healthy" in the body (the manual's rule,
runbooks.health.says_healthy). No answer at all is unhealthy with no status and no latency.
The results are plain data; the caller keeps them (store/probes.py) as the availability history.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from core.secrets import mask_text
from runbooks.health import says_healthy

HEALTH_PATH = "/health"


@dataclass(frozen=True)
class ProbeResult:
    path: str
    probed_at: datetime
    status_code: int | None  # None: no HTTP answer
    healthy: bool
    latency_ms: float | None  # None: no HTTP answer
    error: str | None = None


def judge(path: str, status_code: int, body: str) -> bool:
    if not 200 <= status_code < 300:
        return False
    return says_healthy(body) if path == HEALTH_PATH else True


async def probe_path(
    http: httpx.AsyncClient,
    base_url: str,
    path: str,
    *,
    timeout: float,
    now: datetime,
    clock: Callable[[], float] = time.perf_counter,
) -> ProbeResult:
    started = clock()
    try:
        response = await http.get(f"{base_url.rstrip('/')}{path}", timeout=timeout)
    except httpx.HTTPError as exc:
        detail = mask_text(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        return ProbeResult(path, now, None, False, None, detail[:200])
    latency = (clock() - started) * 1000
    healthy = judge(path, response.status_code, response.text)
    error = None if healthy else f"HTTP {response.status_code}"
    return ProbeResult(path, now, response.status_code, healthy, round(latency, 1), error)


async def probe_paths(
    http: httpx.AsyncClient,
    base_url: str,
    paths: Sequence[str],
    *,
    timeout: float = 10.0,
    now: datetime | None = None,
) -> list[ProbeResult]:
    """Every path at once; all results carry the same probe time (the minute they belong to)."""
    at = now or datetime.now(UTC)
    return list(
        await asyncio.gather(*(probe_path(http, base_url, p, timeout=timeout, now=at) for p in paths))
    )
