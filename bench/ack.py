"""Ack benchmark: signed `/garden help` slash commands against a bare Bolt baseline and a target.

    python bench/ack.py                                   # the baseline alone
    python bench/ack.py --target http://127.0.0.1:3000/slack/events --secret S

The baseline is a bare AsyncApp whose /garden only acks, started here as a subprocess (one
worker) so the target's overhead over Bolt itself can be read off the ratios. Only 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURE_BODY = SHARED / "fixtures" / "slack" / "payloads" / "slash_command.body"
BASELINE_SECRET = "bench-signing-secret"
BASELINE_TOKEN = "xoxb-bench-not-a-real-token"
EVENTS_PATH = "/slack/events"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


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
    if kind == "aiohttp":
        from aiohttp import web

        web.run_app(app.web_app(path=EVENTS_PATH), host="127.0.0.1", port=port, print=None, access_log=None)
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


def slash_command_body() -> bytes:
    """The recorded slash command with command=/garden&text=help (built in if shared/ is absent)."""
    fields: dict[str, str] = {"team_id": "T111", "channel_id": "C111", "user_id": "W111"}
    if FIXTURE_BODY.exists():
        fields = dict(parse_qsl(FIXTURE_BODY.read_text(encoding="utf-8")))
    fields.update(command="/garden", text="help", response_url="https://hooks.slack.com/x")
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
    body = slash_command_body()
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


async def bench(server: str, url: str, secret: str, args: argparse.Namespace) -> list[Result]:
    results = []
    for concurrency in args.concurrency:
        deadline = time.monotonic() + args.max_seconds
        await run_load(url, secret, args.warmup, concurrency, deadline)
        latencies, errors, elapsed = await run_load(url, secret, args.n, concurrency, deadline)
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


async def main(args: argparse.Namespace) -> None:
    results: list[Result] = []
    kinds = ["starlette", "aiohttp"] if args.baseline == "both" else [args.baseline]
    for kind in kinds:
        with baseline_process(kind, BASELINE_SECRET, not args.polling_ack) as url:
            results += await bench(f"bolt-{kind}", url, BASELINE_SECRET, args)
    target_name = None
    if args.target:
        target_name = "gardenbot"
        results += await bench(target_name, args.target, args.secret, args)
    print(
        f"n={args.n} per concurrency, warm-up {args.warmup}, "
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n"
    )
    print(markdown(results, f"bolt-{kinds[0]}", target_name))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("-n", type=int, default=1000, help="requests per concurrency level")
    parser.add_argument(
        "-c", dest="concurrency", type=int, action="append", help="in flight (default 10 and 50)"
    )
    parser.add_argument("--warmup", type=int, default=100, help="unmeasured requests first")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="cap per level")
    parser.add_argument("--target", help="gardenbot serve's /slack/events URL on 127.0.0.1")
    parser.add_argument("--secret", default=os.environ.get("SLACK_SIGNING_SECRET", ""))
    parser.add_argument("--baseline", choices=["starlette", "aiohttp", "both"], default="aiohttp")
    parser.add_argument(
        "--polling-ack",
        action="store_true",
        help="baseline with Bolt's default process_before_response=False (10 ms ack polling)",
    )
    parser.add_argument("--serve-baseline", choices=["starlette", "aiohttp"], help=argparse.SUPPRESS)
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
