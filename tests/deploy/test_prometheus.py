"""deploy/prometheus/: promtool accepts the configuration and the rules, and the rules' unit tests
(deploy/prometheus/tests/rules_test.yml) pass and cover every alert both firing and quiet.

promtool comes from Debian's `prometheus` package, which scripts/test.sh installs when missing.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.runtime import REPO_ROOT

PROMETHEUS = REPO_ROOT / "deploy" / "prometheus"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
RULES_TEST = PROMETHEUS / "tests" / "rules_test.yml"
SEVERITIES = {"critical", "warning"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is missing: scripts/test.sh installs Debian's `prometheus` package")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120, check=False)


def alert_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            rules.extend(rule for rule in group["rules"] if "alert" in rule)
    return rules


def test_promtool_accepts_the_scrape_configuration_and_its_rule_files() -> None:
    result = promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rule files found" in result.stdout + result.stderr


def test_promtool_accepts_the_rule_files() -> None:
    result = promtool("check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rule_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(RULES_TEST))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_a_wrong_threshold_makes_the_rule_unit_tests_fail(tmp_path: Path) -> None:
    """The unit tests can fail: the manual's MemFree in place of MemAvailable is caught."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    for path in RULE_FILES:
        text = path.read_text(encoding="utf-8").replace("MemAvailable", "MemFree")
        (tmp_path / "rules" / path.name).write_text(text, encoding="utf-8")
    shutil.copy(RULES_TEST, tmp_path / "tests" / RULES_TEST.name)
    result = promtool("test", "rules", str(tmp_path / "tests" / RULES_TEST.name))
    assert result.returncode != 0
    assert "GardenMemoryHigh" in result.stdout + result.stderr


def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_does_not() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fires == set(), "alerts never seen firing in rules_test.yml"
    assert names - quiet == set(), "alerts never seen quiet in rules_test.yml"


def test_every_alert_has_a_severity_a_summary_a_description_and_a_runbook() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        for annotation in ("summary", "description", "runbook"):
            assert rule["annotations"].get(annotation, "").strip(), (rule["alert"], annotation)


def test_the_rules_measure_what_the_issue_asks_not_what_the_manual_did() -> None:
    exprs = {rule["alert"]: " ".join(rule["expr"].split()) for rule in alert_rules()}
    assert "MemAvailable" in exprs["GardenMemoryHigh"]
    assert not any("MemFree" in expr for expr in exprs.values())
    assert 'fstype!~"tmpfs|overlay' in exprs["GardenDiskSpaceLow"]
    assert "14.4 * 0.001" in exprs["GardenApiErrorBudgetBurnFast"]
    assert "6 * 0.001" in exprs["GardenApiErrorBudgetBurnSlow"]


def test_every_scrape_job_has_its_own_name_and_the_manuals_ports() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = [job["job_name"] for job in config["scrape_configs"]]
    assert len(jobs) == len(set(jobs))
    ports = {
        job["job_name"]: {t.rsplit(":", 1)[1] for sc in job["static_configs"] for t in sc["targets"]}
        for job in config["scrape_configs"]
    }
    assert ports == {
        "garden-api": {"8000"},
        "garden-frontend": {"3000"},
        "postgres-exporter": {"9187"},
        "redis-exporter": {"9121"},
        "node-exporter": {"9100"},
        "gardenbot": {"3000"},
    }
