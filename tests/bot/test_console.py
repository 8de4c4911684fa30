"""The console cannot fake a second person: it acts as the OS login's Slack user, audited.

The test configuration maps this process's OS login (root in CI) to the admin U0ADMIN, so `--user`
is an admin's impersonation; a decision from the same OS login is refused whoever it acts as.
"""

from __future__ import annotations

import io
import json
import socket

from bot.console import Console, ConsoleAccess
from bot.runtime import Runtime
from commands.base import Actor, ConsoleOrigin, Request
from commands.policy import Policy
from tests.support.runtime import CONSOLE_ADMIN, OS_LOGIN, BotWorld, target_redis

HOST = socket.gethostname()


def run_json(world: BotWorld, *args: str) -> tuple[int, dict[str, object]]:
    result = world.cli("run", "--json", *args)
    assert result.stdout.strip(), result.stderr
    return result.returncode, json.loads(result.stdout)


def map_login_to(world: BotWorld, users: dict[str, str]) -> None:
    """Replace console.users (a merge would keep this login's mapping)."""
    world.yaml_data = {**world.yaml_data, "console": {"users": users}}
    world.write_yaml()


def test_the_same_os_login_cannot_approve_its_own_request_by_acting_as_another_user(
    bot_world: BotWorld, target_keys: dict[str, str]
) -> None:
    code, asked = run_json(bot_world, "--user", "U0ADMIN2", "cache flush")
    assert (code, asked["status"]) == (3, "pending"), asked
    approval_id = asked["approval_id"]

    code, decided = run_json(bot_world, "--user", "U0LEAD", f"approve {approval_id}")

    assert (code, decided["status"]) == (2, "refused"), decided
    assert OS_LOGIN in str(decided["text"]) and "someone else must decide" in str(decided["text"])
    assert target_redis().dbsize() == len(target_keys)  # nothing ran
    assert bot_world.query("SELECT count(*) FROM jobs") == [(0,)]
    assert bot_world.query("SELECT status, decided_by, requester_os_login FROM approvals") == [
        ("pending", None, OS_LOGIN)
    ]


def test_an_unmapped_os_login_is_refused_with_one_clear_line(bot_world: BotWorld) -> None:
    map_login_to(bot_world, {"someone-else": CONSOLE_ADMIN})

    result = bot_world.cli("run", "--user", CONSOLE_ADMIN, "health")

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"The OS login {OS_LOGIN} is not in console.users: ask an admin to map it to your Slack user ID."
    ]
    assert bot_world.query("SELECT to_regclass('audit_log')") == [(None,)]  # refused before the store


def test_a_login_mapped_to_a_non_admin_may_not_act_as_anyone_else(bot_world: BotWorld) -> None:
    map_login_to(bot_world, {OS_LOGIN: "U0OPS"})

    by_flag = bot_world.cli("run", "--user", CONSOLE_ADMIN, "health")
    bot_world.extra_env["GARDENBOT_USER"] = CONSOLE_ADMIN  # the same person sets the environment too
    by_env = bot_world.cli("run", "health")
    del bot_world.extra_env["GARDENBOT_USER"]
    as_itself = bot_world.cli("run", "jobs")

    for refused in (by_flag, by_env):
        assert refused.returncode == 2
        assert refused.stderr.strip() == (
            f"Only an admin may act as another user: the OS login {OS_LOGIN} is U0OPS, who is not an admin."
        )
    assert as_itself.returncode == 0, as_itself.stderr
    assert bot_world.query("SELECT actor FROM audit_log") == [("U0OPS",)]


def test_impersonation_is_audited_with_who_impersonated_whom_the_os_login_and_host(
    bot_world: BotWorld,
) -> None:
    code, reply = run_json(bot_world, "--user", "U0INTERN", "jobs")

    assert code == 0, reply
    [(actor, source, console)] = bot_world.query("SELECT actor, source, detail->'console' FROM audit_log")
    assert (actor, source) == ("U0INTERN", "console")
    assert console == {"os_login": OS_LOGIN, "host": HOST, "impersonated_by": CONSOLE_ADMIN}


async def test_the_demo_lets_anyone_act_as_anyone_with_as_and_approve_from_one_terminal(
    bot_world: BotWorld, bot_runtime: Runtime, target_keys: dict[str, str]
) -> None:
    access = ConsoleAccess(Policy(bot_runtime.settings), {}, demo=True, login="nobody-mapped", host=HOST)
    console = Console(bot_runtime.pipeline, access, "U0ADMIN2")
    out = io.StringIO()

    asked = await console.run_once("cache flush")
    await console.shell(io.StringIO("as U0LEAD\n"), out)
    done = await console.run_once(f"approve {asked.ids['approval_id']}")

    assert asked.status == "pending"
    assert "garden[U0LEAD]> " in out.getvalue()
    assert done.status == "succeeded", done
    assert target_redis().dbsize() == 0


async def test_as_in_the_shell_outside_the_demo_follows_the_impersonation_rule(
    bot_runtime: Runtime,
) -> None:
    policy = Policy(bot_runtime.settings)
    operator = ConsoleAccess(policy, {"ops-login": "U0OPS"}, demo=False, login="ops-login", host=HOST)
    admin = ConsoleAccess(policy, {"admin-login": CONSOLE_ADMIN}, demo=False, login="admin-login", host=HOST)
    outputs = []
    for access in (operator, admin):
        user, origin = access.identify(None)
        assert user is not None
        out = io.StringIO()
        await Console(bot_runtime.pipeline, access, user, origin).shell(io.StringIO("as U0INTERN\n"), out)
        outputs.append(out.getvalue())

    refused, switched = outputs
    assert "Only an admin may act as another user" in refused and "garden[U0INTERN]" not in refused
    assert f"Now acting as U0INTERN (impersonated by {CONSOLE_ADMIN}" in switched
    assert "garden[U0INTERN]> " in switched


