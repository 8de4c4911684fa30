#!/usr/bin/env python3
"""Wait until Garden DX's /health answers healthy several times in a row, within a limit.

Healthy: a 2xx answer with "healthy" in the body. No fixed sleep: it asks every --interval seconds
from the first moment and stops as soon as --consecutive answers in a row were healthy.
    python3 health_gate.py http://localhost:8000/health --consecutive 3 --timeout 60
Prints one JSON document; exit 0 when healthy, 1 when the limit passed first.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request


def probe(url: str, timeout: float) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            body = answer.read(4096).decode("utf-8", "replace")
            return 200 <= answer.status < 300 and "healthy" in body.lower(), f"{answer.status} {body[:200]}"
    except urllib.error.HTTPError as exc:
        return False, f"{exc.code} {exc.read(200).decode('utf-8', 'replace')}"
    except (OSError, ValueError) as exc:
        return False, f"no answer: {exc}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--consecutive", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=0.25)
    args = parser.parse_args()
    started = time.monotonic()
    deadline = started + args.timeout
    answers = streak = 0
    last = ""
    while True:
        ok, last = probe(args.url, timeout=min(5.0, args.timeout))
        answers += 1
        streak = streak + 1 if ok else 0
        if streak >= args.consecutive or time.monotonic() + args.interval > deadline:
            break
        time.sleep(args.interval)
    healthy = streak >= args.consecutive
    elapsed = round(time.monotonic() - started, 3)
    print(
        json.dumps(
            {"healthy": healthy, "answers": answers, "streak": streak, "elapsed_s": elapsed, "last": last}
        )
    )
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
