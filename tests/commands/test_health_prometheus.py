"""`health` with GARDEN_PROMETHEUS_URL: every Garden DX host's disk and memory (node_exporter) at the
thresholds of `settings.thresholds`, and the API's current 5xx ratio, read from a stand-in of
Prometheus's HTTP API answering `/api/v1/query` the way Prometheus 2.x does.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from core.reply import Reply
from tests.commands.test_health import QUIET_HOST
from tests.support.runtime import BotWorld, closed_port, request, row_named, table_of

AT = 1764367200.123  # the instant Prometheus evaluated at


def series(value: str, **labels: str) -> dict[str, Any]:
    return {"metric": labels, "value": [AT, value]}


def node(instance: str, **labels: str) -> dict[str, str]:
    return {"instance": instance, "job": "node-exporter", **labels}


DISKS = [
    series("42.17", **node("app1.garden.internal:9100", mountpoint="/", device="/dev/sda1", fstype="ext4")),
    series("61.5", **node("db1.garden.internal:9100", mountpoint="/", device="/dev/sda1", fstype="ext4")),
    series(
        "87.03",
        **node(
            "db1.garden.internal:9100", mountpoint="/var/lib/postgresql", device="/dev/sdb1", fstype="xfs"
        ),
    ),
    series("12.0", **node("web2.garden.internal:9100", mountpoint="/", device="/dev/vda1", fstype="ext4")),
]
MEMORY = [
    series("35.2", **node("app1.garden.internal:9100")),
    series("90.4", **node("db1.garden.internal:9100")),
    series("89.9", **node("web2.garden.internal:9100")),
]
ERRORS = [series("0.0213")]  # 2.13 % of API requests answered 5xx over 5 minutes


class PrometheusStandIn(BaseHTTPRequestHandler):
    queries: ClassVar[list[str]] = []
    errors: ClassVar[list[dict[str, Any]]] = ERRORS

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        promql = parse_qs(url.query).get("query", [""])[0]
        self.queries.append(promql)
        if url.path != "/api/v1/query":
            self._send(404, {"status": "error", "errorType": "not_found", "error": "not found"})
        elif "node_filesystem" in promql:
            self._send(200, self._vector(DISKS))
        elif "node_memory" in promql:
            self._send(200, self._vector(MEMORY))
        elif "http_requests_total" in promql:
            self._send(200, self._vector(self.errors))
        else:
            self._send(400, {"status": "error", "errorType": "bad_data", "error": "unknown query"})

    @staticmethod
    def _vector(result: list[dict[str, Any]]) -> dict[str, Any]:
        return {"status": "success", "data": {"resultType": "vector", "result": result}}

    def _send(self, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def prometheus(errors: list[dict[str, Any]] = ERRORS) -> Iterator[tuple[str, list[str]]]:
    queries: list[str] = []
    handler = type("Prometheus", (PrometheusStandIn,), {"queries": queries, "errors": errors})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", queries
    finally:
        server.shutdown()
        server.server_close()


async def health_with(world: BotWorld, prometheus_url: str | None) -> Reply:
    if prometheus_url is not None:
        world.extra_env["GARDEN_PROMETHEUS_URL"] = prometheus_url
    async with world.runtime() as runtime:
        runtime.services.bot_host = QUIET_HOST
        return await runtime.pipeline.handle(dataclasses.replace(request("U0OPS", "health")))


async def test_every_host_shows_its_fullest_disk_and_its_memory_at_the_manuals_thresholds(
    bot_world: BotWorld,
) -> None:
    with prometheus() as (url, queries):
        reply = await health_with(bot_world, url)

    assert row_named(reply, "disk (app1.garden.internal)")[0] == "ok"
    level, row = row_named(reply, "disk (db1.garden.internal)")
    assert level == "warn"  # 87 % >= thresholds.disk_percent 85
    assert row[2] == "87% used" and row[3] == "/var/lib/postgresql"  # the fullest of its disks
    assert row_named(reply, "disk (web2.garden.internal)")[0] == "ok"
    assert row_named(reply, "memory (db1.garden.internal)")[0] == "warn"  # 90 % >= 90
    assert row_named(reply, "memory (web2.garden.internal)")[0] == "ok"  # 89.9 % is under 90
    assert row_named(reply, "disk (bot host bot-01.example)")[0] == "ok"  # the bot's own machine too
    assert any("node_filesystem_avail_bytes" in q for q in queries)


async def test_the_api_5xx_ratio_over_the_fast_burn_rate_fails_the_report(bot_world: BotWorld) -> None:
    with prometheus() as (url, _):
        reply = await health_with(bot_world, url)

    level, row = row_named(reply, "API 5xx ratio (5 min)")
    assert (level, row[2]) == ("fail", "2.13% of requests")
    assert reply.status == "failed"


async def test_no_traffic_is_not_an_error_ratio(bot_world: BotWorld) -> None:
    with prometheus(errors=[series("NaN")]) as (url, _):
        reply = await health_with(bot_world, url)

    level, row = row_named(reply, "API 5xx ratio (5 min)")
    assert (level, row[2]) == ("info", "no requests")
    assert reply.status == "succeeded"


async def test_prometheus_unreachable_is_one_failing_line_and_the_rest_still_answers(
    bot_world: BotWorld,
) -> None:
    reply = await health_with(bot_world, f"http://127.0.0.1:{closed_port()}")

    assert row_named(reply, "Garden DX hosts (Prometheus)")[0] == "fail"
    assert row_named(reply, "API 5xx ratio (5 min)")[0] == "fail"
    assert row_named(reply, "database")[0] == "ok"


async def test_without_prometheus_only_the_bot_host_is_measured(bot_world: BotWorld) -> None:
    reply = await health_with(bot_world, None)

    names = [row[0] for row in table_of(reply).rows]
    assert not any("garden.internal" in name or "5xx" in name for name in names)
