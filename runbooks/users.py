"""Garden DX accounts: create one, reset its password, and who has been active.

The checks (`check_new_user`, `check_existing_user`) run before any approval is opened; the changes
(`create_user`, `reset_password`) run after it. A temporary password travels only inside a SecretStr:
its repr and str are masked, so a result printed into a log or the audit shows nothing.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import bcrypt
import psycopg
from psycopg.rows import tuple_row
from pydantic import SecretStr

from core.errors import Conflict, NotFound, RunbookFailed, UsageError
from runbooks.mail import SentMail, send_mail

Role = Literal["owner", "employee"]
ROLES: tuple[Role, ...] = ("owner", "employee")
NAME_MAX = 100
EMAIL_MAX = 254
PASSWORD_BYTES = 15  # 120 random bits, 20 URL-safe characters
BCRYPT_ROUNDS = 12
ACTIVITY_DAYS_MAX = 366
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL = re.compile(rf"^[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]{{1,64}}@{_LABEL}(?:\.{_LABEL})+$")

Conn = psycopg.AsyncConnection[Any]


@dataclass(frozen=True)
class NewUser:
    """A checked request: the values as they will be stored."""

    email: str
    name: str
    role: Role


@dataclass(frozen=True)
class CreatedUser:
    id: int
    email: str
    name: str
    role: Role
    created_at: datetime
    temporary_password: SecretStr
    welcome_mail: SentMail | None = None
    welcome_mail_error: RunbookFailed | None = None  # the user exists; only the mail failed


@dataclass(frozen=True)
class PasswordReset:
    id: int
    email: str
    temporary_password: SecretStr


@dataclass(frozen=True)
class UserLogins:
    email: str
    name: str
    logins: int


@dataclass(frozen=True)
class UserActivity:
    days: int
    since: datetime
    active_users: int
    top_logins: tuple[UserLogins, ...]
    actions: tuple[tuple[str, int], ...]  # (action, count), most frequent first


@dataclass(frozen=True)
class WelcomeMail:
    smtp_url: str
    sender: str
    login_url: str | None = None


def normalise_email(raw: str) -> str:
    """The address as stored: trimmed, domain in lower case; anything not an address is refused."""
    email = raw.strip()
    if len(email) > EMAIL_MAX or not EMAIL.match(email):
        raise UsageError("user.invalid_email", email=_shown(email))
    local, _, domain = email.rpartition("@")
    return f"{local}@{domain.lower()}"


def normalise_name(raw: str) -> str:
    """Any UTF-8 name (テスト太郎) of 1..100 characters, without control characters."""
    name = unicodedata.normalize("NFC", raw.strip())
    if len(name) > NAME_MAX:
        raise UsageError("user.name_too_long", limit=NAME_MAX)
    if not name or any(unicodedata.category(ch) in {"Cc", "Cs", "Zl", "Zp"} for ch in name):
        raise UsageError("user.invalid_name")
    return name


def normalise_role(raw: str) -> Role:
    role = raw.strip().lower()
    for known in ROLES:
        if role == known:
            return known
    raise UsageError("user.invalid_role", role=_shown(raw), roles=" | ".join(ROLES))


def _shown(text: str) -> str:
    """User text echoed in an error: printable and short."""
    clean = "".join(ch if ch.isprintable() else "?" for ch in text)
    return clean if len(clean) <= 80 else clean[:77] + "..."


async def find_user_id(*, conn: Conn, email: str) -> int | None:
    """The id of the account with this address (case-insensitive), or None."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute("SELECT id FROM users WHERE lower(email) = lower(%s)", (email,))
        row = await cur.fetchone()
    return int(row[0]) if row else None


async def user_exists(*, conn: Conn, email: str) -> bool:
    return await find_user_id(conn=conn, email=email) is not None


async def check_new_user(*, conn: Conn, email: str, name: str, role: str) -> NewUser:
    """Validate `user create` and refuse a duplicate address, before any approval is opened."""
    user = NewUser(normalise_email(email), normalise_name(name), normalise_role(role))
    if await user_exists(conn=conn, email=user.email):
        raise Conflict("user.exists", email=user.email)
    return user


async def check_existing_user(*, conn: Conn, email: str) -> str:
    """Validate `user reset-password`: the address as stored; unknown ones are refused."""
    address = normalise_email(email)
    if not await user_exists(conn=conn, email=address):
        raise NotFound("user.not_found", email=address)
    return address


def new_temporary_password() -> SecretStr:
    return SecretStr(secrets.token_urlsafe(PASSWORD_BYTES))


async def hash_password(password: SecretStr, *, rounds: int = BCRYPT_ROUNDS) -> str:
    """bcrypt, off the event loop (a cost-12 hash takes a few hundred milliseconds)."""
    raw = password.get_secret_value().encode()
    hashed = await asyncio.to_thread(bcrypt.hashpw, raw, bcrypt.gensalt(rounds))
    return hashed.decode()


