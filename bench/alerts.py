"""Alert storm against Slack's per-channel limit: N alerts in G groups through bot/slack_pacing.py.

    .venv/bin/python bench/alerts.py                      # 500 alerts, 50 groups, 1 msg/s, 5 s spread
    .venv/bin/python bench/alerts.py --alerts 100 --groups 10 --spread 2

Alertmanager re-sends a group each time alerts join it; here every group grows one alert at a
time (round robin over the groups, spread over --spread seconds), and each state is a parsed
version 4 payload (core/alerts.py) handed to the pacer, which drives one Slack message per group
(post, then update) against the Web API stand-in that accepts one message a second per channel
and answers 429 with Retry-After beyond it. The floor is the time pacing alone needs: one message
per group at the allowed rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slack_sdk.web.async_client import AsyncWebClient

from bot.slack_pacing import SlackPacer
from core.alerts import AlertGroup, parse_alert_group
from tests.support.alert_messages import GroupMessages
from tests.support.fixtures import FIXTURES
from tests.support.slack_api_paced import PacedSlackApiStandIn

CHANNEL = "C0ALERTS"
FIRING = re.compile(r"\((\d+) of (\d+) firing\)")
TEMPLATE = json.loads((FIXTURES / "alertmanager" / "GardenDiskSpaceLow-firing.json").read_bytes())


def firing_in(text: str) -> int:
    """How many firing alerts a group's Slack message shows."""
    match = FIRING.search(text)
    return int(match.group(1)) if match else 0


def payload(group: int, firing: int) -> bytes:
    """Alertmanager's payload for `group` with its first `firing` alerts."""
    data: dict[str, Any] = json.loads(json.dumps(TEMPLATE))
    name = f"GardenBench{group:03d}"
    alert = data["alerts"][0]
    data["groupKey"] = f'{{}}:{{alertname="{name}", service="node", severity="warning"}}'
    data["groupLabels"]["alertname"] = data["commonLabels"]["alertname"] = name
    data["alerts"] = [
        {**alert, "labels": {**alert["labels"], "alertname": name, "instance": f"host{n}:9100"}}
        for n in range(firing)
    ]
    data["truncatedAlerts"] = 0
    return json.dumps(data).encode()


async def storm(args: argparse.Namespace, standin: PacedSlackApiStandIn) -> dict[str, Any]:
    per_group = args.alerts // args.groups
    client = AsyncWebClient(token="xoxb-bench", base_url=standin.url)
    messages = GroupMessages(client, CHANNEL)
    pacer = SlackPacer(per_second=args.rate)
    rounds = [parse_alert_group(payload(g, r)) for r in range(1, per_group + 1) for g in range(args.groups)]
    pause = args.spread / len(rounds)
    loop = asyncio.get_running_loop()
    started = loop.time()
    peak = 0
    for group in rounds:
        messages.submit(pacer, group)
        peak = max(peak, pacer.pending(CHANNEL))
        await asyncio.sleep(pause)
    await pacer.drain()
    drained = loop.time() - started
    final: list[AlertGroup] = rounds[-args.groups :]
    shown = [standin.message(CHANNEL, messages.ts[g.group_key]) for g in final if g.group_key in messages.ts]
    firing_shown = sum(firing_in(m["text"]) for m in shown if m is not None)
    calls = standin.calls
    return {
        "alerts": per_group * args.groups,
        "groups": args.groups,
        "payloads": len(rounds),
        "posts": sum(1 for c in calls if c.method == "chat.postMessage" and c.status == 200),
        "updates": sum(1 for c in calls if c.method == "chat.update" and c.status == 200),
        "merged": pacer.stats.merged,
        "429s": sum(1 for c in calls if c.status == 429),
        "lost": per_group * args.groups - firing_shown,
        "peak_queue": peak,
        "drain_s": drained,
        "floor_s": args.groups / min(args.rate, args.slack_rate),  # one message per group
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--alerts", type=int, default=500)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--rate", type=float, default=1.0, help="messages a second per channel (pacer)")
    parser.add_argument("--slack-rate", type=float, default=1.0, help="what the stand-in accepts")
    parser.add_argument("--spread", type=float, default=5.0, help="seconds over which payloads arrive")
    args = parser.parse_args()
    wall = time.monotonic()
    with PacedSlackApiStandIn(per_second=args.slack_rate) as standin:
        result = asyncio.run(storm(args, standin))
    print("| " + " | ".join(result) + " | drain / floor |")
    print("|" + " ---: |" * (len(result) + 1))
    cells = [f"{v:.1f}" if isinstance(v, float) else str(v) for v in result.values()]
    print("| " + " | ".join(cells) + f" | {result['drain_s'] / result['floor_s']:.2f} |")
    print(f"(wall {time.monotonic() - wall:.1f} s)")


if __name__ == "__main__":
    main()
