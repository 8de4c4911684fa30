"""A real Alertmanager (Debian's `prometheus-alertmanager`) on a free port, sending its webhooks to
a local recorder, so tests read exactly what Alertmanager sends.

    with WebhookRecorder(token="t0ken") as recorder, RealAlertmanager(recorder, token="t0ken") as am:
        am.post_alerts([...])           # Alertmanager's API v2
        [payload] = recorder.wait_for(1)

`python -m tests.support.alertmanager OUTDIR` captures the payloads in tests/fixtures/alertmanager/.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx
import yaml

BINARY = "prometheus-alertmanager"
EXTERNAL_URL = "http://alertmanager.garden.internal:9093"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Delivery:
    body: bytes
    headers: dict[str, str]

    def json(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.body)
        return loaded


class WebhookRecorder:
    """Records every POST; answers 401 without the right bearer token (as the bot will)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.deliveries: list[Delivery] = []
        self.refused = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/alerts/alertmanager"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                ok = headers.get("authorization") == f"Bearer {recorder.token}"
                with recorder._lock:
                    if ok:
                        recorder.deliveries.append(Delivery(body, headers))
                    else:
                        recorder.refused += 1
                self.send_response(200 if ok else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Delivery]:
        return self.wait_until(lambda seen: len(seen) >= count, timeout)

    def wait_until(self, done: Callable[[list[Delivery]], bool], timeout: float = 20.0) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                seen = list(self.deliveries)
            if done(seen):
                return seen
            time.sleep(0.05)
        raise TimeoutError(f"{len(seen)} webhooks after {timeout} s, not the ones awaited")

    def __enter__(self) -> WebhookRecorder:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()


def alertmanager_config(url: str, token_file: Path, max_alerts: int) -> dict[str, Any]:
    """Short timings so a test takes seconds; the shape of deploy/alertmanager/alertmanager.yml."""
    return {
        "route": {
            "receiver": "gardenbot",
            "group_by": ["alertname", "service", "severity"],
            "group_wait": "1s",
            "group_interval": "2s",
            "repeat_interval": "1h",
        },
        "receivers": [
            {
                "name": "gardenbot",
                "webhook_configs": [
                    {
                        "url": url,
                        "send_resolved": True,
                        "max_alerts": max_alerts,
                        "http_config": {
                            "authorization": {"type": "Bearer", "credentials_file": str(token_file)}
                        },
                    }
                ],
            }
        ],
    }


class RealAlertmanager:
    """`receiver` is a WebhookRecorder, or the URL of a real webhook (`gardenbot serve`'s)."""

    def __init__(self, receiver: WebhookRecorder | str, token: str, max_alerts: int = 0) -> None:
        binary = shutil.which(BINARY)
        if binary is None:
            raise RuntimeError(f"{BINARY} is missing: scripts/test.sh installs Debian's package")
        self._binary = binary
        self._dir = Path(tempfile.mkdtemp(prefix="gbt-am-"))
        token_file = self._dir / "token"
        token_file.write_text(token + "\n", encoding="utf-8")
        token_file.chmod(0o400)
        url = receiver if isinstance(receiver, str) else receiver.url
        config = alertmanager_config(url, token_file, max_alerts)
        (self._dir / "alertmanager.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v2"

    def __enter__(self) -> RealAlertmanager:
        self._log = (self._dir / "log").open("wb")
        self._process = subprocess.Popen(
            [
                self._binary,
                f"--config.file={self._dir / 'alertmanager.yml'}",
                f"--storage.path={self._dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                f"--web.external-url={EXTERNAL_URL}",
                "--cluster.listen-address=",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"Alertmanager not ready: {(self._dir / 'log').read_text()[-2000:]}")

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        response = httpx.post(f"{self.api}/alerts", json=alerts, timeout=5)
        response.raise_for_status()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def disk_alert(instance: str, ends_at: datetime | None = None) -> dict[str, Any]:
    alert: dict[str, Any] = {
        "labels": {
            "alertname": "GardenDiskSpaceLow",
            "severity": "warning",
            "service": "node",
            "job": "node-exporter",
            "instance": instance,
            "mountpoint": "/",
            "device": "/dev/sda1",
            "fstype": "ext4",
        },
        "annotations": {
            "summary": f"Disk / on {instance} is 91 % full",
            "description": f"Less than 15 % of / (/dev/sda1) on {instance} is available.",
            "runbook": "`/garden system info`; old backups, logs, WAL.",
        },
        "startsAt": "2026-11-28T22:00:00.123456789Z",
        "generatorURL": "http://prometheus.garden.internal:9090/graph?g0.expr=node_filesystem_avail_bytes",
    }
    if ends_at is not None:
        alert["endsAt"] = ends_at.isoformat().replace("+00:00", "Z")
    return alert


def postgres_alert() -> dict[str, Any]:
    return {
        "labels": {
            "alertname": "GardenPostgresDown",
            "severity": "critical",
            "service": "postgres",
            "job": "postgres-exporter",
            "instance": "db1.garden.internal:9187",
        },
        "annotations": {
            "summary": "PostgreSQL on db1.garden.internal:9187 is down",
            "description": "postgres_exporter cannot connect to PostgreSQL (pg_up = 0) for 1 minute.",
            "runbook": "`/garden health`; `/garden service status`.",
        },
        "startsAt": "2026-11-28T22:05:00Z",
        "generatorURL": "http://prometheus.garden.internal:9090/graph?g0.expr=pg_up+%3D%3D+0",
    }


HOSTS = ("app1.garden.internal:9100", "db1.garden.internal:9100", "web2.garden.internal:9100")


def _seen(deliveries: list[Delivery], name: str, status: str, alerts: int) -> bool:
    """A delivery of group `name` in `status` counting `alerts` alerts (truncated ones included)."""
    for delivery in deliveries:
        data = delivery.json()
        count = len(data["alerts"]) + data.get("truncatedAlerts", 0)
        if (data["commonLabels"].get("alertname"), data["status"], count) == (name, status, alerts):
            return True
    return False


def run_scenario(max_alerts: int = 2) -> list[Delivery]:
    """Three disk alerts and one PostgreSQL alert fire; then the disk alerts resolve. Alertmanager
    may send a group more than once on the way (an alert joining after the first flush)."""
    token = "test-alert-token"
    with WebhookRecorder(token) as recorder, RealAlertmanager(recorder, token, max_alerts) as am:
        am.post_alerts([disk_alert(host) for host in HOSTS] + [postgres_alert()])
        recorder.wait_until(
            lambda seen: (
                _seen(seen, "GardenDiskSpaceLow", "firing", len(HOSTS))
                and _seen(seen, "GardenPostgresDown", "firing", 1)
            )
        )
        ended = datetime.now(UTC) - timedelta(seconds=1)
        am.post_alerts([disk_alert(host, ends_at=ended) for host in HOSTS])
        return recorder.wait_until(lambda seen: _seen(seen, "GardenDiskSpaceLow", "resolved", len(HOSTS)))


def main(outdir: str) -> None:
    deliveries = run_scenario()
    by_name: dict[str, bytes] = {}
    for delivery in deliveries:
        payload = delivery.json()
        name = f"{payload['commonLabels']['alertname']}-{payload['status']}"
        by_name[name] = delivery.body
    for name, body in by_name.items():
        pretty = json.dumps(json.loads(body), indent=2, ensure_ascii=False) + "\n"
        (Path(outdir) / f"{name}.json").write_text(pretty, encoding="utf-8")
        print(name)


if __name__ == "__main__":
    main(sys.argv[1])
