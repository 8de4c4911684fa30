"""`incident declare|ack|update|resolve|list|postmortem` through the pipeline, on real stores.

Slack is the Web API stand-in (the bot token points the process's notifier at it), mail is a real
local SMTP server (or a port nobody listens on), and the incidents' clock is the test's.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.runtime import Runtime
from commands.base import Actor, Request
from core.reply import Reply
from tests.support.clock import Clock
from tests.support.runtime import BotWorld, closed_port, request, table_of, target_redis
from tests.support.slack_api import SlackApiStandIn, SlackCall
from tests.support.smtp import Inbox

T0 = datetime(2025, 4, 1, 0, 0, tzinfo=UTC)  # 09:00 in Asia/Tokyo
LEVELS: dict[str, Any] = {
    "level1": [{"name": "On duty", "slack": "U0OPS", "email": "duty@example.com"}],
    "level2": [{"name": "System admin", "slack": "U0ADMIN", "email": "sysadmin@example.com"}],
    "level3": [{"name": "Dev lead", "slack": "U0LEAD", "email": "lead@example.com"}, "S0ONCALL"],
    "level4": [{"name": "Architect", "slack": "U0ARCH", "email": "arch@example.com"}],
}


@asynccontextmanager
async def incident_bot(
    world: BotWorld, standin: SlackApiStandIn, smtp_url: str, **incidents: Any
) -> AsyncIterator[tuple[Runtime, Clock]]:
    world.configure(
        escalation=LEVELS,
        incidents={"mail_to": ["ops-list@example.com"], **incidents},
        mail={"url": smtp_url, "from": "gardenbot@example.com"},
    )
    world.extra_env.update({"SLACK_BOT_TOKEN": "xoxb-test", "SLACK_API_URL": standin.url})
    clock = Clock(T0)
    async with world.runtime() as runtime:
        runtime.services.clock = clock
        yield runtime, clock


async def run(runtime: Runtime, user: str, text: str) -> Reply:
    return await runtime.pipeline.handle(request(user, text))


def timeline_kinds(world: BotWorld, incident_id: int) -> list[str]:
    rows = world.query(
        "SELECT kind FROM incident_timeline WHERE incident_id = %s ORDER BY at, id", (incident_id,)
    )
    return [str(kind) for (kind,) in rows]


def action_ids(call: SlackCall) -> list[tuple[str, str]]:
    blocks = call.json_param("blocks") or []
    return [
        (element["action_id"], element["value"])
        for block in blocks
        if block["type"] == "actions"
        for element in block["elements"]
    ]


def posted_text(call: SlackCall) -> str:
    return json.dumps(call.json_param("blocks"), ensure_ascii=False) + str(call.params.get("text", ""))


# --- declare ------------------------------------------------------------------------------------


async def test_declare_posts_the_notice_with_deadline_mentions_and_both_buttons_and_mails_p1(
    bot_world: BotWorld, standin: SlackApiStandIn, inbox: Inbox
) -> None:
    async with incident_bot(bot_world, standin, inbox.url) as (runtime, _):
        reply = await run(runtime, "U0OPS", "incident declare P1 見積 API が 502 --impact 'All shops'")

    assert reply.status == "succeeded", reply.summary
    incident_id = reply.ids["incident_id"]
    [post] = standin.calls_to("chat.postMessage")
    assert post.params["channel"] == "C0INC"
    shown = posted_text(post)
    assert "09:15 JST (within 15 min)" in shown
    assert all(f"<@{u}>" in shown for u in ("U0OPS", "U0ADMIN", "U0LEAD")) and "U0ARCH" not in shown
    assert action_ids(post) == [("incident_ack", str(incident_id)), ("incident_resolve", str(incident_id))]
    [mail] = inbox.received
    assert set(mail.rcpt_tos) == {
        "duty@example.com",
        "sysadmin@example.com",
        "lead@example.com",
        "ops-list@example.com",
    }
    assert f"INC-{incident_id}" in str(mail.message["Subject"])
    assert timeline_kinds(bot_world, incident_id) == ["declared", "mail_sent"]
    [(title, message_ref)] = bot_world.query("SELECT title, message_ref FROM incidents")
    assert title == "見積 API が 502" and message_ref["channel"] == "C0INC"
    assert bot_world.query("SELECT level FROM incident_pages ORDER BY level") == [(1,), (2,), (3,)]


async def test_a_p3_declaration_is_posted_but_not_mailed(
    bot_world: BotWorld, standin: SlackApiStandIn, inbox: Inbox
) -> None:
    async with incident_bot(bot_world, standin, inbox.url) as (runtime, _):
        reply = await run(runtime, "U0OPS", "incident declare p3 Slow PDF export")

    assert reply.status == "succeeded"
    assert len(standin.calls_to("chat.postMessage")) == 1
    assert inbox.received == []


async def test_with_smtp_down_the_slack_notice_still_goes_and_the_mail_failure_is_recorded(
    bot_world: BotWorld, standin: SlackApiStandIn
) -> None:
    async with incident_bot(bot_world, standin, f"smtp://127.0.0.1:{closed_port()}") as (runtime, _):
        reply = await run(runtime, "U0OPS", "incident declare P2 Quotes PDF fails")

    assert reply.status == "succeeded"
    assert [c.params["channel"] for c in standin.calls_to("chat.postMessage")] == ["C0INC"]
    assert "The mail was not sent" in json.dumps([str(e) for e in reply.elements], ensure_ascii=False)
    assert timeline_kinds(bot_world, reply.ids["incident_id"]) == ["declared", "mail_failed"]


async def test_with_slack_failing_the_mail_still_goes_and_the_notice_failure_is_recorded(
    bot_world: BotWorld, standin: SlackApiStandIn, inbox: Inbox
) -> None:
    standin.fail(1, "chat.postMessage", error="channel_not_found")
    async with incident_bot(bot_world, standin, inbox.url) as (runtime, _):
        reply = await run(runtime, "U0OPS", "incident declare P1 Everything is down")

    assert reply.status == "succeeded"
    assert len(inbox.received) == 1
    incident_id = reply.ids["incident_id"]
    assert timeline_kinds(bot_world, incident_id) == ["declared", "notice_failed", "mail_sent"]
    [(text,)] = bot_world.query("SELECT text FROM incident_timeline WHERE kind = 'notice_failed'")
    assert "channel_not_found" in text


async def test_with_create_channels_the_incident_gets_its_channel_with_the_paged_people_invited(
    bot_world: BotWorld, standin: SlackApiStandIn, inbox: Inbox
) -> None:
    async with incident_bot(bot_world, standin, inbox.url, create_channels=True) as (runtime, _):
        reply = await run(runtime, "U0LEAD2", "incident declare P2 Quotes PDF fails")

    incident_id = reply.ids["incident_id"]
    [create] = standin.calls_to("conversations.create")
    assert create.params["name"] == f"inc-{incident_id}-quotes-pdf-fails"
    [invite] = standin.calls_to("conversations.invite")
    assert invite.params["users"].split(",") == ["U0OPS", "U0ADMIN", "U0LEAD2"]  # levels 1-2, declarer
    [(channel_ref,)] = bot_world.query("SELECT channel_ref FROM incidents")
    assert channel_ref["name"] == create.params["name"] and channel_ref["channel"].startswith("C0NEW")
    assert "channel_created" in timeline_kinds(bot_world, incident_id)


# --- ack, update, resolve, list, postmortem -----------------------------------------------------


async def test_the_first_acknowledgement_holds_it_and_a_second_is_a_conflict(
    bot_world: BotWorld, standin: SlackApiStandIn, inbox: Inbox
) -> None:
    async with incident_bot(bot_world, standin, inbox.url) as (runtime, clock):
        declared = await run(runtime, "U0OPS", "incident declare P2 Quotes PDF fails")
        incident_id = declared.ids["incident_id"]
        clock.advance(minutes=4)
        first = await run(runtime, "U0LEAD", f"incident ack INC-{incident_id}")
        second = await run(runtime, "U0OPS", f"incident ack {incident_id}")

    assert first.status == "succeeded" and first.ids == {"incident_id": incident_id}
    assert second.status == "refused"
    assert "already acknowledged by U0LEAD" in second.summary
    [(acked_by, acked_at)] = bot_world.query("SELECT acked_by, acked_at FROM incidents")
    assert (acked_by, acked_at) == ("U0LEAD", T0 + timedelta(minutes=4))


async def test_resolve_reports_the_figures_and_uploads_the_postmortem_draft_and_refuses_a_second(
    bot_world: BotWorld, standin: SlackApiStandIn, inbox: Inbox
) -> None:
    async with incident_bot(bot_world, standin, inbox.url) as (runtime, clock):
        incident_id = (await run(runtime, "U0OPS", "incident declare P2 Quotes PDF fails")).ids["incident_id"]
        clock.advance(minutes=5)
        await run(runtime, "U0OPS", f"incident ack {incident_id}")
        clock.advance(minutes=10)
        updated = await run(runtime, "U0OPS", f"incident update {incident_id} Rolled back to v1.4.1")
        clock.advance(minutes=5)
        resolved = await run(runtime, "U0LEAD", f"incident resolve {incident_id} Disk cleaned up")
        again = await run(runtime, "U0OPS", f"incident resolve {incident_id}")
        late_update = await run(runtime, "U0OPS", f"incident update {incident_id} one more thing")

    assert updated.status == "succeeded"
    assert resolved.status == "succeeded", resolved.summary
    shown = " ".join(str(e) for e in resolved.elements)
    assert "20 min" in shown and "5 min" in shown and "15 min" in shown
    assert again.status == "refused" and "already resolved by U0LEAD" in again.summary
    assert late_update.status == "refused"
    [url] = standin.calls_to("files.getUploadURLExternal")
    assert url.params["filename"] == f"postmortem-inc-{incident_id}.md"
    [upload] = standin.calls_to("file_upload")
    draft = upload.params["_raw"].decode("utf-8")
    assert "## Timeline" in draft and "Rolled back to v1.4.1" in draft and "Disk cleaned up" in draft
    [complete] = standin.calls_to("files.completeUploadExternal")
    assert complete.params["channel_id"] == "C0INC"
    assert bot_world.query("SELECT postmortem FROM incidents") == [(draft,)]


async def test_list_shows_unresolved_incidents_first_with_severity_and_holder(
    bot_world: BotWorld, standin: SlackApiStandIn, inbox: Inbox
) -> None:
    async with incident_bot(bot_world, standin, inbox.url) as (runtime, clock):
        old = (await run(runtime, "U0OPS", "incident declare P3 Old slowness")).ids["incident_id"]
        await run(runtime, "U0OPS", f"incident resolve {old}")
        clock.advance(minutes=1)
        held = (await run(runtime, "U0OPS", "incident declare P2 Quotes PDF fails")).ids["incident_id"]
        await run(runtime, "U0LEAD", f"incident ack {held}")
        clock.advance(minutes=30)
        listed = await run(runtime, "U0INTERN", "incident list")

    assert listed.status == "succeeded"
    rows = table_of(listed).rows
    assert [row[0] for row in rows] == [f"INC-{held}", f"INC-{old}"]
    assert rows[0][1] == "P2" and "U0LEAD" in rows[0][4]


async def test_postmortem_is_refused_while_open_and_uploaded_where_asked_once_resolved(
    bot_world: BotWorld, standin: SlackApiStandIn, inbox: Inbox
) -> None:
    async with incident_bot(bot_world, standin, inbox.url) as (runtime, _):
        incident_id = (await run(runtime, "U0OPS", "incident declare P4 Typo on the login page")).ids[
            "incident_id"
        ]
        early = await run(runtime, "U0INTERN", f"incident postmortem {incident_id}")
        await run(runtime, "U0OPS", f"incident resolve {incident_id}")
        standin.reset()
        asked = await runtime.pipeline.handle(
            Request(Actor("U0INTERN"), f"incident postmortem {incident_id}", source="slack", channel="C0OPS")
        )

    assert early.status == "refused" and "no postmortem yet" in early.summary
    assert asked.status == "succeeded", asked.summary
    [complete] = standin.calls_to("files.completeUploadExternal")
    assert complete.params["channel_id"] == "C0OPS"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("incident declare P5 Disk full", "Unknown severity `P5`"),
        ("incident declare P1 '   '", "Give the incident a title"),
        ("incident declare P1 " + "x" * 10_000, "too long"),
        ("incident declare P1 " + "x" * 1_000, "The title is too long"),
        ("incident ack ../etc/passwd", "is not an incident id"),
        ("incident resolve 0", "is not an incident id"),
        ("incident update INC-x something", "is not an incident id"),
        ("incident ack 999999", "There is no incident INC-999999"),
    ],
)
async def test_bad_input_is_refused_with_one_line_and_nothing_is_declared(
    bot_world: BotWorld, standin: SlackApiStandIn, inbox: Inbox, text: str, expected: str
) -> None:
    async with incident_bot(bot_world, standin, inbox.url) as (runtime, _):
        reply = await run(runtime, "U0OPS", text)

    assert reply.status == "refused"
    assert expected in reply.summary
    assert reply.visibility == "asker"
    assert bot_world.query("SELECT count(*) FROM incidents") == [(0,)]
    assert standin.calls_to("chat.postMessage") == [] and inbox.received == []


async def test_a_viewer_may_list_but_not_declare(
    bot_world: BotWorld, standin: SlackApiStandIn, inbox: Inbox
) -> None:
    async with incident_bot(bot_world, standin, inbox.url) as (runtime, _):
        declared = await run(runtime, "U0INTERN", "incident declare P1 Everything is down")
        listed = await run(runtime, "U0INTERN", "incident list")

    assert declared.status == "refused" and listed.status == "succeeded"
    assert bot_world.query("SELECT count(*) FROM incidents") == [(0,)]


# --- bot actions on the timeline ----------------------------------------------------------------


async def test_a_job_that_ends_while_an_incident_is_open_lands_on_its_timeline_incident_commands_do_not(
    bot_world: BotWorld, standin: SlackApiStandIn, inbox: Inbox, target_keys: dict[str, str]
) -> None:
    async with incident_bot(bot_world, standin, inbox.url) as (runtime, clock):
        open_id = (await run(runtime, "U0OPS", "incident declare P2 Cache poisoned")).ids["incident_id"]
        await run(runtime, "U0OPS", f"incident ack {open_id}")
        clock.advance(minutes=1)
        asked = await run(runtime, "U0ADMIN2", "cache flush")
        approved = await run(runtime, "U0LEAD", f"approve {asked.ids['approval_id']}")
        result = await runtime.pipeline.runner.wait(int(approved.ids["job_id"]))

    assert result.status == "succeeded", result.summary
    assert target_redis().dbsize() == 0
    rows = bot_world.query(
        "SELECT actor, text, detail FROM incident_timeline WHERE incident_id = %s AND kind = 'action'",
        (open_id,),
    )
    [(actor, command, detail)] = rows
    assert (actor, command) == ("U0ADMIN2", "cache flush")
    assert detail["outcome"] == "succeeded" and detail["approved_by"] == "U0LEAD"
    assert detail["job_id"] == approved.ids["job_id"]


# --- without Slack --------------------------------------------------------------------------------


async def test_at_the_console_the_notice_is_printed_and_the_postmortem_saved_under_the_state_dir(
    bot_world: BotWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    async with bot_world.runtime() as runtime:
        declared = await run(runtime, "U0OPS", "incident declare P3 Slow export")
        incident_id = declared.ids["incident_id"]
        resolved = await run(runtime, "U0OPS", f"incident resolve {incident_id}")

    assert f"[C0INC] INC-{incident_id} declared: [P3] Slow export" in capsys.readouterr().err
    saved = bot_world.state_dir / "postmortems" / f"postmortem-inc-{incident_id}.md"
    assert saved.read_text(encoding="utf-8").startswith(f"# Postmortem: INC-{incident_id} Slow export")
    assert str(saved) in " ".join(str(e) for e in resolved.elements)


async def test_with_no_incidents_channel_configured_the_declaration_stands_and_says_why_nothing_was_posted(
    bot_world: BotWorld, standin: SlackApiStandIn, inbox: Inbox
) -> None:
    bot_world.yaml_data["channels"] = {"ops": "C0OPS"}
    async with incident_bot(bot_world, standin, inbox.url) as (runtime, _):
        reply = await run(runtime, "U0OPS", "incident declare P1 Everything is down")

    why = "No incidents channel is configured (channels.incidents)."
    assert reply.status == "succeeded" and why in " ".join(str(e) for e in reply.elements)
    assert standin.calls_to("chat.postMessage") == [] and len(inbox.received) == 1
    assert bot_world.query("SELECT text FROM incident_timeline WHERE kind = 'notice_failed'") == [(why,)]
