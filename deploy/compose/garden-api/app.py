"""A stand-in Garden DX API for the compose stack: `GET /health` and a Prometheus `GET /metrics`.

Standard library only, so the stock python image runs it. It reports healthy while the garden_dx
database answers a TCP connect, which is enough for the bot's `health` and Prometheus to show a
believable picture; it is not the Garden DX application.
"""

from __future__ import annotations

import json
import os
import socket
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DB_HOST = os.environ.get("GARDEN_DB_HOST", "postgres")
DB_PORT = int(os.environ.get("GARDEN_DB_PORT", "5432"))
REQUESTS: Counter[tuple[str, str]] = Counter()


def database_answers() -> bool:
    try:
        with socket.create_connection((DB_HOST, DB_PORT), timeout=1):
            return True
    except OSError:
        return False


def metrics_text() -> str:
    lines = ["# TYPE http_requests_total counter"]
    for (handler, status), count in sorted(REQUESTS.items()):
        lines.append(f'http_requests_total{{handler="{handler}",status="{status}"}} {count}')
    return "\n".join(lines) + "\n"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/health":
            healthy = database_answers()
            status = 200 if healthy else 503
            body = json.dumps({"status": "healthy" if healthy else "unhealthy"}).encode()
            self._send(status, "application/json", body)
        elif self.path == "/metrics":
            self._send(200, "text/plain; version=0.0.4", metrics_text().encode())
        else:
            self._send(404, "application/json", b'{"detail": "Not Found"}')

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        REQUESTS[(self.path if self.path in ("/health", "/metrics") else "other", f"{status // 100}xx")] += 1
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()  # noqa: S104 - in its container
