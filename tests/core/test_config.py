"""Configuration: environment over YAML; a bad key or value stops start-up with one line naming it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from commands.policy import Policy
from core.config import load_settings
from core.errors import ConfigError
from tests.support.runtime import REPO_ROOT, run_gardenbot

BASE: dict[str, Any] = {
    "roles": {"admin": ["U0ADMIN"], "operator": ["U0OPS", "S0ONCALL"], "viewer": ["U0INTERN"]},
    "approvers": ["U0LEAD", "U0ADMIN"],
    "channels": {"ops": "C0OPS", "alerts": "C0ALERTS"},
    "target": {"api_url": "https://yaml.example.com", "redis_url": "redis://yaml:6379/0"},
    "locale": "en",
    "timezone": "Asia/Tokyo",
    "schedules": {"morning_health": "0 9 * * *"},
}


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "gardenbot.yml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def with_(**changes: Any) -> dict[str, Any]:
    data = {**BASE}
    data.update(changes)
    return data


def test_yaml_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    env = {"GARDEN_API_URL": "http://env.example.com/", "GARDENBOT_LOCALE": "ja", "GARDENBOT_TIMEZONE": "UTC"}

    from_yaml = load_settings({}, path)
    from_env = load_settings(env, path)

    assert from_yaml.target.api_url == "https://yaml.example.com"
    assert from_yaml.locale == "en"
    assert from_yaml.roles.operator == ["U0OPS", "S0ONCALL"]
    assert from_env.target.api_url == "http://env.example.com"
    assert (from_env.locale, from_env.timezone) == ("ja", "UTC")
    # What the environment did not name still comes from the YAML.
    assert from_env.target.redis_url is not None
    assert from_env.target.redis_url.get_secret_value() == "redis://yaml:6379/0"


def test_schedules_probes_and_prometheus_are_configured_as_spec_names_them(tmp_path: Path) -> None:
    data = with_(schedules={"probe": "*/2 * * * *", "monthly_report": "off"}, probes=["/health", "/api/ping"])
    env = {"GARDEN_PROMETHEUS_URL": "http://prometheus:9090/"}

    settings = load_settings(env, write(tmp_path, data))

    assert settings.schedules == {"probe": "*/2 * * * *", "monthly_report": "off"}
    assert settings.probes == ["/health", "/api/ping"]
    assert settings.target.prometheus_url == "http://prometheus:9090"
    assert load_settings({}, tmp_path / "absent.yml").probes == ["/health"]


def test_a_missing_file_gives_the_defaults(tmp_path: Path) -> None:
    settings = load_settings({}, tmp_path / "absent.yml")

    assert (settings.locale, settings.timezone, settings.approval_ttl_minutes) == ("en", "Asia/Tokyo", 15)
    assert settings.default_role == "none"
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 3000)  # behind a reverse proxy
    assert settings.console.users == {}
    assert (settings.slack.team_id, settings.slack.enterprise_id) == (None, None)


def test_the_server_address_console_users_and_workspace_come_from_yaml_and_env(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        with_(
            server={"host": "10.0.0.5", "port": 8080},
            console={"users": {"alice": "U0ADMIN", "bob": "U0LEAD"}},
            slack={"team_id": "T0YAML"},
        ),
    )
    env = {
        "GARDENBOT_HOST": "0.0.0.0",
        "PORT": "9000",
        "SLACK_TEAM_ID": "T0ENV",
        "SLACK_ENTERPRISE_ID": "E0ENV",
    }

    from_yaml = load_settings({}, path)
    from_env = load_settings(env, path)

    assert (from_yaml.server.host, from_yaml.server.port, from_yaml.slack.team_id) == (
        "10.0.0.5",
        8080,
        "T0YAML",
    )
    assert from_yaml.console.users == {"alice": "U0ADMIN", "bob": "U0LEAD"}
    assert (from_env.server.host, from_env.server.port) == ("0.0.0.0", 9000)
    assert (from_env.slack.team_id, from_env.slack.enterprise_id) == ("T0ENV", "E0ENV")


@pytest.mark.parametrize(
    ("data", "env", "key"),
    [
        pytest.param(with_(colour="green"), {}, "colour", id="unknown-top-level-key"),
        pytest.param(with_(channels={"opps": "C0OPS"}), {}, "channels.opps", id="unknown-nested-key"),
        pytest.param(with_(locale="fr"), {}, "locale", id="bad-locale-yaml"),
        pytest.param(BASE, {"GARDENBOT_LOCALE": "fr"}, "GARDENBOT_LOCALE", id="bad-locale-env"),
        pytest.param(with_(timezone="Mars/Olympus"), {}, "timezone", id="bad-timezone"),
        pytest.param(BASE, {"GARDENBOT_TIMEZONE": "JST+9"}, "GARDENBOT_TIMEZONE", id="bad-timezone-env"),
        pytest.param(with_(schedules={"morning_health": "0 9 * *"}), {}, "schedules", id="cron-4-fields"),
        pytest.param(with_(schedules={"morning_health": "every day"}), {}, "schedules", id="cron-words"),
        pytest.param(with_(schedules={"coffee": "0 9 * * *"}), {}, "schedules", id="unknown-schedule"),
        pytest.param(with_(probes=["health"]), {}, "probes", id="probe-not-a-path"),
        pytest.param(with_(probes=["/a b"]), {}, "probes", id="probe-with-space"),
        pytest.param(
            BASE, {"GARDEN_PROMETHEUS_URL": "prom:9090"}, "GARDEN_PROMETHEUS_URL", id="bad-prom-url"
        ),
        pytest.param(with_(roles={"admin": ["admin"]}), {}, "roles.admin", id="bad-user-id"),
        pytest.param(with_(approvers=["@lead"]), {}, "approvers", id="bad-approver-id"),
        pytest.param(with_(channels={"ops": "#ops"}), {}, "channels.ops", id="bad-channel-id"),
        pytest.param(with_(approval_ttl_minutes=0), {}, "approval_ttl_minutes", id="ttl-zero"),
        pytest.param(with_(default_role="admin"), {}, "default_role", id="bad-default-role"),
        pytest.param(BASE, {"GARDEN_API_URL": "ftp://x"}, "GARDEN_API_URL", id="bad-api-url-env"),
        pytest.param(BASE, {"GARDENBOT_REDIS_PREFIX": "a b"}, "GARDENBOT_REDIS_PREFIX", id="bad-prefix"),
        pytest.param(
            with_(thresholds={"disk_percent": 101}), {}, "thresholds.disk_percent", id="disk-over-100"
        ),
        pytest.param(with_(thresholds={"tls_day": 30}), {}, "thresholds.tls_day", id="unknown-threshold"),
        pytest.param(
            with_(console={"users": {"alice": "S0ONCALL"}}), {}, "console.users", id="console-group"
        ),
        pytest.param(with_(console={"users": {"a b": "U0ADMIN"}}), {}, "console.users", id="console-login"),
        pytest.param(BASE, {"SLACK_TEAM_ID": "garden"}, "SLACK_TEAM_ID", id="bad-team-id"),
        pytest.param(BASE, {"SLACK_ENTERPRISE_ID": "T0X"}, "SLACK_ENTERPRISE_ID", id="bad-enterprise-id"),
        pytest.param(BASE, {"PORT": "http"}, "PORT", id="bad-port"),
        pytest.param(with_(server={"port": 70000}), {}, "server.port", id="port-out-of-range"),
        pytest.param(
            with_(escalation={"level4": ["C0CHAN"]}), {}, "escalation.level4.0.slack", id="level-channel-id"
        ),
        pytest.param(
            with_(escalation={"level2": [{"name": "A", "email": "nope"}]}),
            {},
            "escalation.level2.0.email",
            id="contact-bad-email",
        ),
        pytest.param(with_(escalation={"level5": ["U0X"]}), {}, "escalation.level5", id="level-5"),
        pytest.param(with_(incidents={"notify": {"P5": ["level1"]}}), {}, "incidents.notify", id="notify-p5"),
        pytest.param(
            with_(incidents={"notify": {"P1": ["level9"]}}), {}, "incidents.notify.P1", id="notify-level9"
        ),
        pytest.param(
            with_(incidents={"respond_minutes": {"P2": 0}}), {}, "incidents.respond_minutes", id="respond-0"
        ),
        pytest.param(with_(incidents={"mail_to": ["ops"]}), {}, "incidents.mail_to", id="mail-to"),
        pytest.param(with_(incidents={"page_to": "x"}), {}, "incidents.page_to", id="unknown-incidents-key"),
        pytest.param(with_(audit_unkeyed_until="f" * 64), {}, "audit_unkeyed_until", id="pin-without-id"),
        pytest.param(
            with_(audit_unkeyed_until="12:'; DROP TABLE audit_log;--"),
            {},
            "audit_unkeyed_until",
            id="pin-not-hex",
        ),
    ],
)
def test_a_bad_key_or_value_is_named_in_one_line(
    tmp_path: Path, data: dict[str, Any], env: dict[str, str], key: str
) -> None:
    path = write(tmp_path, data)

    with pytest.raises(ConfigError) as caught:
        load_settings(env, path)

    message = str(caught.value)
    assert caught.value.key.startswith(key), message
    assert message.startswith(f"configuration error: {key}")
    assert "\n" not in message
    assert caught.value.expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        pytest.param("- just\n- a list\n", "mapping", id="non-mapping"),
        pytest.param("roles: [U0ADMIN\n", "valid YAML", id="invalid-yaml"),
        pytest.param("roles:\n  admin: [U0ADMIN]\n\tviewer: []\n", "valid YAML at line", id="tab"),
    ],
)
def test_a_bad_file_is_named_in_one_line(tmp_path: Path, text: str, says: str) -> None:
    path = write(tmp_path, text)

    with pytest.raises(ConfigError) as caught:
        load_settings({}, path)

    assert caught.value.key == str(path)
    assert says in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("yaml_text", "env", "key"),
    [
        pytest.param("timezone: Mars/Olympus\n", {}, "timezone", id="bad-timezone"),
        pytest.param("", {"GARDENBOT_LOCALE": "fr"}, "GARDENBOT_LOCALE", id="bad-locale-env"),
        pytest.param("- a list\n", {}, "gardenbot.yml", id="non-mapping"),
    ],
)
def test_the_cli_stops_with_exit_2_and_one_line(
    tmp_path: Path, yaml_text: str, env: dict[str, str], key: str
) -> None:
    path = write(tmp_path, yaml_text)

    result = run_gardenbot({"GARDENBOT_CONFIG": str(path), **env}, "migrate", timeout=30)

    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert key in lines[0]
    assert result.stdout == ""


def test_thresholds_default_to_the_manuals_numbers_and_each_key_changes_one(tmp_path: Path) -> None:
    defaults = load_settings({}, write(tmp_path, BASE)).thresholds
    changed = load_settings(
        {}, write(tmp_path, with_(thresholds={"disk_percent": 70, "tls_days": 14, "api_ms": 500}))
    ).thresholds

    assert defaults.model_dump() == {
        "disk_percent": 85,
        "memory_percent": 90,
        "api_ms": 2000,
        "tls_days": 30,
        "backup_age_hours": 26,
    }
    assert changed.model_dump() == {
        **defaults.model_dump(),
        "disk_percent": 70,
        "tls_days": 14,
        "api_ms": 500,
    }


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("disk_warn_percent", "thresholds.disk_percent"),
        ("memory_warn_percent", "thresholds.memory_percent"),
        ("backup_warn_hours", "thresholds.backup_age_hours"),
    ],
)
def test_a_warning_level_left_under_health_says_where_it_moved(tmp_path: Path, old: str, new: str) -> None:
    path = write(tmp_path, with_(health={"timeout_seconds": 2, old: 80}))

    with pytest.raises(ConfigError) as caught:
        load_settings({}, path)

    assert caught.value.key == "health"
    assert f"health.{old} is now {new}" in str(caught.value)


def test_the_health_keys_for_timeouts_and_failures_still_load(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        with_(health={"timeout_seconds": 2, "disk_fail_percent": 100, "memory_fail_percent": 100}),
    )

    health = load_settings({}, path).health

    assert (health.timeout_seconds, health.disk_fail_percent, health.memory_fail_percent) == (2, 100, 100)
    assert (health.backup_fail_hours, health.tls_fail_days) == (50, 7)


def test_the_shipped_example_loads() -> None:
    example = REPO_ROOT / "gardenbot.example.yml"
    if not example.exists():
        pytest.skip("gardenbot.example.yml is not written yet")

    settings = load_settings({}, example)

    assert settings.roles.admin
    assert settings.approvers
    assert Policy(settings).approvers_without_role() == []  # approver is a flag on operator or admin
    assert settings.console.users


def test_log_thresholds_mail_and_the_monitor_login_are_read(tmp_path: Path) -> None:
    path = tmp_path / "gardenbot.yml"
    path.write_text(
        "logs: {error: /var/log/garden-dx/error.log, requests_per_minute_max: 300}\n"
        "mail: {url: 'smtp://bot:s3cret@mail.example.com:587', from: gardenbot@example.com}\n"
        "target: {monitor_database_url: 'postgresql://monitor:pw@db/garden_dx'}\n"
    )

    settings = load_settings({"GARDENBOT_SMTP_URL": "smtps://mail2.example.com"}, path)

    assert settings.logs.error == Path("/var/log/garden-dx/error.log")
    assert (settings.logs.requests_per_minute_max, settings.logs.failed_logins_max) == (300, 5)
    assert settings.logs.failed_logins_minutes == 5 and settings.logs.error_rate_target_percent == 0.1
    assert (
        settings.mail.url is not None and settings.mail.url.get_secret_value() == "smtps://mail2.example.com"
    )
    assert settings.mail.sender == "gardenbot@example.com"
    assert settings.target.monitor_database_url is not None
    assert "s3cret" not in repr(settings) and "pw@" not in repr(settings)


SPEC_ESCALATION = """
escalation:
  level1: [U0OPS]
  level2: [{name: System admin, slack: U0ADMIN, email: sysadmin@example.com, phone: "090-0000-0000"}]
  level3: [U0LEAD]
  level4: [U0ARCH]
