"""Load: signed `/garden` slash commands at concurrency 50 against one `gardenbot serve`, then two.

    .venv/bin/python bench/load.py                       # 500 commands, c=50: one replica, then two
    .venv/bin/python bench/load.py -n 500 -c 50 --replicas 1 --replicas 2 --rounds 2

Each scenario gets its own stores: a throwaway bot database, a throwaway target database, a Redis
key prefix, and a private redis-server as the target cache (`cache flush` empties it, so no shared
database is touched). `gardenbot serve` runs as a subprocess as tests/support/serve.py starts it,
its Slack Web API is the local stand-in (response_url answers are collected there too). Two replicas
share the stores and sit behind a small round-robin HTTP proxy written here. The bot's store is
reached through a counting relay (tests/support/pg_rounds.py), so the run also says how many round
trips to PostgreSQL it cost. Only 127.0.0.1.

The mix: mostly read-only commands (help, health, jobs, backup list), some risky requests
(`cache flush`, which opens an approval), decisions (`approve N` on approvals opened before the run),
and the job each decision starts, which ends during the run. Checked afterwards, from the store:
every command acknowledged under 3 s, every one in the audit log exactly once (each command carries
a channel id of its own), no approval run twice. What limited each run is read from the CPU time of
each process (/proc) over the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.pg_rounds import Counts, RoundTrips, counting_round_trips
from tests.support.runtime import bot_world_in, health_api, request
from tests.support.serve import BotServer, start_server
from tests.support.servers import free_port, redis_prefix, throwaway_database
from tests.support.signing import new_trigger_id, signed_headers, slash_body
from tests.support.slack_api import SlackApiStandIn

ACK_LIMIT_S = 3.0
READ_ONLY = ("help", "health", "jobs", "backup list")
READER, REQUESTER, DECIDER = "U0OPS", "U0ADMIN", "U0LEAD"  # roles from tests/support/runtime.py
BUSY = "The bot is busy right now"


# --- what is sent ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    kind: str  # read-only, risky, decision
    text: str
    user: str
    channel: str  # a channel id of its own: how its audit record is found


def the_mix(total: int, approvals: Sequence[int], risky: int, seed: int = 14) -> list[Command]:
    """`risky` cache flush requests, one decision per prepared approval, read-only for the rest."""
    tags = (f"CL{n:05d}" for n in itertools.count())
    commands = [Command("decision", f"approve {a}", DECIDER, next(tags)) for a in approvals]
    commands += [Command("risky", "cache flush", REQUESTER, next(tags)) for _ in range(risky)]
    reads = itertools.cycle(READ_ONLY)
    commands += [Command("read-only", next(reads), READER, next(tags)) for _ in range(total - len(commands))]
    random.Random(seed).shuffle(commands)
    return commands


@dataclass
class Sent:
    command: Command
    latency: float
    status: int
    busy: bool


async def send_all(
    url: str, commands: Sequence[Command], concurrency: int, hooks: str
) -> tuple[list[Sent], float]:
    queue = list(commands)
    sent: list[Sent] = []
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency), timeout=timeout
    ) as session:

        async def worker() -> None:
            while queue:
                command = queue.pop(0)
                body = slash_body(
                    command.text,
                    user=command.user,
                    channel=command.channel,
                    trigger_id=new_trigger_id(),
                    response_url=f"{hooks}/{command.channel}",
                )
                started = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=signed_headers(body)) as response:
                        text = await response.text()
                        status = response.status
                except (aiohttp.ClientError, TimeoutError):
                    text, status = "", 0
                sent.append(Sent(command, time.perf_counter() - started, status, BUSY in text))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return sent, time.perf_counter() - started


# --- two replicas behind one address -------------------------------------------------------------


@contextlib.asynccontextmanager
async def round_robin(backends: Sequence[str]) -> Any:
    """An HTTP proxy on 127.0.0.1 handing each request to the next backend in turn."""
    turn = itertools.cycle(backends)
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with session.post(next(turn) + request.path, data=body, headers=headers) as answer:
            payload = await answer.read()
            return web.Response(body=payload, status=answer.status, content_type=answer.content_type)

    app = web.Application()
    app.router.add_post("/slack/events", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await session.close()


# --- the stores and the servers ------------------------------------------------------------------


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of the bench's own: the target cache that `cache flush` empties."""
    port = free_port()
    folder = tempfile.mkdtemp(prefix="gbt-load-redis-")
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            folder,
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                import socket

                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


