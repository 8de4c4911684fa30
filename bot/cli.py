"""`gardenbot`: serve, shell, run, migrate, audit verify|export, schedule list|run."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bot.console import Console, ConsoleAccess, reply_json
from bot.console_render import print_reply
from bot.demo_hosts import running_demo_hosts, with_demo_hosts
from bot.logs import configure_logging
from bot.runtime import Runtime, interrupted_line, open_runtime, require_audit_key, with_embedded_default
from bot.scheduling import ConsoleAnnouncer, build_scheduler
from commands.base import ConsoleOrigin
from commands.policy import Policy
from core.config import Roles, Settings, load_settings
from core.errors import ConfigError, GardenBotError, StoreUnavailable
from core.i18n import Translator
from core.timespan import parse_since
from scheduler.table import find
from store.audit import UNKEYED_REFUSED, parse_head
from store.schedule_runs import latest_runs

log = logging.getLogger("gardenbot")

# Who is who in the embedded demo when the configuration names nobody.
DEMO_ROLES = Roles(admin=["U0DEMOADMIN"], operator=["U0DEMOOPS", "U0DEMOLEAD"], viewer=["U0DEMOVIEW"])
DEMO_APPROVERS = ["U0DEMOLEAD", "U0DEMOADMIN"]

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2  # 3, waiting for approval, comes from Reply.exit_code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gardenbot", description="Garden DX operations bot")
    sub = parser.add_subparsers(dest="action", required=True)
    serve = sub.add_parser("serve", help="HTTP server for Slack and Alertmanager")
    serve.add_argument("--port", type=int, help="default: server.port, PORT, or 3000")
    serve.add_argument("--host", help="default: server.host, GARDENBOT_HOST, or 127.0.0.1")
    act_as = "Slack user ID to act as (the demo: anyone; otherwise only a login mapped to an admin)"
    shell = sub.add_parser("shell", help="interactive console speaking the same commands")
    shell.add_argument("--user", help=act_as)
    run = sub.add_parser("run", help="run one command and print its result")
    run.add_argument("--user", help=act_as)
    run.add_argument("--json", action="store_true", help="print one JSON object")
    run.add_argument("text", help='the sub-command, e.g. "health" or "approve 12"')
    sub.add_parser("migrate", help="apply the bot store's migrations")
    audit = sub.add_parser("audit", help="verify or export the audit log")
    audit_sub = audit.add_subparsers(dest="audit_action", required=True)
    verify = audit_sub.add_parser(
        "verify", help="exit 0 when the chain is intact (prints its head), 1 naming the first bad record"
    )
    verify.add_argument("--head", help="a published head (ID:HASH or HASH) that must still be in the log")
    export = audit_sub.add_parser("export", help="write the audit log to stdout")
    export.add_argument("--since", help="7d, 24h or an ISO time")
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    schedule = sub.add_parser("schedule", help="list the schedules, or run one now")
    schedule_sub = schedule.add_subparsers(dest="schedule_action", required=True)
    listing = schedule_sub.add_parser("list", help="next run and last result of each schedule")
    listing.add_argument("--user", help=act_as)
    run_now = schedule_sub.add_parser(
        "run",
        help="run one schedule now, as the scheduler would; outside the demo only a login that"
        " console.users maps to an admin may, audited as that admin acting as the scheduler",
    )
    run_now.add_argument("name", help="a schedule name, e.g. nightly_backup")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        _quiet_broken_pipe()
        return EXIT_OK


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(os.environ.get("GARDENBOT_LOG_LEVEL", "WARNING" if args.action == "run" else "INFO"))
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_REFUSED
    # The demo may let anyone act as anyone only where nothing real can be touched.
    real_target = _names_a_real_target(settings)
    try:
        settings, embedded = with_embedded_default(settings)
    except Exception as exc:  # the embedded servers failed to start: say so in one line
        print(f"embedded default failed to start: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        require_audit_key(settings)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        if embedded is not None:
            from bot.embedded import stop_embedded

            stop_embedded(embedded)
        return EXIT_REFUSED
    # The demo: embedded servers and nobody configured. Only there may anyone act as anyone.
    demo = embedded is not None and not _names_anyone(settings) and not real_target
    if demo:
        settings = settings.model_copy(update={"roles": DEMO_ROLES, "approvers": DEMO_APPROVERS})
        log.info("embedded demo: no roles configured, using the demo users (see README)")
    try:
        return _dispatch(args, settings, demo)
    finally:
        if embedded is not None:
            from bot.embedded import stop_embedded

            stop_embedded(embedded)


def _dispatch(args: Any, settings: Settings, demo: bool) -> int:
    if args.action == "serve":
        from bot.server import serve

        host = args.host if args.host is not None else settings.server.host
        port = args.port if args.port is not None else settings.server.port
        return serve(settings, host=host, port=port)
    if args.action == "schedule" and args.schedule_action == "list":
        args.action, args.text, args.json = "run", "schedule list", False  # as `run "schedule list"`
    if args.action in ("shell", "run"):
        return _console_action(args, settings, demo)
    origin: ConsoleOrigin | None = None
    if args.action == "schedule":  # `schedule run`: settle who runs it before anything is opened
        origin = _schedule_runner(settings, demo)
        if origin is None:
            return EXIT_REFUSED
    handlers: dict[str, Callable[[Runtime], Awaitable[int]]] = {
        "migrate": _migrate,
        "audit": lambda rt: _audit(rt, args),
        "schedule": lambda rt: _schedule_run(rt, args.name, origin),
    }
    return asyncio.run(_with_runtime(settings, handlers[args.action]))


def _names_a_real_target(settings: Settings) -> bool:
    """A Garden DX database, cache, API or hosts of its own: then no demo rules, whatever the store."""
    target = settings.target
    return any((target.database_url, target.redis_url, target.api_url, settings.hosts.inventory))


def _names_anyone(settings: Settings) -> bool:
    r = settings.roles
    return bool(r.admin or r.operator or r.viewer or settings.approvers)


async def _with_runtime(
    settings: Settings, body: Callable[[Runtime], Awaitable[int]], log_worker: bool = False
) -> int:
    runtime = await open_runtime(settings, log_worker=log_worker)
    t = Translator(settings.locale)
    for job in runtime.startup.interrupted:
        print(interrupted_line(t, job), file=sys.stderr)
    try:
        return await body(runtime)
    finally:
        await runtime.close()


def _console_action(args: Any, settings: Settings, demo: bool) -> int:
    """`shell` and `run`: settle who the console acts as before anything is opened."""
    access = ConsoleAccess(Policy(settings), settings.console.users, demo)
    who = _console_identity(access, args.user, settings.locale)
    if who is None:
        return EXIT_REFUSED
    user, origin = who

    demo_hosts = None
    if demo and args.action == "shell":  # `service restart` and `release` to try on a sample host
        settings, demo_hosts = with_demo_hosts(settings)

    async def body(runtime: Runtime) -> int:
        console = Console(runtime.pipeline, access, user, origin, settings.locale)
        if args.action == "shell":
            async with running_demo_hosts(demo_hosts):
                return await console.shell()
        reply = await console.run_once(args.text)
        if args.json:
            print(reply_json(reply))
        else:
            print_reply(reply, sys.stdout)  # colours on a terminal, the plain text on a pipe
        return reply.exit_code

    # The shell, and a command that reads the app's logs, start the log worker while they open.
    words = str(getattr(args, "text", "")).split()
    log_worker = args.action == "shell" or (bool(words) and words[0] in LOG_COMMANDS)
    return asyncio.run(_with_runtime(settings, body, log_worker))


LOG_COMMANDS = ("security", "logs")


def _console_identity(
    access: ConsoleAccess, given: str | None, locale: str
) -> tuple[str, ConsoleOrigin | None] | None:
    """Who the console acts as, or None after saying in one line why it may not."""
    # GARDENBOT_USER is set by the same person: it names a user exactly as --user does.
    wanted = given or os.environ.get("GARDENBOT_USER") or None
    try:
        user, origin = access.identify(wanted)
    except GardenBotError as exc:
        print(Translator(locale)(exc.message_key, **exc.params), file=sys.stderr)
        return None
    return user or DEMO_ROLES.admin[0], origin  # no user given in the demo: its admin


def _schedule_runner(settings: Settings, demo: bool) -> ConsoleOrigin | None:
    """Who runs a schedule by hand, or None after saying in one line why this login may not."""
    access = ConsoleAccess(Policy(settings), settings.console.users, demo)
    try:
        return access.run_as_scheduler()
    except GardenBotError as exc:
        print(Translator(settings.locale)(exc.message_key, **exc.params), file=sys.stderr)
        return None


async def _migrate(runtime: Runtime) -> int:
    try:
        # Start-up already migrated a reachable store: report what it applied too.
        applied = [*runtime.startup.migrations, *await runtime.services.store.migrate()]
    except StoreUnavailable:
        print("bot store unreachable (DATABASE_URL)", file=sys.stderr)
        return EXIT_FAILED
    print("migrations applied: " + (", ".join(applied) if applied else "none (up to date)"))
    return EXIT_OK


async def _audit(runtime: Runtime, args: Any) -> int:
    audit = runtime.services.audit
    t = Translator(runtime.settings.locale)
    try:
        if args.audit_action == "verify":
            return await _verify(runtime, args.head)
        since = None
        if args.since:
            try:
                since = parse_since(args.since)
            except ValueError as exc:
                print(f"--since: {exc}", file=sys.stderr)
                return EXIT_REFUSED
        count = await audit.export(sys.stdout, since=since, fmt=args.format)
        print(t("audit.exported", count=count), file=sys.stderr)
        return EXIT_OK
    except GardenBotError as exc:
        print(t(exc.message_key, **exc.params), file=sys.stderr)
        return EXIT_FAILED


async def _verify(runtime: Runtime, head: str | None) -> int:
    t = Translator(runtime.settings.locale)
    if head is not None:
        try:
            parse_head(head)
        except ValueError as exc:
            print(f"--head: {exc}", file=sys.stderr)
            return EXIT_REFUSED
    result = await runtime.services.audit.verify(head=head)
    if result.unkeyed:
        if result.keyed_from is None:
            print(t("audit.verify_unkeyed_only", count=result.unkeyed))
        else:
            print(t("audit.verify_unkeyed", count=result.unkeyed, id=result.keyed_from))
    if not result.ok:
        if result.reason == "head missing":
            print(t("audit.verify_head_missing", head=head))
        else:
            print(t("audit.verify_bad", id=result.first_bad_id, reason=result.reason))
        if result.reason == UNKEYED_REFUSED and runtime.settings.audit_unkeyed_until is None:
            start = await runtime.services.audit.unkeyed_start()
            if start is not None:
                print(
                    t(
                        "audit.verify_unkeyed_vouched" if start.vouched_by else "audit.verify_unkeyed_hint",
                        keyed=start.vouched_by,
                        count=start.count,
                        first=start.first_at.isoformat(timespec="seconds"),
                        last=start.last_at.isoformat(timespec="seconds"),
                        head=str(start.last),
                    )
                )
        return EXIT_FAILED
    print(t("audit.verify_ok", checked=result.checked))
    if result.head is not None:
        print(t("audit.verify_head", id=result.head.id, hash=result.head.hash))
    return EXIT_OK


async def _schedule_run(runtime: Runtime, name: str, origin: ConsoleOrigin | None) -> int:
    """Through the same Submit as `gardenbot serve`, as the scheduler.

    Running a schedule by hand acts as the scheduler, which holds admin by default and whose
    schedules take backups and page people: outside the demo only a login that `console.users` maps
    to an admin may (SPEC names no role for it). The audit records the scheduler as the actor with
    the OS login, the host and that admin as `impersonated_by`.
    """
    t = Translator(runtime.settings.locale)
    scheduler = build_scheduler(runtime, ConsoleAnnouncer(), origin=origin)
    if find(scheduler.table, name) is None:
        names = ", ".join(spec.name for spec in scheduler.table)
        print(t("schedule.unknown", name=name, names=names), file=sys.stderr)
        return EXIT_REFUSED
    try:
        run_id = await scheduler.run_now(name)
        if run_id is None:
            print(t("schedule.run_taken", name=name), file=sys.stderr)
            return EXIT_REFUSED
        run = (await latest_runs(runtime.services.store, [name]))[name]
    except StoreUnavailable:
        print(t("store.unavailable_for_changes"), file=sys.stderr)
        return EXIT_FAILED
    print(t("schedule.run_done", name=name, run_id=run_id, status=t(f"schedule.status.{run.status}")))
    return EXIT_OK if run.status == "succeeded" else EXIT_FAILED


def _quiet_broken_pipe() -> None:
    """`gardenbot run … | head` closes our stdout early: that is not an error worth a traceback."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
