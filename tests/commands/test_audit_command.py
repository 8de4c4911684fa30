"""`audit` as a sub-command, and `gardenbot audit verify|export` against a tampered log."""

from __future__ import annotations

import csv
import io
import json

from bot.runtime import Runtime
from tests.support.runtime import BotWorld, request, table_of


def actors_in(reply: object) -> set[str]:
    return {row[2] for row in table_of(reply).rows}  # type: ignore[arg-type]


async def some_history(runtime: Runtime) -> None:
    for user, text in [("U0OPS", "jobs"), ("U0INTERN", "help"), ("U0ADMIN", "cache stats")]:
        await runtime.pipeline.handle(request(user, text))


async def test_an_admin_sees_everyone_and_others_see_their_own(bot_runtime: Runtime) -> None:
    await some_history(bot_runtime)

    admin_all = await bot_runtime.pipeline.handle(request("U0ADMIN", "audit"))
    admin_one = await bot_runtime.pipeline.handle(request("U0ADMIN", "audit @U0OPS --since 1d"))
    own = await bot_runtime.pipeline.handle(request("U0INTERN", "audit"))
    other = await bot_runtime.pipeline.handle(request("U0INTERN", "audit @U0OPS"))

    assert {"U0OPS", "U0INTERN", "U0ADMIN"} <= actors_in(admin_all)
    assert actors_in(admin_one) == {"U0OPS"}
    assert actors_in(own) == {"U0INTERN"}
    assert other.status == "refused"
    assert "Only admins" in other.summary


async def test_verify_names_the_row_altered_behind_the_guard(
    bot_runtime: Runtime, bot_world: BotWorld
) -> None:
    await some_history(bot_runtime)
    ids = [int(i) for (i,) in bot_world.query("SELECT id FROM audit_log ORDER BY id")]
    assert len(ids) >= 3

    intact = bot_world.cli("audit", "verify")
    assert intact.returncode == 0, intact.stderr
    assert f"{len(ids)} records verified" in intact.stdout

    victim = ids[1]
    bot_world.query(
        "ALTER TABLE audit_log DISABLE TRIGGER USER;"
        f" UPDATE audit_log SET outcome = 'succeeded', actor = 'mallory' WHERE id = {victim};"
        " ALTER TABLE audit_log ENABLE TRIGGER USER"
    )
    tampered = bot_world.cli("audit", "verify")

    assert tampered.returncode == 1, (tampered.stdout, tampered.stderr)
    assert f"#{victim} " in tampered.stdout
    assert "hash mismatch" in tampered.stdout


async def test_export_writes_every_record_as_jsonl_and_csv(bot_runtime: Runtime, bot_world: BotWorld) -> None:
    await some_history(bot_runtime)
    [(count,)] = bot_world.query("SELECT count(*) FROM audit_log")

    jsonl = bot_world.cli("audit", "export", "--since", "1d")
    as_csv = bot_world.cli("audit", "export", "--format", "csv")
    bad_since = bot_world.cli("audit", "export", "--since", "yesterday")

    assert jsonl.returncode == 0, jsonl.stderr
    lines = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert len(lines) == count
    assert [line["id"] for line in lines] == sorted(line["id"] for line in lines)
    assert {"U0OPS", "U0INTERN", "U0ADMIN"} <= {line["actor"] for line in lines}
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert as_csv.returncode == 0
    assert [r["hash"] for r in rows] == [line["hash"] for line in lines]
    assert bad_since.returncode == 2
    assert bad_since.stderr.strip().startswith("--since")