@dataclass
class World:
    standin: SlackApiStandIn
    store_url: str  # the bot's store, direct (for the checks)
    servers: list[BotServer] = field(default_factory=list)


@contextlib.contextmanager
def scenario(replicas: int, workdir: Path, relay: RoundTrips) -> Iterator[World]:
    with contextlib.ExitStack() as stack:
        standin = stack.enter_context(SlackApiStandIn())
        standin.set_usergroup("S0ONCALL", ["U0ONCALL"])
        store = stack.enter_context(throwaway_database("gbt_load"))
        target = stack.enter_context(throwaway_database("gbt_load_target"))
        prefix = stack.enter_context(redis_prefix())
        cache = stack.enter_context(private_redis())
        world = World(standin, store)
        for n in range(replicas):
            server = stack.enter_context(
                start_server(
                    workdir / f"replica{n + 1}",
                    standin=standin,
                    database_url=relay.dsn(store),
                    target_database_url=target,
                    prefix=prefix,
                    extra_env={"GARDEN_REDIS_URL": cache, "GARDENBOT_LOG_LEVEL": "WARNING"},
                )
            )
            world.servers.append(server)
        yield world


async def settle(servers: Sequence[BotServer], store_url: str, timeout: float = 300) -> None:
    """Wait until every server's background queue is empty and no job is still running."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            pending = 0.0
            for server in servers:
                async with session.get(server.base_url + "/metrics") as response:
                    text = await response.text()
                for line in text.splitlines():
                    if line.startswith("gardenbot_background_pending "):
                        pending += float(line.split()[1])
            if pending == 0 and not running_jobs(store_url):
                return
            await asyncio.sleep(0.2)
    raise SystemExit("the servers did not settle in time")


def running_jobs(store_url: str) -> int:
    """Jobs not over yet: queued, running, or ended without their `job_finished` audit record so far
    (the runner writes it after the job's row, so a count taken in between misses it)."""
    with psycopg.connect(store_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM jobs j WHERE j.status IN ('queued', 'running') OR NOT EXISTS"
            " (SELECT 1 FROM audit_log a WHERE a.event = 'job_finished' AND a.detail->>'job_id' = j.id::text)"
        ).fetchone()
    return int(row[0]) if row else 0


def spool_lines(server: BotServer) -> int:
    spool = server.log_path.parent / "state" / "audit-spool.jsonl"
    return len(spool.read_text().splitlines()) if spool.exists() else 0


def warned(server: BotServer) -> list[str]:
    """The server's WARNING and ERROR lines, numbers and ids blanked so alike ones count together."""
    import re

    lines = server.log_tail(100_000).splitlines()
    return [
        re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}|\d+", "N", line.split(" ", 2)[-1])[:160]
        for line in lines
        if "WARNING" in line or "ERROR" in line
    ]


