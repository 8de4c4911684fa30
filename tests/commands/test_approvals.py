"""The two-person rule on `cache flush`: who may decide, exactly once, expiry, deny, and the audit trail.

U0ADMIN2 (admin, not an approver) asks; U0LEAD, U0LEAD2 and U0ADMIN are approvers; U0OPS is an
operator who is not.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import replace

import pytest

from bot.runtime import Runtime
from core.reply import Actions
from tests.support.runtime import BotWorld, request, target_redis

REQUESTER = "U0ADMIN2"


async def ask_for_flush(runtime: Runtime) -> int:
    reply = await runtime.pipeline.handle(request(REQUESTER, "cache flush"))
    assert reply.status == "pending", reply
    approval_id = reply.ids["approval_id"]
    assert isinstance(approval_id, int)
    return approval_id


async def decide(runtime: Runtime, user: str, approval_id: int, decision: str = "approved") -> object:
    return await runtime.pipeline.decide(request(user, f"approve {approval_id}"), approval_id, decision)  # type: ignore[arg-type]


def events(world: BotWorld) -> list[tuple[str, str, str]]:
    """(event, outcome, actor) of every audit record, in chain order."""
    return [
        (str(e), str(o), str(a))
        for e, o, a in world.query("SELECT event, outcome, actor FROM audit_log ORDER BY id")
    ]


def job_rows(world: BotWorld) -> list[tuple[object, ...]]:
    return world.query("SELECT id, command, status, requested_by, approved_by, approval_id FROM jobs")


def approval_status(world: BotWorld, approval_id: int) -> str:
    [(status,)] = world.query("SELECT status FROM approvals WHERE id = %s", (approval_id,))
    return str(status)


async def test_the_request_shows_approve_and_deny_buttons_and_runs_nothing(
    bot_runtime: Runtime, bot_world: BotWorld, target_keys: dict[str, str]
) -> None:
    reply = await bot_runtime.pipeline.handle(request(REQUESTER, "cache flush"))

    [actions] = [e for e in reply.elements if isinstance(e, Actions)]
    assert [(b.action_id, b.value) for b in actions.buttons] == [
        ("approve", str(reply.ids["approval_id"])),
        ("deny", str(reply.ids["approval_id"])),
    ]
    assert all(b.confirm is not None for b in actions.buttons)
    assert reply.exit_code == 3
    assert job_rows(bot_world) == []
    assert target_redis().dbsize() == len(target_keys)


async def test_only_a_second_approver_can_approve_and_it_runs_once(
    bot_runtime: Runtime, bot_world: BotWorld, target_keys: dict[str, str]
) -> None:
    approval_id = await ask_for_flush(bot_runtime)

    own = await bot_runtime.pipeline.decide(request(REQUESTER, ""), approval_id, "approved")
    not_approver = await bot_runtime.pipeline.decide(request("U0OPS", ""), approval_id, "approved")
    assert (own.status, not_approver.status) == ("refused", "refused")
    assert "own request" in own.summary
    assert "Only an approver" in not_approver.summary
    assert target_redis().dbsize() == len(target_keys)
    assert job_rows(bot_world) == []

    approved = await bot_runtime.pipeline.decide(request("U0LEAD", ""), approval_id, "approved")
    assert approved.status == "running", approved
    job_id = approved.ids["job_id"]
    assert isinstance(job_id, int)
    final = await bot_runtime.pipeline.runner.wait(job_id)
    again = await bot_runtime.pipeline.decide(request("U0LEAD2", ""), approval_id, "approved")

    assert final.status == "succeeded", final
    assert final.ids["keys_removed"] == len(target_keys)
    assert target_redis().dbsize() == 0
    assert again.status == "refused"
    assert "already approved by U0LEAD" in again.summary
    assert job_rows(bot_world) == [(job_id, "cache flush", "succeeded", REQUESTER, "U0LEAD", approval_id)]
    assert approval_status(bot_world, approval_id) == "approved"

    trail = events(bot_world)
    assert ("approval_opened", "pending", REQUESTER) in trail
    assert ("approval_decision", "refused", REQUESTER) in trail
    assert ("approval_decision", "refused", "U0OPS") in trail
    assert ("approval_approved", "approved", "U0LEAD") in trail
    assert ("approval_decision", "refused", "U0LEAD2") in trail
    assert ("job_started", "running", REQUESTER) in trail
    assert ("job_finished", "succeeded", REQUESTER) in trail
    assert (await bot_runtime.services.audit.verify()).ok


async def test_ten_approvers_at_once_run_the_flush_exactly_once(
    bot_runtime: Runtime, bot_world: BotWorld, target_keys: dict[str, str]
) -> None:
    approval_id = await ask_for_flush(bot_runtime)
    deciders = ["U0LEAD", "U0LEAD2", "U0ADMIN"] * 3 + ["U0LEAD"]

    replies = await asyncio.gather(
        *(bot_runtime.pipeline.decide(request(u, ""), approval_id, "approved") for u in deciders)
    )

    statuses = Counter(r.status for r in replies)
    assert statuses == Counter({"running": 1, "refused": 9}), [r.summary for r in replies]
    [winner] = [r for r in replies if r.status == "running"]
    job_id = winner.ids["job_id"]
    assert isinstance(job_id, int)
    final = await bot_runtime.pipeline.runner.wait(job_id)
    assert final.status == "succeeded"
    assert final.ids["keys_removed"] == len(target_keys)
    assert len(job_rows(bot_world)) == 1
    trail = Counter(event for event, _, _ in events(bot_world))
    assert trail["job_started"] == 1
    assert trail["job_finished"] == 1
    assert trail["approval_approved"] == 1
    assert trail["approval_decision"] == 9
    assert (await bot_runtime.services.audit.verify()).ok


async def test_an_expired_request_is_refused_and_nothing_runs(
    bot_world: BotWorld, target_keys: dict[str, str]
) -> None:
    bot_world.configure(approval_ttl_minutes=1)
    async with bot_world.runtime() as runtime:
        approval_id = await ask_for_flush(runtime)
        bot_world.query(
            "UPDATE approvals SET expires_at = now() - interval '1 s' WHERE id = %s", (approval_id,)
        )

        reply = await runtime.pipeline.decide(request("U0LEAD", ""), approval_id, "approved")

        assert reply.status == "refused"
        assert "expired" in reply.summary
        assert approval_status(bot_world, approval_id) == "expired"
        assert job_rows(bot_world) == []
        assert target_redis().dbsize() == len(target_keys)
        assert ("approval_decision", "refused", "U0LEAD") in events(bot_world)
        assert (await runtime.services.audit.verify()).ok


async def test_a_denied_request_never_runs(
    bot_runtime: Runtime, bot_world: BotWorld, target_keys: dict[str, str]
) -> None:
    approval_id = await ask_for_flush(bot_runtime)

    denied = await bot_runtime.pipeline.decide(request("U0LEAD2", ""), approval_id, "denied")
    late = await bot_runtime.pipeline.decide(request("U0LEAD", ""), approval_id, "approved")

    # A valid deny is a decision taken: it succeeds (it is not a refusal), and nothing runs.
    assert denied.status == "succeeded", denied
    assert denied.exit_code == 0
    assert "denied by" in denied.summary and "U0LEAD2" in denied.summary
    assert late.status == "refused"
    assert "already denied" in late.summary
    assert approval_status(bot_world, approval_id) == "denied"
    assert job_rows(bot_world) == []
    assert target_redis().dbsize() == len(target_keys)
    assert ("approval_denied", "denied", "U0LEAD2") in events(bot_world)
    assert ("approval_decision", "refused", "U0LEAD2") not in events(bot_world)


async def test_a_deny_by_the_requester_or_a_non_approver_is_refused_and_decides_nothing(
    bot_runtime: Runtime, bot_world: BotWorld, target_keys: dict[str, str]
) -> None:
    approval_id = await ask_for_flush(bot_runtime)

    own = await bot_runtime.pipeline.decide(request(REQUESTER, ""), approval_id, "denied")
    not_approver = await bot_runtime.pipeline.decide(request("U0OPS", ""), approval_id, "denied")

    assert (own.status, not_approver.status) == ("refused", "refused")
    assert "own request" in own.summary
    assert "Only an approver" in not_approver.summary
    assert approval_status(bot_world, approval_id) == "pending"
    assert job_rows(bot_world) == []
    assert target_redis().dbsize() == len(target_keys)
    trail = events(bot_world)
    assert ("approval_decision", "refused", REQUESTER) in trail
    assert ("approval_decision", "refused", "U0OPS") in trail
    assert not [e for e in trail if e[0] == "approval_denied"], trail
    # Still open: a real approver can still decide it.
    approved = await bot_runtime.pipeline.decide(request("U0LEAD", ""), approval_id, "approved")
    assert approved.status == "running", approved
    job_id = approved.ids["job_id"]
    assert isinstance(job_id, int)
    assert (await bot_runtime.pipeline.runner.wait(job_id)).status == "succeeded"


async def test_the_console_words_approve_and_deny_decide_too(
    bot_runtime: Runtime, bot_world: BotWorld, target_keys: dict[str, str]
) -> None:
    approval_id = await ask_for_flush(bot_runtime)

    reply = await bot_runtime.pipeline.handle(request("U0LEAD", f"approve {approval_id}"))
    assert reply.status == "running", reply
    job_id = reply.ids["job_id"]
    assert isinstance(job_id, int)
    final = await bot_runtime.pipeline.runner.wait(job_id)

    assert final.status == "succeeded"
    assert target_redis().dbsize() == 0


async def test_a_listed_approver_without_an_operator_or_admin_role_decides_nothing(
    bot_world: BotWorld, target_keys: dict[str, str]
) -> None:
    # U0ROLELESS holds no role, U0INTERN only viewer: listed as approvers, neither may decide.
    bot_world.configure(approvers=["U0LEAD", "U0ROLELESS", "U0INTERN"])
    async with bot_world.runtime() as runtime:
        approval_id = await ask_for_flush(runtime)
        replies = [
            await runtime.pipeline.decide(request(user, ""), approval_id, "approved")
            for user in ("U0ROLELESS", "U0INTERN")
        ]

    assert [(r.status, "Only an approver" in r.summary) for r in replies] == [("refused", True)] * 2
    assert approval_status(bot_world, approval_id) == "pending"
    assert job_rows(bot_world) == []
    assert target_redis().dbsize() == len(target_keys)


async def test_a_requester_who_lost_the_role_while_waiting_cannot_be_approved(
    bot_world: BotWorld, target_keys: dict[str, str]
) -> None:
    async with bot_world.runtime() as runtime:
        approval_id = await ask_for_flush(runtime)
    # A new configuration (and a restart) takes U0ADMIN2 down to viewer while the request waits.
    bot_world.configure(roles={"admin": ["U0ADMIN"], "viewer": ["U0INTERN", REQUESTER]})
    async with bot_world.runtime() as runtime:
        reply = await runtime.pipeline.decide(request("U0LEAD", ""), approval_id, "approved")

    assert reply.status == "refused"
    assert "may no longer run `cache flush`" in reply.summary
    assert approval_status(bot_world, approval_id) == "pending"
    assert job_rows(bot_world) == []
    assert target_redis().dbsize() == len(target_keys)
    assert ("approval_decision", "refused", "U0LEAD") in events(bot_world)


async def test_an_approval_asked_for_one_target_never_runs_on_another(
    bot_world: BotWorld, target_keys: dict[str, str]
) -> None:
    async with bot_world.runtime() as runtime:
        approval_id = await ask_for_flush(runtime)
        asked_on = runtime.services.target_place()
    # Restarted with another cache (a new configuration) while the request waits.
    bot_world.extra_env["GARDEN_REDIS_URL"] = bot_world.env["GARDEN_REDIS_URL"].rsplit("/", 1)[0] + "/9"
    async with bot_world.runtime() as runtime:
        reply = await runtime.pipeline.decide(request("U0LEAD", ""), approval_id, "approved")

    assert reply.status == "refused"
    assert "another target" in reply.summary and asked_on in reply.summary
    assert "password" not in reply.summary.lower()
    assert approval_status(bot_world, approval_id) == "pending"
    assert job_rows(bot_world) == []
    assert target_redis().dbsize() == len(target_keys)


class _OnCall:
    """The Slack user-group directory, as bot/membership.py answers it: who is in S0ADMINS now."""

    def __init__(self, members: set[str]) -> None:
        self.members = members

    async def groups_of(self, user_id: str) -> frozenset[str]:
        return frozenset({"S0ADMINS"}) if user_id in self.members else frozenset()


async def test_a_requester_whose_role_comes_from_a_user_group_is_checked_against_it_again(
    bot_world: BotWorld, target_keys: dict[str, str]
) -> None:
    bot_world.configure(roles={"admin": ["U0ADMIN", "S0ADMINS"]})
    on_call = _OnCall({"U0GROUPED"})
    async with bot_world.runtime() as runtime:
        runtime.services.directory = on_call
        asked = []
        for _ in range(2):
            grouped = request("U0GROUPED", "cache flush")
            grouped = replace(grouped, actor=replace(grouped.actor, group_ids=frozenset({"S0ADMINS"})))
            asked.append((await runtime.pipeline.handle(grouped)).ids["approval_id"])
        still_in = await runtime.pipeline.decide(request("U0LEAD", ""), int(asked[0]), "approved")
        on_call.members.clear()  # U0GROUPED leaves the admins' group
        left = await runtime.pipeline.decide(request("U0LEAD", ""), int(asked[1]), "approved")

    assert still_in.status != "refused", still_in
    assert (left.status, "may no longer run" in left.summary) == ("refused", True)
    assert approval_status(bot_world, int(asked[1])) == "pending"


async def test_start_up_warns_once_naming_approvers_without_a_role(
    bot_world: BotWorld, caplog: pytest.LogCaptureFixture
) -> None:
    bot_world.configure(approvers=["U0LEAD", "U0ROLELESS", "U0INTERN"])

    with caplog.at_level(logging.WARNING, logger="bot.runtime"):
        async with bot_world.runtime():
            pass

    warnings = [r.getMessage() for r in caplog.records if "approvers without" in r.getMessage()]
    assert len(warnings) == 1
    assert "U0INTERN, U0ROLELESS" in warnings[0] and "U0LEAD" not in warnings[0]
