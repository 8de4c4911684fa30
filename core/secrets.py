"""Keep secrets out of channels, the audit log and log lines."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
SECRET_KEY = re.compile(r"(password|passwd|secret|token|dsn|_url$|^url$|api_key|credential)", re.I)
URL_WITH_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@", re.I)
KEYWORD_PASSWORD = re.compile(r"((?:password|token|secret)\s*=\s*)('[^']*'|[^\s&]+)", re.I)
JSON_SECRET = re.compile(r'("(?:password|token|secret|signing_secret)"\s*:\s*)"[^"]*"', re.I)
SLACK_TOKEN = re.compile(r"\bxox[abposr]-[A-Za-z0-9-]+|\bxapp-[A-Za-z0-9-]+")


def mask_dsn(dsn: str) -> str:
    """postgresql://user:secret@host/db -> postgresql://user:***@host/db (also key=value DSNs)."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        parts = None
    if parts is not None and parts.scheme and parts.password is not None:
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        netloc = f"{parts.username or ''}:{MASK}@{host}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return KEYWORD_PASSWORD.sub(lambda m: m.group(1) + MASK, dsn)


def mask_text(text: str) -> str:
    """Mask every URL password and password=... in free text (log lines, error messages)."""
    text = URL_WITH_PASSWORD.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:{MASK}@", text)
    text = JSON_SECRET.sub(lambda m: f'{m.group(1)}"{MASK}"', text)
    text = SLACK_TOKEN.sub(MASK, text)
    return KEYWORD_PASSWORD.sub(lambda m: m.group(1) + MASK, text)


def mask_args(args: Mapping[Any, Any]) -> dict[str, Any]:
    """Arguments as they may be written to the audit log: secret-named keys hidden, DSNs masked."""
    return {str(key): _mask_value(str(key), value) for key, value in args.items()}


def _mask_value(key: str, value: Any) -> Any:
    if SECRET_KEY.search(key) and value is not None:
        return MASK
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return mask_args(value)
    if isinstance(value, list | tuple):
        return [_mask_value(key, item) for item in value]
    return value
