"""The manual's KPIs, each set against its target, and what to do about the ones missed.

Targets (SPEC, from the operations manual): availability 99.9 % or more, API response under 2 s,
error rate under 0.1 %, backup success 100 %, security events 0. A KPI without data is neither met
nor missed: it says "no data". Recommendations follow from the misses by fixed rules; each is a
message key (core/locales) with its parameters, so the report reads the same in en and ja.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Comparison = Literal["at_least", "below", "at_most"]
Unit = Literal["percent", "ms", "count"]
KpiKey = Literal[
    "availability", "response_avg", "response_p95", "error_rate", "backup_success", "security_events"
]

KPI_KEYS: tuple[KpiKey, ...] = (
    "availability",
    "response_avg",
    "response_p95",
    "error_rate",
    "backup_success",
    "security_events",
)


@dataclass(frozen=True)
class KpiTargets:
    availability_percent: float = 99.9
    response_ms: float = 2000.0  # thresholds.api_ms
    error_percent: float = 0.1  # logs.error_rate_target_percent
    backup_success_percent: float = 100.0
    security_events: int = 0


@dataclass(frozen=True)
class Kpi:
    key: KpiKey  # its label is the message key report.kpi.<key>
    value: float | None  # None: no data over the window
    target: float
    comparison: Comparison
    unit: Unit

    @property
    def met(self) -> bool | None:
        """True met, False missed, None no data."""
        if self.value is None:
            return None
        if self.comparison == "at_least":
            return self.value >= self.target
        if self.comparison == "below":
            return self.value < self.target
        return self.value <= self.target


@dataclass(frozen=True)
class Recommendation:
    key: str  # report.advice.*
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Measured:
    """The values the KPIs are judged on (None: no data)."""

    availability_percent: float | None = None
    avg_ms: float | None = None
    p95_ms: float | None = None
    error_percent: float | None = None
    backup_success_percent: float | None = None
    security_events: int | None = None


def judge_kpis(measured: Measured, targets: KpiTargets) -> tuple[Kpi, ...]:
    m, t = measured, targets
    return (
        Kpi("availability", m.availability_percent, t.availability_percent, "at_least", "percent"),
        Kpi("response_avg", m.avg_ms, t.response_ms, "below", "ms"),
        Kpi("response_p95", m.p95_ms, t.response_ms, "below", "ms"),
        Kpi("error_rate", m.error_percent, t.error_percent, "below", "percent"),
        Kpi("backup_success", m.backup_success_percent, t.backup_success_percent, "at_least", "percent"),
        Kpi(
            "security_events",
            float(m.security_events) if m.security_events is not None else None,
            float(t.security_events),
            "at_most",
            "count",
        ),
    )


# KPI missed -> the advice it gets (one per advice, in this order).
ADVICE_FOR: tuple[tuple[tuple[KpiKey, ...], str], ...] = (
    (("availability",), "report.advice.availability"),
    (("response_avg", "response_p95"), "report.advice.latency"),
    (("error_rate",), "report.advice.errors"),
    (("backup_success",), "report.advice.backups"),
    (("security_events",), "report.advice.security"),
)
ADVICE_KEYS = (
    *(key for _, key in ADVICE_FOR),
    "report.advice.missed_runs",
    "report.advice.no_service_data",
    "report.advice.all_met",
)


def recommend(
    kpis: Sequence[Kpi], *, flagged_addresses: Sequence[str] = (), missed_schedules: Sequence[str] = ()
) -> tuple[Recommendation, ...]:
    """Rule-based: one piece of advice per kind of miss; 'all met' when nothing was missed."""
    missed = {k.key: k for k in kpis if k.met is False}
    advice: list[Recommendation] = []
    for keys, message_key in ADVICE_FOR:
        hit = [missed[k] for k in keys if k in missed]
        if hit:
            params: dict[str, Any] = {"value": hit[0].value, "target": hit[0].target}
            if message_key == "report.advice.security":
                params["addresses"] = ", ".join(flagged_addresses[:5]) or "-"
            advice.append(Recommendation(message_key, params))
    if missed_schedules:
        advice.append(Recommendation("report.advice.missed_runs", {"schedules": ", ".join(missed_schedules)}))
    no_service = all(k.value is None for k in kpis if k.key in ("availability", "response_p95"))
    if no_service:
        advice.append(Recommendation("report.advice.no_service_data"))
    if not advice:
        advice.append(Recommendation("report.advice.all_met"))
    return tuple(advice)
