"""`probe`: the minute probe of the API's paths, kept as the availability history reports read.

The scheduler runs it every minute as the system actor; an admin may run it by hand. A scheduled
probe is audited only when a path's state changed (healthy to failing or back, or a path probed
for the first time after a gap); every run is still in the probe history and its schedule run.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from commands.base import Context, NoArgs, Role
from commands.command import Command
from commands.report_sources import take_probes
from core.reply import Reply, Text
from store.probes import latest_health, prune_probes

# Long enough for the monthly report (the previous calendar month) with room to spare.
PROBE_HISTORY = timedelta(days=93)
# A path's previous state counts only if it was probed this recently (after a gap: a change).
PREVIOUS_STATE = timedelta(minutes=10)


async def run_probe(ctx: Context, args: NoArgs) -> Reply:
    t = ctx.t
    svc = ctx.services
    now = datetime.now(UTC)
    if not svc.settings.target.api_url:
        text = t("probe.not_configured")
        return Reply(status="succeeded", summary=text, elements=(Text(text),))
    before = await latest_health(svc.store, since=now - PREVIOUS_STATE)
    results = await take_probes(settings=svc.settings, store=svc.store, http=svc.http, now=now)
    await prune_probes(svc.store, before=now - PROBE_HISTORY)
    unchanged = all(before.get(r.path) == r.healthy for r in results)
    failing = [r for r in results if not r.healthy]
    if failing:
        detail = ", ".join(f"{r.path} ({r.error or '?'})" for r in failing)
        text = t("probe.failing", failing=len(failing), total=len(results), detail=detail[:300])
        return Reply(status="failed", summary=text, elements=(Text(text),), uneventful=unchanged)
    slowest = max((r.latency_ms or 0.0 for r in results), default=0.0)
    text = t("probe.healthy", total=len(results), ms=round(slowest))
    return Reply(status="succeeded", summary=text, elements=(Text(text),), uneventful=unchanged)


COMMANDS = (Command(name="probe", role=Role.ADMIN, run=run_probe, mutates=True),)
