"""Alert storm against Slack's per-channel limit: N alerts in G groups through bot/slack_pacing.py.

    .venv/bin/python bench/alerts.py                      # 500 alerts, 50 groups, 1 msg/s, 5 s spread
    .venv/bin/python bench/alerts.py --alerts 100 --groups 10 --spread 2
    .venv/bin/python bench/alerts.py --webhook            # the same storm through POST /alerts/alertmanager

Alertmanager re-sends a group each time alerts join it; here every group grows one alert at a
time (round robin over the groups, spread over --spread seconds), and each state is a parsed
version 4 payload (core/alerts.py) handed to the pacer, which drives one Slack message per group
(post, then update) against the Web API stand-in that accepts one message a second per channel
and answers 429 with Retry-After beyond it. The floor is the time pacing alone needs: one message
per group at the allowed rate.

With --webhook each payload is POSTed to `serve`'s app in-process (create_app with its lifespan, a
throwaway store and Redis prefix): the bearer token, the parse, the alert_threads table, the audit
record and bot/alert_desk.py's pacer, all on the real path; it also reports the webhook's answer
time (median and 99th percentile), which must not depend on Slack's pace.
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


async def webhook_storm(args: argparse.Namespace, standin: PacedSlackApiStandIn) -> dict[str, Any]:
    """The storm through `POST /alerts/alertmanager` of the real app; Slack's side as above."""
    import statistics
    import tempfile

    from tests.support.asgi import served_app
    from tests.support.runtime import BotWorld
    from tests.support.servers import redis_prefix, throwaway_database

    per_group = args.alerts // args.groups
    bodies = [payload(g, r) for r in range(1, per_group + 1) for g in range(args.groups)]
    token = "bench-alert-token"
    answers: list[float] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        throwaway_database("gbt_bench") as db,
        redis_prefix() as prefix,
    ):
        world = BotWorld(
            Path(tmp) / "gardenbot.yml", Path(tmp) / "state", db, prefix, db, "http://127.0.0.1:9"
        )
        world.extra_env.update(
            {"SLACK_BOT_TOKEN": "xoxb-bench", "SLACK_API_URL": standin.url, "GARDENBOT_ALERT_TOKEN": token}
        )
        loop = asyncio.get_running_loop()
        async with served_app(world.settings()) as app:
            started = loop.time()
            for body in bodies:
                sent = time.perf_counter()
                response = await app.post(
                    "/alerts/alertmanager", content=body, headers={"Authorization": f"Bearer {token}"}
                )
                answers.append(time.perf_counter() - sent)
                assert response.status_code == 200, response.text
                await asyncio.sleep(args.spread / len(bodies))
            while True:  # until every group's latest state is shown
                shown = _shown_firing(world, standin)
                if shown == per_group * args.groups or loop.time() - started > 10 * args.groups:
                    break
                await asyncio.sleep(0.2)
            drained = loop.time() - started
    calls = standin.calls
    answers.sort()
    return {
        "alerts": per_group * args.groups,
        "groups": args.groups,
        "payloads": len(bodies),
        "posts": sum(1 for c in calls if c.method == "chat.postMessage" and c.status == 200),
        "updates": sum(1 for c in calls if c.method == "chat.update" and c.status == 200),
        "429s": sum(1 for c in calls if c.status == 429),
        "lost": per_group * args.groups - shown,
        "answer_p50_ms": statistics.median(answers) * 1000,
        "answer_p99_ms": answers[int(len(answers) * 0.99) - 1] * 1000,
        "drain_s": drained,
        "floor_s": args.groups / min(args.rate, args.slack_rate),
    }


def _shown_firing(world: Any, standin: PacedSlackApiStandIn) -> int:
    """Firing alerts the groups' Slack messages show now (from their stored channel and ts)."""
    total = 0
    for channel, ts in world.query("SELECT channel, ts FROM alert_threads WHERE ts IS NOT NULL"):
        message = standin.message(channel, ts)
        if message is not None:
            total += firing_in(json.dumps(message, ensure_ascii=False))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--alerts", type=int, default=500)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--rate", type=float, default=1.0, help="messages a second per channel (pacer)")
    parser.add_argument("--slack-rate", type=float, default=1.0, help="what the stand-in accepts")
    parser.add_argument("--spread", type=float, default=5.0, help="seconds over which payloads arrive")
    parser.add_argument("--webhook", action="store_true", help="through POST /alerts/alertmanager")
    args = parser.parse_args()
    wall = time.monotonic()
    with PacedSlackApiStandIn(per_second=args.slack_rate) as standin:
        result = asyncio.run((webhook_storm if args.webhook else storm)(args, standin))
    print("| " + " | ".join(result) + " | drain / floor |")
    print("|" + " ---: |" * (len(result) + 1))
    cells = [f"{v:.1f}" if isinstance(v, float) else str(v) for v in result.values()]
    print("| " + " | ".join(cells) + f" | {result['drain_s'] / result['floor_s']:.2f} |")
    print(f"(wall {time.monotonic() - wall:.1f} s)")


if __name__ == "__main__":
    main()
