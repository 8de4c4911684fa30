"""The bot's store down (at start-up, or stopping while the process runs): read-only commands
answer and spool their audit; changes are refused;
when the store is back, the next command writes the spool into the log, once and in order."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from tests.support.runtime import BotWorld, closed_port, request, target_redis
from tests.support.serve import PrivatePostgres, PrivatePostgresUnavailable, private_postgres


def spooled(world: BotWorld) -> list[dict[str, object]]:
    if not world.spool_path.exists():
        return []
    return [json.loads(line) for line in world.spool_path.read_text(encoding="utf-8").splitlines()]


def test_read_only_answers_changes_are_refused_and_the_spool_drains_later(
    bot_world: BotWorld, target_keys: dict[str, str]
) -> None:
    real_database = bot_world.database_url
    bot_world.configure(health={"timeout_seconds": 1})
    bot_world.database_url = f"postgresql://postgres@127.0.0.1:{closed_port()}/gardenbot"

    health = bot_world.cli("run", "--user", "U0INTERN", "health")
    after_health = spooled(bot_world)
    flush = bot_world.cli("run", "--user", "U0ADMIN", "cache flush")
    after_flush = spooled(bot_world)

    assert health.returncode in (0, 1), health.stderr
    assert "database" in health.stdout and "disk" in health.stdout  # the health table was printed
    assert len(after_health) == 1
    assert flush.returncode == 2, (flush.stdout, flush.stderr)
    assert "store is unreachable" in flush.stdout
    assert target_redis().dbsize() == len(target_keys)
    assert [(r["actor"], r["command"], r["outcome"]) for r in after_flush] == [
        ("U0INTERN", "health", "succeeded" if health.returncode == 0 else "failed"),
        ("U0ADMIN", "cache flush", "refused"),
    ]
    assert after_flush[0] == after_health[0]

    bot_world.database_url = real_database
    back = bot_world.cli("run", "--user", "U0INTERN", "help")
    verify = bot_world.cli("audit", "verify")

    assert back.returncode == 0, back.stderr
    assert spooled(bot_world) == []
    rows = bot_world.query("SELECT record_id::text, actor, command FROM audit_log ORDER BY id")
    assert [r[0] for r in rows[:2]] == [r["record_id"] for r in after_flush]
    assert len({r[0] for r in rows}) == len(rows) == 3
    assert rows[2][1:] == ("U0INTERN", "help")
    assert verify.returncode == 0, verify.stdout
    assert "3 records verified" in verify.stdout


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A PostgreSQL of this test's own, to stop and start again: never the shared one."""
    try:
        with private_postgres() as pg:
            yield pg
    except PrivatePostgresUnavailable as exc:
        pytest.skip(f"cannot run a private PostgreSQL here: {exc}")


async def test_a_store_that_stops_after_start_up_spools_too(
    bot_world: BotWorld, private_pg: PrivatePostgres
) -> None:
    bot_world.database_url = private_pg.url
    async with bot_world.runtime() as runtime:  # start-up with the store up: migrated, pool filled
        first = await runtime.pipeline.handle(request("U0OPS", "jobs"))
        assert runtime.startup.migrations  # the store was there at start-up
        private_pg.stop()  # ...and stops while the process runs

        down = await asyncio.wait_for(runtime.pipeline.handle(request("U0OPS", "help")), timeout=10)
        spool = spooled(bot_world)
        private_pg.start()
        for _ in range(30):  # the next commands write the spool once the store answers again
            back = await runtime.pipeline.handle(request("U0OPS", "help"))
            if not spooled(bot_world):
                break
            await asyncio.sleep(1)
        verify = await runtime.services.audit.verify()

    assert first.status == "succeeded"
    assert down.status == "succeeded"
    assert [r["command"] for r in spool] == ["help"]
    assert back.status == "succeeded"
    rows = bot_world.query("SELECT record_id::text, command FROM audit_log ORDER BY id")
    assert [c for _, c in rows[:2]] == ["jobs", "help"]
    assert rows[1][0] == spool[0]["record_id"]
    assert len({r for r, _ in rows}) == len(rows)
    assert verify.ok, verify
