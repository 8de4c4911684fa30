"""`gardenbot audit verify [--head HASH]` and the audit key, through the real CLI."""

from __future__ import annotations

import re
import stat
from pathlib import Path

from bot.runtime import demo_audit_key
from tests.support.runtime import AUDIT_KEY, BotWorld

HEAD_LINE = re.compile(r"Head: id (\d+), hash ([0-9a-f]{64})")


def test_verify_prints_the_head_and_fails_when_the_published_head_was_deleted(bot_world: BotWorld) -> None:
    for _ in range(3):
        assert bot_world.cli("run", "--user", "U0OPS", "help").returncode == 0
    intact = bot_world.cli("audit", "verify")
    match = HEAD_LINE.search(intact.stdout)
    assert intact.returncode == 0 and match is not None, intact.stdout + intact.stderr
    head_id, head_hash = int(match[1]), match[2]
    assert bot_world.cli("audit", "verify", "--head", f"{head_id}:{head_hash}").returncode == 0

    bot_world.query(
        "SET session_replication_role = replica;"
        f" DELETE FROM audit_log WHERE id = {head_id};"
        " SET session_replication_role = DEFAULT"
    )
    shorter = bot_world.cli("audit", "verify")
    anchored = bot_world.cli("audit", "verify", "--head", f"{head_id}:{head_hash}")

    assert shorter.returncode == 0  # a shorter chain is whole: the anchor is what catches it
    assert anchored.returncode == 1, anchored.stdout
    assert "ALTERED" in anchored.stdout and head_hash in anchored.stdout
    for run in (intact, shorter, anchored):
        assert AUDIT_KEY not in run.stdout + run.stderr


def test_a_configured_bot_without_an_audit_key_refuses_to_start(bot_world: BotWorld) -> None:
    bot_world.extra_env["GARDENBOT_AUDIT_KEY"] = ""

    result = bot_world.cli("run", "--user", "U0OPS", "help")

    assert result.returncode == 2
    assert "GARDENBOT_AUDIT_KEY" in result.stderr


def test_a_short_audit_key_is_refused_without_showing_it(bot_world: BotWorld) -> None:
    bot_world.extra_env["GARDENBOT_AUDIT_KEY"] = "short-key-shown-nowhere"

    result = bot_world.cli("run", "--user", "U0OPS", "help")

    assert result.returncode == 2
    assert "GARDENBOT_AUDIT_KEY" in result.stderr
    assert "short-key-shown-nowhere" not in result.stdout + result.stderr


def test_the_demo_key_is_made_once_private_to_its_user(tmp_path: Path) -> None:
    path = tmp_path / "state" / "audit.key"

    first = demo_audit_key(path)
    again = demo_audit_key(path)

    assert first == again and len(first) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
