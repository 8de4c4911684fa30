"""`db stats`, `db maintain [--vacuum]`, `db reindex`, the WAL line of `health`, `security` and `logs`
through the pipeline, against a real sample garden_dx and log files written in the manual's shapes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from bot.runtime import Runtime
from commands.registry import build_registry
from core.reply import Reply, Table
from runbooks import logworkers
from tests.support.applogs import api_line, auth_line, error_line
from tests.support.runtime import AUDIT_KEY, BotWorld, request
from tests.support.serve import PrivatePostgresUnavailable, private_postgres
from tests.support.servers import throwaway_database

REQUESTER, APPROVER = "U0ADMIN2", "U0LEAD"


@pytest.fixture
async def rt(bot_world: BotWorld, garden: str) -> AsyncIterator[Runtime]:
    async with bot_world.runtime() as runtime:
        yield runtime


def tables_text(reply: Reply) -> str:
    return "\n".join(" | ".join(row) for e in reply.elements if isinstance(e, Table) for row in e.rows)


async def job_result(rt: Runtime, reply: Reply) -> Reply:
    assert reply.status == "running", reply.summary
    return await rt.pipeline.runner.wait(int(reply.ids["job_id"]))


# --- db --------------------------------------------------------------------------------------------


async def test_db_stats_shows_the_target_to_a_viewer(rt: Runtime, garden: str) -> None:
    reply = await rt.pipeline.handle(request("U0INTERN", "db stats"))

    assert reply.status == "succeeded", reply.summary
    assert garden.rsplit("/", 1)[1] in reply.summary
    assert "public.estimates" in tables_text(reply)


async def test_db_stats_reads_through_the_monitor_login_when_one_is_configured(
    bot_world: BotWorld, garden: str
) -> None:
    with throwaway_database("gbt_monitor") as other:
        bot_world.extra_env["GARDEN_MONITOR_DATABASE_URL"] = other
        async with bot_world.runtime() as runtime:
            reply = await runtime.pipeline.handle(request("U0INTERN", "db stats"))

    assert reply.status == "succeeded", reply.summary
    assert other.rsplit("/", 1)[1] in reply.summary  # the monitor's connection, not the owner's


def test_db_maintain_takes_a_vacuum_flag_without_a_value() -> None:
    command = build_registry().get("db maintain")
    assert command is not None and command.usage == "db maintain [--vacuum]"


@pytest.mark.parametrize(
    ("text", "steps"), [("db maintain", ["ANALYZE"]), ("db maintain --vacuum", ["ANALYZE", "VACUUM"])]
)
async def test_db_maintain_analyzes_and_vacuums_when_asked(rt: Runtime, text: str, steps: list[str]) -> None:
    result = await job_result(rt, await rt.pipeline.handle(request("U0OPS", text)))

    assert result.status == "succeeded", result.summary
    [table] = [e for e in result.elements if isinstance(e, Table)]
    assert [row[0] for row in table.rows] == steps


async def test_db_reindex_needs_approval_and_then_rebuilds_the_named_index(rt: Runtime, garden: str) -> None:
    asked = await rt.pipeline.handle(request(REQUESTER, "db reindex users_company_id_idx"))
    assert asked.status == "pending", asked.summary
    assert "public.users_company_id_idx" in str(asked.elements)
    with psycopg.connect(garden) as conn:
        before = conn.execute("SELECT 'public.users_company_id_idx'::regclass::oid").fetchone()

    decided = await rt.pipeline.handle(request(APPROVER, f"approve {asked.ids['approval_id']}"))
    result = await job_result(rt, decided)

    assert result.status == "succeeded", result.summary
    with psycopg.connect(garden) as conn:
        after = conn.execute("SELECT 'public.users_company_id_idx'::regclass::oid").fetchone()
    assert before != after  # REINDEX CONCURRENTLY builds a new relation and swaps it in


# --- the WAL line of health --------------------------------------------------------------------------


def health_names(reply: Reply) -> list[str]:
    [table] = [e for e in reply.elements if isinstance(e, Table)]
    return [row[0] for row in table.rows]


async def test_health_has_no_wal_line_when_the_target_neither_archives_nor_streams(rt: Runtime) -> None:
    reply = await rt.pipeline.handle(request("U0INTERN", "health"))
    names = health_names(reply)
    assert "database" in names and "WAL archiving and replication" not in names


@pytest.fixture(scope="module")
def archiving_target() -> Iterator[str]:
    try:
        with private_postgres(["archive_mode=on", "wal_level=replica", "archive_command=/bin/true"]) as pg:
            yield pg.url
    except PrivatePostgresUnavailable as exc:
        pytest.skip(str(exc))


async def test_health_gains_the_wal_line_when_the_target_archives_wal(
    bot_world: BotWorld, archiving_target: str
) -> None:
    bot_world.target_database_url = archiving_target
    async with bot_world.runtime() as runtime:
        reply = await runtime.pipeline.handle(request("U0INTERN", "health"))

    [table] = [e for e in reply.elements if isinstance(e, Table)]
    [wal] = [row for row in table.rows if row[0] == "WAL archiving and replication"]
    assert "archiv" in wal[2]


# --- security and logs ---------------------------------------------------------------------------------


@pytest.fixture
def app_logs(bot_world: BotWorld, tmp_path: Path) -> dict[str, Path]:
    now = time.time()
    auth, api, error = tmp_path / "auth.log", tmp_path / "api.log", tmp_path / "error.log"
    auth.write_text(
        "".join(auth_line("198.51.100.7", now - 600 + i, "authentication failed for a@b.c") for i in range(8))
        + auth_line("192.0.2.1", now - 300, "login ok a@b.c"),
        encoding="utf-8",
    )
    api.write_text(
        "".join(api_line("192.0.2.1", now - 120, "GET /api/estimates/7", 200, 40) for _ in range(99))
        + api_line("192.0.2.1", now - 60, "POST /api/estimates", 500, 900),
        encoding="utf-8",
    )
    error.write_text(
        error_line(now - 100, "ERROR", "estimate 42 failed") + error_line(now - 90, "CRITICAL", "db down"),
        encoding="utf-8",
    )
    bot_world.configure(logs={"auth": str(auth), "api": str(api), "error": str(error)})
    return {"auth": auth, "api": api, "error": error}


async def test_security_reports_a_failed_login_burst_from_the_auth_log(
    bot_world: BotWorld, garden: str, app_logs: dict[str, Path]
) -> None:
    async with bot_world.runtime() as runtime:
        reply = await runtime.pipeline.handle(request("U0OPS", "security 1"))

    assert reply.status == "failed"  # the KPI is 0 security events
    assert reply.summary.startswith("1 security events in the last 1 h (8 failed logins)")
    assert "198.51.100.7 | 8" in tables_text(reply)


async def test_logs_reports_errors_endpoints_and_the_5xx_rate(
    bot_world: BotWorld, garden: str, app_logs: dict[str, Path]
) -> None:
    async with bot_world.runtime() as runtime:
        reply = await runtime.pipeline.handle(request("U0OPS", "logs 1"))

    assert "1 errors, 1 critical, 100 requests, 5xx rate 1.000%" in reply.summary
    assert reply.status == "failed"  # 1 % is over the 0.1 % target
    assert "GET /api/estimates/{id} | 99" in tables_text(reply)


async def test_a_runtime_with_logs_starts_their_worker_without_secrets_and_stops_it_when_closed(
    bot_world: BotWorld, garden: str, app_logs: dict[str, Path]
) -> None:
    logworkers.close()
    async with bot_world.runtime() as runtime:
        (pid,) = logworkers.worker_pids()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        reply = await runtime.pipeline.handle(request("U0OPS", "logs 1"))
        kept = logworkers.worker_pids()

    assert "100 requests" in reply.summary and kept == [pid]
    assert {entry.split(b"=")[0] for entry in environ.split(b"\0") if entry} == {b"PATH", b"PYTHONPATH"}
    assert AUDIT_KEY.encode() not in environ and b"postgresql://" not in environ
    assert logworkers.worker_pids() == [] and not Path(f"/proc/{pid}").exists()  # stopped and reaped


async def test_security_without_configured_logs_says_which_keys_to_set(rt: Runtime) -> None:
    reply = await rt.pipeline.handle(request("U0OPS", "security"))
    assert reply.status == "failed" and "logs.auth" in reply.summary


@pytest.mark.parametrize("text", ["security 0", "logs 100000", "security lots"])
async def test_hours_out_of_range_are_refused_with_one_line(rt: Runtime, text: str) -> None:
    reply = await rt.pipeline.handle(request("U0OPS", text))
    assert reply.status == "refused" and "\n" not in reply.summary
