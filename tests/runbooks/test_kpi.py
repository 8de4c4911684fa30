"""KPIs against the manual's targets, and rule-based advice from the misses (keys in en and ja)."""

from __future__ import annotations

from core.locales.en import MESSAGES as EN
from core.locales.ja import MESSAGES as JA
from runbooks.kpi import ADVICE_KEYS, KPI_KEYS, KpiTargets, Measured, judge_kpis, recommend

TARGETS = KpiTargets()


def verdicts(measured: Measured) -> dict[str, bool | None]:
    return {k.key: k.met for k in judge_kpis(measured, TARGETS)}


def test_each_kpi_is_met_or_missed_against_the_manuals_target() -> None:
    good = Measured(99.95, 300.0, 1999.0, 0.05, 100.0, 0)
    bad = Measured(99.89, 2000.0, 2500.0, 0.1, 85.7, 3)

    assert set(verdicts(good).values()) == {True}
    assert verdicts(bad) == {
        "availability": False,
        "response_avg": False,  # 2 s is not under 2 s
        "response_p95": False,
        "error_rate": False,  # 0.1 % is not under 0.1 %
        "backup_success": False,
        "security_events": False,
    }


def test_a_kpi_without_data_is_neither_met_nor_missed() -> None:
    assert set(verdicts(Measured()).values()) == {None}


def test_advice_follows_from_the_misses_only() -> None:
    kpis = judge_kpis(Measured(99.5, 300.0, 900.0, 0.01, 50.0, 2), TARGETS)

    advice = recommend(kpis, flagged_addresses=["203.0.113.66"], missed_schedules=["nightly_backup"])

    assert [a.key for a in advice] == [
        "report.advice.availability",
        "report.advice.backups",
        "report.advice.security",
        "report.advice.missed_runs",
    ]
    assert advice[2].params["addresses"] == "203.0.113.66"
    assert advice[0].params == {"value": 99.5, "target": 99.9}


def test_all_met_says_so_and_no_data_asks_for_probes() -> None:
    assert [a.key for a in recommend(judge_kpis(Measured(100.0, 1.0, 2.0, 0.0, 100.0, 0), TARGETS))] == [
        "report.advice.all_met"
    ]
    assert [a.key for a in recommend(judge_kpis(Measured(), TARGETS))] == ["report.advice.no_service_data"]


def test_every_kpi_label_and_advice_exists_in_both_languages() -> None:
    keys = [f"report.kpi.{k}" for k in KPI_KEYS] + list(ADVICE_KEYS)
    assert [k for k in keys if k not in EN or k not in JA] == []
