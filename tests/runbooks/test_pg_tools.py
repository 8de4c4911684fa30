from __future__ import annotations

import socket
from pathlib import Path

import pytest

from core.errors import RunbookFailed, TargetUnreachable
from runbooks.pg_tools import (
    PG_BIN_SETTING,
    admin_dsn,
    check_tools_match_server,
    child_env,
    connect_target,
    count_rows,
    database_name,
    find_pg_tools,
)
from tests.support.chinook import CHINOOK_ROWS, fake_pg_tool
from tests.support.servers import url_for


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_child_env_carries_the_password_in_the_environment_only() -> None:
    base = {"PATH": "/usr/bin", "PGPASSWORD": "inherited", "PGSERVICE": "other"}
    env = child_env("postgresql://garden:s3cr%40t@db.example:6543/garden_dx?sslmode=require", base=base)
    assert env["PGPASSWORD"] == "s3cr@t"
    assert (env["PGHOST"], env["PGPORT"], env["PGUSER"]) == ("db.example", "6543", "garden")
    assert env["PGDATABASE"] == "garden_dx"
    assert env["PGSSLMODE"] == "require"
    assert env["PATH"] == "/usr/bin"
    assert "PGSERVICE" not in env


def test_child_env_reads_key_value_dsns() -> None:
    env = child_env("host=h port=5 dbname=d user=u password='a b'", base={})
    assert (env["PGHOST"], env["PGPORT"], env["PGDATABASE"], env["PGPASSWORD"]) == (
        "h",
        "5",
        "d",
        "a b",
    )


def test_admin_dsn_points_at_the_maintenance_database() -> None:
    dsn = admin_dsn("postgresql://u:p@h:5/garden_dx")
    assert database_name(dsn) == "postgres"
    assert database_name("postgresql://u:p@h:5/garden_dx") == "garden_dx"


async def test_finds_the_installed_tools() -> None:
    tools = await find_pg_tools(None, server_version=(15, 0))
    assert tools.pg_dump.name == "pg_dump" and tools.pg_restore.name == "pg_restore"
    assert tools.version[0] >= 15


async def test_missing_tools_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(RunbookFailed) as caught:
        await find_pg_tools(tmp_path)
    assert caught.value.message_key == "pg_tools.missing"
    assert caught.value.params["setting"] == PG_BIN_SETTING == "GARDENBOT_PG_BIN_DIR"
    assert caught.value.params["tool"] == "pg_dump"


async def test_tools_older_than_the_server_are_refused(tmp_path: Path) -> None:
    fake_pg_tool(tmp_path, "pg_dump", "12.3")
    fake_pg_tool(tmp_path, "pg_restore", "12.3")
    with pytest.raises(RunbookFailed) as caught:
        await find_pg_tools(tmp_path, server_version=(15, 4))
    assert caught.value.message_key == "pg_tools.too_old"
    assert caught.value.params["setting"] == "GARDENBOT_PG_BIN_DIR"
    tools = await find_pg_tools(tmp_path, server_version=(12, 9))
    assert tools.version == (12, 3)
    with pytest.raises(RunbookFailed):
        check_tools_match_server(tools, (13, 0))


async def test_unreachable_target_raises_without_the_password() -> None:
    dsn = f"postgresql://garden:hunter2@127.0.0.1:{closed_port()}/garden_dx"
    with pytest.raises(TargetUnreachable) as caught:
        async with connect_target(dsn):
            pass
    assert caught.value.params["database"] == "garden_dx"
    assert "hunter2" not in str(caught.value)


async def test_count_rows_counts_every_table(chinook: str) -> None:
    assert await count_rows(url_for(chinook)) == CHINOOK_ROWS
