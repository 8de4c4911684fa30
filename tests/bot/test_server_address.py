"""`gardenbot serve` listens where told: --host/--port, GARDENBOT_HOST/PORT, `server:`; else loopback."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.serve import AddressFrom, BotServer, serving

OTHER_LOOPBACK = "127.0.0.2"  # also loopback on Linux, but a different address to listen on


def listens(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def port_of(server: BotServer) -> int:
    port = urlsplit(server.base_url).port
    assert port is not None
    return port


@pytest.mark.parametrize("address_from", ["env", "yaml"])
def test_serve_listens_on_the_configured_host_and_port(tmp_path: Path, address_from: AddressFrom) -> None:
    with serving(tmp_path, host=OTHER_LOOPBACK, address_from=address_from) as server:
        port = port_of(server)
        healthz = httpx.get(f"http://{OTHER_LOOPBACK}:{port}/healthz", timeout=5)

        assert healthz.status_code == 200
        assert not listens("127.0.0.1", port)  # that address only, not every interface


def test_serve_listens_on_loopback_only_when_no_host_is_configured(tmp_path: Path) -> None:
    with serving(tmp_path, address_from="port-only") as server:
        port = port_of(server)

        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        assert not listens(OTHER_LOOPBACK, port)  # 0.0.0.0 would answer here too


def test_the_command_line_wins_over_the_environment_and_the_yaml(tmp_path: Path) -> None:
    with serving(
        tmp_path,
        host=OTHER_LOOPBACK,
        address_from="flags",
        extra_env={"GARDENBOT_HOST": "127.0.0.3", "PORT": "1"},
        config={"server": {"host": "127.0.0.4", "port": 2}},
    ) as server:
        port = port_of(server)

        assert listens(OTHER_LOOPBACK, port)
        assert not listens("127.0.0.3", port) and not listens("127.0.0.4", port)
