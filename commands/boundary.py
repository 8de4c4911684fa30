"""Errors and audit at one boundary: how any failure becomes a reply, how every audit record is made.

The pipeline (a request, a decision) and the job runner (a job's start and end) use these two and
nothing else, so a refusal reads the same and a record has the same shape wherever it came from.
The same two places put what the bot did (a restore's end, a restart) on every open incident's
timeline through `note_on_incidents`.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from commands.base import Request
from core.errors import GardenBotError, StoreUnavailable, UsageError
from core.i18n import Translator
from core.reply import Element, Reply, Text
from store.audit import AuditRecord
from store.db import Store
from store.incidents import note_action

if TYPE_CHECKING:
    from commands.command import Command

log = logging.getLogger(__name__)


def reply_for(exc: BaseException, t: Translator, correlation_id: str, *, doing: str = "request") -> Reply:
    """A refusal or failure, shown to the asker only. An unexpected error is logged with its
    traceback under the correlation id; the asker gets only that short reference."""
    if isinstance(exc, GardenBotError):
        summary = t(exc.message_key, **exc.params)
        elements: list[Element] = [Text(summary)]
        if isinstance(exc, UsageError) and exc.usage:
            elements.append(Text(t("usage.line", usage=exc.usage)))
        return Reply(
            status="refused" if exc.status == "refused" else "failed",
            summary=summary,
            elements=tuple(elements),
            visibility="asker",
        )
    log.error("%s failed [%s]", doing, correlation_id, exc_info=exc)
    summary = t("error.unexpected", ref=correlation_id)
    return Reply(status="failed", summary=summary, elements=(Text(summary),), visibility="asker")


def audit_record(
    request: Request,
    command: str,
    event: str,
    outcome: str,
    *,
    approver: str | None = None,
    job_id: int | None = None,
    duration_ms: int | None = None,
    args: dict[str, Any] | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditRecord:
    """The one shape of an audit record: who (and from which console), what, how it ended."""
    full: dict[str, Any] = {**({"job_id": job_id} if job_id is not None else {}), **(detail or {})}
    if request.console is not None:
        full["console"] = request.console.audit_detail()
    return AuditRecord.new(
        correlation_id=request.correlation_id,
        source=request.source,
        actor=request.actor.user_id,
        approver=approver,
        channel=request.channel,
        command=command,
        event=event,
        outcome=outcome,
        args=args or {},
        duration_ms=duration_ms,
        detail=full,
    )


def is_bot_action(command: Command) -> bool:
    """Whether running it changes something an incident's timeline should show (not `incident …`)."""
    return command.needs_store and command.name.split()[0] != "incident"


async def note_on_incidents(
    store: Store,
    request: Request,
    command: Command,
    outcome: str,
    *,
    at: datetime,
    approver: str | None = None,
    job_id: int | None = None,
) -> None:
    """Put a bot action that ran (succeeded or failed) on every unresolved incident's timeline.

    Best effort: with the store down the audit record (spooled) still says it happened.
    """
    if not is_bot_action(command) or outcome in ("refused", "pending", "running"):
        return
    detail: dict[str, Any] = {"source": request.source}
    if job_id is not None:
        detail["job_id"] = job_id
    if approver is not None:
        detail["approved_by"] = approver
    try:
        await note_action(
            store, at=at, actor=request.actor.user_id, command=command.name, outcome=outcome, detail=detail
        )
    except StoreUnavailable:
        log.warning("%s not put on the open incidents' timelines (store unreachable)", command.name)
