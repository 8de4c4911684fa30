"""bot/metrics.py: the exposition, with every metric given a value, passes `promtool check metrics`
(Prometheus's naming and help lint), keeps the names already scraped, and carries the two series
the bot's alert rules read."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.metrics import Metrics
from bot.slack_pacing import SlackPacer

EXISTING = {
    "gardenbot_commands",
    "gardenbot_slack_ack_seconds",
    "gardenbot_http_requests",
    "gardenbot_background_pending",
}


def sample_metrics() -> Metrics:
    metrics = Metrics()
    metrics.count_command("backup", "succeeded")
    metrics.ack_seconds.observe(0.004)
    metrics.http_requests.labels(route="/slack/events", status="200").inc()
    metrics.background_pending.set(2)
    metrics.observe_job("backup", "succeeded", 42.0)
    metrics.set_last_good_backup(datetime(2026, 11, 28, 2, 0, tzinfo=UTC))
    metrics.set_audit_spool(3)
    metrics.count_scheduled_run("nightly_backup", "succeeded")
    metrics.count_scheduled_miss("probe")
    metrics.count_alert_notification("firing")
    metrics.count_slack_error("chat.update", "message_not_found")
    for event in ("merged", "rate_limited", "retried", "failed", "sent"):
        metrics.observe_slack_pacing(event, "C0ALERTS")
    metrics.slack_posts_pending.set(1)
    return metrics


def values(metrics: Metrics) -> dict[str, float]:
    text = metrics.render().decode()
    return {
        sample.name + str(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_exposition_passes_promtool_check_metrics() -> None:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is missing: scripts/test.sh installs Debian's `prometheus` package")
    exposition = sample_metrics().render()
    result = subprocess.run(
        [tool, "check", "metrics"], input=exposition, capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    assert b"gardenbot_job_duration_seconds_bucket" in exposition


def test_the_names_already_scraped_keep_working() -> None:
    families = {f.name for f in text_string_to_metric_families(sample_metrics().render().decode())}
    assert families >= EXISTING


def test_the_series_the_alert_rules_read_carry_the_values_set() -> None:
    got = values(sample_metrics())
    assert (
        got["gardenbot_last_good_backup_timestamp_seconds[]"]
        == datetime(2026, 11, 28, 2, 0, tzinfo=UTC).timestamp()
    )
    assert got["gardenbot_audit_spool_records[]"] == 3
    metrics = Metrics()
    metrics.set_last_good_backup(None)
    assert values(metrics)["gardenbot_last_good_backup_timestamp_seconds[]"] == 0


async def test_pacer_events_land_in_the_slack_and_alert_counters() -> None:
    metrics = Metrics()
    pacer = SlackPacer(per_second=50, backoff_s=0.01, observe=metrics.observe_slack_pacing)
    failures = [RuntimeError("connection reset")]

    async def flaky() -> None:
        if failures:
            raise failures.pop()

    async def fine() -> None:
        pass

    pacer.submit("C0ALERTS", "first", fine)  # leaves at once: the next ones wait
    for send in (fine, fine, flaky):
        pacer.submit("C0ALERTS", "disk", send)  # two merges; the latest state fails once
    await pacer.drain()
    got = values(metrics)
    assert got["gardenbot_alert_updates_merged_total[]"] == 2
    assert got["gardenbot_slack_api_retries_total[('reason', 'error')]"] == 1
    assert (pacer.stats.sent, pacer.stats.merged, pacer.stats.retried) == (2, 2, 1)
