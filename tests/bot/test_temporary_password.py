"""A temporary password reaches the requester and nobody and nothing else.

`user reset-password` and `user create` go through Slack in-process (signed requests into the Bolt
app, the Web API stand-in recording every call): an admin asks, another person approves with the
button, the job runs. Then every place the password could leak is read: each recorded Slack call
(only chat.postEphemeral to the requester may carry it), every column of the audit log, the jobs
and approvals tables, every log record at DEBUG, and the welcome mail that aiosmtpd received.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import bcrypt
import psycopg
import pytest
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest

from bot.background import AckGate, BackgroundWork
from bot.metrics import Metrics
from bot.runtime import Runtime
from bot.server import learn_identity
from bot.slack_app import BotIdentity, build_slack_app, build_web_client
from runbooks.sample_garden import create_sample_garden
from tests.support.runtime import BotWorld
from tests.support.serve import SIGNING_SECRET
from tests.support.servers import throwaway_database
from tests.support.signing import block_action_body, new_trigger_id, signed_headers, slash_body
from tests.support.slack_api import SlackApiStandIn, SlackCall
from tests.support.smtp import Inbox

CHANNEL = "C0OPS"
REQUESTER, APPROVER = "U0ADMIN2", "U0LEAD"
PASSWORD = re.compile(r"`([A-Za-z0-9_-]{20})`")  # secrets.token_urlsafe(15), shown as code


@pytest.fixture
async def garden(bot_world: BotWorld) -> AsyncIterator[str]:
    with throwaway_database("gbt_garden") as url:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await create_sample_garden(conn)
        bot_world.target_database_url = url
        yield url


@asynccontextmanager
async def slack_bot(
    world: BotWorld, standin: SlackApiStandIn
) -> AsyncIterator[tuple[AsyncApp, BackgroundWork, Runtime]]:
    world.extra_env.update(
        {"SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_BOT_TOKEN": "xoxb-test", "SLACK_API_URL": standin.url}
    )
    async with world.runtime() as runtime:
        client = build_web_client(runtime)
        identity = BotIdentity()
        work = BackgroundWork(AckGate())
        app = build_slack_app(runtime, client=client, work=work, metrics=Metrics(), identity=identity)
        await learn_identity(client, identity)
        try:
            yield app, work, runtime
        finally:
            await work.close()


async def deliver(app: AsyncApp, work: BackgroundWork, body: bytes) -> None:
    response = await app.async_dispatch(AsyncBoltRequest(body=body.decode(), headers=signed_headers(body)))
    assert response.status == 200
    await work.drain()


async def eventually(found: Callable[[], list[Any]], what: str, timeout: float = 20.0) -> list[Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if result := found():
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def ephemerals_with_password(standin: SlackApiStandIn) -> list[SlackCall]:
    return [c for c in standin.calls_to("chat.postEphemeral") if PASSWORD.search(json.dumps(c.params))]


async def ask_and_approve(
    app: AsyncApp, work: BackgroundWork, standin: SlackApiStandIn, world: BotWorld, text: str, n: int
) -> None:
    """The requester types the command; another person clicks Approve on the message it posted."""
    url = standin.response_url("cmd")
    await deliver(
        app,
        work,
        slash_body(text, user=REQUESTER, channel=CHANNEL, trigger_id=new_trigger_id(), response_url=url),
    )
    [(approval_id, ref)] = world.query(
        "SELECT id, message_ref FROM approvals WHERE status = 'pending' AND message_ref IS NOT NULL"
    )
    click = block_action_body(
        "approve",
        str(approval_id),
        user=APPROVER,
        channel=CHANNEL,
        message_ts=str(ref["ts"]),
        response_url=standin.response_url("click"),
    )
    await deliver(app, work, click)
    [private] = await eventually(
        lambda: ephemerals_with_password(standin)[n - 1 :], f"the password of {text!r}"
    )

    def updated_after() -> list[SlackCall]:  # the watcher's last word: the approval message, in place
        later = standin.calls[standin.calls.index(private) :]
        return [c for c in later if c.method == "chat.update" and c.params.get("ts") == str(ref["ts"])]

    await eventually(updated_after, "the approval message's last update")


def rows(world: BotWorld, table: str) -> list[str]:
    return [repr(row) for row in world.query(f"SELECT * FROM {table}")]


def log_texts(caplog: pytest.LogCaptureFixture) -> list[str]:
    texts = [caplog.text]
    for record in caplog.records:
        texts += [
            record.getMessage(),
            repr(record.args),
            str(record.exc_text or ""),
            str(record.stack_info or ""),
        ]
    return texts


async def test_the_temporary_password_reaches_only_the_requester_and_leaks_nowhere(
    bot_world: BotWorld, standin: SlackApiStandIn, garden: str, inbox: Inbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bot_world.configure(mail={"url": inbox.url, "from": "gardenbot@example.com"})
    async with slack_bot(bot_world, standin) as (app, work, _runtime):
        await ask_and_approve(app, work, standin, bot_world, "user reset-password test@garden-dx.example", 1)
        await ask_and_approve(
            app, work, standin, bot_world, "user create hanako@example.jp テスト花子 employee", 2
        )

    private = ephemerals_with_password(standin)
    assert [c.params["user"] for c in private] == [REQUESTER, REQUESTER]  # not the approver who clicked
    passwords = [PASSWORD.findall(json.dumps(c.params))[0] for c in private]
    with psycopg.connect(garden) as conn:
        for email, password in zip(("test@garden-dx.example", "hanako@example.jp"), passwords, strict=True):
            row = conn.execute("SELECT password_hash FROM users WHERE email = %s", (email,)).fetchone()
            assert row is not None and bcrypt.checkpw(password.encode(), row[0].encode())  # the real ones

    everything_else = [
        *(json.dumps(c.params, ensure_ascii=False) for c in standin.calls if c not in private),
        *rows(bot_world, "audit_log"),
        *rows(bot_world, "jobs"),
        *rows(bot_world, "approvals"),
        *log_texts(caplog),
        *(mail.raw.decode("utf-8", "replace") + mail.message.get_content() for mail in inbox.received),
    ]
    assert len(inbox.received) == 1 and len(standin.calls_to("chat.postMessage")) == 2
    assert bot_world.query("SELECT count(*) FROM audit_log")[0][0] > 6 and caplog.records
    for password in passwords:
        leaks = [text[:200] for text in everything_else if password in text]
        assert not leaks, leaks
