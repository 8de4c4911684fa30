"""Bad input gets one clear refusal and nothing runs: no job, no approval, tables and cache intact."""

from __future__ import annotations

import pytest

from bot.runtime import Runtime
from tests.support.runtime import BotWorld, request, target_redis

BAD_INPUT = [
    pytest.param("frobnicate", "Unknown sub-command", id="unknown-sub-command"),
    pytest.param("cache", "Unknown sub-command", id="family-without-sub-command"),
    pytest.param("approve", "approval id", id="missing-approval-id"),
    pytest.param("deny", "approval id", id="missing-deny-id"),
    pytest.param("audit --colour red", "Unknown option", id="unknown-option"),
    pytest.param("audit --since", "needs a value", id="option-without-value"),
    pytest.param("audit --since yesterday", "Bad argument", id="malformed-since"),
    pytest.param("health now please", "Too many arguments", id="too-many-arguments"),
    pytest.param("cache flush everything", "Too many arguments", id="too-many-for-risky"),
    pytest.param("health; DROP TABLE jobs", "Unknown sub-command", id="sql-after-command"),
    pytest.param("'; DROP TABLE audit_log; --", "Unbalanced quotes", id="sql-quote"),
    pytest.param("$(rm -rf /)", "Unknown sub-command", id="shell-substitution"),
    pytest.param("`id`", "Unknown sub-command", id="backticks"),
    pytest.param("approve ../../etc/passwd", "approval id", id="path-as-approval-id"),
    pytest.param("deny 1; DROP TABLE approvals", "approval id", id="sql-as-approval-id"),
    pytest.param("approve 99999999999999999999999", "approval id", id="huge-approval-id"),
    pytest.param("health " + "x" * 10_240, "too long", id="10kb"),
    pytest.param("health\x00", "control characters", id="nul-byte"),
    pytest.param('audit "U0OPS', "Unbalanced quotes", id="unbalanced-quotes"),
    pytest.param("テスト太郎", "Unknown sub-command", id="japanese-command"),
    pytest.param("cache テスト太郎", "Unknown sub-command", id="japanese-sub-command"),
    pytest.param("help テスト太郎", "Unknown sub-command", id="japanese-help-topic"),
    pytest.param("audit テスト太郎", "Bad argument", id="japanese-user"),
    pytest.param("audit <#C0OPS|ops>", "Bad argument", id="channel-mention-as-user"),
    pytest.param("audit @S0ONCALL", "Bad argument", id="group-mention-as-user"),
    pytest.param("audit @everyone", "Bad argument", id="everyone-as-user"),
]


def nothing_ran(world: BotWorld, keys: dict[str, str]) -> None:
    tables = world.query("SELECT to_regclass('jobs'), to_regclass('audit_log'), to_regclass('approvals')")
    assert tables == [("jobs", "audit_log", "approvals")]
    assert world.query("SELECT count(*) FROM jobs") == [(0,)]
    assert world.query("SELECT count(*) FROM approvals") == [(0,)]
    assert target_redis().mget(list(keys)) == list(keys.values())


@pytest.mark.parametrize(("text", "says"), BAD_INPUT)
async def test_bad_input_is_refused_with_one_clear_line(
    bot_runtime: Runtime, bot_world: BotWorld, target_keys: dict[str, str], text: str, says: str
) -> None:
    # The admin may run everything: any refusal here is about the input, not the role.
    reply = await bot_runtime.pipeline.handle(request("U0ADMIN", text))

    assert reply.status == "refused", reply
    assert reply.exit_code == 2
    assert says.lower() in reply.summary.lower(), reply.summary
    assert "\n" not in reply.summary
    assert len(reply.summary) < 300
    assert reply.visibility == "asker"
    nothing_ran(bot_world, target_keys)
    [(event, outcome)] = bot_world.query("SELECT event, outcome FROM audit_log")
    assert (event, outcome) == ("request", "refused")


async def test_a_refusal_carries_the_usage_line(bot_runtime: Runtime) -> None:
    reply = await bot_runtime.pipeline.handle(request("U0ADMIN", "audit --colour red"))

    assert any("/garden audit [@user] [--since 7d]" in getattr(e, "text", "") for e in reply.elements)


@pytest.mark.parametrize(
    "text",
    ["frobnicate", "approve ../../etc/passwd", "'; DROP TABLE audit_log; --", "audit テスト太郎"],
)
async def test_bad_input_via_the_cli_exits_2(
    bot_world: BotWorld, target_keys: dict[str, str], text: str
) -> None:
    result = bot_world.cli("run", "--user", "U0ADMIN", text)

    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout.strip()
    assert "Traceback" not in result.stderr
    nothing_ran(bot_world, target_keys)
