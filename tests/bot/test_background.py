"""Work after the ack: a bounded queue that says "busy" when full, and items that cannot hang for ever."""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode

from pydantic import SecretStr
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.web.async_client import AsyncWebClient

from bot.background import AckGate, BackgroundWork
from bot.metrics import Metrics
from bot.runtime import Runtime
from bot.slack_app import BotIdentity, build_slack_app
from core.i18n import Translator
from tests.support.signing import sign
from tests.support.slack_api import SlackApiStandIn

SIGNING_SECRET = "test-signing-secret"


def slash(text: str, channel: str) -> tuple[str, dict[str, str]]:
    body = urlencode(
        {
            "team_id": "T0GARDEN",
            "channel_id": channel,
            "user_id": "U0OPS",
            "command": "/garden",
            "text": text,
            "trigger_id": f"trigger-{channel}",
        }
    )
    headers = {"content-type": "application/x-www-form-urlencoded", **sign(body.encode(), SIGNING_SECRET)}
    return body, headers


async def test_a_full_queue_still_acks_says_busy_and_runs_nothing_later(bot_runtime: Runtime) -> None:
    runtime = Runtime(
        settings=bot_runtime.settings.model_copy(
            update={
                "slack": bot_runtime.settings.slack.model_copy(
                    update={"signing_secret": SecretStr(SIGNING_SECRET)}
                )
            }
        ),
        services=bot_runtime.services,
        pipeline=bot_runtime.pipeline,
        startup=bot_runtime.startup,
    )
    release = asyncio.Event()
    work = BackgroundWork(AckGate(), workers=1, queue_limit=1)
    assert work.spawn(release.wait)  # the one worker is busy with this
    await asyncio.sleep(0.1)  # (the worker has taken it)
    assert work.spawn(release.wait)  # and the queue's one place is taken
    with SlackApiStandIn() as standin:
        client = AsyncWebClient(token="xoxb-test", base_url=standin.url)
        app = build_slack_app(runtime, client=client, work=work, metrics=Metrics(), identity=BotIdentity())
        body, headers = slash("jobs", "C0BUSY")

        response = await app.async_dispatch(AsyncBoltRequest(body=body, headers=headers))
        release.set()
        await work.drain(timeout=10)
        await work.close()

        assert response.status == 200
        assert Translator("en")("slack.busy") in (response.body or "")
        assert work.refused == 1
        assert [c for c in standin.calls if c.params.get("channel") == "C0BUSY"] == []


async def test_an_item_that_hangs_frees_its_worker_after_the_bound() -> None:
    work = BackgroundWork(AckGate(), workers=1, work_bound_s=0.2)
    ran = asyncio.Event()

    async def mark() -> None:
        ran.set()

    work.spawn(asyncio.Event().wait)  # never finishes by itself
    work.spawn(mark)
    await asyncio.wait_for(ran.wait(), timeout=5)
    await work.close()

    assert work.pending() == 0
