"""`user create`, `user reset-password`, `user activity` through the pipeline, against a real
sample garden_dx (throwaway database) and a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import bcrypt
import psycopg
import pytest

from bot.console import Console, ConsoleAccess
from bot.runtime import Runtime
from commands.policy import Policy
from core.reply import Fields, Reply, Table
from tests.support.runtime import BotWorld, request
from tests.support.smtp import Inbox

REQUESTER, APPROVER = "U0ADMIN2", "U0LEAD"
KNOWN = "test@garden-dx.example"  # a user of the sample garden
PASSWORD_FIELD = "temporary password"


@pytest.fixture
async def rt(bot_world: BotWorld, garden: str, inbox: Inbox) -> AsyncIterator[Runtime]:
    bot_world.configure(mail={"url": inbox.url, "from": "gardenbot@example.com"})
    async with bot_world.runtime() as runtime:
        yield runtime


def users(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT id, email, name, role, password_hash FROM users ORDER BY id").fetchall()


def password_hash(url: str, email: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT password_hash FROM users WHERE email = %s", (email,)).fetchone()
    assert row is not None
    return str(row[0])


def temporary_password(reply: Reply) -> str:
    for element in reply.elements:
        if isinstance(element, Fields):
            for label, value in element.pairs:
                if label == PASSWORD_FIELD:
                    return value.strip("`")
    raise AssertionError(f"no temporary password in {reply}")


async def approved(rt: Runtime, text: str) -> Reply:
    asked = await rt.pipeline.handle(request(REQUESTER, text))
    assert asked.status == "pending", asked.summary
    decided = await rt.pipeline.handle(request(APPROVER, f"approve {asked.ids['approval_id']}"))
    assert decided.status == "running", decided.summary
    return await rt.pipeline.runner.wait(int(decided.ids["job_id"]))


def approvals(world: BotWorld) -> int:
    return int(world.query("SELECT count(*) FROM approvals")[0][0])


# --- preflight: refused before any approval ------------------------------------------------------


async def test_user_create_of_an_existing_address_is_refused_before_any_approval_opens(
    rt: Runtime, bot_world: BotWorld, garden: str
) -> None:
    before = users(garden)
    reply = await rt.pipeline.handle(request(REQUESTER, "user create TEST@garden-dx.example 別人 employee"))

    assert reply.status == "refused" and "already exists" in reply.summary
    assert approvals(bot_world) == 0 and users(garden) == before


async def test_reset_password_of_an_unknown_address_is_refused_before_any_approval_opens(
    rt: Runtime, bot_world: BotWorld, garden: str
) -> None:
    before = users(garden)
    reply = await rt.pipeline.handle(request(REQUESTER, "user reset-password nobody@garden-dx.example"))

    assert reply.status == "refused" and "no user with the address" in reply.summary
    assert approvals(bot_world) == 0 and users(garden) == before


BAD_INPUT = {
    "unbalanced-quote": ('user create "a@example.com テスト employee', "quotes"),
    "sql-as-the-address": ('user reset-password "\'; DROP TABLE users;--"', "not an e-mail address"),
    "10-KB-name": ("user create a@example.com " + "名" * 10_000 + " employee", "too long"),
    "control-characters": ('user create a@example.com "bad\x07name\x1b[31m" employee', "control"),
    "unknown-role": ("user create a@example.com テスト superuser", "Unknown role"),
    "malformed-address": ("user create not-an-address テスト employee", "not an e-mail address"),
    "address-with-a-quote": ('user reset-password "o\'neil@"', "not an e-mail address"),
    "index-that-is-not-a-name": ('db reindex "users; DROP TABLE users"', "not an index name"),
    "index-that-does-not-exist": ("db reindex no_such_index", "no index no_such_index"),
    "days-that-are-not-a-number": ("user activity 'x'", "days"),
}


@pytest.mark.parametrize(("text", "says"), BAD_INPUT.values(), ids=BAD_INPUT.keys())
async def test_bad_input_gets_one_clear_line_changes_nothing_and_opens_no_approval(
    rt: Runtime, bot_world: BotWorld, garden: str, text: str, says: str | None
) -> None:
    before = users(garden)
    reply = await rt.pipeline.handle(request(REQUESTER, text))

    assert reply.status == "refused", reply.summary
    assert "\n" not in reply.summary and 0 < len(reply.summary) < 300
    assert says.lower() in reply.summary.lower()
    assert reply.visibility == "asker"
    assert approvals(bot_world) == 0 and bot_world.query("SELECT count(*) FROM jobs") == [(0,)]
    assert users(garden) == before


async def test_a_name_that_looks_like_sql_is_stored_as_it_is_written(rt: Runtime, garden: str) -> None:
    name = "'; DROP TABLE users;--"
    result = await approved(rt, f'user create sql@example.com "{name}" owner')

    assert result.status == "succeeded", result.summary
    assert [row[2] for row in users(garden) if row[1] == "sql@example.com"] == [name]


# --- approved: the change, the password, the mail --------------------------------------------------


async def test_an_approved_create_stores_the_account_and_mails_a_welcome_without_the_password(
    rt: Runtime, garden: str, inbox: Inbox
) -> None:
    result = await approved(rt, "user create hanako@Example.JP テスト花子 employee")

    password = temporary_password(result)
    assert result.status == "succeeded" and result.visibility == "asker"
    assert password not in result.summary
    assert bcrypt.checkpw(password.encode(), password_hash(garden, "hanako@example.jp").encode())
    [mail] = inbox.received
    assert mail.rcpt_tos == ["hanako@example.jp"]
    assert "テスト花子" in mail.message.get_content() and password not in mail.raw.decode("utf-8", "replace")


async def test_an_approved_reset_gives_a_new_working_password_the_user_must_change(
    rt: Runtime, garden: str
) -> None:
    before = password_hash(garden, KNOWN)
    result = await approved(rt, f"user reset-password {KNOWN}")

    password = temporary_password(result)
    after = password_hash(garden, KNOWN)
    assert after != before and bcrypt.checkpw(password.encode(), after.encode())
    with psycopg.connect(garden) as conn:
        row = conn.execute("SELECT must_change_password FROM users WHERE email = %s", (KNOWN,)).fetchone()
    assert row == (True,)


async def test_a_create_approved_at_a_console_shows_the_approver_no_password(
    rt: Runtime, garden: str
) -> None:
    asked = await rt.pipeline.handle(request(REQUESTER, "user create taro2@example.com 太郎 owner"))
    access = ConsoleAccess(Policy(rt.settings), {}, demo=True, login="lead", host="h")
    console = Console(rt.pipeline, access, APPROVER)

    shown = await console.run_once(f"approve {asked.ids['approval_id']}")

    assert shown.status == "succeeded" and "private to" in shown.summary
    assert not any(isinstance(e, Fields) for e in shown.elements)
    hashed = password_hash(garden, "taro2@example.com")
    assert hashed.startswith("$2b$")  # created all the same
    assert REQUESTER in shown.summary


# --- activity ---------------------------------------------------------------------------------------


async def test_user_activity_counts_logins_from_the_activity_log(rt: Runtime, garden: str) -> None:
    with psycopg.connect(garden) as conn:
        conn.execute(
            "INSERT INTO user_activity_logs (user_id, action, created_at)"
            " SELECT 1, 'login', now() - interval '1 hour' FROM generate_series(1, 40)"
        )
    reply = await rt.pipeline.handle(request("U0OPS", "user activity 3"))

    assert reply.status == "succeeded", reply.summary
    assert re.search(r"\d+ active users in the last 3 days", reply.summary)
    [top, _actions] = [e for e in reply.elements if isinstance(e, Table)]
    email, _name, logins = top.rows[0]
    assert email == KNOWN and int(logins) >= 40  # the sample's own logins come on top of these


async def test_user_activity_is_refused_to_a_viewer(rt: Runtime) -> None:
    reply = await rt.pipeline.handle(request("U0INTERN", "user activity"))
    assert reply.status == "refused"
