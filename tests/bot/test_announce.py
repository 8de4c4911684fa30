"""System actors through the announcer seam: the scheduler and the webhook ask through the same
pipeline, are authorised by their configured roles, audited under their names, and their replies
and jobs are shown in a configured channel (Slack: one message posted, then updated in place).

Real bot store, real target database, real pg_dump; Slack is the Web API stand-in.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.announce import Announcer, ConsoleAnnouncer, SlackAnnouncer
from bot.runtime import Runtime
from commands.base import Actor, Request
from commands.system import system_request
from core.reply import Reply
from tests.commands.conftest import rt, world
from tests.support.backup_env import BackupWorld
from tests.support.runtime import CONSOLE_ADMIN, BotWorld
from tests.support.slack_api import SlackApiStandIn, SlackCall

OPS, ALERTS = "C0OPS", "C0ALERTS"  # the test configuration's ops and alerts channels
__all__ = ["rt", "world"]  # the backup tests' bot on a copy of Chinook (tests/commands/conftest.py), by name


@pytest.fixture
def slack() -> Iterator[SlackApiStandIn]:
    with SlackApiStandIn() as standin:
        yield standin


async def announce_in_slack(
    runtime: Runtime, slack: SlackApiStandIn, actor: str, text: str, channel_key: str
) -> tuple[Reply, SlackCall]:
    """`text` asked by a system actor through the Slack announcer: its final reply and the one post."""
    announcer: Announcer = SlackAnnouncer(
        runtime.pipeline, AsyncWebClient(token="xoxb-test", base_url=slack.url)
    )
    reply = await announcer.announce(system_request(runtime.settings, actor, text, channel_key))
    [post] = slack.calls_to("chat.postMessage")
    return reply, post


def audit_rows(bot: BotWorld) -> list[tuple[str, str, str, str, str | None]]:
    """(event, outcome, actor, source, channel) of every audit record, oldest first."""
    return [
        tuple(r)
        for r in bot.query("SELECT event, outcome, actor, source, channel FROM audit_log ORDER BY id")
    ]


async def test_scheduler_health_is_posted_to_the_ops_channel_and_audited_as_scheduler(
    bot_world: BotWorld, bot_runtime: Runtime, slack: SlackApiStandIn
) -> None:
    reply, post = await announce_in_slack(bot_runtime, slack, "scheduler", "health", "ops")

    assert reply.status == "succeeded", reply
    assert post.params["channel"] == OPS
    assert reply.summary in str(post.params["text"])
    assert slack.calls_to("chat.postEphemeral") == []
    assert audit_rows(bot_world) == [("request", "succeeded", "scheduler", "scheduler", OPS)]


async def test_scheduler_backup_result_updates_the_same_ops_message_and_is_audited_as_scheduler(
    world: BackupWorld, rt: Runtime, slack: SlackApiStandIn
) -> None:
    result, post = await announce_in_slack(rt, slack, "scheduler", "backup", "ops")

    assert result.status == "succeeded", result
    [job] = world.jobs()
    ts = job["message_ref"]["ts"]  # where the posted message is, as Slack answered the post
    assert post.params["channel"] == OPS and job["message_ref"]["channel"] == OPS
    updates = slack.calls_to("chat.update")
    assert updates and {(u.params["channel"], u.params["ts"]) for u in updates} == {(OPS, ts)}
    final = slack.message(OPS, ts)
    assert final is not None and result.summary in final["text"]
    backup_id = result.ids["backup_id"]
    assert world.backup_row(int(backup_id))["created_by"] == "scheduler"
    assert (job["requested_by"], job["source"], job["channel"]) == ("scheduler", "scheduler", OPS)
    assert sorted(audit_rows(world.bot)) == sorted(
        [
            ("job_started", "running", "scheduler", "scheduler", OPS),
            ("request", "running", "scheduler", "scheduler", OPS),
            ("job_finished", "succeeded", "scheduler", "scheduler", OPS),
        ]
    )


@pytest.mark.parametrize("text", ["cache flush", "restore 1"])
async def test_webhook_operator_is_refused_an_admin_command_in_its_channel_and_audited(
    bot_world: BotWorld, bot_runtime: Runtime, slack: SlackApiStandIn, text: str
) -> None:
    reply, post = await announce_in_slack(bot_runtime, slack, "webhook", text, "alerts")

    assert reply.status == "refused", reply
    assert "needs the admin role; you are operator" in reply.summary
    assert post.params["channel"] == ALERTS and reply.summary in str(post.params["text"])
    assert bot_world.query("SELECT id FROM approvals") == []
    command = text.removesuffix(" 1")
    assert bot_world.query("SELECT event, outcome, actor, source, command FROM audit_log") == [
        ("request", "refused", "webhook", "webhook", command)
    ]


async def test_scheduler_risky_command_opens_an_approval_posted_to_the_ops_channel(
    bot_world: BotWorld, bot_runtime: Runtime, slack: SlackApiStandIn
) -> None:
    reply, post = await announce_in_slack(bot_runtime, slack, "scheduler", "cache flush", "ops")

    assert reply.status == "pending", reply
    assert post.params["channel"] == OPS
    buttons = [
        b for block in post.json_param("blocks") for b in block.get("elements", []) if "action_id" in b
    ]
    assert {b["action_id"] for b in buttons} == {"approve", "deny"}
    [(requester, source, channel, status, ref)] = bot_world.query(
        "SELECT requester, source, channel, status, message_ref FROM approvals"
    )
    assert (requester, source, channel, status) == ("scheduler", "scheduler", OPS, "pending")
    assert ref["channel"] == OPS  # an expiry can update the same message


@pytest.mark.parametrize("actor", ["scheduler", "webhook"])
async def test_a_system_actor_cannot_approve(bot_world: BotWorld, bot_runtime: Runtime, actor: str) -> None:
    asked = Request(actor=Actor(CONSOLE_ADMIN), text="cache flush", source="console")
    approval_id = int((await bot_runtime.pipeline.handle(asked)).ids["approval_id"])
    request = system_request(bot_runtime.settings, actor, f"approve {approval_id}", "ops")

    reply = await bot_runtime.pipeline.handle(request)

    assert reply.status == "refused", reply
    assert reply.summary == f"Only an approver can decide approval {approval_id}."
    assert bot_world.query("SELECT status, decided_by FROM approvals") == [("pending", None)]
    decisions = "SELECT outcome, actor, source FROM audit_log WHERE event = 'approval_decision'"
    assert bot_world.query(decisions) == [("refused", actor, actor)]


async def test_console_announcer_prints_the_reply_then_the_jobs_result(
    world: BackupWorld, rt: Runtime
) -> None:
    out, progress = io.StringIO(), io.StringIO()
    announcer: Announcer = ConsoleAnnouncer(rt.pipeline, out, progress)

    result = await announcer.announce(system_request(rt.settings, "scheduler", "backup", "ops"))

    assert result.status == "succeeded", result
    printed = out.getvalue()
    assert printed.startswith(f"scheduler in {OPS}:\n")
    started = f"Job {result.ids['job_id']} started: backup."
    assert started in printed
    assert result.summary in printed.split(started, 1)[1]  # the result follows the start
    assert "%" in progress.getvalue() or progress.getvalue() == ""  # progress never on stdout
