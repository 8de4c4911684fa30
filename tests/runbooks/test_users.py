"""User runbooks against a real PostgreSQL holding the sample garden_dx, and a real SMTP server."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import bcrypt
import psycopg
import pytest

from core.errors import Conflict, NotFound, UsageError
from runbooks.sample_garden import create_sample_garden
from runbooks.users import (
    WelcomeMail,
    check_existing_user,
    check_new_user,
    create_user,
    reset_password,
    user_activity,
    user_exists,
)
from tests.support.serve import free_port
from tests.support.servers import throwaway_database
from tests.support.smtp import Inbox

Conn = psycopg.AsyncConnection[Any]
FAST = 4  # bcrypt rounds in tests that do not check the cost itself


@pytest.fixture
async def garden() -> AsyncIterator[Conn]:
    with throwaway_database("gbt_users") as url:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await create_sample_garden(conn)
            yield conn


async def users_snapshot(conn: Conn) -> list[tuple[Any, ...]]:
    cur = await conn.execute("SELECT id, email, name, role, password_hash FROM users ORDER BY id")
    return await cur.fetchall()


async def stored(conn: Conn, email: str) -> tuple[Any, ...]:
    cur = await conn.execute(
        "SELECT name, role, is_active, password_hash, must_change_password, created_at"
        " FROM users WHERE email = %s",
        (email,),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def test_create_stores_a_japanese_name_and_a_bcrypt_hash_of_a_temporary_password(
    garden: Conn,
) -> None:
    created = await create_user(conn=garden, email="hanako@Example.JP", name="テスト花子", role="employee")

    assert created.email == "hanako@example.jp"
    name, role, active, password_hash, must_change, created_at = await stored(garden, created.email)
    assert (name, role, active, must_change) == ("テスト花子", "employee", True, True)
    assert password_hash.startswith("$2b$12$")  # the default cost
    assert bcrypt.checkpw(created.temporary_password.get_secret_value().encode(), password_hash.encode())
    assert abs(created_at - datetime.now(UTC)) < timedelta(minutes=1)


async def test_the_temporary_password_never_shows_in_repr_str_or_logs(
    garden: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    created = await create_user(conn=garden, email="a@example.com", name="A", role="owner", rounds=FAST)
    reset = await reset_password(conn=garden, email="a@example.com", rounds=FAST)

    for password, result in ((created.temporary_password, created), (reset.temporary_password, reset)):
        secret = password.get_secret_value()
        assert len(secret) >= 16  # at least 96 random bits in URL-safe base64
        assert secret not in repr(result) and secret not in str(result)
        assert secret not in f"{result}" and secret not in caplog.text
    assert created.temporary_password.get_secret_value() != reset.temporary_password.get_secret_value()


async def test_a_duplicate_address_is_refused_by_the_check_and_changes_nothing(garden: Conn) -> None:
    before = await users_snapshot(garden)

    with pytest.raises(Conflict) as checked:
        await check_new_user(conn=garden, email="TEST@garden-dx.example", name="x", role="owner")
    with pytest.raises(Conflict):
        await create_user(conn=garden, email="test@garden-dx.example", name="x", role="owner", rounds=FAST)

    assert checked.value.message_key == "user.exists"
    assert await users_snapshot(garden) == before


HOSTILE_CREATE = [
    ("'; DROP TABLE users;--", "x", "owner", "user.invalid_email"),
    ("not-an-address", "x", "owner", "user.invalid_email"),
    ("a@b", "x", "owner", "user.invalid_email"),
    ("a" * 300 + "@example.com", "x", "owner", "user.invalid_email"),
    ("ok@example.com", "名" * 10_000, "owner", "user.name_too_long"),
    ("ok@example.com", "Bob\x00'; DROP TABLE users;--", "owner", "user.invalid_name"),
    ("ok@example.com", "line\nbreak", "owner", "user.invalid_name"),
    ("ok@example.com", "   ", "owner", "user.invalid_name"),
    ("ok@example.com", "x", "admin", "user.invalid_role"),
    ("ok@example.com", "x", "owner'; DROP TABLE users;--", "user.invalid_role"),
]


@pytest.mark.parametrize(("email", "name", "role", "key"), HOSTILE_CREATE)
async def test_hostile_create_input_gets_one_error_and_leaves_users_unchanged(
    garden: Conn, email: str, name: str, role: str, key: str
) -> None:
    before = await users_snapshot(garden)

    with pytest.raises(UsageError) as caught:
        await create_user(conn=garden, email=email, name=name, role=role, rounds=FAST)

    assert caught.value.message_key == key
    assert len(str(caught.value)) < 300  # a 10 KB input is not echoed back whole
    assert await users_snapshot(garden) == before


async def test_quotes_in_a_valid_address_and_name_are_stored_literally(garden: Conn) -> None:
    created = await create_user(
        conn=garden,
        email="o'brien@example.com",
        name="Robert'); DROP TABLE users;--",
        role="owner",
        rounds=FAST,
    )
    name, *_ = await stored(garden, "o'brien@example.com")
    assert name == "Robert'); DROP TABLE users;--" == created.name
    assert len(await users_snapshot(garden)) == 13


async def test_welcome_mail_goes_to_the_new_user_without_the_password(garden: Conn, inbox: Inbox) -> None:
    mail = WelcomeMail(smtp_url=inbox.url, sender="gardenbot@example.com", login_url="https://garden.example")
    created = await create_user(
        conn=garden, email="t@example.com", name="テスト太郎", role="owner", mail=mail
    )

    assert created.welcome_mail is not None and created.welcome_mail_error is None
    [got] = inbox.received
    assert got.rcpt_tos == ["t@example.com"]
    assert "テスト太郎" in got.message.get_content()
    secret = created.temporary_password.get_secret_value()
    assert secret.encode() not in got.raw and secret not in got.message.get_content()


async def test_when_the_mail_server_is_down_the_user_exists_and_the_error_is_reported(garden: Conn) -> None:
    mail = WelcomeMail(smtp_url=f"smtp://127.0.0.1:{free_port()}", sender="gardenbot@example.com")
    created = await create_user(
        conn=garden, email="t@example.com", name="T", role="owner", mail=mail, rounds=FAST
    )

    assert created.welcome_mail is None
    assert created.welcome_mail_error is not None
    assert created.welcome_mail_error.message_key == "mail.send_failed"
    assert await user_exists(conn=garden, email="t@example.com")


async def test_reset_password_stores_a_new_hash_and_forces_a_change(garden: Conn) -> None:
    email = "sato.ichiro@sato-zoen.example"
    _, _, _, old_hash, must_change_before, _ = await stored(garden, email)
    assert must_change_before is False

    reset = await reset_password(conn=garden, email=email.upper(), rounds=FAST)

    _, _, _, new_hash, must_change, _ = await stored(garden, email)
    assert reset.email == email and new_hash != old_hash and must_change is True
    assert bcrypt.checkpw(reset.temporary_password.get_secret_value().encode(), new_hash.encode())


@pytest.mark.parametrize("email", ["nobody@example.com", "'; DROP TABLE users;--", "x@y"])
async def test_reset_for_an_unknown_or_bad_address_is_refused_and_changes_nothing(
    garden: Conn, email: str
) -> None:
    before = await users_snapshot(garden)

    with pytest.raises((NotFound, UsageError)) as checked:
        await check_existing_user(conn=garden, email=email)
    with pytest.raises(type(checked.value)):
        await reset_password(conn=garden, email=email, rounds=FAST)

    assert await users_snapshot(garden) == before


async def test_activity_counts_active_users_logins_and_actions_in_the_window(garden: Conn) -> None:
    # A window in the future holds only the rows written here: the sample's rows stay outside it.
    now = datetime.now(UTC) + timedelta(days=400)
    rows = [(1, "login", 1), (1, "login", 2), (1, "estimate_create", 2), (3, "login", 3), (3, "logout", 3)]
    rows += [(2, "login", 9), (None, "login_failed", 1)]  # 9 days ago: outside a 7-day window
    for user_id, action, days_ago in rows:
        await garden.execute(
            "INSERT INTO user_activity_logs (user_id, action, created_at) VALUES (%s, %s, %s)",
            (user_id, action, now - timedelta(days=days_ago)),
        )

    week = await user_activity(conn=garden, now=now)
    fortnight = await user_activity(conn=garden, days=14, now=now)

    assert week.active_users == 2
    assert [(u.email, u.logins) for u in week.top_logins] == [
        ("test@garden-dx.example", 2),
        ("hanako.yamada@sato-zoen.example", 1),
    ]
    assert week.actions == (("login", 3), ("estimate_create", 1), ("login_failed", 1), ("logout", 1))
    assert fortnight.active_users == 3


@pytest.mark.parametrize("days", [0, -1, 10_000])
async def test_activity_refuses_a_window_out_of_range(garden: Conn, days: int) -> None:
    with pytest.raises(UsageError):
        await user_activity(conn=garden, days=days)
