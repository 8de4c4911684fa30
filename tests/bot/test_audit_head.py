"""The daily audit head: posted to the ops channel through the Web API, once per day."""

from __future__ import annotations

from datetime import date

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.audit_head import publish_daily
from bot.runtime import Runtime
from core.i18n import Translator
from tests.support.runtime import request
from tests.support.slack_api import SlackApiStandIn


class Stop(Exception):
    """Ends the publishing loop after the days a test walks through."""


async def test_the_head_is_posted_to_the_ops_channel_once_per_day(bot_runtime: Runtime) -> None:
    await bot_runtime.pipeline.handle(request("U0OPS", "help"))  # one audit record at least
    head = await bot_runtime.services.audit.head()
    assert head is not None
    days = iter([date(2025, 1, 1), date(2025, 1, 1), date(2025, 1, 1), date(2025, 1, 2)])
    checks: list[float] = []

    async def sleep(seconds: float) -> None:
        checks.append(seconds)
        if len(checks) == 4:
            raise Stop

    with SlackApiStandIn() as standin:
        client = AsyncWebClient(token="xoxb-test", base_url=standin.url)
        with pytest.raises(Stop):
            await publish_daily(
                bot_runtime.services.audit,
                client,
                "C0OPS",
                Translator("en"),
                today=lambda: next(days),
                sleep=sleep,
            )
        posts = standin.calls_to("chat.postMessage")

    assert [(c.params["channel"], c.params["text"]) for c in posts] == [
        ("C0OPS", f"audit head: id {head.id}, hash {head.hash}"),
    ] * 2
