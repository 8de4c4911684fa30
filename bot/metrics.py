"""Prometheus metrics of this process: commands by outcome, ack latency, HTTP requests."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 3.0, 5.0)


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

    def count_command(self, command: str, outcome: str) -> None:
        self.commands.labels(command=command, outcome=outcome).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
