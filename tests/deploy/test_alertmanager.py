"""deploy/alertmanager/alertmanager.yml: amtool accepts it, everything reaches the bot's webhook
with a bearer token read from a file, critical alerts also go by e-mail, and the grouping does not
flood the channel (the manual's 10 s group interval)."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.support.runtime import REPO_ROOT

CONFIG = REPO_ROOT / "deploy" / "alertmanager" / "alertmanager.yml"


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("amtool")
    if tool is None:
        pytest.fail("amtool is missing: scripts/test.sh installs Debian's `prometheus-alertmanager`")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60, check=False)


def config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    return loaded


def receiver_for(*labels: str) -> str:
    result = amtool("config", "routes", "test", f"--config.file={CONFIG}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def test_amtool_accepts_the_configuration() -> None:
    result = amtool("check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_warnings_go_to_the_bot_and_critical_alerts_to_the_bot_and_email() -> None:
    assert receiver_for("alertname=GardenDiskSpaceLow", "severity=warning") == "gardenbot"
    assert receiver_for("alertname=GardenPostgresDown", "severity=critical") == "gardenbot-and-email"
    receivers = {r["name"]: r for r in config()["receivers"]}
    assert receivers["gardenbot-and-email"]["email_configs"]
    assert "email_configs" not in receivers["gardenbot"]


def test_every_receiver_posts_to_the_bots_webhook_with_a_bearer_token_from_a_file() -> None:
    for receiver in config()["receivers"]:
        [webhook] = receiver["webhook_configs"]
        assert webhook["url"].endswith("/alerts/alertmanager"), receiver["name"]
        auth = webhook["http_config"]["authorization"]
        assert auth["type"] == "Bearer"
        assert auth["credentials_file"].startswith("/")
        assert "credentials" not in auth  # the token itself never sits in the configuration


def test_grouping_waits_and_intervals_do_not_flood_the_channel() -> None:
    route = config()["route"]
    assert route["group_by"] == ["alertname", "service", "severity"]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == ("30s", "5m", "4h")


def test_amtool_rejects_a_route_to_a_receiver_that_does_not_exist(tmp_path: Any) -> None:
    """The check can fail: a typo in a receiver name is caught before Alertmanager starts."""
    broken = tmp_path / "alertmanager.yml"
    text = CONFIG.read_text(encoding="utf-8")
    broken.write_text(text.replace("receiver: gardenbot\n", "receiver: gardenb0t\n", 1))
    result = amtool("check-config", str(broken))
    assert result.returncode != 0
