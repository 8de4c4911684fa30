"""deploy/systemd and deploy/nginx: the production layout on a plain host.

`systemd-analyze verify` must print nothing (it only warns about unknown keys and bad values), and
`systemd-analyze security --offline` rates the unit's sandbox. `nginx -t` checks the site with the
locations snippet. Both tools come from Debian's `systemd` and `nginx` packages (scripts/test.sh).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.runtime import REPO_ROOT

UNIT = REPO_ROOT / "deploy" / "systemd" / "gardenbot.service"
NGINX_SITE = REPO_ROOT / "deploy" / "nginx" / "gardenbot.conf"
NGINX_LOCATIONS = REPO_ROOT / "deploy" / "nginx" / "gardenbot-locations.conf"
MAX_EXPOSURE = 2.0  # systemd-analyze security: "OK" is below 3.0


def tool(name: str, package: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        pytest.fail(f"{name} is missing: scripts/test.sh installs Debian's `{package}` package")
    return found


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def runnable_copy(tmp_path: Path, text: str) -> Path:
    """The unit with its binary replaced by /bin/true: verify checks that ExecStart exists."""
    copy = tmp_path / "gardenbot.service"
    copy.write_text(text.replace("/opt/gardenbot/bin/gardenbot", "/bin/true"), encoding="utf-8")
    return copy


def verify_unit(tmp_path: Path, text: str) -> str:
    analyze = tool("systemd-analyze", "systemd")
    result = subprocess.run(
        [analyze, "verify", str(runnable_copy(tmp_path, text))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    exit_note = "" if result.returncode == 0 else f" (exit {result.returncode})"
    return (result.stdout + result.stderr).strip() + exit_note


def test_systemd_accepts_every_line_of_the_unit(tmp_path: Path) -> None:
    assert verify_unit(tmp_path, UNIT.read_text(encoding="utf-8")) == ""


def test_systemd_verify_reports_a_misspelt_hardening_option(tmp_path: Path) -> None:
    """The check can fail: a misspelt option is ignored by systemd, so verify must say so."""
    text = UNIT.read_text(encoding="utf-8").replace("ProtectClock=yes", "ProtectClok=yes")
    assert "Unknown key" in verify_unit(tmp_path, text)


def test_the_unit_runs_gardenbot_serve_on_loopback_as_its_own_user() -> None:
    settings = unit_settings(UNIT.read_text(encoding="utf-8"))
    assert settings["ExecStart"] == ["/opt/gardenbot/bin/gardenbot serve"]
    assert settings["User"] == ["gardenbot"]
    env = dict(e.split("=", 1) for e in settings["Environment"])
    assert env["GARDENBOT_HOST"] == "127.0.0.1"
    assert settings["EnvironmentFile"] == ["/etc/gardenbot/gardenbot.env"]  # secrets, not in the unit
    assert settings["RestartPreventExitStatus"] == ["2"]  # a configuration error is not retried


def test_the_unit_uses_systemds_hardening_options() -> None:
    settings = unit_settings(UNIT.read_text(encoding="utf-8"))
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
        "CapabilityBoundingSet": "",
    }
    for key, value in expected.items():
        assert settings.get(key) == [value], key
    assert "@system-service" in settings["SystemCallFilter"]


def test_systemd_rates_the_units_exposure_as_low(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze", "systemd")
    copy = runnable_copy(tmp_path, UNIT.read_text(encoding="utf-8"))
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout + result.stderr)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *(tool("openssl", "openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=garden-ops.example.com", "-keyout", str(key), "-out", str(cert)),
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return cert, key


def nginx_test(tmp_path: Path, locations: str) -> subprocess.CompletedProcess[str]:
    """`nginx -t` of the site as shipped, with the snippet and certificate paths moved to tmp_path."""
    cert, key = self_signed_certificate(tmp_path)
    (tmp_path / "locations.conf").write_text(locations, encoding="utf-8")
    site = NGINX_SITE.read_text(encoding="utf-8")
    site = site.replace("/etc/nginx/snippets/gardenbot-locations.conf", str(tmp_path / "locations.conf"))
    site = re.sub(r"ssl_certificate\s+\S+;", f"ssl_certificate {cert};", site)
    site = re.sub(r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {key};", site)
    site = site.replace("/var/log/nginx/", f"{tmp_path}/")
    (tmp_path / "site.conf").write_text(site, encoding="utf-8")
    main = (
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {tmp_path}/body;\n"
        f"  proxy_temp_path {tmp_path}/proxy;\n  include {tmp_path}/site.conf;\n}}\n"
    )
    (tmp_path / "nginx.conf").write_text(main, encoding="utf-8")
    return subprocess.run(
        [tool("nginx", "nginx"), "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_nginx_accepts_the_site_and_its_locations(tmp_path: Path) -> None:
    result = nginx_test(tmp_path, NGINX_LOCATIONS.read_text(encoding="utf-8"))
    assert result.returncode == 0, result.stderr


def test_nginx_rejects_a_broken_location(tmp_path: Path) -> None:
    """The check can fail: a directive nginx does not know stops `nginx -t`."""
    broken = NGINX_LOCATIONS.read_text(encoding="utf-8").replace("proxy_read_timeout 10s;", "proxy_raed 10s;")
    assert nginx_test(tmp_path, broken).returncode != 0


def test_nginx_publishes_only_slack_events_and_the_alertmanager_webhook() -> None:
    text = NGINX_LOCATIONS.read_text(encoding="utf-8")
    locations = re.findall(r"^location\s+(=\s*)?(\S+)\s*\{", text, flags=re.MULTILINE)
    assert {path for _, path in locations} == {"/slack/events", "/alerts/alertmanager", "/"}
    catch_all = text.split("location / {", 1)[1].split("}", 1)[0]
    assert "return 404" in catch_all
    assert text.count("proxy_pass http://gardenbot_upstream;") == 2
    assert "server 127.0.0.1:3000" in NGINX_SITE.read_text(encoding="utf-8")
