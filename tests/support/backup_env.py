"""A bot pointed at a target database of its own, for backup and restore tests.

`BackupWorld` wraps the shared `BotWorld` (tests/support/runtime.py) with the roles of the backup
issue, a private backup folder, a target database that restores may rename, and helpers to read
the bot's catalog, the backup folder and the target directly. `backup_world()` drops the target and
every `<target>_before_*` / `<target>_restore_*` database a restore left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bot.runtime import Runtime
from commands.base import Actor, Request
from core.reply import Reply
from tests.support.chinook import clone_database
from tests.support.runtime import ROLES_YAML, BotWorld, bot_world_in, merge
from tests.support.servers import (
    ADMIN_DSN,
    create_database,
    drop_database,
    url_for,
)

ADMIN, OPERATOR, VIEWER, LEAD = "U0ADMIN", "U0OPS", "U0INTERN", "U0LEAD"
# The backup tests' Garden DX Redis: its own database number, so parallel runs (worktrees) can differ.
TARGET_REDIS_URL = f"redis://127.0.0.1:6379/{int(os.environ.get('TEST_BACKUP_REDIS_DB', '11'))}"

# The roles of the backup issue: U0LEAD is an operator holding the approver flag (approver is a
# flag on a role: listed alone it decides nothing).
BACKUP_YAML: dict[str, Any] = merge(
    {k: v for k, v in ROLES_YAML.items() if k not in ("roles", "approvers")},
    {
        "roles": {"admin": [ADMIN], "operator": [OPERATOR, LEAD], "viewer": [VIEWER]},
        "approvers": [LEAD, ADMIN],
        "default_role": "none",
    },
)


def admin_query(query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        cur = conn.execute(query.encode() if not params else query, params)
        return cur.fetchall() if cur.description else []


def databases_like(pattern: str) -> set[str]:
    """Names of databases matching a SQL LIKE pattern."""
    return {
        str(r[0]) for r in admin_query("SELECT datname FROM pg_database WHERE datname LIKE %s", (pattern,))
    }


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class BackupWorld:
    bot: BotWorld
    target_name: str
    backup_dir: Path

    # --- configuration ---------------------------------------------------------------------------

    @property
    def target_url(self) -> str:
        return url_for(self.target_name)

    def set_env(self, **env: str) -> None:
        self.bot.extra_env.update(env)

    # --- in-process -------------------------------------------------------------------------------

    @staticmethod
    def request(user: str, text: str) -> Request:
        return Request(actor=Actor(user_id=user), text=text, source="console", locale="en")

    async def handle(self, rt: Runtime, user: str, text: str) -> Reply:
        return await rt.pipeline.handle(self.request(user, text))

    async def run(self, rt: Runtime, user: str, text: str) -> Reply:
        """handle(); when it started a job, that job's final reply."""
        reply = await self.handle(rt, user, text)
        return await finish(rt, reply)

    async def approve(self, rt: Runtime, user: str, approval_id: int) -> Reply:
        reply = await rt.pipeline.decide(
            self.request(user, f"approve {approval_id}"), approval_id, "approved"
        )
        return await finish(rt, reply)

    # --- CLI --------------------------------------------------------------------------------------

    def cli(self, user: str, text: str, *, timeout: float = 120) -> tuple[int, dict[str, Any], str]:
        """`gardenbot run --user USER --json TEXT`: (exit code, the JSON object, stderr)."""
        done = self.bot.cli("run", "--user", user, "--json", text, timeout=timeout)
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        assert lines, f"no output; exit {done.returncode}; stderr: {done.stderr}"
        return done.returncode, json.loads(lines[-1]), done.stderr

    # --- the bot's store ----------------------------------------------------------------------------

    def store_rows(self, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with psycopg.connect(
            self.bot.database_url, autocommit=True, row_factory=psycopg.rows.dict_row
        ) as conn:
            cur = conn.execute(query.encode() if not params else query, params)
            return list(cur.fetchall()) if cur.description else []

    def backup_row(self, backup_id: int) -> dict[str, Any]:
        rows = self.store_rows("SELECT * FROM backups WHERE id = %s", (backup_id,))
        assert rows, f"no catalog row {backup_id}"
        return rows[0]

    def backups(self) -> list[dict[str, Any]]:
        return self.store_rows("SELECT * FROM backups ORDER BY id")

    def jobs(self) -> list[dict[str, Any]]:
        return self.store_rows("SELECT * FROM jobs ORDER BY id")

    def approvals(self) -> list[dict[str, Any]]:
        return self.store_rows("SELECT * FROM approvals ORDER BY id")

    def files(self) -> list[str]:
        return sorted(p.name for p in self.backup_dir.iterdir()) if self.backup_dir.is_dir() else []

    def file_of(self, backup_id: int) -> Path:
        return self.backup_dir / str(self.backup_row(backup_id)["file_name"])

    # --- the target ---------------------------------------------------------------------------------

    def target_rows(self, query: str, *, database: str | None = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(url_for(database or self.target_name), autocommit=True) as conn:
            cur = conn.execute(query.encode())
            return cur.fetchall() if cur.description else []

    def fingerprint(self, *, database: str | None = None) -> dict[str, Any]:
        """Row counts of every table and an md5 of the contents of a few, to compare databases."""
        with psycopg.connect(url_for(database or self.target_name), autocommit=True) as conn:
            tables = [
                str(r[0])
                for r in conn.execute(
                    b"SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
                ).fetchall()
            ]
            counts: dict[str, int] = {}
            for table in tables:
                query = sql.SQL("SELECT count(*) FROM public.{}").format(sql.Identifier(table))
                row = conn.execute(query).fetchone()
                counts[f"public.{table}"] = int(row[0]) if row else -1
            md5 = {}
            for table, query_text in CHECKSUM_QUERIES.items():
                if table in tables:
                    row = conn.execute(query_text.encode()).fetchone()
                    md5[table] = str(row[0]) if row else ""
        return {"counts": counts, "md5": md5}

    def related_databases(self) -> set[str]:
        """`<target>_before_*` and `<target>_restore_*` databases."""
        escaped = self.target_name.replace("_", r"\_")
        return databases_like(escaped + r"\_before\_%") | databases_like(escaped + r"\_restore\_%")


# md5 of whole tables in a stable order: equal digests mean equal contents.
CHECKSUM_QUERIES = {
    "invoice_line": "SELECT md5(string_agg(t::text, '|' ORDER BY invoice_line_id)) FROM invoice_line t",
    "track": "SELECT md5(string_agg(t::text, '|' ORDER BY track_id)) FROM track t",
    "customer": "SELECT md5(string_agg(t::text, '|' ORDER BY customer_id)) FROM customer t",
}


async def finish(rt: Runtime, reply: Reply) -> Reply:
    job_id = reply.ids.get("job_id")
    if reply.status == "running" and isinstance(job_id, int):
        return await rt.pipeline.runner.wait(job_id)
    return reply


@contextmanager
def backup_world(tmp_path: Path, api_url: str, *, template: str | None = None) -> Iterator[BackupWorld]:
    """A bot on a throwaway store whose target is a copy of template (or an empty database)."""
    target = clone_database(template, "gbt_bk") if template else create_database("gbt_bk")
    world: BackupWorld | None = None
    try:
        backup_dir = tmp_path / "backups"
        env = {
            "GARDENBOT_BACKUP_DIR": str(backup_dir),
            "GARDEN_REDIS_URL": TARGET_REDIS_URL,
            "GARDENBOT_LOCALE": "en",
        }
        with bot_world_in(
            tmp_path,
            api_url=api_url,
            target_database_url=url_for(target),
            yaml_data=BACKUP_YAML,
            extra_env=env,
            store_prefix="gbt_bkstore",
        ) as bot:
            world = BackupWorld(bot=bot, target_name=target, backup_dir=backup_dir)
            yield world
    finally:
        leftovers = world.related_databases() if world is not None else set()
        for name in {target, *leftovers}:
            drop_database(name)


def load_pgbench(url: str, scale: int) -> None:
    """pgbench tables without keys or vacuum: quick to make, slow enough to dump."""
    subprocess.run(
        ["pgbench", "-i", "-q", "-I", "dtg", "-s", str(scale), url],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def scratch_names(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every scratch database name `backup verify` makes in-process; none may exist afterwards."""
    import runbooks.verify_backup as verify_module

    made: list[str] = []
    original = verify_module.scratch_database_name

    def recording() -> str:
        name = original()
        made.append(name)
        return name

    monkeypatch.setattr(verify_module, "scratch_database_name", recording)
    try:
        yield made
    finally:
        for name in made:
            drop_database(name)


PARTIAL = re.compile(r".*\.dump\.partial$")


async def take_backup(world: BackupWorld, rt: Runtime) -> int:
    """A good backup through the pipeline; its id."""
    reply = await world.run(rt, OPERATOR, "backup")
    assert reply.status == "succeeded", reply
    return int(reply.ids["backup_id"])
