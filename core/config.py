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
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from core.errors import ConfigError

SLACK_API_DEFAULT = "https://slack.com/api/"
USER_OR_GROUP_ID = re.compile(r"^[UWS][A-Z0-9]{2,}$")
CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")
USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
TEAM_ID = re.compile(r"^T[A-Z0-9]{2,}$")
ENTERPRISE_ID = re.compile(r"^E[A-Z0-9]{2,}$")
OS_LOGIN = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.@\-]{0,63}\$?$")  # POSIX-ish user names
CRON_FIELD = re.compile(r"^[\d*/,\-A-Za-z?]+$")
AUDIT_KEY_MIN_BYTES = 32

# Environment variable -> dotted path in the settings.
ENV_KEYS: dict[str, str] = {
    "SLACK_BOT_TOKEN": "slack.bot_token",
    "SLACK_SIGNING_SECRET": "slack.signing_secret",
    "SLACK_APP_TOKEN": "slack.app_token",
    "SLACK_API_URL": "slack.api_url",
    "SLACK_TEAM_ID": "slack.team_id",
    "SLACK_ENTERPRISE_ID": "slack.enterprise_id",
    "GARDENBOT_ALERT_TOKEN": "alert_token",
    "GARDENBOT_AUDIT_KEY": "audit_key",
    "DATABASE_URL": "database_url",
    "REDIS_URL": "redis_url",
    "GARDEN_DATABASE_URL": "target.database_url",
    "GARDEN_REDIS_URL": "target.redis_url",
    "GARDEN_API_URL": "target.api_url",
    "GARDEN_PROMETHEUS_URL": "target.prometheus_url",
    "GARDEN_MONITOR_DATABASE_URL": "target.monitor_database_url",
    "GARDENBOT_SMTP_URL": "mail.url",
    "GARDENBOT_INVENTORY": "hosts.inventory",
    "GARDENBOT_BACKUP_DIR": "backup.dir",
    "GARDENBOT_PG_BIN_DIR": "pg_bin_dir",
    "GARDENBOT_LOCALE": "locale",
    "GARDENBOT_TIMEZONE": "timezone",
    "GARDENBOT_STATE_DIR": "state_dir",
    "GARDENBOT_REDIS_PREFIX": "redis_prefix",
    "GARDENBOT_HOST": "server.host",
    "PORT": "server.port",
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


RoleName = Literal["admin", "operator", "viewer", "none"]


class SystemActors(_Section):
    """The roles of the bot's own actors, which are authorised and audited under these names."""

    scheduler: RoleName = "admin"  # the role scheduled runs act with (a nightly backup needs operator)
    webhook: RoleName = "operator"  # the role the Alertmanager webhook acts with


SYSTEM_ACTORS = tuple(SystemActors.model_fields)  # ("scheduler", "webhook")
CHANNEL_KEYS = tuple(Channels.model_fields)  # ("ops", "alerts", "incidents", "reports")


class Target(_Section):
    database_url: SecretStr | None = None
    monitor_database_url: SecretStr | None = None  # a pg_monitor login for `db stats` and health reads
    redis_url: SecretStr | None = None
    api_url: str | None = None
    # Prometheus scraping the Garden DX hosts (node_exporter) and API: `health` then shows every
    # host's disk and memory and the API's 5xx ratio, read through its HTTP API.
    prometheus_url: str | None = None

    @field_validator("api_url", "prometheus_url")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://", v):
            raise ValueError("an http:// or https:// URL")
        return v.rstrip("/") if v else v


class Backup(_Section):
    dir: Path | None = None
    retention_days: int = Field(default=30, ge=1, le=3650)
    files_retention_days: int = Field(
        default=90,
        ge=1,
        le=3650,
        description=(
            "Archives of the application's files (`backup files`) older than this are deleted on their"
            " host after each `backup files` (each host keeps its newest good archive)."
        ),
    )
    # pg_dump waits this long for a table another session holds locked, then the backup fails.
    lock_wait_timeout_seconds: float = Field(default=60, gt=0, le=3600)
    # A backup (dump and check) still running after this long is abandoned.
    timeout_seconds: float = Field(default=7200, gt=0, le=86400)
    # After a restore's swap, how long the API may take to answer /health healthy again.
    restore_health_wait_seconds: float = Field(default=10, ge=0, le=600)
    # pg_dump's zlib level for a restore's safety backup: it runs while the restore waits for it,
    # and level 1 dumps about twice as fast as the default for a few percent more bytes.
    safety_compression: int = Field(default=1, ge=0, le=9)
    # pg_restore --jobs for `restore` and `backup verify`: "auto" sizes it to the target's cores.
    restore_jobs: Literal["auto"] | int = "auto"

    @field_validator("restore_jobs")
    @classmethod
    def _jobs(cls, v: Literal["auto"] | int) -> Literal["auto"] | int:
        if v != "auto" and not 1 <= int(v) <= 64:
            raise ValueError('"auto" or a number of jobs from 1 to 64')
        return v

    @property
    def configured_jobs(self) -> int | None:
        """The configured pg_restore --jobs, or None for auto."""
        return None if self.restore_jobs == "auto" else int(self.restore_jobs)


class Slack(_Section):
    bot_token: SecretStr | None = None
    signing_secret: SecretStr | None = None
    app_token: SecretStr | None = None
    api_url: str = SLACK_API_DEFAULT
    # This bot's workspace: requests from any other team or enterprise are refused.
    # Unset, they are learned from auth.test of the bot token at start-up.
    team_id: str | None = None
    enterprise_id: str | None = None

    @field_validator("api_url")
    @classmethod
    def _slash(cls, v: str) -> str:
        if not re.match(r"^https?://", v):
            raise ValueError("an http:// or https:// URL")
        return v if v.endswith("/") else v + "/"

    @field_validator("team_id")
    @classmethod
    def _team(cls, v: str | None) -> str | None:
        if v is not None and not TEAM_ID.match(v):
            raise ValueError(f"{v!r} is not a Slack team ID (T…)")
        return v

    @field_validator("enterprise_id")
    @classmethod
    def _enterprise(cls, v: str | None) -> str | None:
        if v is not None and not ENTERPRISE_ID.match(v):
            raise ValueError(f"{v!r} is not a Slack enterprise ID (E…)")
        return v


class ConsoleAccounts(_Section):
    """Who sits at the console: OS login -> the Slack user the console acts as."""

    users: dict[str, str] = Field(default_factory=dict)

    @field_validator("users")
    @classmethod
    def _logins(cls, v: dict[str, str]) -> dict[str, str]:
        for login, user in v.items():
            if not OS_LOGIN.match(login):
                raise ValueError(f"{login!r} is not an OS login name")
            if not USER_ID.match(user):
                raise ValueError(f"{login}: {user!r} is not a Slack user ID (U…/W…)")
        return v


class ServerAddress(_Section):
    """Where `gardenbot serve` listens: loopback by default, behind a reverse proxy."""

    host: str = Field(default="127.0.0.1", min_length=1, max_length=255)
    port: int = Field(default=3000, ge=1, le=65535)


EMAIL_ADDRESS = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
SEVERITIES = ("P1", "P2", "P3", "P4")
LEVEL_NAMES = ("level1", "level2", "level3", "level4")


def _check_email(value: str | None) -> str | None:
    if value is not None and not EMAIL_ADDRESS.match(value):
        raise ValueError(f"{value!r} is not an e-mail address")
    return value


class Contact(_Section):
    """One person of an escalation level, as in the manual's contacts.yml."""

    name: str = Field(min_length=1, max_length=100)
    slack: str | None = None
    email: str | None = None
    phone: str | None = Field(default=None, max_length=40)

    @field_validator("slack")
    @classmethod
    def _slack(cls, v: str | None) -> str | None:
        if v is not None and not USER_OR_GROUP_ID.match(v):
            raise ValueError(f"{v!r} is not a Slack user or user-group ID")
        return v

    @field_validator("email")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        return _check_email(v)


class Escalation(_Section):
    """Who each level is: Slack user/group IDs, or contacts {name, slack, email, phone}.

    A bare ID is kept as a contact named by the ID, so every level is a list of contacts.
    """

    level1: list[Contact] = Field(default_factory=list)  # operations on duty
    level2: list[Contact] = Field(default_factory=list)  # system administrator
    level3: list[Contact] = Field(default_factory=list)  # development lead
    level4: list[Contact] = Field(default_factory=list)  # architect

    @field_validator("level1", "level2", "level3", "level4", mode="before")
    @classmethod
    def _ids_as_contacts(cls, v: Any) -> Any:
        if not isinstance(v, list):
            return v
        return [{"name": e, "slack": e} if isinstance(e, str) else e for e in v]

    def contacts(self, level: int) -> list[Contact]:
        found: list[Contact] = getattr(self, f"level{level}", [])
        return found


LevelName = Literal["level1", "level2", "level3", "level4"]
Severity = Literal["P1", "P2", "P3", "P4"]
DEFAULT_NOTIFY: dict[Severity, list[LevelName]] = {
    "P1": ["level1", "level2", "level3"],
    "P2": ["level1", "level2"],
    "P3": ["level1"],
    "P4": ["level1"],
}
DEFAULT_RESPOND_MINUTES: dict[Severity, int] = {"P1": 15, "P2": 60, "P3": 240, "P4": 1440}


class Incidents(_Section):
    """Severity rules (the manual's defaults); a severity left out keeps its default."""

    # the levels paged when an incident of each severity is declared
    notify: dict[Severity, list[LevelName]] = Field(default_factory=lambda: dict(DEFAULT_NOTIFY))
    # minutes to acknowledge each severity before the next level is paged
    respond_minutes: dict[Severity, int] = Field(default_factory=lambda: dict(DEFAULT_RESPOND_MINUTES))
    unresolved_minutes: int = Field(default=30, ge=1, le=10080)  # still open this long: page unresolved_to
    unresolved_to: LevelName = "level3"  # the level paged for an incident still unresolved
    mail_to: list[str] = Field(default_factory=list)  # every P1/P2 notice is also mailed here
    create_channels: bool = False  # open an inc-<n>-<slug> channel and invite the paged people

    @field_validator("notify", mode="before")
    @classmethod
    def _notify_defaults(cls, v: Any) -> Any:
        return {**DEFAULT_NOTIFY, **v} if isinstance(v, dict) else v

    @field_validator("respond_minutes", mode="before")
    @classmethod
    def _respond_defaults(cls, v: Any) -> Any:
        return {**DEFAULT_RESPOND_MINUTES, **v} if isinstance(v, dict) else v

    @field_validator("respond_minutes")
    @classmethod
    def _positive(cls, v: dict[Severity, int]) -> dict[Severity, int]:
        for severity, minutes in v.items():
            if not 1 <= minutes <= 10080:
                raise ValueError(f"{severity}: minutes from 1 to 10080, not {minutes}")
        return v

    @field_validator("mail_to")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        for address in v:
            _check_email(address)
        return v


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


GARDEN_VAR = re.compile(r"^garden_[a-z0-9_]{1,60}$")


class HostVars(BaseModel):
    """The playbooks' variables (docs/hosts.md); any other `garden_*` variable may be set too."""

    model_config = ConfigDict(extra="allow", frozen=True)

    garden_root: str = "/opt/garden-dx"  # git checkout of the application; its origin has the releases
    # the services the playbooks look after (`service restart <name>` takes one of these)
    garden_services: list[str] = Field(default_factory=lambda: ["garden-backend", "garden-frontend"])
    # how services are run: systemd units, the docker compose stack, or supervisord programs
    garden_service_manager: Literal["systemd", "compose", "supervisor"] = "systemd"
    garden_health_url: str = "http://localhost:8000/health"  # asked on each host by the health gate

    @model_validator(mode="after")
    def _garden_names(self) -> HostVars:
        for name in self.model_extra or {}:
            if not GARDEN_VAR.match(name):
                raise ValueError(f"{name!r}: the playbooks' variables are named garden_…")
        return self


class Hosts(_Section):
    """The Garden DX servers, reached through Ansible (docs/hosts.md)."""

    # an Ansible inventory with groups garden_app and garden_db; unset: no host commands
    inventory: Path | None = None
    vars: HostVars = HostVars()  # handed to every playbook as extra variables; never secrets


class Thresholds(_Section):
    """The manual's warning levels: the one place a health check learns when to warn."""

    disk_percent: int = Field(default=85, ge=1, le=100)
    memory_percent: int = Field(default=90, ge=1, le=100)
    api_ms: int = Field(default=2000, ge=1)
    tls_days: int = Field(default=30, ge=0)
    backup_age_hours: int = Field(default=26, ge=1)


# Warning levels that lived under `health` before `thresholds` existed: where each went.
MOVED_TO_THRESHOLDS = {
    "disk_warn_percent": "thresholds.disk_percent",
    "memory_warn_percent": "thresholds.memory_percent",
    "backup_warn_hours": "thresholds.backup_age_hours",
}


class Health(_Section):
    """How long each check may take and where a warning becomes a failure (warnings: `thresholds`)."""

    timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    disk_fail_percent: int = Field(default=90, ge=1, le=100)
    memory_fail_percent: int = Field(default=95, ge=1, le=100)
    backup_fail_hours: int = Field(default=50, ge=1)
    tls_fail_days: int = Field(default=7, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for old, new in MOVED_TO_THRESHOLDS.items():
                if old in data:
                    raise ValueError(f"health.{old} is now {new}")
        return data


class Jobs(_Section):
    """Background jobs: how often a running job beats, how long its lock lives without a beat, and
    how long a silent job's row may stay 'running' before start-up recovery may call it dead."""

    heartbeat_seconds: float = Field(default=10.0, gt=0, le=300)
    lock_ttl_seconds: float = Field(default=60.0, gt=0, le=3600)
    stale_after_seconds: float = Field(default=60.0, gt=0, le=86400)

    @model_validator(mode="after")
    def _lock_outlives_beats(self) -> Jobs:
        if self.lock_ttl_seconds < 2 * self.heartbeat_seconds:
            raise ValueError("lock_ttl_seconds must be at least twice heartbeat_seconds")
        if self.stale_after_seconds < self.lock_ttl_seconds:
            raise ValueError("stale_after_seconds must be at least lock_ttl_seconds")
        return self


# The names of SPEC's schedules (scheduler/table.py holds their defaults; a test keeps the two in step).
SCHEDULE_NAMES = (
    "probe",
    "morning_health",
    "nightly_backup",
    "backup_verify",
    "wal_check",
    "tls_check",
    "weekly_report",
    "monthly_report",
    "approval_sweep",
    "escalation",
    "file_backup",
)
SCHEDULE_OFF = "off"  # a schedule's cron line that turns it off
PINNED_HEAD = re.compile(r"[0-9]+:[0-9a-fA-F]{64}")
PROBE_PATH = re.compile(r"^/[\x21-\x7e]*$")  # a path under the API, no spaces or scheme


class Settings(BaseSettings):
    """Everything the bot is told. Secrets are SecretStr so they never print."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    slack: Slack = Slack()
    alert_token: SecretStr | None = None
    audit_key: SecretStr | None = None  # keys the audit chain; never stored in the bot's database
    # ID:HASH of the last record an earlier release wrote before the chain was keyed (as `audit verify`
    # prints it); unset, a record chained without the key fails `audit verify`
    audit_unkeyed_until: str | None = None
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
    system_actors: SystemActors = SystemActors()
    approval_ttl_minutes: int = Field(default=15, ge=1, le=1440)
    escalation: Escalation = Escalation()
    incidents: Incidents = Incidents()
    schedules: dict[str, str] = Field(default_factory=dict)
    # API paths probed every minute; their history feeds availability and response time
    probes: list[str] = Field(default_factory=lambda: ["/health"], max_length=50)
    logs: Logs = Logs()
    mail: Mail = Mail()
    tls_hosts: list[str] = Field(default_factory=list)
    hosts: Hosts = Hosts()
    health: Health = Health()
    thresholds: Thresholds = Thresholds()
    jobs: Jobs = Jobs()
    console: ConsoleAccounts = ConsoleAccounts()
    server: ServerAddress = ServerAddress()

    @field_validator("audit_key")
    @classmethod
    def _key_length(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value().encode()) < AUDIT_KEY_MIN_BYTES:
            raise ValueError(f"at least {AUDIT_KEY_MIN_BYTES} characters (e.g. `openssl rand -hex 32`)")
        return v

    @field_validator("audit_unkeyed_until")
    @classmethod
    def _pinned_head(cls, v: str | None) -> str | None:
        if v is not None and not PINNED_HEAD.fullmatch(v.strip()):
            raise ValueError("ID:HASH of a record, as `gardenbot audit verify` prints a head")
        return v.strip() if v is not None else None

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
            if cron.strip() == SCHEDULE_OFF:
                continue
            parts = cron.split()
            if len(parts) != 5 or not all(CRON_FIELD.match(p) for p in parts):
                raise ValueError(f"schedules.{name}: a five-field cron expression, not {cron!r}")
        return v

    @field_validator("probes")
    @classmethod
    def _probe_paths(cls, v: list[str]) -> list[str]:
        for path in v:
            if not PROBE_PATH.match(path):
                raise ValueError(f"{path!r} is not a path under the API (such as /health)")
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

    @property
    def job_spool_path(self) -> Path:
        """Job ends (and backup outcomes) that finished while the bot's store was down."""
        return self.state_dir / "job-spool.jsonl"

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
