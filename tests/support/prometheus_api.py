"""A stand-in for Prometheus's HTTP API: GET /api/v1/query answers like Prometheus, from a table.

Each query is matched by the first rule whose pattern occurs in it; its value is returned as an
instant vector (or an empty vector for None). Every query is recorded with its evaluation time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class PrometheusStandIn:
    values: dict[str, float | None]  # substring of the query -> value (None: no series)
    queries: list[tuple[str, float]] = field(default_factory=list)
    url: str = ""
    fail_with: str | None = None  # answer every query with Prometheus's error shape

    async def handle(self, request: web.Request) -> web.Response:
        query = request.query.get("query", "")
        at = float(request.query.get("time", "0"))
        self.queries.append((query, at))
        if self.fail_with is not None:
            body = {"status": "error", "errorType": "bad_data", "error": self.fail_with}
            return web.json_response(body, status=400)
        value = next((v for pattern, v in self.values.items() if pattern in query), None)
        result = [] if value is None else [{"metric": {}, "value": [at, repr(value)]}]
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": result}})


@asynccontextmanager
async def prometheus_api(values: dict[str, float | None]) -> AsyncIterator[PrometheusStandIn]:
    standin = PrometheusStandIn(values)
    app = web.Application()
    app.router.add_get("/api/v1/query", standin.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    standin.url = f"http://127.0.0.1:{port}"
    try:
        yield standin
    finally:
        await runner.cleanup()
