"""A backup that ends while the bot's store is down loses nothing.

A real `gardenbot run backup` runs against a private PostgreSQL as the bot's store; its pg_dump
waits at a gate (tests/support/faults.py) while the test stops that PostgreSQL, then the gate opens
and the backup finishes with the store gone. The console must print the result and exit cleanly,
the job's end and the backup's outcome must wait on local disk, and once the store is started
again the next start writes them: job succeeded, backup good with its checksum, one audit record.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from tests.support.backup_env import OPERATOR, BackupWorld, backup_world, sha256_file
from tests.support.faults import gated_pg_dump
from tests.support.runtime import start_gardenbot
from tests.support.serve import PrivatePostgres


def start_cli(world: BackupWorld, text: str) -> subprocess.Popen[str]:
    world.bot.write_yaml()
    return start_gardenbot(world.bot.env, "run", "--user", OPERATOR, "--json", text)


def store_rows(url: str, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        return list(conn.execute(query.encode() if not params else query, params).fetchall())


def restart(pg: PrivatePostgres) -> None:
    options = f"-p {pg.port} -k {pg.root} -c listen_addresses=127.0.0.1 -c fsync=off"
    started = pg.run(
        "pg_ctl", "-D", str(pg.data_dir), "-o", options, "-l", str(pg.root / "pg.log"), "-w", "start"
    )
    assert started.returncode == 0, started.stderr


def spool_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_backup_that_finishes_while_the_store_is_down_is_reconciled_when_it_returns(
    tmp_path: Path, health_api_url: str, chinook: str, private_pg: PrivatePostgres
) -> None:
    pg = private_pg
    with backup_world(tmp_path, health_api_url, template=chinook) as world:
        gate = gated_pg_dump(tmp_path / "pg-bin")
        world.bot.database_url = pg.url
        world.set_env(GARDENBOT_PG_BIN_DIR=str(gate.folder))
        state = world.bot.state_dir

        proc = start_cli(world, "backup")
        gate.wait_started()
        [running] = store_rows(pg.url, "SELECT id, status FROM jobs")
        assert running["status"] == "running"
        stopped = pg.run("pg_ctl", "-D", str(pg.data_dir), "-m", "immediate", "-w", "stop")
        assert stopped.returncode == 0, stopped.stderr
        gate.open()
        out, err = proc.communicate(timeout=120)

        # The requester heard the result; the console exited cleanly with the job's status.
        assert proc.returncode == 0, (out, err)
        assert "Traceback" not in err
        result = json.loads(out.strip().splitlines()[-1])
        assert result["status"] == "succeeded" and result["job_id"] == running["id"]
        assert f"end of job {running['id']} is kept on local disk" in result["text"]
        backup_id = int(result["backup_id"])
        [file_name] = world.files()
        audit_spooled = [r for r in spool_lines(world.bot.spool_path) if r["event"] == "job_finished"]
        assert [(r["outcome"], r["detail"]["job_id"]) for r in audit_spooled] == [
            ("succeeded", running["id"])
        ]
        kept = spool_lines(state / "job-spool.jsonl")
        assert [k["kind"] for k in kept] == ["backup_finished", "job_finished"]

        restart(pg)
        code, _listing, err = world.cli(OPERATOR, "jobs")  # any start writes what was kept
        assert code == 0, err

        [job] = store_rows(
            pg.url, "SELECT status, progress, finished_at FROM jobs WHERE id = %s", (running["id"],)
        )
        assert (job["status"], job["progress"]) == ("succeeded", 100) and job["finished_at"] is not None
        [backup] = store_rows(pg.url, "SELECT * FROM backups WHERE id = %s", (backup_id,))
        assert backup["status"] == "good" and backup["file_name"] == file_name
        assert backup["sha256"] == sha256_file(world.backup_dir / file_name)
        assert backup["size_bytes"] == (world.backup_dir / file_name).stat().st_size
        finished = store_rows(
            pg.url,
            "SELECT outcome FROM audit_log WHERE event = 'job_finished' AND detail->>'job_id' = %s",
            (str(running["id"]),),
        )
        assert [f["outcome"] for f in finished] == ["succeeded"]
        assert spool_lines(state / "job-spool.jsonl") == []
        assert world.bot.cli("audit", "verify").returncode == 0

        code, again, err = world.cli(OPERATOR, "backup")  # its lock was freed in the store too
        assert code == 0 and again["status"] == "succeeded", (again, err)
