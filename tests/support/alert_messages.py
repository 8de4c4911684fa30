"""One Slack message per alert group, the way the bot keeps it: the first state is posted, later
states update that message. Shared by tests/bot/test_slack_pacing.py and bench/alerts.py.

Each state is numbered per group (`#n`), so what Slack ends up showing says which state won.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from slack_sdk.web.async_client import AsyncWebClient

from bot.slack_pacing import Send, SlackPacer
from core.alerts import AlertGroup

STATE = re.compile(r"#(\d+)$")


def state_number(text: str) -> int:
    match = STATE.search(text)
    if match is None:
        raise ValueError(f"no state number in {text!r}")
    return int(match.group(1))


@dataclass
class GroupMessages:
    client: AsyncWebClient
    channel: str
    ts: dict[str, str] = field(default_factory=dict)
    submitted: dict[str, int] = field(default_factory=dict)
    accepted: list[tuple[str, int]] = field(default_factory=list)  # (group key, state) Slack took

    def text(self, group: AlertGroup, number: int) -> str:
        return (
            f"[{group.status}] {group.severity}: {group.summary} "
            f"({len(group.firing)} of {group.alert_count} firing) #{number}"
        )

    def sender(self, group: AlertGroup) -> Send:
        number = self.submitted.get(group.group_key, 0) + 1
        self.submitted[group.group_key] = number
        text = self.text(group, number)

        async def send() -> None:
            ts = self.ts.get(group.group_key)
            if ts is None:
                answer = await self.client.chat_postMessage(channel=self.channel, text=text)
                self.ts[group.group_key] = str(answer["ts"])
            else:
                await self.client.chat_update(channel=self.channel, ts=ts, text=text)
            self.accepted.append((group.group_key, number))

        return send

    def submit(self, pacer: SlackPacer, group: AlertGroup) -> None:
        pacer.submit(self.channel, group.group_key, self.sender(group))
