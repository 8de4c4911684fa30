"""Write the configuration reference (docs/configuration.md, docs/ja/configuration.md) from the
settings model in core/config.py: one source of truth.

    python scripts/config_reference.py           # rewrite both files
    python scripts/config_reference.py --check   # exit 1 when either file is stale

Each key's description is the field's `Field(description=...)`, else the comment on or just above
its line in core/config.py, else (for a section) its class docstring; FALLBACK holds the few that
have none yet. The Japanese reference takes each key's description from
docs/ja/config-descriptions.yml instead. tests/deploy/test_config_reference.py fails when the files
are stale, when a key has no Japanese description, or when that file names a key that is gone.
"""

from __future__ import annotations

import argparse
import inspect
import io
import re
import sys
import tokenize
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.config import ENV_KEYS, Settings  # noqa: E402 - after the repository is on the path

OUTPUTS = {"en": ROOT / "docs" / "configuration.md", "ja": ROOT / "docs" / "ja" / "configuration.md"}
JA_DESCRIPTIONS = ROOT / "docs" / "ja" / "config-descriptions.yml"  # dotted key -> Japanese description

# Descriptions for keys whose field carries none yet (move them into core/config.py as
# Field(description=...) or a comment, then delete them here).
FALLBACK: dict[str, str] = {
    "slack": "The Slack app's credentials and the one workspace it serves.",
    "slack.bot_token": "Bot token (xoxb-…) from the app's OAuth page.",
    "slack.signing_secret": "Signing secret: every request to /slack/events is checked with it.",
    "slack.app_token": "App-level token (xapp-…): when set, Socket Mode instead of HTTP.",
    "slack.api_url": "Base URL of Slack's Web API; every call honours it (a local stand-in in tests).",
    "slack.team_id": "This bot's workspace (T…); requests from any other team are refused.",
    "slack.enterprise_id": "This bot's Enterprise Grid organisation (E…), if any.",
    "alert_token": "Bearer token the Alertmanager webhook must present on POST /alerts/alertmanager.",
    "audit_key": "Secret (32+ characters) that keys the audit chain; required outside the demo.",
    "database_url": "The bot's own PostgreSQL (audit, approvals, jobs, backup catalog).",
    "redis_url": "The bot's own Redis (locks, de-duplication, rate limits, caches).",
    "redis_prefix": "Prefix of every key the bot writes in its Redis (several bots can share one).",
    "target": "The operated Garden DX system.",
    "target.database_url": "The garden_dx database (backups, restores, user and db commands).",
    "target.redis_url": "Garden DX's Redis cache (`cache stats`, `cache flush`, health).",
    "target.api_url": "Base URL of the Garden DX API; health is GET {api_url}/health.",
    "backup": "Backups: custom-format pg_dump files with a catalog.",
    "backup.dir": "Where backup files go (default: backups/ under state_dir).",
    "backup.retention_days": "Backups older than this are pruned (the newest good one is kept).",
    "pg_bin_dir": "Folder holding pg_dump and pg_restore (default: found on PATH).",
    "locale": "Language of every message.",
    "timezone": "IANA time zone of displayed times and schedules.",
    "state_dir": (
        "Local state: the audit spool, embedded servers (~/.local/state/gardenbot; root: /var/lib/gardenbot)."
    ),
    "roles": "Slack user IDs (U…/W…) and user-group IDs (S…) per role; each role includes the one before.",
    "roles.admin": "Admins: everything, including restores and user management.",
    "roles.operator": "Operators: backups, incidents, maintenance.",
    "roles.viewer": "Viewers: read-only commands.",
    "approvers": "Who may approve risky actions (an operator or admin; never their own request).",
    "default_role": "What an unlisted Slack user gets: none (refused politely) or viewer.",
    "channels": "Channel IDs (C…) the bot posts to.",
    "channels.ops": "Operations: job results, audit heads, recovered jobs.",
    "channels.alerts": "Alertmanager alert groups.",
    "channels.incidents": "Incident notices.",
    "channels.reports": "Daily and weekly reports.",
    "approval_ttl_minutes": "How long a risky request waits for a second person before it expires.",
    "escalation": "Who each escalation level is (Slack user or user-group IDs).",
    "escalation.level1": "Level 1: operations on duty.",
    "escalation.level2": "Level 2: system administrator.",
    "escalation.level3": "Level 3: development lead.",
    "schedules": "Cron lines (five fields) by schedule name, in the configured time zone.",
    "logs": "The app's log files and the thresholds `security` and `logs` judge them by.",
    "logs.auth": "Authentication log: `<address> <ISO time> …`, failures contain `authentication failed`.",
    "logs.api": 'API access log: `<address> - - <epoch> "<METHOD> <path>" <status> <ms>`.',
    "logs.error": "Error log: `<ISO time> <LEVEL> <message>`.",
    "logs.failed_logins_max": "More failed logins than this from one address in the window is an event.",
    "logs.failed_logins_minutes": "The failed-login window, in minutes.",
    "logs.requests_per_minute_max": "More requests than this from one address in a minute is a burst.",
    "mail": "Outgoing mail (welcome mails, P1/P2 notices).",
    "mail.from": "Sender address of the bot's mail.",
    "tls_hosts": "host:port of the certificates whose expiry the health check watches.",
    "health": "How long each health check may take and where a warning becomes a failure.",
    "health.timeout_seconds": "Timeout of each health check.",
    "health.disk_fail_percent": "Disk use at or over this is a failure (warning: thresholds.disk_percent).",
    "health.memory_fail_percent": "Memory use at or over this is a failure.",
    "health.backup_fail_hours": "Newest good backup older than this is a failure.",
    "health.tls_fail_days": "A certificate with fewer days left is a failure.",
    "thresholds.disk_percent": "Disk use at or over this warns.",
    "thresholds.memory_percent": "Memory use at or over this warns.",
    "thresholds.api_ms": "API slower than this warns (the manual's 2 s).",
    "thresholds.tls_days": "A certificate with fewer days left warns.",
    "thresholds.backup_age_hours": "Newest good backup older than this warns.",
    "jobs.heartbeat_seconds": "How often a running job renews its lock.",
    "jobs.lock_ttl_seconds": "Lock lifetime without a heartbeat (at least twice heartbeat_seconds).",
    "jobs.stale_after_seconds": (
        "A job silent (no heartbeat, no lock) longer than this is marked interrupted,"
        " at start-up and by a serving bot's sweep."
    ),
    "console.users": "OS login → Slack user ID the console acts as.",
    "server.host": "Address `gardenbot serve` listens on (the container image sets 0.0.0.0).",
    "server.port": "Port `gardenbot serve` listens on.",
}

