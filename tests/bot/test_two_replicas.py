"""Two `gardenbot serve` processes on the same stores, as two replicas behind one load balancer.

Both are real child processes (tests/support/replicas.py) on one bot store (PostgreSQL), one
coordination Redis prefix, one target and one backup folder, behind the same signing secret, and
talking to one Slack Web API stand-in that records every call. Every request is a signed HTTP POST
to one replica or the other. What must hold: an approval asked through one and decided through the
other runs once (also when both get an Approve click at once); both write one audit chain that
verifies; a backup lock held by one refuses the other; each scheduled fire runs once; and a replica
killed mid-job leaves the other serving, which marks the job interrupted and frees its lock. Waits
are on conditions with generous bounds (a loaded 2-core machine); nothing is timed. The replicas
are started once for the module; one killed by a test is started again before the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.support.replicas import ReplicaSet, replicas
from tests.support.runtime import TARGET_KEYS, target_cache_holding
from tests.support.serve import SERVE_REDIS_DB, BotServer
from tests.support.signing import new_channel
from tests.support.slack_api import SlackCall
from tests.support.slack_approvals import Pending, click, request_flush, updates_of
from tests.support.slack_driver import call_text

# A killed replica's job goes quiet: its lock lapses after lock_ttl_seconds and the survivor's
# sweeper (every stale_after_seconds) calls it interrupted. Short, but loose enough that a busy
# machine's stalls do not make a live job lose its lock.
JOBS_TIMING = {"heartbeat_seconds": 1.0, "lock_ttl_seconds": 4.0, "stale_after_seconds": 5.0}
WAIT_S = 60.0  # any single condition, on a loaded machine
MINUTE_SCHEDULES = ("probe", "approval_sweep", "escalation")  # the defaults firing every minute
OPERATOR, OTHER_OPERATOR = "U0OPS", "U0LEAD"
pytestmark = pytest.mark.slow
AUDIT_BURST = 20  # commands sent to both replicas at once
# An approved flush's audit in its channel: asked, opened, approved, started and finished, once each.
ONE_APPROVED_RUN = sorted(
    [
        ("request", "pending"),
        ("approval_opened", "pending"),
        ("approval_approved", "approved"),
        ("job_started", "running"),
        ("job_finished", "succeeded"),
    ]
)


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory, health_api_url: str) -> Iterator[ReplicaSet]:
    """Two replicas started together on fresh stores, shared by this module's tests."""
    config = {"jobs": JOBS_TIMING, "target": {"api_url": health_api_url}}
    with replicas(tmp_path_factory.mktemp("replicas"), count=2, config=config) as started:
        with psycopg.connect(started.target_database_url, autocommit=True) as target:
            # Something to back up (a dump of an empty database lists no entries, and fails its check).
            target.execute(b"CREATE TABLE estimate (id int PRIMARY KEY, total numeric NOT NULL)")
            target.execute(b"INSERT INTO estimate SELECT g, g * 1.5 FROM generate_series(1, 1000) g")
        yield started


@pytest.fixture
def pair(two: ReplicaSet) -> Iterator[ReplicaSet]:
    """Both replicas running (one killed by an earlier test is started again), the gate open."""
    two.ensure_running()
    two.gate.open()
    yield two
    two.gate.open()


@pytest.fixture
def serve_target_keys() -> Iterator[dict[str, str]]:
    with target_cache_holding(TARGET_KEYS, SERVE_REDIS_DB) as keys:
        yield keys


# --- reading back --------------------------------------------------------------------------------


