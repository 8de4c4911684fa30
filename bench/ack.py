"""Ack benchmark: signed `/garden help` slash commands against a bare Bolt baseline and a target.

    python bench/ack.py                                   # the baseline alone
    python bench/ack.py --target http://127.0.0.1:3000/slack/events --secret S

The baseline is a bare AsyncApp whose /garden only acks, started here as a subprocess (one
worker) so the target's overhead over Bolt itself can be read off the ratios. Only 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import itertools
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp

# Slack's recorded slash command, copied into the repository (tests/fixtures/README.md).
FIXTURE_BODY = Path(__file__).resolve().parents[1] / "tests/fixtures/slack/payloads/slash_command.body"
BASELINE_SECRET = "bench-signing-secret"
BASELINE_TOKEN = "xoxb-bench-not-a-real-token"
EVENTS_PATH = "/slack/events"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
BASELINES = ("starlette", "aiohttp", "aiohttp-uvloop")  # Starlette runs under uvicorn (uvloop, httptools)
GARDENBOT_SECRET = "test-signing-secret"  # what tests/support/serve.py signs with


# --- the baseline server (runs in the subprocess) --------------------------------------------


def build_baseline_app(secret: str, inline_ack: bool = True) -> object:
    from slack_bolt.async_app import AsyncAck, AsyncApp
    from slack_bolt.authorization import AuthorizeResult

    # AsyncApp has no token_verification_enabled: with a token it calls auth.test on the first
    # request, which cannot succeed offline, so a constant authorize() stands in for it.
    installed = AuthorizeResult(
        enterprise_id=None,
        team_id="T111",
        bot_token=BASELINE_TOKEN,
        bot_user_id="U0BENCH",
        bot_id="B0BENCH",
    )

    async def authorize() -> AuthorizeResult:
        return installed

    # process_before_response runs the listener inline; otherwise Bolt polls for ack() every
    # 10 ms (slack_bolt/listener/asyncio_runner.py), which puts a floor under every response.
    app = AsyncApp(
        signing_secret=secret,
        authorize=authorize,
        request_verification_enabled=True,
        process_before_response=inline_ack,
    )

    @app.command("/garden")
    async def garden(ack: AsyncAck) -> None:
        await ack()

    return app


def serve_baseline(kind: str, port: int, secret: str, inline_ack: bool) -> None:
    from slack_bolt.async_app import AsyncApp

    app = build_baseline_app(secret, inline_ack)
    assert isinstance(app, AsyncApp)
    if kind in ("aiohttp", "aiohttp-uvloop"):
        from aiohttp import web

        loop = None
        if kind == "aiohttp-uvloop":
            import uvloop

            loop = uvloop.new_event_loop()
        web.run_app(
            app.web_app(path=EVENTS_PATH), host="127.0.0.1", port=port, print=None, access_log=None, loop=loop
        )
        return
    import uvicorn
    from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    handler = AsyncSlackRequestHandler(app)

    async def events(request: Request) -> Response:
        return await handler.handle(request)

    api = Starlette(routes=[Route(EVENTS_PATH, events, methods=["POST"])])
    uvicorn.run(api, host="127.0.0.1", port=port, workers=1, log_level="warning", access_log=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def baseline_process(kind: str, secret: str, inline_ack: bool) -> Iterator[str]:
    """Start the baseline server as a subprocess; yield its URL; stop it."""
    port = free_port()
    command = [sys.executable, __file__, "--serve-baseline", kind, "--port", str(port)]
    env = {**os.environ, "BENCH_SECRET": secret, "BENCH_INLINE_ACK": "1" if inline_ack else ""}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    try:
        wait_listening(port, process)
        yield f"http://127.0.0.1:{port}{EVENTS_PATH}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"baseline server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"baseline server not listening on {port} after {timeout} s")


# --- the load generator ----------------------------------------------------------------------


def slash_command_fields() -> dict[str, str]:
    """The recorded slash command with command=/garden&text=help (tests/fixtures)."""
    fields: dict[str, str] = {"team_id": "T111", "channel_id": "C111", "user_id": "W111"}
    if FIXTURE_BODY.exists():
        fields = dict(parse_qsl(FIXTURE_BODY.read_text(encoding="utf-8")))
    # Nothing may leave this machine: the response URL points at a closed local port.
    fields.update(command="/garden", text="help", response_url="http://127.0.0.1:9/response")
    return fields


_SEQUENCE = itertools.count()


def slash_command_body(fields: dict[str, str] | None = None) -> bytes:
    """One slash command with its own trigger_id, as Slack sends: the bot de-duplicates on it."""
    fields = dict(fields or slash_command_fields())
    fields["trigger_id"] = f"{os.getpid()}.{next(_SEQUENCE)}.bench"
    return urlencode(fields).encode()


def signed_headers(body: bytes, secret: str) -> dict[str, str]:
    ts = str(int(time.time()))
    digest = hmac.new(secret.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256)
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": "v0=" + digest.hexdigest(),
    }


@dataclass(frozen=True)
class Result:
    server: str
    concurrency: int
    latencies: list[float]  # seconds, successful requests only
    errors: int
    elapsed: float

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed > 0 else 0.0

    def percentile(self, p: int) -> float:
        if len(self.latencies) < 2:
            return self.latencies[0] if self.latencies else float("nan")
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[p - 1]


async def run_load(
    url: str, secret: str, total: int, concurrency: int, deadline: float
) -> tuple[list[float], int, float]:
    """Send `total` signed requests with `concurrency` in flight; stop early at `deadline`."""
    fields = slash_command_fields()
    latencies: list[float] = []
    errors = 0
    remaining = total
    timeout = aiohttp.ClientTimeout(total=10)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0 and time.monotonic() < deadline:
                remaining -= 1
                body = slash_command_body(fields)
                headers = signed_headers(body, secret)
                started = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                        ok = response.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, errors, elapsed


async def settle(url: str) -> None:
    """Wait until gardenbot has finished the work its acks handed over (its /metrics says so).

    Without this, its backlog would run while the next server is measured and slow that one.
    """
    metrics = url.replace(EVENTS_PATH, "/metrics")
    deadline = time.monotonic() + 300
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.get(metrics) as response:
                text = await response.text()
            pending = [line for line in text.splitlines() if line.startswith("gardenbot_background_pending ")]
            if not pending or float(pending[0].split()[1]) == 0:
                return
            await asyncio.sleep(0.2)


async def bench(server: str, url: str, secret: str, args: argparse.Namespace) -> list[Result]:
    results = []
    for concurrency in args.concurrency:
        deadline = time.monotonic() + args.max_seconds
        await run_load(url, secret, args.warmup, concurrency, deadline)
        if server == "gardenbot":
            await settle(url)
        latencies, errors, elapsed = await run_load(url, secret, args.n, concurrency, deadline)
        if server == "gardenbot":
            await settle(url)
        if errors and not latencies:
            raise SystemExit(f"{server}: every request failed (wrong --secret or URL?)")
        results.append(Result(server, concurrency, latencies, errors, elapsed))
    return results


def markdown(results: list[Result], baseline: str, target: str | None) -> str:
    lines = [
        "| server | c | ok | errors | req/s | p50 ms | p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.server} | {r.concurrency} | {len(r.latencies)} | {r.errors} | "
            f"{r.throughput:.0f} | {r.percentile(50) * 1000:.2f} | {r.percentile(99) * 1000:.2f} |"
        )
    if target is not None:
        lines += [
            "",
            f"| c | throughput {target}/{baseline} | p99 {target}/{baseline} |",
            "| ---: | ---: | ---: |",
        ]
        by_key = {(r.server, r.concurrency): r for r in results}
        for r in results:
            if r.server != target or (baseline, r.concurrency) not in by_key:
                continue
            base = by_key[(baseline, r.concurrency)]
            lines.append(
                f"| {r.concurrency} | {r.throughput / base.throughput:.2f} | "
                f"{r.percentile(99) / base.percentile(99):.2f} |"
            )
    return "\n".join(lines)


def median_result(rounds: list[Result]) -> Result:
    """The round with the median throughput stands for the server at that concurrency."""
    ordered = sorted(rounds, key=lambda r: r.throughput)
    return ordered[len(ordered) // 2]


async def run_rounds(
    args: argparse.Namespace, target: tuple[str, str, str] | None
) -> tuple[list[Result], str]:
    """Alternate baseline(s) and target round by round, so machine noise hits both alike."""
    kinds = list(BASELINES) if args.baseline == "all" else [args.baseline]
    rounds: dict[tuple[str, int], list[Result]] = {}
    with contextlib.ExitStack() as stack:
        baselines = [
            (
                f"bolt-{kind}",
                stack.enter_context(baseline_process(kind, BASELINE_SECRET, not args.polling_ack)),
            )
            for kind in kinds
        ]
        for _ in range(args.rounds):
            servers = [(name, url, BASELINE_SECRET) for name, url in baselines]
            if target is not None:
                servers.append(target)
            for name, url, secret in servers:
                for result in await bench(name, url, secret, args):
                    rounds.setdefault((name, result.concurrency), []).append(result)
    results = [median_result(r) for r in rounds.values()]
    # The fastest bare configuration is the one to beat.
    fastest = max(
        (f"bolt-{k}" for k in kinds),
        key=lambda name: sum(r.throughput for r in results if r.server == name),
    )
    return results, fastest


async def frozen_store_acks(server: Any, pg: Any, count: int) -> list[float]:
    """Ack latencies of signed slash commands while the bot's PostgreSQL is stopped with SIGSTOP."""
    latencies: list[float] = []
    pg.freeze()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            for _ in range(count):
                body = slash_command_body()
                started = time.perf_counter()
                async with session.post(
                    server.events_url, data=body, headers=signed_headers(body, GARDENBOT_SECRET)
                ) as response:
                    await response.read()
                    if response.status != 200:
                        raise SystemExit(f"ack failed with HTTP {response.status} while the store was frozen")
                latencies.append(time.perf_counter() - started)
    finally:
        pg.thaw()
    return latencies


