"""Errors turned into replies, in one place for every entry point."""

from __future__ import annotations

from core.errors import GardenBotError, UsageError
from core.i18n import Translator
from core.reply import Element, Reply, Text


def error_reply(exc: GardenBotError, t: Translator) -> Reply:
    """A refusal or failure, shown to the asker only, with the usage line when it helps."""
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


def unexpected_reply(t: Translator, correlation_id: str) -> Reply:
    """The operator gets a short reference; the traceback is in the log under the same id."""
    summary = t("error.unexpected", ref=correlation_id)
    return Reply(status="failed", summary=summary, elements=(Text(summary),), visibility="asker")