def rows(pair: ReplicaSet, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    with psycopg.connect(pair.database_url, autocommit=True, row_factory=dict_row) as conn:
        cur = conn.execute(query.encode() if not params else query, params)
        return list(cur.fetchall()) if cur.description else []


async def wait_until(pair: ReplicaSet, check: Callable[[], Any], what: str) -> Any:
    """Poll `check` until it returns something truthy; fail with both replicas' logs if it never does."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not (result := check()):
        if loop.time() > deadline:
            seen = [(c.method, c.params.get("channel")) for c in pair.standin.calls][-30:]
            raise AssertionError(f"gave up waiting for {what}\nstand-in calls: {seen}\n{pair.logs()}")
        await asyncio.sleep(0.1)
    return result


async def command(server: BotServer, text: str, *, user: str, channel: str) -> None:
    """A signed `/garden TEXT` POSTed to this replica, acked with 200."""
    ack = await server.slash(text, user=user, channel=channel, timeout=30)
    assert ack.status == 200, ack.text


def said_in(pair: ReplicaSet, channel: str, *, user: str | None = None) -> list[str]:
    """Everything the bot posted, updated or whispered in `channel` (to `user`, when given)."""
    return [
        call_text(c)
        for c in pair.standin.calls
        if c.params.get("channel") == channel
        and c.method in ("chat.postMessage", "chat.update", "chat.postEphemeral")
        and c.status == 200
        and (user is None or c.params.get("user") == user)
    ]


async def answered(pair: ReplicaSet, server: BotServer, text: str, words: str) -> str:
    """This replica answers a signed command in a fresh channel with a message holding `words`."""
    channel = new_channel()
    await command(server, text, user=OPERATOR, channel=channel)
    found = await wait_until(
        pair, lambda: [t for t in said_in(pair, channel) if words in t], f"{text!r} answered"
    )
    return str(found[0])


def jobs(pair: ReplicaSet, name: str) -> list[dict[str, Any]]:
    return rows(pair, "SELECT * FROM jobs WHERE command = %s ORDER BY id", (name,))


def audit_events(pair: ReplicaSet, channel: str) -> list[tuple[str, str]]:
    found = rows(pair, "SELECT event, outcome FROM audit_log WHERE channel = %s ORDER BY id", (channel,))
    return [(r["event"], r["outcome"]) for r in found]


def flush_results(pair: ReplicaSet, pending: Pending) -> list[SlackCall]:
    return [u for u in updates_of(pair[0], pending) if "Cache emptied" in call_text(u)]


# --- an approval across replicas -------------------------------------------------------------------


async def test_an_approval_asked_through_one_replica_and_approved_through_the_other_runs_once(
    pair: ReplicaSet, serve_target_keys: dict[str, str]
) -> None:
    a, b = pair[0], pair[1]
    pending = await request_flush(a, timeout=WAIT_S)  # U0ADMIN's signed /garden cache flush, to A

    await click(b, pending, "approve", "U0LEAD")  # the signed block_actions click, to B

    await wait_until(pair, lambda: flush_results(pair, pending), "the flush's result in the message")
    # Both replicas answer something after it, so a late second run would have had its chance.
    await answered(pair, a, "jobs", "cache flush")
    await answered(pair, b, "jobs", "cache flush")
    [job] = rows(pair, "SELECT * FROM jobs WHERE approval_id = %s", (pending.approval_id,))
    assert (job["status"], job["requested_by"], job["approved_by"]) == ("succeeded", "U0ADMIN", "U0LEAD")
    assert sorted(audit_events(pair, pending.channel)) == ONE_APPROVED_RUN
    results = {call_text(u) for u in flush_results(pair, pending)}
    assert all(f"{len(serve_target_keys)} keys removed" in text for text in results), results
    assert pair[0].target_key_count() == 0


async def test_two_approvers_clicking_approve_on_both_replicas_at_once_start_one_job(
    pair: ReplicaSet, serve_target_keys: dict[str, str]
) -> None:
    pending = await request_flush(pair[1], timeout=WAIT_S)

    await asyncio.gather(
        click(pair[0], pending, "approve", "U0LEAD"), click(pair[1], pending, "approve", "U0LEAD2")
    )

    await wait_until(pair, lambda: flush_results(pair, pending), "the flush's result in the message")
    loser = await wait_until(
        pair,
        lambda: [t for u in ("U0LEAD", "U0LEAD2") for t in said_in(pair, pending.channel, user=u)],
        "the other approver told it was already decided",
    )
    [job] = rows(pair, "SELECT * FROM jobs WHERE approval_id = %s", (pending.approval_id,))
    assert job["status"] == "succeeded" and job["approved_by"] in ("U0LEAD", "U0LEAD2")
    assert "already approved" in loser[0], loser
    late_click = ("approval_decision", "refused")
    assert sorted(audit_events(pair, pending.channel)) == sorted([*ONE_APPROVED_RUN, late_click])


async def test_commands_audited_by_both_replicas_at_once_form_one_chain_that_verifies(
    pair: ReplicaSet,
) -> None:
    channels = [new_channel() for _ in range(AUDIT_BURST)]

    await asyncio.gather(
        *(command(pair[i % 2], "jobs", user=OPERATOR, channel=c) for i, c in enumerate(channels))
    )

    def all_audited() -> bool:
        found = rows(pair, "SELECT count(*) AS n FROM audit_log WHERE channel = ANY(%s)", (channels,))
        return int(found[0]["n"]) >= AUDIT_BURST

    await wait_until(pair, all_audited, "every command of the burst in the audit log")
    verified = await asyncio.to_thread(pair.cli, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    intact = re.search(r"Audit log intact: (\d+) records verified", verified.stdout)
    assert intact is not None and int(intact[1]) >= AUDIT_BURST, verified.stdout


# --- the backup lock across replicas -----------------------------------------------------------------


async def running_backup(pair: ReplicaSet, server: BotServer, channel: str) -> dict[str, Any]:
    """`/garden backup` through `server`, held at the gate: its job row, once pg_dump waits."""
    pair.gate.close()
    known = {j["id"] for j in jobs(pair, "backup")}
    await command(server, "backup", user=OPERATOR, channel=channel)
    await wait_until(pair, pair.gate.started.exists, "pg_dump started")
    [job] = await wait_until(
        pair,
        lambda: [j for j in jobs(pair, "backup") if j["id"] not in known and j["status"] == "running"],
        "the backup's job row",
    )
    return job


def job_status(pair: ReplicaSet, job_id: int) -> str:
    [job] = rows(pair, "SELECT status FROM jobs WHERE id = %s", (job_id,))
    return str(job["status"])


def backup_ended(pair: ReplicaSet, job_id: int) -> bool:
    return job_status(pair, job_id) not in ("queued", "running")


async def test_a_backup_running_on_one_replica_makes_the_other_refuse_a_backup_naming_its_job(
    pair: ReplicaSet,
) -> None:
    a, b = pair[0], pair[1]
    held = await running_backup(pair, a, new_channel())
    refused_in = new_channel()

    await command(b, "backup", user=OTHER_OPERATOR, channel=refused_in)

    [refusal] = await wait_until(
        pair, lambda: said_in(pair, refused_in, user=OTHER_OPERATOR), "B's answer to the second backup"
    )
    assert f"A backup or restore is already running (job {held['id']}, started by" in refusal
    assert OPERATOR in refusal  # who holds it
    pair.gate.open()
    await wait_until(pair, lambda: backup_ended(pair, held["id"]), "the held backup to end")
    ran = [(j["id"], j["status"], j["error"]) for j in jobs(pair, "backup") if j["id"] >= held["id"]]
    assert ran == [(held["id"], "succeeded", None)]  # the refused request never became a job
    assert ("request", "refused") in audit_events(pair, refused_in)


# --- a replica killed in the middle of a job ---------------------------------------------------------


async def test_a_replica_killed_mid_backup_leaves_the_other_serving_the_job_interrupted_and_its_lock_free(
    pair: ReplicaSet,
) -> None:
    a, b = pair[0], pair[1]
    dead = await running_backup(pair, a, new_channel())
    orphan = pair.gate.waiting_pid  # A's pg_dump, waiting at the gate
    [partial] = pair.backup_dir.glob("*.dump.partial")  # A's file, half written

    pair.kill(0)

    with contextlib.suppress(ProcessLookupError):
        os.kill(orphan, signal.SIGKILL)  # its parent is gone; it must not dump on later
    assert not a.is_running()
    await answered(pair, b, "health", "atabase")  # B still answers a signed command
    await wait_until(
        pair, lambda: job_status(pair, dead["id"]) == "interrupted", "B's sweeper to mark A's job interrupted"
    )
    await wait_until(
        pair,
        lambda: f"job {dead['id']} (backup) was interrupted" in b.log_path.read_text(errors="replace"),
        "B to log that it found the job interrupted",
    )
    await wait_until(pair, lambda: not partial.exists(), "B to remove the killed backup's partial file")
    [backup] = rows(pair, "SELECT status, sha256 FROM backups WHERE job_id = %s", (dead["id"],))
    assert backup["status"] == "interrupted" and backup["sha256"] is None
    ended = rows(
        pair,
        "SELECT outcome, actor FROM audit_log WHERE event = 'job_finished' AND detail->>'job_id' = %s",
        (str(dead["id"]),),
    )
    assert [(e["outcome"], e["actor"]) for e in ended] == [("interrupted", OPERATOR)]
    news = f"Job {dead['id']} (backup) was interrupted: the process running it stopped."
    await wait_until(pair, lambda: any(news in t for t in said_in(pair, "C0OPS")), "B to tell #ops")
    [ref] = rows(pair, "SELECT message_ref FROM jobs WHERE id = %s", (dead["id"],))
    in_place = [
        u
        for u in pair.standin.calls
        if u.method == "chat.update" and u.params.get("ts") == ref["message_ref"]["ts"]
    ]
    assert news in call_text(in_place[-1])  # the requester's message no longer shows a progress bar
    pair.gate.open()
    channel = new_channel()

    await command(b, "backup", user=OTHER_OPERATOR, channel=channel)  # the dead job's lock is free

    [fresh] = await wait_until(
        pair, lambda: [j["id"] for j in jobs(pair, "backup") if j["id"] > dead["id"]], "a new backup job"
    )
    await wait_until(pair, lambda: job_status(pair, fresh) not in ("queued", "running"), "it to end")
    assert job_status(pair, fresh) == "succeeded", said_in(pair, channel)
    assert not any("already running" in text for text in said_in(pair, channel))
    [good] = rows(pair, "SELECT status, file_name FROM backups WHERE job_id = %s", (fresh,))
    assert good["status"] == "good" and (pair.backup_dir / good["file_name"]).is_file()


# --- scheduled runs across replicas --------------------------------------------------------------


def schedule_counts(pair: ReplicaSet) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int, int]:
    """In one snapshot: runs per schedule, the scheduler's audited requests per command, unfinished
    runs, and probe results."""
    with psycopg.connect(pair.database_url, row_factory=dict_row) as conn:
        conn.execute(b"SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        runs = conn.execute(
            b"SELECT schedule, count(*) AS runs, count(DISTINCT fire_time) AS fires,"
            b" min(fire_time) AS first, max(fire_time) AS last FROM schedule_runs"
            b" WHERE status <> 'missed' GROUP BY schedule ORDER BY schedule"
        ).fetchall()
        audited = conn.execute(
            b"SELECT command, count(*) AS requests FROM audit_log"
            b" WHERE actor = 'scheduler' AND event = 'request' GROUP BY command ORDER BY command"
        ).fetchall()
        row = conn.execute(b"SELECT count(*) AS n FROM schedule_runs WHERE status = 'running'").fetchone()
        probes = conn.execute(b"SELECT count(*) AS n FROM probe_results").fetchone()
    return runs, audited, int(row["n"]) if row else 0, int(probes["n"]) if probes else 0


def settled_counts(pair: ReplicaSet) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int, int] | None:
    counts = schedule_counts(pair)
    return counts if counts[2] == 0 else None


async def test_each_scheduled_fire_runs_once_across_two_serving_replicas(pair: ReplicaSet) -> None:
    both_up = rows(pair, "SELECT now() AS at")[0]["at"]

    def fired_since_both_up() -> bool:
        found = rows(
            pair,
            "SELECT DISTINCT schedule FROM schedule_runs WHERE fire_time > %s AND status <> 'running'",
            (both_up,),
        )
        return {r["schedule"] for r in found} >= set(MINUTE_SCHEDULES)

    await wait_until(pair, fired_since_both_up, "a minute's fires with both replicas up")
    assert all(server.is_running() for server in pair.servers)
    # Counted in a snapshot with no run between its claim and its end (else: count again).
    counted = await wait_until(pair, lambda: settled_counts(pair), "a moment with no run in flight")
    runs, audited, _, probes = counted

    per_schedule = {r["schedule"]: r for r in runs}
    assert set(MINUTE_SCHEDULES) <= set(per_schedule), runs
    for name in MINUTE_SCHEDULES:
        assert per_schedule[name]["runs"] == per_schedule[name]["fires"], runs  # one row per fire
    requests = {r["command"]: int(r["requests"]) for r in audited}
    # A probe or sweep that changed nothing is not audited (a quiet audit log): never more than the
    # runs, and the probe's own rows show each fire probed once.
    assert requests.get("probe", 0) <= per_schedule["probe"]["runs"], (audited, runs)
    assert requests.get("approvals sweep", 0) <= per_schedule["approval_sweep"]["runs"], (audited, runs)
    assert requests.get("incident escalate") == per_schedule["escalation"]["runs"], (audited, runs)
    assert probes == per_schedule["probe"]["runs"]  # one path probed, once per fire
