"""Garden DX application logs in the manual's shapes, written for tests and benchmarks."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

ENDPOINTS = (
    b"GET /api/estimates",
    b"GET /api/estimates/%d",
    b"POST /api/estimates",
    b"GET /api/price_master",
    b"GET /api/users/me",
    b"POST /api/auth/login",
    b"GET /api/pdf/%d",
    b"GET /health",
)


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def api_line(address: str, epoch: float, request: str, status: int, ms: int) -> str:
    return f'{address} - - {int(epoch)} "{request} HTTP/1.1" {status} {ms}\n'


def auth_line(address: str, epoch: float, text: str) -> str:
    return f"{address} {iso(epoch)} {text}\n"


def error_line(epoch: float, level: str, message: str) -> str:
    return f"{iso(epoch)} {level} {message}\n"


def _request_pool(rng: random.Random, size: int) -> list[bytes]:
    """Suffixes after the time: request, status, milliseconds (mostly 2xx, a few 5xx)."""
    pool = []
    for _ in range(size):
        endpoint = rng.choice(ENDPOINTS)
        if b"%d" in endpoint:
            endpoint = endpoint % rng.randint(1, 5000)
        status = rng.choices((200, 201, 304, 404, 500), (80, 8, 6, 5, 1))[0]
        ms = int(rng.lognormvariate(4.0, 0.8))
        pool.append(b' "%s HTTP/1.1" %d %d\n' % (endpoint, status, ms))
    return pool


def write_api_log(
    path: Path, *, start: float, seconds: int, per_second: int, addresses: int = 200, seed: int = 1
) -> int:
    """Append `seconds` seconds of traffic at `per_second` requests a second; returns bytes written."""
    rng = random.Random(seed)
    pool = _request_pool(rng, 4096)
    sources = [b"203.0.113.%d" % i if i < 255 else b"198.51.100.%d" % (i - 254) for i in range(addresses)]
    picks = [(rng.choice(sources) + b" - - ", rng.choice(pool)) for _ in range(8192)]
    written = 0
    with path.open("ab") as f:
        for second in range(seconds):
            stamp = b"%d" % int(start + second)
            at = (second * per_second) % (len(picks) - per_second)
            block = b"".join(ip + stamp + rest for ip, rest in picks[at : at + per_second])
            written += f.write(block)
    return written


def write_auth_log(
    path: Path, *, start: float, seconds: int, every: int = 1, failed_one_in: int = 10, seed: int = 2
) -> int:
    """A login every `every` seconds, one in `failed_one_in` failed; returns bytes written."""
    rng = random.Random(seed)
    written = 0
    with path.open("a", encoding="utf-8") as f:
        lines = []
        for second in range(0, seconds, every):
            address = f"192.0.2.{rng.randint(1, 250)}"
            user = f"user{rng.randint(1, 500)}@example.com"
            text = (
                f"authentication failed for {user}"
                if rng.randrange(failed_one_in) == 0
                else f"login ok {user}"
            )
            lines.append(auth_line(address, start + second, text))
            if len(lines) >= 10_000:
                written += f.write("".join(lines))
                lines = []
        written += f.write("".join(lines))
    return written
