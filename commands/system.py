"""The bot's own actors (the scheduler, the alert webhook) asking through the same pipeline.

A system request names its actor and a configured channel key; its role comes from
`system_actors` in the configuration and commands/access.py decides it like anyone else's.
Where its reply and its job are shown is an `Announcer` (bot/announce.py: Slack and console).
"""

from __future__ import annotations

from typing import Protocol, cast

from commands.base import Actor, Request, Source
from core.config import CHANNEL_KEYS, Settings
from core.errors import ConfigError
from core.reply import Reply


class Announcer(Protocol):
    async def announce(self, request: Request) -> Reply:
        """Run the request through the pipeline, show its reply in the request's channel, then
        follow its job (if it started one) in the same message; the job's result, else the reply."""
        ...


def system_request(settings: Settings, actor_name: str, text: str, channel_key: str) -> Request:
    """`text` asked by the system actor `actor_name`, to be shown in `channels.<channel_key>`."""
    actor = Actor.system_actor(actor_name)
    if channel_key not in CHANNEL_KEYS:
        raise ValueError(f"unknown channel key {channel_key!r}; known: {', '.join(CHANNEL_KEYS)}")
    channel = getattr(settings.channels, channel_key)
    if channel is None:
        raise ConfigError(f"channels.{channel_key}", f"a Slack channel ID (C…) for the {actor_name}'s posts")
    return Request(actor=actor, text=text, source=cast(Source, actor_name), channel=str(channel))
