"""`gardenbot audit verify [--head HASH]` and the audit key, through the real CLI."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from bot.runtime import demo_audit_key
from store.audit import CHAIN_UNKEYED, GENESIS_HASH, chain_hash, entry_from_row
from tests.support.runtime import AUDIT_KEY, BotWorld

HEAD_LINE = re.compile(r"Head: id (\d+), hash ([0-9a-f]{64})")
UNKEYED_HINT = re.compile(r'audit_unkeyed_until: "(\d+:[0-9a-f]{64})"')


def chain_everything_without_the_key(bot_world: BotWorld) -> None:
    """Every record chained again as a release before keying did (what the database's owner can do)."""
    with psycopg.connect(bot_world.database_url, autocommit=True, row_factory=dict_row) as conn:
        rows = conn.execute("SELECT * FROM audit_log ORDER BY id").fetchall()
        conn.execute("SET session_replication_role = replica")
        prev = GENESIS_HASH
        for row in rows:
            digest = chain_hash(entry_from_row(row), prev)
            conn.execute(
                "UPDATE audit_log SET prev_hash = %s, hash = %s, chain_version = %s WHERE id = %s",
                (prev, digest, CHAIN_UNKEYED, row["id"]),
            )
            prev = digest


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


def test_records_from_before_keying_fail_verify_until_the_operator_names_the_last_of_them(
    bot_world: BotWorld,
) -> None:
    for _ in range(2):
        assert bot_world.cli("run", "--user", "U0OPS", "help").returncode == 0
    chain_everything_without_the_key(bot_world)  # as an upgrade finds a log, or as a forger leaves it

    rows = bot_world.query("SELECT count(*) FROM audit_log")
    assert bot_world.cli("run", "--user", "U0OPS", "help").returncode == 0  # its record waits in the spool

    refused = bot_world.cli("audit", "verify")
    hint = UNKEYED_HINT.search(refused.stdout)
    assert bot_world.query("SELECT count(*) FROM audit_log") == rows  # nothing chained after them
    assert refused.returncode == 1 and "ALTERED" in refused.stdout, refused.stdout + refused.stderr
    assert hint is not None and "no keyed record follows them" in refused.stdout, refused.stdout
    bot_world.configure(audit_unkeyed_until=hint[1])
    accepted = bot_world.cli("audit", "verify")
    assert bot_world.cli("run", "--user", "U0OPS", "help").returncode == 0
    keyed_after = bot_world.cli("audit", "verify")

    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert keyed_after.returncode == 0, keyed_after.stdout + keyed_after.stderr
    assert "the keyed chain starts at" in keyed_after.stdout
    assert bot_world.query("SELECT count(*) FROM audit_log")[0][0] > rows[0][0]  # the spool drained


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
