"""The one way down: roles, help by role, and jobs left behind by a process that is gone."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from bot.runtime import Runtime
from commands.backup import BackupIdArgs
from commands.base import Actor, Role
from core.errors import UsageError
from core.i18n import Translator
from tests.support.runtime import BotWorld, request, table_of


def help_commands(reply: object) -> set[str]:
    rows = table_of(reply).rows  # type: ignore[arg-type]
    return {row[0].removeprefix("/garden ") for row in rows}


async def test_an_unknown_user_is_refused_politely(bot_runtime: Runtime, bot_world: BotWorld) -> None:
    reply = await bot_runtime.pipeline.handle(request("U0STRANGER", "health"))

    assert reply.status == "refused"
    assert reply.exit_code == 2
    assert reply.summary.startswith("Sorry")
    assert "U0STRANGER" in reply.summary
    assert reply.visibility == "asker"
    assert bot_world.query("SELECT count(*) FROM jobs") == [(0,)]


async def test_a_viewer_cannot_run_operator_or_admin_commands(
    bot_runtime: Runtime, bot_world: BotWorld
) -> None:
    stronger = [c for c in bot_runtime.pipeline.registry if c.role > Role.VIEWER]
    assert any(c.name == "cache flush" for c in stronger)

    for command in stronger:
        reply = await bot_runtime.pipeline.handle(request("U0INTERN", command.usage.split("<")[0]))
        assert reply.status == "refused", (command.name, reply)
        assert "you are viewer" in reply.summary, reply.summary
    assert bot_world.query("SELECT count(*) FROM approvals") == [(0,)]
    assert bot_world.query("SELECT count(*) FROM jobs") == [(0,)]


async def test_user_group_membership_grants_operator(bot_runtime: Runtime) -> None:
    on_call = Actor(user_id="U0NEWHIRE", group_ids=frozenset({"S0ONCALL"}))
    alone = Actor(user_id="U0NEWHIRE")

    assert bot_runtime.services.policy.role_of(on_call) == Role.OPERATOR
    assert bot_runtime.services.policy.role_of(alone) == Role.NONE
    health = await bot_runtime.pipeline.handle(request("U0NEWHIRE", "health", groups=frozenset({"S0ONCALL"})))
    flush = await bot_runtime.pipeline.handle(
        request("U0NEWHIRE", "cache flush", groups=frozenset({"S0ONCALL"}))
    )
    stranger = await bot_runtime.pipeline.handle(request("U0NEWHIRE", "health"))

    assert health.status != "refused", health
    assert flush.status == "refused"
    assert "you are operator" in flush.summary
    assert stranger.status == "refused"


async def test_help_lists_only_what_the_asker_may_run(bot_runtime: Runtime) -> None:
    viewer = await bot_runtime.pipeline.handle(request("U0INTERN", "help"))
    admin = await bot_runtime.pipeline.handle(request("U0ADMIN", "help"))

    assert viewer.status == admin.status == "succeeded"
    assert "cache flush" not in help_commands(viewer)
    assert {"health", "cache stats"} <= help_commands(viewer)
    assert "cache flush" in help_commands(admin)
    registry = bot_runtime.pipeline.registry
    assert help_commands(admin) == {c.usage for c in registry}
    assert help_commands(viewer) == {c.usage for c in registry if c.role <= Role.VIEWER}


async def test_help_for_a_command_the_asker_may_not_run_is_refused(bot_runtime: Runtime) -> None:
    reply = await bot_runtime.pipeline.handle(request("U0INTERN", "help cache"))

    assert reply.status == "succeeded"
    assert help_commands(reply) == {"cache stats"}


# --- jobs whose process is gone -----------------------------------------------------------------


def a_dead_pid() -> int:
    """The pid of a process that has just exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def insert_running_job(world: BotWorld, *, host: str, pid: int, heartbeat: str) -> int:
    [(job_id,)] = world.query(
        "INSERT INTO jobs (command, requested_by, source, correlation_id, status, owner_host,"
        " owner_pid, owner_instance, heartbeat_at, started_at)"
        f" VALUES ('cache flush', 'U0ADMIN', 'console', 'c-orphan', 'running', %s, %s, 'gone',"
        f" now() - interval '{heartbeat}', now() - interval '{heartbeat}') RETURNING id",
        (host, pid),
    )
    return int(job_id)


@pytest.mark.parametrize(
    ("host", "pid", "heartbeat"),
    [
        pytest.param(socket.gethostname(), None, "10 minutes", id="this-host-dead-pid-stale-heartbeat"),
        pytest.param("some-other-host", 4242, "10 minutes", id="other-host-stale-heartbeat"),
    ],
)
async def test_a_job_left_running_by_a_gone_process_is_interrupted_at_start(
    bot_world: BotWorld, host: str, pid: int | None, heartbeat: str
) -> None:
    async with bot_world.runtime():
        pass  # the first start creates the tables
    orphan = insert_running_job(bot_world, host=host, pid=pid or a_dead_pid(), heartbeat=heartbeat)
    alive_elsewhere = insert_running_job(bot_world, host="some-other-host", pid=4242, heartbeat="1 second")
    alive_here = insert_running_job(bot_world, host=socket.gethostname(), pid=1, heartbeat="1 second")

    async with bot_world.runtime() as runtime:
        reported = [job.id for job in runtime.startup.interrupted]

    assert reported == [orphan]
    statuses = dict(bot_world.query("SELECT id, status FROM jobs"))
    assert statuses == {orphan: "interrupted", alive_elsewhere: "running", alive_here: "running"}
    [(finished,)] = bot_world.query("SELECT finished_at IS NOT NULL FROM jobs WHERE id = %s", (orphan,))
    assert finished


async def test_a_command_cannot_start_a_risky_one_as_its_follow_up(
    bot_runtime: Runtime, bot_world: BotWorld
) -> None:
    pipeline = bot_runtime.pipeline
    ctx = pipeline._context(request("U0ADMIN", "incident declare P1 x"), Translator("en"))
    assert ctx.follow_up is not None
    restore = pipeline.registry.get("restore")
    assert restore is not None and restore.risky and restore.background

    with pytest.raises(UsageError):
        await ctx.follow_up("restore", BackupIdArgs(backup_id="1"))
    assert bot_world.query("SELECT count(*) FROM jobs") == [(0,)]