def audit_rows(store_url: str) -> int:
    with psycopg.connect(store_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM audit_log").fetchone()
    return int(row[0]) if row else 0


def pending_approvals(store_url: str) -> list[int]:
    with psycopg.connect(store_url, autocommit=True) as conn:
        rows = conn.execute("SELECT id FROM approvals WHERE status = 'pending' ORDER BY id").fetchall()
    return [int(r[0]) for r in rows]


# --- CPU over the run ----------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_queue_wait(pid: int) -> float:
    """Seconds the process was runnable but waited for a CPU (/proc/PID/schedstat, threads summed)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


def backend_pids(store_url: str) -> list[int]:
    """PostgreSQL backends serving the bot's store (the bench's own check connections aside)."""
    with psycopg.connect(store_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return [int(r[0]) for r in rows]


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


@dataclass
class Cpu:
    servers: list[float]
    servers_waiting: list[float]  # runnable but not running: the machine's other work came first
    postgres: float
    bench: float
    machine_busy_pct: float


class CpuMeter:
    def __init__(self, servers: Sequence[BotServer], store_url: str) -> None:
        self.servers = servers
        self.store_url = store_url
        self.start_servers = [cpu_seconds(s.process.pid) for s in servers]
        self.start_waiting = [run_queue_wait(s.process.pid) for s in servers]
        self.start_pg = {pid: cpu_seconds(pid) for pid in backend_pids(store_url)}
        self.start_bench = cpu_seconds(os.getpid())
        self.start_machine = machine_busy()

    def stop(self) -> Cpu:
        pg = sum(cpu_seconds(pid) - self.start_pg.get(pid, 0.0) for pid in backend_pids(self.store_url))
        busy, total = machine_busy()
        pct = 100 * (busy - self.start_machine[0]) / max(1, total - self.start_machine[1])
        return Cpu(
            [cpu_seconds(s.process.pid) - b for s, b in zip(self.servers, self.start_servers, strict=True)],
            [
                run_queue_wait(s.process.pid) - b
                for s, b in zip(self.servers, self.start_waiting, strict=True)
            ],
            pg,
            cpu_seconds(os.getpid()) - self.start_bench,
            pct,
        )


# --- checks from the store -----------------------------------------------------------------------


@dataclass
class Checked:
    unaudited: int  # commands with no audit record of their own
    audited_twice: int  # commands with more than one
    jobs: int
    jobs_finished: int
    approvals_run_twice: int


def check(store_url: str, commands: Sequence[Command]) -> Checked:
    with psycopg.connect(store_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT channel, event FROM audit_log WHERE event IN ('request', 'approval_approved')"
        ).fetchall()
        per_channel = Counter(str(r[0]) for r in rows)
        jobs = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded'),"
            " count(*) - count(DISTINCT approval_id) FROM jobs WHERE approval_id IS NOT NULL"
        ).fetchone()
    assert jobs is not None
    tags = [c.channel for c in commands]
    return Checked(
        unaudited=sum(1 for t in tags if per_channel[t] == 0),
        audited_twice=sum(1 for t in tags if per_channel[t] > 1),
        jobs=int(jobs[0]),
        jobs_finished=int(jobs[1]),
        approvals_run_twice=int(jobs[2]),
    )


# --- one scenario --------------------------------------------------------------------------------


@dataclass
class Outcome:
    replicas: int
    sent: list[Sent]
    send_s: float
    done_s: float
    cpu: Cpu
    rounds: Counts
    checked: Checked
    answers: int
    audit_statements: int  # audit inserts sent, re-chained ones included
    audit_records: int  # records they wrote
    spooled: int  # audit records left in the replicas' local spools (written at their next record)
    warnings: list[str]  # the replicas' warning lines, counted

    def latencies(self) -> list[float]:
        return sorted(s.latency for s in self.sent if s.status == 200)

    def percentile(self, p: int) -> float:
        values = self.latencies()
        return (
            statistics.quantiles(values, n=100, method="inclusive")[p - 1]
            if len(values) > 1
            else float("nan")
        )


async def run_scenario(replicas: int, args: argparse.Namespace) -> Outcome:
    with (
        tempfile.TemporaryDirectory(prefix="gbt-load-") as folder,
        counting_round_trips() as relay,
        scenario(replicas, Path(folder), relay) as world,
    ):
        if True:
            backends = [s.base_url for s in world.servers]
            hooks = world.standin.response_url("load").rsplit("/", 1)[0]
            async with contextlib.AsyncExitStack() as stack:
                base = (
                    backends[0] if replicas == 1 else await stack.enter_async_context(round_robin(backends))
                )
                url = base + "/slack/events"
                # Approvals to decide during the run, opened (and the pools warmed) beforehand.
                prepare = [
                    Command("risky", "cache flush", REQUESTER, f"CP{n:05d}") for n in range(args.decisions)
                ]
                await send_all(url, prepare, 5, hooks)
                await settle(world.servers, world.store_url)
                approvals = pending_approvals(world.store_url)
                commands = the_mix(args.n, approvals, args.risky)
                calls_before = len(world.standin.calls)
                rounds_before = relay.counts()
                relay.statements = []
                records_before = audit_rows(world.store_url)
                meter = CpuMeter(world.servers, world.store_url)
                started = time.perf_counter()
                sent, send_s = await send_all(url, commands, args.concurrency, hooks)
                await settle(world.servers, world.store_url)
                done_s = time.perf_counter() - started
                cpu = meter.stop()
                rounds = relay.counts() - rounds_before
                audit_statements = sum("INSERT INTO audit_log" in sql for sql in relay.statements)
                audit_records = audit_rows(world.store_url) - records_before
                answers = len(world.standin.calls) - calls_before
            checked = check(world.store_url, commands)
            spooled = sum(spool_lines(s) for s in world.servers)
            warnings = [
                f"{n}× {line}" for line, n in Counter(w for s in world.servers for w in warned(s)).items()
            ]
    return Outcome(
        replicas,
        sent,
        send_s,
        done_s,
        cpu,
        rounds,
        checked,
        answers,
        audit_statements,
        audit_records,
        spooled,
        warnings,
    )


def report(outcomes: Sequence[Outcome], args: argparse.Namespace) -> str:
    lines = [
        f"{args.n} commands, c={args.concurrency}; load average before: {' '.join(loadavg())}",
        "",
        "| replicas | acked 200 | busy | errors | acks >3 s | ack p50 ms | ack p99 ms | ack max ms |"
        " acks/s | all done s | commands/s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for o in outcomes:
        ok = [s for s in o.sent if s.status == 200]
        lines.append(
            f"| {o.replicas} | {len(ok)} | {sum(s.busy for s in o.sent)} | {len(o.sent) - len(ok)} |"
            f" {sum(s.latency > ACK_LIMIT_S for s in o.sent)} | {o.percentile(50) * 1000:.1f} |"
            f" {o.percentile(99) * 1000:.1f} | {max(o.latencies()) * 1000:.1f} | {len(ok) / o.send_s:.0f} |"
            f" {o.done_s:.1f} | {len(o.sent) / o.done_s:.0f} |"
        )
    lines += [
        "",
        "| replicas | unaudited | audited twice | jobs | jobs succeeded | approvals run twice | Slack calls |"
        " audit records / insert statements |"
        " store round trips | per command | serve CPU s | serve waiting for a CPU s | PostgreSQL CPU s |"
        " bench CPU s | machine busy |",
        "|" + " ---: |" * 10 + " --- | --- |" + " ---: |" * 3,
    ]
    for o in outcomes:
        c = o.checked
        serve_cpu = " + ".join(f"{s:.1f}" for s in o.cpu.servers)
        serve_wait = " + ".join(f"{s:.1f}" for s in o.cpu.servers_waiting)
        lines.append(
            f"| {o.replicas} | {c.unaudited} | {c.audited_twice} | {c.jobs} | {c.jobs_finished} |"
            f" {c.approvals_run_twice} | {o.answers} | {o.audit_records} / {o.audit_statements} |"
            f" {o.rounds.round_trips} |"
            f" {o.rounds.round_trips / len(o.sent):.2f} | {serve_cpu} | {serve_wait} | {o.cpu.postgres:.1f} |"
            f" {o.cpu.bench:.1f} | {o.cpu.machine_busy_pct:.0f}% |"
        )
    return "\n".join(lines)


def loadavg() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


def failures(outcome: Outcome) -> list[str]:
    problems = []
    if any(s.status != 200 or s.busy for s in outcome.sent):
        problems.append("not every command was acknowledged")
    if any(s.latency > ACK_LIMIT_S for s in outcome.sent):
        problems.append("an ack took over 3 s")
    if outcome.checked.unaudited or outcome.checked.audited_twice:
        problems.append("audit log does not hold each command exactly once")
    if outcome.checked.approvals_run_twice:
        problems.append("an approval ran twice")
    return problems


# --- store round trips per kind of request, one at a time ---------------------------------------


async def count_per_kind() -> list[tuple[str, str, Counts]]:
    """One request of each kind through the pipeline in-process, the store behind the counting
    relay: nothing else runs meanwhile, so each count is that request's own."""
    rows: list[tuple[str, str, Counts]] = []
    with (
        tempfile.TemporaryDirectory(prefix="gbt-load-count-") as folder,
        health_api() as api,
        throwaway_database("gbt_load_target") as target,
        private_redis() as cache,
        counting_round_trips() as relay,
        bot_world_in(Path(folder), api_url=api, target_database_url=target) as world,
    ):
        world.database_url = relay.dsn(world.database_url)
        world.extra_env["GARDEN_REDIS_URL"] = cache
        async with world.runtime() as runtime:
            pipeline = runtime.pipeline

            async def counted(kind: str, user: str, text: str) -> dict[str, int | str]:
                before = relay.counts()
                reply = await pipeline.handle(request(user, text))
                rows.append((kind, text, relay.counts() - before))
                return dict(reply.ids)

            await pipeline.handle(request(READER, "help"))  # the pool's first use
            for text in READ_ONLY:
                await counted("read-only", READER, text)
            opened = await counted("risky request", REQUESTER, "cache flush")
            started = await counted("decision (starts the job)", DECIDER, f"approve {opened['approval_id']}")
            before = relay.counts()
            async for _ in pipeline.jobs.watch(int(started["job_id"])):
                pass
            await asyncio.sleep(0.5)  # the end's audit and incident note follow the final event
            rows.append(("job run and end", "cache flush job", relay.counts() - before))
    return rows


