"""The Bolt app: `/garden`, the Approve and Deny buttons. Built by a factory, never at import.

Every listener acknowledges first, before any database or network I/O, and hands the work to
`BackgroundWork`; the answer then arrives as a channel message (updated in place) or, for
refusals and private results, as an ephemeral message to the asker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_bolt.authorization import AuthorizeResult
from slack_sdk.web.async_client import AsyncWebClient

from bot.background import BackgroundWork
from bot.clicks import REPLACES_MESSAGE, click_ids, request_from_click
from bot.membership import GroupDirectory
from bot.metrics import Metrics
from bot.notify import slack_client
from bot.runtime import Runtime
from bot.slack_surface import SlackSurface, remember_message, watch_job
from commands.base import Actor, Request
from commands.job_watch import started_job
from core.config import Settings
from core.errors import NotAllowed, StoreUnavailable
from core.i18n import Translator
from core.reply import Reply

log = logging.getLogger(__name__)

SLACK_MENTION = re.compile(r"<@([UW][A-Z0-9]{2,})(?:\|[^>]*)?>")
DEDUP_SECONDS = 3600  # Slack re-delivers within minutes; an hour covers every retry
LEARN_WAIT_S = 10.0  # after the ack, how long a request waits for auth.test to name the workspace


@dataclass
class BotIdentity:
    """Who the bot is in Slack, learned once at start-up (auth.test), never on the ack path."""

    team_id: str | None = None
    enterprise_id: str | None = None
    bot_user_id: str | None = None
    bot_id: str | None = None
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # auth.test answered or gave up


@dataclass
class Workspace:
    """The one Slack team (and enterprise) this bot serves: configured, else learned by auth.test."""

    identity: BotIdentity
    team_id: str | None = None
    enterprise_id: str | None = None

    async def admits(self, body: dict[str, Any]) -> bool:
        """Whether a signed request comes from this workspace. Unknown workspace: refuse."""
        team = self.team_id
        if team is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.identity.settled.wait(), LEARN_WAIT_S)
            team = self.identity.team_id
        if team is None:
            log.warning("Slack workspace unknown (auth.test failed, SLACK_TEAM_ID unset): request refused")
            return False
        enterprise = self.enterprise_id or self.identity.enterprise_id
        teams, enterprises = workspace_of(body)
        if not teams or teams != {team}:
            return False
        return enterprise is None or enterprises <= {enterprise}


def workspace_of(body: dict[str, Any]) -> tuple[set[str], set[str]]:
    """The team and enterprise IDs a slash command or interaction names (asker's and payload's)."""

    def part(name: str) -> dict[str, Any]:
        value = body.get(name)
        return value if isinstance(value, dict) else {}

    teams = {body.get("team_id"), part("team").get("id"), part("user").get("team_id")}
    enterprises = {body.get("enterprise_id"), part("enterprise").get("id")}
    return {str(t) for t in teams if t}, {str(e) for e in enterprises if e}


def build_web_client(runtime: Runtime, session: aiohttp.ClientSession | None = None) -> AsyncWebClient:
    """Every Web API call goes to SLACK_API_URL and retries on 429, connection and 5xx errors.

    One shared HTTP session keeps connections to Slack open instead of one per call.
    """
    return slack_client(runtime.settings, session)


def build_slack_app(
    runtime: Runtime,
    *,
    client: AsyncWebClient,
    work: BackgroundWork,
    metrics: Metrics,
    identity: BotIdentity,
) -> AsyncApp:
    settings = runtime.settings
    app = _bolt_app(settings, client, identity)
    directory = GroupDirectory(client, runtime.services.coordination, runtime.services.policy.group_ids())
    runtime.services.directory = directory  # an approval checks the requester's role again
    workspace = Workspace(identity, settings.slack.team_id, settings.slack.enterprise_id)
    handlers = SlackHandlers(runtime, client, directory, metrics, workspace)
    _listen(app, handlers, work, busy=Translator(settings.locale)("slack.busy"))
    return app


def _listen(app: AsyncApp, handlers: SlackHandlers, work: BackgroundWork, *, busy: str) -> None:
    """`/garden` and every button: ack first, hand the work on; a full queue says so at once."""
    notices: set[asyncio.Task[Any]] = set()

    @app.command("/garden")
    async def garden(ack: AsyncAck, body: dict[str, Any]) -> None:
        if work.spawn(lambda: handlers.slash_command(body)):
            await ack()
        else:
            await ack(text=busy)  # the queue is full: say so now, and nothing runs later

    async def click(
        ack: AsyncAck, respond: AsyncRespond, body: dict[str, Any], action: dict[str, Any]
    ) -> None:
        await ack()
        if not work.spawn(lambda: handlers.click(body, action)):  # not taken: tell the clicker
            notice = asyncio.create_task(
                respond(text=busy, response_type="ephemeral", replace_original=False)
            )
            notices.add(notice)
            notice.add_done_callback(notices.discard)

    for action_id in click_ids():  # approve, deny, and every button bot/clicks.py maps
        app.action(action_id)(click)


def _bolt_app(settings: Settings, client: AsyncWebClient, identity: BotIdentity) -> AsyncApp:
    """Bolt with signature checking on, authorised for this one workspace without an auth.test."""
    if settings.slack.signing_secret is None:
        raise ValueError("SLACK_SIGNING_SECRET is required to serve Slack")
    token = client.token or ""

    async def authorize(**_: Any) -> AuthorizeResult:
        # Single workspace: the bot token is known; no auth.test per request.
        return AuthorizeResult(
            enterprise_id=None,
            team_id=identity.team_id,
            bot_token=token,
            bot_id=identity.bot_id,
            bot_user_id=identity.bot_user_id,
        )

    return AsyncApp(
        signing_secret=settings.slack.signing_secret.get_secret_value(),
        client=client,
        authorize=authorize,
        process_before_response=True,  # the listener acks inline and hands work on: no ack polling
        ssl_check_enabled=True,
        request_verification_enabled=True,
    )


def plain_mentions(text: str) -> str:
    """Slack sends `<@U123|name>`; commands take `@U123`, as typed at the console."""
    return SLACK_MENTION.sub(r"@\1", text)


class SlackHandlers:
    """What runs after the ack: de-duplicate, resolve the asker, call the pipeline, show the reply."""

    def __init__(
        self,
        runtime: Runtime,
        client: AsyncWebClient,
        directory: GroupDirectory,
        metrics: Metrics,
        workspace: Workspace,
    ) -> None:
        self.runtime = runtime
        self.client = client
        self.directory = directory
        self.metrics = metrics
        self.workspace = workspace
        self._watching: set[asyncio.Task[None]] = set()

    async def slash_command(self, body: dict[str, Any]) -> None:
        user = str(body.get("user_id", ""))
        channel = str(body.get("channel_id", ""))
        if not await self._first_delivery("slash", str(body.get("trigger_id") or "")):
            return
        text = plain_mentions(str(body.get("text", "")))
        surface = SlackSurface(self.client, channel=channel, user=user, response_url=body.get("response_url"))
        if await self._from_elsewhere(body, user, channel, text, surface):
            return
        request = Request(
            actor=Actor(user_id=user, group_ids=await self.directory.groups_of(user)),
            text=text,
            source="slack",
            channel=channel,
        )
        reply = await self.runtime.pipeline.handle(request)
        self.metrics.count_command(self.runtime.pipeline.command_name(request.text), reply.status)
        await surface.show(reply)
        await self._remember(reply.ids, surface)
        self._watch(reply, surface)

    async def click(self, body: dict[str, Any], action: dict[str, Any]) -> None:
        """A button: the request bot/clicks.py makes of it, through the pipeline like typed text."""
        user = str((body.get("user") or {}).get("id", ""))
        container = body.get("container") or {}
        channel = str((body.get("channel") or {}).get("id") or container.get("channel_id") or "")
        message_ts = (body.get("message") or {}).get("ts") or container.get("message_ts")
        surface = SlackSurface(
            self.client,
            channel=channel,
            user=user,
            response_url=body.get("response_url"),
            message_ts=str(message_ts) if message_ts else None,
        )
        action_id, value = str(action.get("action_id", "")), str(action.get("value", ""))
        if await self._from_elsewhere(body, user, channel, f"{action_id} {value}", surface):
            return
        actor = Actor(user_id=user, group_ids=await self.directory.groups_of(user))
        request = request_from_click(action_id, value, actor, channel)
        reply = await self.runtime.pipeline.handle(request)
        self.metrics.count_command(self.runtime.pipeline.command_name(request.text), reply.status)
        if request.decision is None and action_id not in REPLACES_MESSAGE:  # the message stays
            await self._answer_in_thread(reply, surface)
            return
        if reply.status in ("refused", "failed") and "job_id" not in reply.ids:
            await surface.tell_asker(reply)  # expired, already decided, not an approver: clicker only
            return
        surface.title = reply.summary
        await surface.update(reply)  # the decision is shown first; only then is its job watched
        await self._remember(reply.ids, surface)
        self._watch(reply, surface)

    async def _answer_in_thread(self, reply: Reply, clicked: SlackSurface) -> None:
        """A command button's answer: private ones to the clicker, others in the message's thread."""
        if reply.visibility == "asker":
            await clicked.tell_asker(reply)
            return
        thread = SlackSurface(
            self.client, channel=clicked.channel, user=clicked.user, thread_ts=clicked.message_ts
        )
        await thread.show(reply)
        self._watch(reply, thread)

    def _watch(self, reply: Reply, surface: SlackSurface) -> None:
        """A started job's progress and result go to the message just shown, in order."""
        job_id = started_job(reply)
        if job_id is None:
            return
        task = asyncio.create_task(self._watch_job(surface, job_id), name=f"slack-watch-{job_id}")
        self._watching.add(task)
        task.add_done_callback(self._watching.discard)

    async def _watch_job(self, surface: SlackSurface, job_id: int) -> None:
        try:
            await watch_job(surface, self.runtime.pipeline.jobs, job_id)
        except Exception:
            log.exception("showing job %s in Slack failed", job_id)  # Slack down must not fail the job

    async def _from_elsewhere(
        self, body: dict[str, Any], user: str, channel: str, text: str, surface: SlackSurface
    ) -> bool:
        """Another team's or enterprise's request: refuse it, audited, and tell the asker. Nothing runs."""
        if await self.workspace.admits(body):
            return False
        teams, enterprises = workspace_of(body)
        log.warning("request from another workspace refused: teams %s enterprises %s", teams, enterprises)
        request = Request(actor=Actor(user_id=user), text=text, source="slack", channel=channel)
        reply = await self.runtime.pipeline.refuse(request, NotAllowed("slack.other_workspace"))
        self.metrics.count_command("unknown", reply.status)
        await surface.tell_asker(reply)
        return True

    async def _first_delivery(self, kind: str, key: str) -> bool:
        if not key:
            return True
        try:
            return await self.runtime.services.coordination.first_time(kind, key, ttl_seconds=DEDUP_SECONDS)
        except StoreUnavailable:
            return True  # Redis down: better to answer twice than never

    async def _remember(self, ids: dict[str, int | str], surface: SlackSurface) -> None:
        await remember_message(self.runtime.services.store, surface, ids)
