"""Both catalogs say the same things, and every message key the code uses exists."""

from __future__ import annotations

import ast
import re
import string
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest

from commands.registry import build_registry
from core import errors
from core.alerts import AlertStatus
from core.config import SEVERITIES
from core.i18n import Translator
from core.incidents import Status as IncidentStatus
from core.incidents import TimelineKind
from core.locales.en import MESSAGES as EN
from core.locales.ja import MESSAGES as JA
from core.reply import Level
from runbooks.incidents import LIST_COLUMNS
from runbooks.kpi import KpiKey
from runbooks.playbook_runner import TaskStatus
from runbooks.postmortem import SECTIONS
from runbooks.progress import STEP_KEYS
from runbooks.report import Period, ServiceSource
from store.releases import ReleaseStatus
from store.schedule_runs import RunStatus
from tests.support.runtime import REPO_ROOT

PACKAGES = ("bot", "commands", "core", "runbooks", "store", "scheduler")
KEY = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
ERROR_CLASSES = {
    name
    for name, value in vars(errors).items()
    if isinstance(value, type) and issubclass(value, errors.GardenBotError)
}
# Keys built with an f-string: the prefix and the values the placeholder takes.
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "interrupted")  # jobs.status CHECK
# health, db_admin, runbooks/prometheus.py; tls:* apart
CHECK_NAMES = (
    *("api", "database", "cache", "disk", "memory", "backup", "wal"),
    *("host_disk", "host_memory", "hosts", "errors_5xx"),
)
BACKUP_STATUSES = ("running", "good", "failed", "interrupted", "pruned")  # backups.status CHECK
VERIFY_STATUSES = ("passed", "failed", "never")  # backups.verify_status CHECK, or never verified
# runbooks/verify_backup.py VerifyOutcome.problem
VERIFY_PROBLEMS = ("checksum_mismatch", "file_missing", "restore_failed", "row_counts_differ")
DYNAMIC: dict[str, tuple[str, ...]] = {
    "backup.status.": BACKUP_STATUSES,
    "backup.verified.": VERIFY_STATUSES,
    "backup.problem.": VERIFY_PROBLEMS,
    "jobs.status.": JOB_STATUSES,
    "health.level.": typing.get_args(Level),
    "health.check.": CHECK_NAMES,
    "lock.held.": tuple(sorted({c.lock for c in build_registry() if c.lock})),
    "progress.": STEP_KEYS,
    "incident.severity.": SEVERITIES,
    "alert.status.": typing.get_args(AlertStatus),
    "incident.status.": typing.get_args(IncidentStatus),
    "incident.kind.": typing.get_args(TimelineKind),
    "incident.empty_": ("impact", "update", "summary"),  # core.incidents.check_text
    "incident.page.": ("unacknowledged", "unresolved"),  # runbooks.incidents.page_text
    "incident.col.": LIST_COLUMNS,
    "incident.pm.": SECTIONS,
    "hosts.task.": typing.get_args(TaskStatus),
    "release.outcome.": ("released", "rolled_back", "rollback_failed"),  # runbooks.hosts.HostRelease
    "release.migrations.": ("ran", "started", "skipped", "not_reached"),
    "release.status.": typing.get_args(ReleaseStatus),  # releases.status CHECK
    "report.period.": typing.get_args(Period),
    "report.source.": typing.get_args(ServiceSource),
    "report.kpi.": typing.get_args(KpiKey),
    "schedule.status.": typing.get_args(RunStatus),
}


def placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_both_catalogs_have_the_same_keys() -> None:
    assert sorted(set(EN) - set(JA)) == []
    assert sorted(set(JA) - set(EN)) == []


def test_each_key_has_the_same_placeholders_in_both() -> None:
    different = {
        key: (placeholders(EN[key]), placeholders(JA[key]))
        for key in EN
        if key in JA and placeholders(EN[key]) != placeholders(JA[key])
    }
    assert different == {}


def test_no_message_is_empty() -> None:
    assert [k for k, v in {**EN, **JA}.items() if not v.strip()] == []


def test_the_translator_fills_placeholders_and_keeps_unknown_ones() -> None:
    ja = Translator("ja")

    assert Translator("en")("approval.not_found", approval_id=7) == "There is no approval 7."
    assert "7" in ja("approval.not_found", approval_id=7)
    assert ja("approval.not_found") == JA["approval.not_found"]
    assert Translator("fr").locale == "en"
    assert Translator("en")("no.such.key") == "no.such.key"


def _sources() -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((REPO_ROOT / package).rglob("*.py"))


def _callee(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def used_keys(tree: ast.AST) -> Iterator[tuple[int, str | ast.JoinedStr]]:
    """(line, key) of t("…"), ctx.t("…"), SomeError("…") and help_key="…"; f-string keys as nodes."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.keyword)
            and node.arg == "help_key"
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            yield node.value.lineno, node.value.value
        if not isinstance(node, ast.Call) or not node.args:
            continue
        name = _callee(node)
        first = node.args[0]
        if name == "t" or name in ERROR_CLASSES:
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                if name in ERROR_CLASSES or KEY.match(first.value):
                    yield first.lineno, first.value
            elif isinstance(first, ast.JoinedStr):
                yield first.lineno, first


def expand(node: ast.JoinedStr) -> list[str] | None:
    """The keys an f-string key can take, or None when its prefix is not a known family."""
    head = node.values[0]
    prefix = head.value if isinstance(head, ast.Constant) and isinstance(head.value, str) else ""
    if prefix not in DYNAMIC or len(node.values) != 2:
        return None
    return [prefix + value for value in DYNAMIC[prefix]]


def test_every_key_used_in_the_code_exists_in_english() -> None:
    missing: list[str] = []
    unknown_families: list[str] = []
    seen = 0
    for path in _sources():
        where = path.relative_to(REPO_ROOT)
        for line, key in used_keys(ast.parse(path.read_text(encoding="utf-8"))):
            keys = [key] if isinstance(key, str) else expand(key)
            if keys is None:
                unknown_families.append(f"{where}:{line}: {ast.unparse(key)}")  # type: ignore[arg-type]
                continue
            seen += len(keys)
            missing += [f"{where}:{line}: {k}" for k in keys if k not in EN]

    assert seen > 50  # the scan found the code's keys at all
    assert missing == []
    assert unknown_families == [], "add the f-string key family to DYNAMIC"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('t("usage.line", usage=u)', ["usage.line"]),
        ('ctx.t("health.header")', ["health.header"]),
        ('raise NotAllowed("role.too_low", command=c)', ["role.too_low"]),
        ('Command(name="x", help_key="jobs.help")', ["jobs.help"]),
        ('t("not a key")', []),
        ('t(f"jobs.status.{job.status}")', [f"jobs.status.{s}" for s in JOB_STATUSES]),
    ],
)
def test_the_scan_finds_keys_in_each_shape(source: str, expected: list[str]) -> None:
    found: list[str] = []
    for _, key in used_keys(ast.parse(source)):
        found += [key] if isinstance(key, str) else expand(key) or []
    assert found == expected
