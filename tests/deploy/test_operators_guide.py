"""docs/operators-guide.md and docs/ja/operators-guide.md cover what an operator meets: every
command (marked available exactly when this build registers it), every alert rule, every metric
of the bot, every `gardenbot` process command, and they link the generated configuration reference.
"""

from __future__ import annotations

import re

import pytest
import yaml

from bot.cli import build_parser
from bot.metrics import Metrics
from commands.pipeline import DECISION_WORDS
from commands.registry import build_registry
from tests.support.runtime import REPO_ROOT

DOCS = REPO_ROOT / "docs"
GUIDES = {"en": DOCS / "operators-guide.md", "ja": DOCS / "ja" / "operators-guide.md"}
AVAILABLE = "✓"
COMMAND_ROW = re.compile(r"^\| `([a-z][a-z -]*)` \|[^|]*\|[^|]*\| ([^|]+?) \| `[^`]+` \|$", re.MULTILINE)


def command_table(text: str) -> dict[str, bool]:
    """Command name -> marked available in this build, from the guide's command table."""
    return {name: mark.strip() == AVAILABLE for name, mark in COMMAND_ROW.findall(text)}


def registered() -> set[str]:
    return {command.name for command in build_registry()} | set(DECISION_WORDS)


def alert_names() -> set[str]:
    names = set()
    for path in (REPO_ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"):
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            names |= {rule["alert"] for rule in group["rules"] if "alert" in rule}
    return names


def metric_names() -> set[str]:
    names = set()
    for family in Metrics().registry.collect():
        names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    return names


@pytest.mark.parametrize("lang", GUIDES)
def test_the_command_table_marks_available_exactly_what_this_build_registers(lang: str) -> None:
    table = command_table(GUIDES[lang].read_text(encoding="utf-8"))
    available = {name for name, ok in table.items() if ok}
    assert available == registered(), "update the guide's 'this build' column"


def test_the_command_table_reader_sees_every_row() -> None:
    text = "| `backup verify` | operator | | ✓ | `/garden backup verify 42` |\n"
    text += "| `release` | admin | yes | *planned* | `/garden release v1.4.2` |\n"
    assert command_table(text) == {"backup verify": True, "release": False}


def test_both_guides_list_the_same_commands_with_the_same_marks() -> None:
    en, ja = (command_table(GUIDES[lang].read_text(encoding="utf-8")) for lang in ("en", "ja"))
    assert en == ja
    assert len(en) >= 35  # every sub-command of the product contract


@pytest.mark.parametrize("lang", GUIDES)
def test_every_alert_rule_is_explained(lang: str) -> None:
    text = GUIDES[lang].read_text(encoding="utf-8")
    missing = {name for name in alert_names() if f"| `{name}` |" not in text}
    assert not missing


@pytest.mark.parametrize("lang", GUIDES)
def test_every_metric_of_the_bot_is_explained(lang: str) -> None:
    text = GUIDES[lang].read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `(gardenbot_[a-z_]+)(?:\{[^}]*\})?` \|", text, flags=re.MULTILINE))
    assert metric_names() <= rows, metric_names() - rows


@pytest.mark.parametrize("lang", GUIDES)
def test_every_process_command_and_the_references_are_in_the_guide(lang: str) -> None:
    path = GUIDES[lang]
    text = path.read_text(encoding="utf-8")
    actions = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for action in actions:
        assert f"gardenbot {action}" in text, action
    for link in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (path.parent / link).resolve().exists(), link
    assert "configuration.md" in text and "manifest.yml" in text


def test_the_guide_reader_rejects_a_stale_mark() -> None:
    """The check can fail: a registered command marked as planned is caught."""
    text = (
        GUIDES["en"]
        .read_text(encoding="utf-8")
        .replace("| `restore` | admin | yes | ✓ |", "| `restore` | admin | yes | *planned* |")
    )
    available = {name for name, ok in command_table(text).items() if ok}
    assert available != registered() and "restore" in registered() - available
