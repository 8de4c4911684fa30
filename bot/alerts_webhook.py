"""`POST /alerts/alertmanager`: Alertmanager's webhook (version 4), one alert group per request.

Bearer token GARDENBOT_ALERT_TOKEN (compared in constant time), else 401; a body over 1 MB is
refused with 413, unread when it says its length; a body that is not a version 4 payload gets 400
saying why. A good one is answered at once: storing, auditing and Slack run in the background
(bot/alert_desk.py), so Alertmanager never waits on Slack.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from bot.alert_desk import AlertDesk
from core.alerts import AlertPayloadError, parse_alert_group
from core.config import Settings

log = logging.getLogger(__name__)

ALERTS_PATH = "/alerts/alertmanager"
MAX_ALERT_BYTES = 1_000_000


def alert_webhook(
    settings: Settings, desk: Callable[[], AlertDesk | None]
) -> Callable[[Request], Awaitable[Response]]:
    """The route's endpoint; `desk` gives the running process's AlertDesk (None before start-up)."""
    token = settings.alert_token.get_secret_value().encode() if settings.alert_token else None

    async def receive_alerts(request: Request) -> Response:
        if token is None:
            return PlainTextResponse("GARDENBOT_ALERT_TOKEN is not set", status_code=503)
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, b"Bearer " + token):
            return PlainTextResponse(
                "a bearer token is required", status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
        body = await _read_capped(request)
        if body is None:
            return PlainTextResponse("request body too large (limit 1 MB)", status_code=413)
        try:
            group = parse_alert_group(body)
        except AlertPayloadError as exc:
            return PlainTextResponse(f"not an Alertmanager webhook payload: {exc}", status_code=400)
        running = desk()
        if running is None:
            return PlainTextResponse("starting", status_code=503)
        running.accept(group)
        return JSONResponse({"status": "accepted", "groupKey": group.group_key})

    return receive_alerts


async def _read_capped(request: Request) -> bytes | None:
    """The body, or None when it is (or says it is) over the limit; reading stops there."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_ALERT_BYTES):
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_ALERT_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