TEXT = {
    "en": {
        "title": "# Configuration reference",
        "generated": (
            "Generated from the settings model (`core/config.py`) by `python scripts/config_reference.py`;"
            " do not edit by hand (a test fails when this file is stale)."
        ),
        "intro": (
            "Environment variables override the YAML file (`GARDENBOT_CONFIG`, default `./gardenbot.yml`);"
            " `gardenbot.example.yml` is a commented example. An unknown key or a bad value stops start-up"
            " with one line naming the key. Secrets (marked *secret*) never print; keep them in the"
            " environment or a secret manager, not in the YAML file."
        ),
        "env_title": "## Environment variables",
        "env_head": "| variable | key |\n| --- | --- |",
        "keys_title": "## Keys",
        "keys_head": "| key | type | default | environment | description |\n| --- | --- | --- | --- | --- |",
        "computed": "computed",
        "secret": "secret",
    },
    "ja": {
        "title": "# 設定リファレンス",
        "generated": (
            "設定モデル (`core/config.py`) と説明欄の日本語 (`docs/ja/config-descriptions.yml`) から"
            " `python scripts/config_reference.py` で生成しています。"
            "手で編集しないでください (古くなるとテストが失敗します)。"
        ),
        "intro": (
            "環境変数は YAML ファイル (`GARDENBOT_CONFIG`、既定は `./gardenbot.yml`) より優先されます。"
            "コメント付きの例は `gardenbot.example.yml` です。未知のキーや不正な値があると、"
            "そのキーを名指しする 1 行を出して起動を止めます。*secret* と書かれた値は表示されません。"
            "YAML ではなく環境変数かシークレットマネージャーに置いてください。"
        ),
        "env_title": "## 環境変数",
        "env_head": "| 変数 | キー |\n| --- | --- |",
        "keys_title": "## キー一覧",
        "keys_head": "| キー | 型 | 既定値 | 環境変数 | 説明 |\n| --- | --- | --- | --- | --- |",
        "computed": "起動時に決定",
        "secret": "secret",
    },
}


@dataclass(frozen=True)
class Key:
    dotted: str
    kind: str
    default: str
    env: str
    description: str


def source_comments(cls: type) -> dict[str, str]:
    """Field name -> the comment on its line, or the comment lines just above it, in cls's source."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    found: dict[str, str] = {}
    for number, line in enumerate(source.splitlines(), start=1):
        match = re.match(r"\s{4}(\w+):", line)
        if not match:
            continue
        above: list[str] = []
        row = number - 1
        while row in comments and source.splitlines()[row - 1].lstrip().startswith("#"):
            above.insert(0, comments[row])
            row -= 1
        text = comments.get(number) if number in comments else " ".join(above)
        if text:
            found[match.group(1)] = text
    return found


def section_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def type_name(annotation: Any) -> tuple[str, bool]:
    """A reader's name for the type, and whether the value is a secret."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        if len(inner) == 1:
            return type_name(inner[0])
        return " or ".join(type_name(a)[0] for a in inner), False
    if origin is Literal:
        return " | ".join(f"`{v}`" for v in get_args(annotation)), False
    if origin is list:
        return f"list of {type_name(get_args(annotation)[0])[0]}", False
    if origin is dict:
        key, value = (type_name(a)[0] for a in get_args(annotation))
        return f"map {key} → {value}", False
    simple = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path"}
    simple[SecretStr] = "string"
    return simple.get(annotation, getattr(annotation, "__name__", str(annotation))), annotation is SecretStr