def per_kind_table(rows: Sequence[tuple[str, str, Counts]]) -> str:
    lines = ["| kind | request | round trips | statements (syncs) |", "| --- | --- | ---: | ---: |"]
    lines += [f"| {kind} | `{text}` | {c.round_trips} | {c.exchanges} |" for kind, text, c in rows]
    return "\n".join(lines)


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=500, help="commands per run")
    parser.add_argument("-c", "--concurrency", type=int, default=50)
    parser.add_argument("--replicas", type=int, action="append", help="1 and 2 by default (repeatable)")
    parser.add_argument("--risky", type=int, default=40, help="cache flush requests in the mix")
    parser.add_argument(
        "--decisions", type=int, default=40, help="approvals decided (and jobs run) in the mix"
    )
    parser.add_argument("--rounds", type=int, default=1, help="runs of each scenario, alternating")
    parser.add_argument("--no-count", action="store_true", help="skip the round trips per kind of request")
    parser.add_argument("--count-only", action="store_true", help="only the round trips per kind of request")
    args = parser.parse_args(argv)
    if not args.no_count:
        print(per_kind_table(await count_per_kind()), end="\n\n", flush=True)
    if args.count_only:
        return 0
    if args.risky + args.decisions > args.n:
        parser.error("the mix is larger than -n")
    outcomes = []
    for _ in range(args.rounds):
        for replicas in args.replicas or [1, 2]:
            outcomes.append(await run_scenario(replicas, args))
    print(report(outcomes, args))
    for o in outcomes:
        print(f"\n{o.replicas} replica(s): {o.spooled} audit record(s) left in a spool; warnings:")
        for line in o.warnings:
            print("   ", line)
    problems = [f"{o.replicas} replica(s): {p}" for o in outcomes for p in failures(o)]
    for problem in problems:
        print("FAILED:", problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
