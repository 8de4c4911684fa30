"""Which configured user groups (S…) a Slack user belongs to, cached briefly in Redis."""

from __future__ import annotations

import contextlib
import json
import logging
import time

from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from store.coordination import Coordination

log = logging.getLogger(__name__)

CACHE_SECONDS = 300  # membership changes rarely; five minutes keeps clicks fast and Slack calls few
MEMO_SECONDS = 10.0
FAILED_LOOKUP_SECONDS = 60  # a group Slack does not know is asked about again a minute later


class GroupDirectory:
    def __init__(self, client: AsyncWebClient, coordination: Coordination, groups: frozenset[str]) -> None:
        self.client = client
        self.coordination = coordination
        self.groups = groups
        self._memo: dict[str, tuple[float, frozenset[str]]] = {}

    async def groups_of(self, user_id: str) -> frozenset[str]:
        found: set[str] = set()
        for group in sorted(self.groups):
            if user_id in await self._members(group):
                found.add(group)
        return frozenset(found)

    async def _members(self, group: str) -> frozenset[str]:
        # A short in-process memo in front of Redis: a burst of commands asks Redis once.
        remembered = self._memo.get(group)
        if remembered is not None and remembered[0] > time.monotonic():
            return remembered[1]
        members = await self._lookup(group)
        self._memo[group] = (time.monotonic() + MEMO_SECONDS, members)
        return members

    async def _lookup(self, group: str) -> frozenset[str]:
        key = self.coordination.key("usergroup", group)
        try:
            cached = await self.coordination.client.get(key)
            if cached is not None:
                return frozenset(json.loads(cached))
        except (RedisError, OSError):
            log.warning("usergroup cache unavailable; asking Slack")
        try:
            response = await self.client.usergroups_users_list(usergroup=group)
        except SlackApiError as exc:
            log.warning("usergroups.users.list %s failed: %s", group, exc.response.get("error"))
            members: frozenset[str] = frozenset()
            ttl = FAILED_LOOKUP_SECONDS
        else:
            members = frozenset(str(u) for u in response.get("users") or [])
            ttl = CACHE_SECONDS
        with contextlib.suppress(RedisError, OSError):
            await self.coordination.client.set(key, json.dumps(sorted(members)), ex=ttl)
        return members
