"""`user create`, `user reset-password` (admin, approved by a second person) and `user activity`.

A temporary password reaches only the requester: the job's reply is private (visibility "asker"),
and its summary, which the job row keeps, never holds it. The welcome mail never carries it either.
"""

from __future__ import annotations

from pydantic import Field

from commands.base import ApprovalText, Args, Context, Role
from commands.command import Command
from core.formatting import format_time
from core.reply import Element, Fields, Header, Note, Reply, Table, Text
from runbooks.pg_tools import connect_target
from runbooks.users import (
    CreatedUser,
    NewUser,
    WelcomeMail,
    check_existing_user,
    check_new_user,
    create_user,
    normalise_email,
    normalise_name,
    normalise_role,
    reset_password,
    user_activity,
)


class NewUserArgs(Args):
    email: str
    name: str
    role: str = Field(title="owner|employee")


class EmailArgs(Args):
    email: str


class DaysArgs(Args):
    days: int = Field(default=7, title="days")


async def _checked_new_user(ctx: Context, args: NewUserArgs) -> NewUser:
    """The form first (no connection for a malformed request), then the duplicate in the target."""
    normalise_email(args.email)
    normalise_name(args.name)
    normalise_role(args.role)
    async with connect_target(ctx.services.target_database_url()) as conn:
        return await check_new_user(conn=conn, email=args.email, name=args.name, role=args.role)


async def _checked_existing(ctx: Context, args: EmailArgs) -> str:
    normalise_email(args.email)
    async with connect_target(ctx.services.target_database_url()) as conn:
        return await check_existing_user(conn=conn, email=args.email)


async def preflight_create(ctx: Context, args: NewUserArgs) -> None:
    await _checked_new_user(ctx, args)


async def describe_create(ctx: Context, args: NewUserArgs) -> ApprovalText:
    user = await _checked_new_user(ctx, args)
    mail = ctx.t("user.mail_yes") if _welcome_mail(ctx) else ctx.t("user.mail_no")
    summary = ctx.t("user.create_describe", email=user.email, name=user.name, role=user.role, mail=mail)
    return ApprovalText(summary=summary, binding={"email": user.email})


def _welcome_mail(ctx: Context) -> WelcomeMail | None:
    mail = ctx.services.settings.mail
    if mail.url is None or not mail.sender:
        return None
    return WelcomeMail(smtp_url=mail.url.get_secret_value(), sender=mail.sender)


async def run_create(ctx: Context, args: NewUserArgs) -> Reply:
    t = ctx.t
    await ctx.progress(10, t("user.creating"))
    async with connect_target(ctx.services.target_database_url()) as conn:
        created = await create_user(
            conn=conn, email=args.email, name=args.name, role=args.role, mail=_welcome_mail(ctx)
        )
    summary = t("user.created", email=created.email, user_id=created.id)
    return Reply(
        status="succeeded",
        summary=summary,
        elements=(
            Text(summary),
            Fields(
                (
                    (t("user.name"), created.name),
                    (t("user.role"), created.role),
                    (t("user.temporary_password"), f"`{created.temporary_password.get_secret_value()}`"),
                )
            ),
            Note(t("user.password_private")),
            Text(_mail_line(ctx, created)),
        ),
        visibility="asker",
        ids={"user_id": created.id},
    )


def _mail_line(ctx: Context, created: CreatedUser) -> str:
    if created.welcome_mail_error is not None:
        error = created.welcome_mail_error
        return ctx.t("user.mail_failed", detail=ctx.t(error.message_key, **error.params))
    if created.welcome_mail is None:
        return ctx.t("user.mail_not_configured")
    return ctx.t("user.mail_sent", email=created.email)


async def preflight_reset(ctx: Context, args: EmailArgs) -> None:
    await _checked_existing(ctx, args)


async def describe_reset(ctx: Context, args: EmailArgs) -> ApprovalText:
    address = await _checked_existing(ctx, args)
    return ApprovalText(summary=ctx.t("user.reset_describe", email=address), binding={"email": address})


async def run_reset(ctx: Context, args: EmailArgs) -> Reply:
    t = ctx.t
    await ctx.progress(10, t("user.resetting"))
    async with connect_target(ctx.services.target_database_url()) as conn:
        reset = await reset_password(conn=conn, email=args.email)
    summary = t("user.password_reset", email=reset.email)
    return Reply(
        status="succeeded",
        summary=summary,
        elements=(
            Text(summary),
            Fields(((t("user.temporary_password"), f"`{reset.temporary_password.get_secret_value()}`"),)),
            Note(t("user.password_private")),
        ),
        visibility="asker",
        ids={"user_id": reset.id},
    )


async def show_activity(ctx: Context, args: DaysArgs) -> Reply:
    t = ctx.t
    async with connect_target(ctx.services.target_database_url()) as conn:
        activity = await user_activity(conn=conn, days=args.days)
    summary = t("user.activity_summary", days=activity.days, active=activity.active_users)
    elements: list[Element] = [
        Header(t("user.activity_header", days=activity.days)),
        Text(summary),
        Note(t("user.activity_since", since=format_time(activity.since, ctx.services.settings.zone))),
    ]
    rows: tuple[tuple[str, ...], ...]
    if activity.top_logins:
        rows = tuple((u.email, u.name, str(u.logins)) for u in activity.top_logins)
        elements.append(Table(columns=(t("user.email"), t("user.name"), t("user.logins")), rows=rows))
    if activity.actions:
        rows = tuple((action, str(count)) for action, count in activity.actions)
        elements.append(Table(columns=(t("user.action"), t("user.count")), rows=rows))
    return Reply(status="succeeded", summary=summary, elements=tuple(elements))


COMMANDS = (
    Command(
        name="user create",
        role=Role.ADMIN,
        args=NewUserArgs,
        run=run_create,
        risky=True,
        mutates=True,
        background=True,
        describe=describe_create,
        preflight=preflight_create,
    ),
    Command(
        name="user reset-password",
        role=Role.ADMIN,
        args=EmailArgs,
        run=run_reset,
        risky=True,
        mutates=True,
        background=True,
        describe=describe_reset,
        preflight=preflight_reset,
    ),
    Command(name="user activity", role=Role.OPERATOR, args=DaysArgs, run=show_activity),
)