async def main(args: argparse.Namespace) -> None:
    target: tuple[str, str, str] | None = None
    frozen: list[float] = []
    with contextlib.ExitStack() as stack:
        if args.gardenbot:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
            from tests.support.serve import private_postgres, serving

            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gardenbot-bench-")))
            pg = stack.enter_context(private_postgres()) if args.freeze_store else None
            server = stack.enter_context(
                serving(workdir, database_url=pg.url if pg else None, config={"default_role": "viewer"})
            )
            target = ("gardenbot", server.events_url, GARDENBOT_SECRET)
        elif args.target:
            target = ("gardenbot", args.target, args.secret)
        results, fastest = await run_rounds(args, target)
        if args.gardenbot and args.freeze_store:
            frozen = await frozen_store_acks(server, pg, args.frozen_requests)
    print(
        f"n={args.n} per concurrency, warm-up {args.warmup}, {args.rounds} rounds (median shown), "
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n"
    )
    print(markdown(results, fastest, target[0] if target else None))
    if frozen:
        ms = sorted(x * 1000 for x in frozen)
        print(
            f"\nWith the bot's PostgreSQL frozen (SIGSTOP), {len(ms)} sequential signed slash commands: "
            f"p50 {statistics.median(ms):.1f} ms, max {ms[-1]:.1f} ms, all acked with 200."
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("-n", type=int, default=3000, help="requests per concurrency level")
    parser.add_argument(
        "-c", dest="concurrency", type=int, action="append", help="in flight (default 10 and 50)"
    )
    parser.add_argument("--warmup", type=int, default=100, help="unmeasured requests first")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="cap per level")
    parser.add_argument("--target", help="gardenbot serve's /slack/events URL on 127.0.0.1")
    parser.add_argument(
        "--gardenbot",
        action="store_true",
        help="start gardenbot serve here (Slack stand-in, throwaway databases) and bench it too",
    )
    parser.add_argument(
        "--freeze-store",
        action="store_true",
        help="with --gardenbot: run its store on a private PostgreSQL, then ack with it SIGSTOPped",
    )
    parser.add_argument("--frozen-requests", type=int, default=50, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; the median is shown")
    parser.add_argument("--secret", default=os.environ.get("SLACK_SIGNING_SECRET", ""))
    parser.add_argument(
        "--baseline", choices=[*BASELINES, "all"], default="all", help="bare Bolt servers to compare with"
    )
    parser.add_argument(
        "--polling-ack",
        action="store_true",
        help="baseline with Bolt's default process_before_response=False (10 ms ack polling)",
    )
    parser.add_argument("--serve-baseline", choices=list(BASELINES), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.concurrency = args.concurrency or [10, 50]
    if args.target and not args.secret:
        parser.error("--target needs --secret (or SLACK_SIGNING_SECRET)")
    if args.target and urlsplit(args.target).hostname not in LOCAL_HOSTS:
        parser.error(f"--target must be on 127.0.0.1, not {urlsplit(args.target).hostname!r}")
    if args.n < 1 or args.warmup < 0 or any(c < 1 for c in args.concurrency):
        parser.error("-n and -c must be positive")
    return args


if __name__ == "__main__":
    options = parse_args()
    if options.serve_baseline:
        inline = bool(os.environ.get("BENCH_INLINE_ACK"))
        serve_baseline(options.serve_baseline, options.port, os.environ["BENCH_SECRET"], inline)
    else:
        asyncio.run(main(options))
