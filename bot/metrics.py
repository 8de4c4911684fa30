"""Prometheus metrics of this process (`GET /metrics`).

Commands by outcome, ack latency, HTTP requests, work pending; job durations, the last good
backup, the audit spool, alerts received and merged, Slack API errors and retries, scheduled
runs and misses. deploy/prometheus/rules/gardenbot.rules.yml alerts on
gardenbot_last_good_backup_timestamp_seconds and gardenbot_audit_spool_records.
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 3.0, 5.0)
# Jobs run from a second (health) to hours (restore of a large database).
JOB_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.commands = Counter(
            "gardenbot_commands",
            "Sub-commands handled, by sub-command and outcome.",
            ["command", "outcome"],
            registry=self.registry,
        )
        self.ack_seconds = Histogram(
            "gardenbot_slack_ack_seconds",
            "Time from a Slack request's arrival to its acknowledgement.",
            buckets=ACK_BUCKETS,
            registry=self.registry,
        )
        self.http_requests = Counter(
            "gardenbot_http_requests",
            "HTTP requests by route and status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.background_pending = Gauge(
            "gardenbot_background_pending",
            "Work handed over after an ack and not yet finished.",
            registry=self.registry,
        )
        self._add_operation_metrics()
        self._add_alert_and_slack_metrics()

    def _add_operation_metrics(self) -> None:
        self.job_seconds = Histogram(
            "gardenbot_job_duration_seconds",
            "Duration of finished jobs (backup, restore, verify, report...), by kind and outcome.",
            ["kind", "outcome"],
            buckets=JOB_BUCKETS,
            registry=self.registry,
        )
        self.last_good_backup = Gauge(
            "gardenbot_last_good_backup_timestamp_seconds",
            "Unix time of the newest verified good backup in the catalog; 0 when there is none.",
            registry=self.registry,
        )
        self.audit_spool_records = Gauge(
            "gardenbot_audit_spool_records",
            "Audit records kept on local disk because the store did not take them yet.",
            registry=self.registry,
        )
        self.scheduled_runs = Counter(
            "gardenbot_scheduled_runs",
            "Scheduled runs that fired on this replica, by schedule and outcome.",
            ["schedule", "outcome"],
            registry=self.registry,
        )
        self.scheduled_misses = Counter(
            "gardenbot_scheduled_misses",
            "Scheduled runs that did not fire in time (misfire grace exceeded), by schedule.",
            ["schedule"],
            registry=self.registry,
        )

    def _add_alert_and_slack_metrics(self) -> None:
        self.alerts_received = Counter(
            "gardenbot_alert_notifications",
            "Alertmanager webhook notifications received (one per alert group), by status.",
            ["status"],
            registry=self.registry,
        )
        self.alert_updates_merged = Counter(
            "gardenbot_alert_updates_merged",
            "Alert group states replaced by a newer one before they reached Slack.",
            registry=self.registry,
        )
        self.slack_errors = Counter(
            "gardenbot_slack_api_errors",
            "Slack Web API calls that failed, by method and Slack's error code.",
            ["method", "error"],
            registry=self.registry,
        )
        self.slack_retries = Counter(
            "gardenbot_slack_api_retries",
            "Slack Web API calls sent again, by reason (rate_limited: a 429; error: a failure).",
            ["reason"],
            registry=self.registry,
        )
        self.slack_posts_pending = Gauge(
            "gardenbot_slack_posts_pending",
            "Slack messages waiting for their channel's pace.",
            registry=self.registry,
        )

    def count_command(self, command: str, outcome: str) -> None:
        self.commands.labels(command=command, outcome=outcome).inc()

    def observe_job(self, kind: str, outcome: str, seconds: float) -> None:
        self.job_seconds.labels(kind=kind, outcome=outcome).observe(seconds)

    def set_last_good_backup(self, finished_at: datetime | None) -> None:
        """From the catalog at start-up and after each verified backup; None: there is none."""
        self.last_good_backup.set(finished_at.timestamp() if finished_at is not None else 0)

    def set_audit_spool(self, records: int) -> None:
        self.audit_spool_records.set(records)

    def count_scheduled_run(self, schedule: str, outcome: str) -> None:
        self.scheduled_runs.labels(schedule=schedule, outcome=outcome).inc()

    def count_scheduled_miss(self, schedule: str) -> None:
        self.scheduled_misses.labels(schedule=schedule).inc()

    def count_alert_notification(self, status: str) -> None:
        self.alerts_received.labels(status=status).inc()

    def count_slack_error(self, method: str, error: str) -> None:
        self.slack_errors.labels(method=method, error=error).inc()

    def observe_slack_pacing(self, event: str, channel: str) -> None:
        """An Observer for bot.slack_pacing.SlackPacer(observe=...)."""
        if event == "merged":  # the pacer carries alert group messages: its merges are theirs
            self.alert_updates_merged.inc()
        elif event == "rate_limited":
            self.slack_retries.labels(reason="rate_limited").inc()
        elif event == "retried":
            self.slack_retries.labels(reason="error").inc()
        elif event == "failed":
            self.count_slack_error("chat", "gave_up")

    def render(self) -> bytes:
        return generate_latest(self.registry)