async def test_an_admin_who_asked_as_someone_else_cannot_approve_it_from_slack(
    bot_runtime: Runtime, bot_world: BotWorld, target_keys: dict[str, str]
) -> None:
    as_admin2 = ConsoleOrigin(os_login=OS_LOGIN, host=HOST, impersonated_by=CONSOLE_ADMIN)
    asked = await bot_runtime.pipeline.handle(
        Request(actor=Actor("U0ADMIN2"), text="cache flush", source="console", console=as_admin2)
    )
    assert asked.status == "pending", asked
    approval_id = asked.ids["approval_id"]

    click = Request(actor=Actor(CONSOLE_ADMIN), text=f"approve {approval_id}", source="slack", channel="C1")
    decided = await bot_runtime.pipeline.handle(click)

    assert decided.status == "refused", decided
    assert target_redis().dbsize() == len(target_keys)  # nothing ran
    assert bot_world.query("SELECT status, requester_impersonated_by FROM approvals") == [
        ("pending", CONSOLE_ADMIN)
    ]


async def test_an_admin_cannot_approve_their_own_slack_request_by_acting_as_another_user(
    bot_runtime: Runtime, target_keys: dict[str, str]
) -> None:
    asked = await bot_runtime.pipeline.handle(
        Request(actor=Actor(CONSOLE_ADMIN), text="cache flush", source="slack", channel="C1")
    )
    approval_id = asked.ids["approval_id"]
    as_lead = ConsoleOrigin(os_login=OS_LOGIN, host=HOST, impersonated_by=CONSOLE_ADMIN)

    decided = await bot_runtime.pipeline.handle(
        Request(actor=Actor("U0LEAD"), text=f"approve {approval_id}", source="console", console=as_lead)
    )

    assert decided.status == "refused", decided
    assert target_redis().dbsize() == len(target_keys)  # nothing ran


async def test_an_admin_who_is_no_approver_cannot_approve_by_acting_as_one(
    bot_runtime: Runtime, bot_world: BotWorld, target_keys: dict[str, str]
) -> None:
    asked = await bot_runtime.pipeline.handle(
        Request(actor=Actor("U0ADMIN"), text="cache flush", source="slack", channel="C1")
    )
    approval_id = asked.ids["approval_id"]
    as_lead = ConsoleOrigin(os_login="someone-else", host=HOST, impersonated_by="U0ADMIN2")  # not an approver

    decided = await bot_runtime.pipeline.handle(
        Request(actor=Actor("U0LEAD"), text=f"approve {approval_id}", source="console", console=as_lead)
    )

    assert decided.status == "refused", decided
    assert "not an approver" in decided.summary or "approver" in decided.summary
    assert target_redis().dbsize() == len(target_keys)
    assert bot_world.query("SELECT status FROM approvals") == [("pending",)]


def schedule_run_traces(world: BotWorld) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """What a `schedule run` leaves behind: its schedule_runs rows and its audit records."""
    runs = world.query("SELECT schedule, trigger FROM schedule_runs")
    audited = world.query("SELECT actor, command FROM audit_log WHERE command = 'approvals sweep'")
    return runs, audited


def test_schedule_run_from_an_unmapped_os_login_is_refused_with_the_run_line_and_runs_nothing(
    bot_world: BotWorld,
) -> None:
    assert bot_world.cli("migrate").returncode == 0  # the tables exist, so "nothing ran" is a count
    map_login_to(bot_world, {})

    result = bot_world.cli("schedule", "run", "approval_sweep")

    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"The OS login {OS_LOGIN} is not in console.users: ask an admin to map it to your Slack user ID."
    ]
    assert schedule_run_traces(bot_world) == ([], [])


def test_schedule_run_from_a_login_mapped_to_a_non_admin_is_refused_and_runs_nothing(
    bot_world: BotWorld,
) -> None:
    assert bot_world.cli("migrate").returncode == 0
    map_login_to(bot_world, {OS_LOGIN: "U0OPS"})

    result = bot_world.cli("schedule", "run", "approval_sweep")

    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"Only an admin may run a schedule by hand: the OS login {OS_LOGIN} is U0OPS, who is not an admin."
    ]
    assert schedule_run_traces(bot_world) == ([], [])


def test_schedule_run_by_a_login_mapped_to_an_admin_is_audited_as_the_scheduler_naming_that_admin(
    bot_world: BotWorld,
) -> None:
    result = bot_world.cli("schedule", "run", "approval_sweep")

    assert result.returncode == 0, result.stderr
    runs, _ = schedule_run_traces(bot_world)
    assert runs == [("approval_sweep", "manual")]
    [(actor, source, console)] = bot_world.query(
        "SELECT actor, source, detail->'console' FROM audit_log WHERE command = 'approvals sweep'"
    )
    assert (actor, source) == ("scheduler", "scheduler")
    assert console == {"os_login": OS_LOGIN, "host": HOST, "impersonated_by": CONSOLE_ADMIN}