def bounds(field: FieldInfo) -> str:
    parts = []
    for item in field.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"), ("min_length", "length ≥")):
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"{sign} {value}")
        if getattr(item, "pattern", None):
            parts.append(f"pattern `{item.pattern}`")
    return f" ({', '.join(parts)})" if parts else ""


def default_text(field: FieldInfo, lang: str) -> str:
    if field.default_factory is not None:
        if field.default_factory in (list, dict):
            return "`[]`" if field.default_factory is list else "`{}`"
        return TEXT[lang]["computed"]
    value = field.default
    if value is None:
        return "—"
    if isinstance(value, str):
        return f"`{value}`"
    return f"`{value}`"


def japanese_descriptions(path: Path = JA_DESCRIPTIONS) -> dict[str, str]:
    """Dotted key -> its Japanese description; a key given twice is an error, not a silent override."""
    text = path.read_text(encoding="utf-8")
    node = yaml.compose(text)
    names = [key.value for key, _ in node.value] if isinstance(node, yaml.MappingNode) else []
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"{path.name}: given twice: {', '.join(twice)}")
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"{path.name}: expected a mapping of key -> description text")
    return {str(key): value.strip() for key, value in data.items()}


def translations(lang: str) -> dict[str, str]:
    return japanese_descriptions() if lang == "ja" else {}


def japanese_gaps(
    descriptions: Mapping[str, str], model: type[BaseModel] = Settings
) -> tuple[list[str], list[str]]:
    """Keys of the model without a Japanese description, and described keys the model no longer has."""
    keys = [key.dotted for key in walk(model, "", "en", {})]
    missing = [key for key in keys if not descriptions.get(key, "").strip()]
    unknown = sorted(set(descriptions) - set(keys))
    return missing, unknown


def walk(model: type[BaseModel], prefix: str, lang: str, translated: Mapping[str, str]) -> Iterator[Key]:
    """Every key of model; a description in translated replaces the English one (the English stays
    where it has none, and japanese_gaps reports the key)."""
    env_by_key = {dotted: name for name, dotted in ENV_KEYS.items()}
    comments = source_comments(model)
    for name, field in model.model_fields.items():
        key_name = field.alias or name
        dotted = f"{prefix}{key_name}"
        section = section_model(field.annotation)
        if section is not None:
            doc = (inspect.getdoc(section) or "").split("\n\n")[0].replace("\n", " ")
            yield Key(dotted, "section", "", "", translated.get(dotted) or FALLBACK.get(dotted) or doc)
            yield from walk(section, f"{dotted}.", lang, translated)
            continue
        kind, secret = type_name(field.annotation)
        if secret:
            kind = f"{kind}, *{TEXT[lang]['secret']}*"
        english = field.description or comments.get(name) or FALLBACK.get(dotted, "")
        description = translated.get(dotted) or english
        env = env_by_key.get(f"{prefix}{name}", "")
        env_cell = f"`{env}`" if env else ""
        yield Key(dotted, kind + bounds(field), default_text(field, lang), env_cell, description)


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(lang: str, model: type[BaseModel] = Settings) -> str:
    t = TEXT[lang]
    lines = [t["title"], "", t["generated"], "", t["intro"], ""]
    lines += [t["env_title"], "", t["env_head"]]
    lines += [f"| `{name}` | `{dotted}` |" for name, dotted in ENV_KEYS.items()]
    lines += ["", t["keys_title"], "", t["keys_head"]]
    for key in walk(model, "", lang, translations(lang)):
        if key.kind == "section":
            lines.append(f"| **`{key.dotted}`** | | | | {cell(key.description)} |")
            continue
        row = (f"`{key.dotted}`", cell(key.kind), key.default, key.env, cell(key.description))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def reference_keys(lang: str = "en", model: type[BaseModel] = Settings) -> list[Key]:
    return list(walk(model, "", lang, translations(lang)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 when a file is stale, write nothing")
    args = parser.parse_args(argv)
    stale = []
    for lang, path in OUTPUTS.items():
        text = render(lang)
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    for path in stale:
        verb = "stale" if args.check else "written"
        print(f"{path.relative_to(ROOT)}: {verb}", file=sys.stderr)
    missing, unknown = japanese_gaps(japanese_descriptions())
    where = JA_DESCRIPTIONS.relative_to(ROOT)
    for key in missing:
        print(f"{where}: no Japanese description of {key} (the English one is used)", file=sys.stderr)
    for key in unknown:
        print(f"{where}: {key} is not a key of the settings model", file=sys.stderr)
    return 1 if args.check and (stale or missing or unknown) else 0


if __name__ == "__main__":
    sys.exit(main())
