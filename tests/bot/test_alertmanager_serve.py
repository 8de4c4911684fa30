"""A real Alertmanager (Debian's prometheus-alertmanager) sends its webhook to a real `gardenbot
serve` (a child process on a free port): an alert fired through Alertmanager's API becomes one
message in the alerts channel, and its resolution updates that message."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.alertmanager import RealAlertmanager, postgres_alert
from tests.support.serve import BotServer, serving
from tests.support.slack_driver import call_text

TOKEN = "alertmanager-to-gardenbot-token"
ALERTS = "C0ALERTS"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[BotServer]:
    config = {"channels": {"ops": "C0OPS", "alerts": ALERTS}}
    with serving(tmp_path, extra_env={"GARDENBOT_ALERT_TOKEN": TOKEN}, config=config) as running:
        yield running


async def test_an_alert_fired_in_a_real_alertmanager_reaches_slack_through_serve(server: BotServer) -> None:
    with RealAlertmanager(f"{server.base_url}/alerts/alertmanager", TOKEN) as alertmanager:
        alertmanager.post_alerts([postgres_alert()])
        [post] = await server.wait_calls("chat.postMessage", channel=ALERTS, timeout=30)
        resolved = postgres_alert()
        resolved["endsAt"] = (datetime.now(UTC) - timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
        alertmanager.post_alerts([resolved])
        [update] = await server.wait_calls("chat.update", channel=ALERTS, timeout=30)

    assert "FIRING" in call_text(post) and "GardenPostgresDown" in call_text(post)
    assert "PostgreSQL on db1.garden.internal:9187 is down" in call_text(post)
    assert "RESOLVED" in call_text(update)
    assert len(server.calls("chat.postMessage", channel=ALERTS)) == 1
    rows = await server.query("SELECT status, notifications FROM alert_threads")
    assert rows == [{"status": "resolved", "notifications": 2}]