incidents:
  notify: {P1: [level1, level2, level3], P2: [level1, level2], P3: [level1], P4: [level1]}
  respond_minutes: {P1: 15, P2: 60, P3: 240, P4: 1440}
  unresolved_minutes: 30
  unresolved_to: level3
  mail_to: [admin@example.com]
"""


def test_the_specs_escalation_and_incidents_sections_load_as_written(tmp_path: Path) -> None:
    settings = load_settings({}, write(tmp_path, SPEC_ESCALATION))

    assert [c.slack for c in settings.escalation.contacts(1)] == ["U0OPS"]
    admin = settings.escalation.contacts(2)[0]
    assert (admin.name, admin.slack, admin.email, admin.phone) == (
        "System admin",
        "U0ADMIN",
        "sysadmin@example.com",
        "090-0000-0000",
    )
    assert [c.slack for c in settings.escalation.contacts(4)] == ["U0ARCH"]
    assert settings.incidents.notify["P2"] == ["level1", "level2"]
    assert settings.incidents.respond_minutes == {"P1": 15, "P2": 60, "P3": 240, "P4": 1440}
    assert (settings.incidents.unresolved_minutes, settings.incidents.unresolved_to) == (30, "level3")
    assert settings.incidents.mail_to == ["admin@example.com"]
    assert settings.incidents.create_channels is False


def test_incident_rules_default_to_the_manual_and_a_partial_map_keeps_the_rest(tmp_path: Path) -> None:
    defaults = load_settings({}, write(tmp_path, "{}")).incidents
    partial = load_settings({}, write(tmp_path, "incidents: {respond_minutes: {P1: 5}, notify: {P4: []}}"))

    assert defaults.notify["P1"] == ["level1", "level2", "level3"]
    assert defaults.respond_minutes["P4"] == 1440
    assert partial.incidents.respond_minutes == {"P1": 5, "P2": 60, "P3": 240, "P4": 1440}
    assert partial.incidents.notify["P4"] == [] and partial.incidents.notify["P3"] == ["level1"]


def test_a_mail_url_that_is_not_smtp_names_its_key(tmp_path: Path) -> None:
    path = tmp_path / "gardenbot.yml"
    path.write_text("mail: {url: 'http://mail.example.com'}\n")

    with pytest.raises(ConfigError) as caught:
        load_settings({}, path)

    assert caught.value.key == "mail.url"
