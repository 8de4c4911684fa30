"""`gardenbot serve`'s own endpoints: /healthz, /readyz, /metrics; and starting with the store unreachable.

How Slack commands are answered with the store unreachable is tested in-process (test_store_down.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.support.serve import BotServer, serving
from tests.support.signing import new_channel

UNREACHABLE_STORE = "postgresql://postgres@127.0.0.1:1/x"


@pytest.fixture
def server(bot_server: BotServer) -> BotServer:
    return bot_server


@pytest.fixture(scope="module")
def storeless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BotServer]:
    """The bot with DATABASE_URL pointing at a port nobody listens on."""
    with serving(tmp_path_factory.mktemp("serve-storeless"), database_url=UNREACHABLE_STORE) as running:
        yield running


def samples(text: str, name: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples if s.name == name]


# --- a healthy bot ------------------------------------------------------------------------------


async def test_healthz(server: BotServer) -> None:
    response = await server.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_with_store_and_redis_up(server: BotServer) -> None:
    response = await server.get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert (body["store"], body["redis"]) == ("ok", "ok")


async def test_metrics_count_commands_by_outcome_and_time_the_acks(server: BotServer) -> None:
    channel = new_channel()
    for text in ("health", "jobs", "no-such-thing"):
        assert (await server.slash(text, user="U0OPS", channel=channel)).status == 200
    await server.wait_calls("chat.postMessage", channel=channel, count=2)
    await server.wait_calls("chat.postEphemeral", channel=channel)
    response = await server.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert "# TYPE gardenbot_commands_total counter" in text
    assert "# TYPE gardenbot_slack_ack_seconds histogram" in text
    commands = {
        (s.labels["command"], s.labels["outcome"]): s.value for s in samples(text, "gardenbot_commands_total")
    }
    assert commands[("jobs", "succeeded")] >= 1
    assert commands[("unknown", "refused")] >= 1
    assert any(command == "health" for command, _ in commands)
    buckets = samples(text, "gardenbot_slack_ack_seconds_bucket")
    assert {s.labels["le"] for s in buckets} >= {"0.1", "1.0", "3.0", "+Inf"}
    [count] = samples(text, "gardenbot_slack_ack_seconds_count")
    assert count.value >= 3
    inf = next(s for s in buckets if s.labels["le"] == "+Inf")
    assert inf.value == count.value
    requests = {s.labels["status"]: s.value for s in samples(text, "gardenbot_http_requests_total")}
    assert requests["200"] >= 3


async def test_readyz_and_metrics_need_no_signature(server: BotServer) -> None:
    # Probes and Prometheus do not sign; only /slack/events checks Slack's signature.
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await server.get(path)).status_code == 200


# --- the bot's store unreachable ----------------------------------------------------------------


async def test_it_starts_and_is_alive_but_not_ready_naming_the_store(storeless: BotServer) -> None:
    healthz = await storeless.get("/healthz")
    readyz = await storeless.get("/readyz")

    assert healthz.status_code == 200
    assert readyz.status_code == 503
    body = readyz.json()
    assert (body["store"], body["redis"]) == ("unreachable", "ok")