async def create_user(
    *,
    conn: Conn,
    email: str,
    name: str,
    role: str,
    mail: WelcomeMail | None = None,
    rounds: int = BCRYPT_ROUNDS,
) -> CreatedUser:
    """Insert the account with a temporary password it must change; welcome mail (no password)."""
    user = await check_new_user(conn=conn, email=email, name=name, role=role)
    password = new_temporary_password()
    password_hash = await hash_password(password, rounds=rounds)
    try:
        async with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(
                "INSERT INTO users (email, name, role, is_active, password_hash, must_change_password,"
                " created_at) VALUES (%s, %s, %s, true, %s, true, now()) RETURNING id, created_at",
                (user.email, user.name, user.role, password_hash),
            )
            row = await cur.fetchone()
    except psycopg.errors.UniqueViolation:
        raise Conflict("user.exists", email=user.email) from None
    assert row is not None
    created = CreatedUser(int(row[0]), user.email, user.name, user.role, row[1], password)
    if mail is None:
        return created
    try:
        sent = await send_welcome_mail(mail=mail, user=created)
    except RunbookFailed as exc:
        return _with_mail(created, None, exc)
    return _with_mail(created, sent, None)


def _with_mail(user: CreatedUser, sent: SentMail | None, error: RunbookFailed | None) -> CreatedUser:
    return CreatedUser(
        user.id, user.email, user.name, user.role, user.created_at, user.temporary_password, sent, error
    )


def welcome_text(user: CreatedUser, login_url: str | None) -> tuple[str, str]:
    """Subject and body of the welcome mail, in Japanese then English; never the password."""
    where = f"\n{login_url}\n" if login_url else ""
    body = (
        f"{user.name} 様\n\nGarden DX のアカウントを作成しました（{user.email}）。"
        "仮パスワードは管理者から別途お伝えします。初回ログイン時に変更してください。\n"
        f"{where}\n"
        f"Your Garden DX account ({user.email}) has been created. Your administrator will give you "
        "a temporary password separately; you will be asked to change it at first login.\n"
    )
    return "Garden DX アカウントのご案内 / Your Garden DX account", body


async def send_welcome_mail(*, mail: WelcomeMail, user: CreatedUser) -> SentMail:
    subject, body = welcome_text(user, mail.login_url)
    return await send_mail(
        smtp_url=mail.smtp_url, sender=mail.sender, to=[user.email], subject=subject, body=body
    )


async def reset_password(*, conn: Conn, email: str, rounds: int = BCRYPT_ROUNDS) -> PasswordReset:
    """A new temporary password, stored as a bcrypt hash; the user must change it at next login."""
    address = normalise_email(email)
    password = new_temporary_password()
    password_hash = await hash_password(password, rounds=rounds)
    async with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(
            "UPDATE users SET password_hash = %s, must_change_password = true"
            " WHERE lower(email) = lower(%s) RETURNING id, email",
            (password_hash, address),
        )
        rows = await cur.fetchall()
        if len(rows) != 1:
            raise NotFound("user.not_found", email=address)  # rolls the transaction back
    return PasswordReset(int(rows[0][0]), str(rows[0][1]), password)


async def user_activity(*, conn: Conn, days: int = 7, now: datetime | None = None) -> UserActivity:
    """Active users, the 10 with most logins, and actions by count over the last `days` days."""
    if not 1 <= days <= ACTIVITY_DAYS_MAX:
        raise UsageError("user.bad_days", limit=ACTIVITY_DAYS_MAX)
    since = (now or datetime.now(UTC)) - timedelta(days=days)
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(
            "SELECT count(DISTINCT user_id) FROM user_activity_logs"
            " WHERE created_at >= %s AND user_id IS NOT NULL",
            (since,),
        )
        active = await cur.fetchone()
        await cur.execute(
            "SELECT u.email, u.name, count(*) FROM user_activity_logs a JOIN users u ON u.id = a.user_id"
            " WHERE a.created_at >= %s AND a.action = 'login'"
            " GROUP BY u.id, u.email, u.name ORDER BY count(*) DESC, u.email LIMIT 10",
            (since,),
        )
        top = [UserLogins(str(r[0]), str(r[1]), int(r[2])) for r in await cur.fetchall()]
        await cur.execute(
            "SELECT action, count(*) FROM user_activity_logs WHERE created_at >= %s"
            " GROUP BY action ORDER BY count(*) DESC, action",
            (since,),
        )
        actions = tuple((str(r[0]), int(r[1])) for r in await cur.fetchall())
    return UserActivity(days, since, int(active[0]) if active else 0, tuple(top), actions)
