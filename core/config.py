"""Configuration: environment variables over a YAML file (GARDENBOT_CONFIG, default ./gardenbot.yml).

A bad value or an unknown key stops start-up with one line naming the key and what was expected.
"""

from __future__ import annotations

import os
import re
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from core.errors import ConfigError

SLACK_API_DEFAULT = "https://slack.com/api/"
USER_OR_GROUP_ID = re.compile(r"^[UWS][A-Z0-9]{2,}$")
CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")
CRON_FIELD = re.compile(r"^[\d*/,\-A-Za-z?]+$")

# Environment variable -> dotted path in the settings.
ENV_KEYS: dict[str, str] = {
    "SLACK_BOT_TOKEN": "slack.bot_token",
    "SLACK_SIGNING_SECRET": "slack.signing_secret",
    "SLACK_APP_TOKEN": "slack.app_token",
    "SLACK_API_URL": "slack.api_url",
    "GARDENBOT_ALERT_TOKEN": "alert_token",
    "DATABASE_URL": "database_url",
    "REDIS_URL": "redis_url",
    "GARDEN_DATABASE_URL": "target.database_url",
    "GARDEN_REDIS_URL": "target.redis_url",
    "GARDEN_API_URL": "target.api_url",
    "GARDEN_MONITOR_DATABASE_URL": "target.monitor_database_url",
    "GARDENBOT_SMTP_URL": "mail.url",
    "GARDENBOT_BACKUP_DIR": "backup.dir",
    "GARDENBOT_PG_BIN_DIR": "pg_bin_dir",
    "GARDENBOT_LOCALE": "locale",
    "GARDENBOT_TIMEZONE": "timezone",
    "GARDENBOT_STATE_DIR": "state_dir",
    "GARDENBOT_REDIS_PREFIX": "redis_prefix",
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_ids(ids: list[str], pattern: re.Pattern[str], what: str) -> list[str]:
    for value in ids:
        if not pattern.match(value):
            raise ValueError(f"{value!r} is not a Slack {what} ID")
    return ids


class Roles(_Section):
    admin: list[str] = Field(default_factory=list)
    operator: list[str] = Field(default_factory=list)
    viewer: list[str] = Field(default_factory=list)

    @field_validator("admin", "operator", "viewer")
    @classmethod
    def _ids(cls, v: list[str]) -> list[str]:
        return _check_ids(v, USER_OR_GROUP_ID, "user (U…/W…) or user-group (S…)")


class Channels(_Section):
    ops: str | None = None
    alerts: str | None = None
    incidents: str | None = None
    reports: str | None = None

    @field_validator("ops", "alerts", "incidents", "reports")
    @classmethod
    def _channel(cls, v: str | None) -> str | None:
        if v is not None and not CHANNEL_ID.match(v):
            raise ValueError(f"{v!r} is not a Slack channel ID (C…)")
        return v


class Target(_Section):
    database_url: SecretStr | None = None
    monitor_database_url: SecretStr | None = None  # a pg_monitor login for `db stats` and health reads
    redis_url: SecretStr | None = None
    api_url: str | None = None

    @field_validator("api_url")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://", v):
            raise ValueError("an http:// or https:// URL")
        return v.rstrip("/") if v else v


class Backup(_Section):
    dir: Path | None = None
    retention_days: int = Field(default=30, ge=1, le=3650)


class Slack(_Section):
    bot_token: SecretStr | None = None
    signing_secret: SecretStr | None = None
    app_token: SecretStr | None = None
    api_url: str = SLACK_API_DEFAULT

    @field_validator("api_url")
    @classmethod
    def _slash(cls, v: str) -> str:
        if not re.match(r"^https?://", v):
            raise ValueError("an http:// or https:// URL")
        return v if v.endswith("/") else v + "/"


class Escalation(_Section):
    level1: list[str] = Field(default_factory=list)
    level2: list[str] = Field(default_factory=list)
    level3: list[str] = Field(default_factory=list)

    @field_validator("level1", "level2", "level3")
    @classmethod
    def _ids(cls, v: list[str]) -> list[str]:
        return _check_ids(v, USER_OR_GROUP_ID, "user or user-group")


class Logs(_Section):
    auth: Path | None = None
    api: Path | None = None
    error: Path | None = None
    # `security`: the manual's thresholds (more than 5 failures in 5 minutes, more than 100 a minute)
    failed_logins_max: int = Field(default=5, ge=1)
    failed_logins_minutes: int = Field(default=5, ge=1, le=1440)
    requests_per_minute_max: int = Field(default=100, ge=1)
    error_rate_target_percent: float = Field(default=0.1, gt=0, le=100)  # `logs`: the 5xx KPI


class Mail(_Section):
    url: SecretStr | None = None  # smtp://[user:password@]host:port or smtps://…
    sender: str | None = Field(default=None, alias="from")

    @field_validator("url")
    @classmethod
    def _smtp(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not re.match(r"^smtps?://[^/\s]+", v.get_secret_value()):
            raise ValueError("an smtp:// or smtps:// URL")
        return v


class Health(_Section):
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    disk_warn_percent: int = Field(default=80, ge=1, le=100)
    disk_fail_percent: int = Field(default=90, ge=1, le=100)
    memory_warn_percent: int = Field(default=85, ge=1, le=100)
    memory_fail_percent: int = Field(default=95, ge=1, le=100)
    backup_warn_hours: int = Field(default=26, ge=1)
    backup_fail_hours: int = Field(default=50, ge=1)


SCHEDULE_NAMES = (
    "morning_health",
    "nightly_maintenance",
    "nightly_backup",
    "backup_verification",
    "weekly_report",
    "health_probe",
    "tls_check",
    "incident_escalation",
)


class Settings(BaseSettings):
    """Everything the bot is told. Secrets are SecretStr so they never print."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    slack: Slack = Slack()
    alert_token: SecretStr | None = None
    database_url: SecretStr | None = None
    redis_url: SecretStr | None = None
    redis_prefix: str = Field(default="gardenbot:", pattern=r"^[A-Za-z0-9:_\-]{1,64}$")
    target: Target = Target()
    backup: Backup = Backup()
    pg_bin_dir: Path | None = None
    locale: Literal["en", "ja"] = "en"
    timezone: str = "Asia/Tokyo"
    state_dir: Path = Field(default_factory=lambda: default_state_dir())
    roles: Roles = Roles()
    approvers: list[str] = Field(default_factory=list)
    default_role: Literal["none", "viewer"] = "none"
    channels: Channels = Channels()
    approval_ttl_minutes: int = Field(default=15, ge=1, le=1440)
    escalation: Escalation = Escalation()
    schedules: dict[str, str] = Field(default_factory=dict)
    logs: Logs = Logs()
    mail: Mail = Mail()
    tls_hosts: list[str] = Field(default_factory=list)
    health: Health = Health()

    @field_validator("approvers")
    @classmethod
    def _approver_ids(cls, v: list[str]) -> list[str]:
        return _check_ids(v, USER_OR_GROUP_ID, "user or user-group")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"an IANA time zone such as Asia/Tokyo, not {v!r}") from None
        return v

    @field_validator("schedules")
    @classmethod
    def _crons(cls, v: dict[str, str]) -> dict[str, str]:
        for name, cron in v.items():
            if name not in SCHEDULE_NAMES:
                raise ValueError(f"unknown schedule {name!r}; known: {', '.join(SCHEDULE_NAMES)}")
            parts = cron.split()
            if len(parts) != 5 or not all(CRON_FIELD.match(p) for p in parts):
                raise ValueError(f"schedules.{name}: a five-field cron expression, not {cron!r}")
        return v

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def backup_dir(self) -> Path:
        return self.backup.dir or self.state_dir / "backups"

    @property
    def spool_path(self) -> Path:
        return self.state_dir / "audit-spool.jsonl"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only what load_settings() merged from YAML and the fixed environment names.
        return (init_settings,)


def default_state_dir() -> Path:
    """Root keeps state in /var/lib: the embedded PostgreSQL opens the parents of its data dir to its user."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/gardenbot")
    return Path.home() / ".local" / "state" / "gardenbot"


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[leaf] = value


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError("GARDENBOT_CONFIG", f"cannot read {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(str(path), f"valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), "a mapping of keys at the top level")
    return data


def load_settings(env: Mapping[str, str] | None = None, config_path: Path | None = None) -> Settings:
    """Read YAML, lay the environment over it, validate; raise ConfigError naming the key."""
    env = os.environ if env is None else env
    path = config_path or Path(env.get("GARDENBOT_CONFIG", "gardenbot.yml"))
    tree = _read_yaml(path)
    from_env: dict[str, str] = {}
    for name, dotted in ENV_KEYS.items():
        value = env.get(name)
        if value is not None and value != "":
            _set_path(tree, dotted, value)
            from_env[dotted] = name
    try:
        return Settings(**tree)
    except ValidationError as exc:
        first = exc.errors()[0]
        dotted = ".".join(str(p) for p in first["loc"])
        key = next(
            (f"{env_name} ({d})" for d, env_name in from_env.items() if dotted.startswith(d)),
            dotted,
        )
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown key"
        raise ConfigError(key, message) from None
