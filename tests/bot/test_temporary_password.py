"""A temporary password reaches the requester and nobody and nothing else.

`user reset-password` and `user create` go through Slack in-process (signed requests into the Bolt
app, the Web API stand-in recording every call): an admin asks, another person approves with the
button, the job runs. Then every place the password could leak is read: each recorded Slack call
(only chat.postEphemeral to the requester may carry it), every column of the audit log, the jobs
and approvals tables, every log record at DEBUG, and the welcome mail that aiosmtpd received.
"""

from __future__ import annotations

import json
import logging
import re

import bcrypt
import psycopg
import pytest

from tests.support.runtime import BotWorld
from tests.support.signing import block_action_body, new_trigger_id, slash_body
from tests.support.slack_api import SlackApiStandIn, SlackCall
from tests.support.slack_scenario import SlackScenario, slack_scenario
from tests.support.smtp import Inbox

CHANNEL = "C0OPS"
REQUESTER, APPROVER = "U0ADMIN2", "U0LEAD"
PASSWORD = re.compile(r"`([A-Za-z0-9_-]{20})`")  # secrets.token_urlsafe(15), shown as code


async def deliver(slack: SlackScenario, body: bytes) -> None:
    assert (await slack.send(body)).status == 200


def ephemerals_with_password(standin: SlackApiStandIn) -> list[SlackCall]:
    return [c for c in standin.calls_to("chat.postEphemeral") if PASSWORD.search(json.dumps(c.params))]


async def ask_and_approve(slack: SlackScenario, world: BotWorld, text: str, n: int) -> None:
    """The requester types the command; another person clicks Approve on the message it posted."""
    standin = slack.standin
    url = standin.response_url("cmd")
    await deliver(
        slack,
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
    await deliver(slack, click)
    [private] = await slack.wait_for(
        lambda: ephemerals_with_password(standin)[n - 1 :], timeout=20.0, what=f"the password of {text!r}"
    )

    def updated_after() -> list[SlackCall]:  # the watcher's last word: the approval message, in place
        later = standin.calls[standin.calls.index(private) :]
        return [c for c in later if c.method == "chat.update" and c.params.get("ts") == str(ref["ts"])]

    await slack.wait_for(updated_after, timeout=20.0, what="the approval message's last update")


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
    async with slack_scenario(bot_world, standin) as slack:
        await ask_and_approve(slack, bot_world, "user reset-password test@garden-dx.example", 1)
        await ask_and_approve(slack, bot_world, "user create hanako@example.jp テスト花子 employee", 2)

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
