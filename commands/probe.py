"""`probe`: the minute probe of the API's paths, kept as the availability history reports read.

The scheduler runs it every minute as the system actor; an admin may run it by hand.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from commands.base import Context, NoArgs, Role
from commands.command import Command
from commands.report_sources import take_probes
from core.reply import Reply, Text
from store.probes import prune_probes

# Long enough for the monthly report (the previous calendar month) with room to spare.
PROBE_HISTORY = timedelta(days=93)


async def run_probe(ctx: Context, args: NoArgs) -> Reply:
    t = ctx.t
    svc = ctx.services
    now = datetime.now(UTC)
    if not svc.settings.target.api_url:
        text = t("probe.not_configured")
        return Reply(status="succeeded", summary=text, elements=(Text(text),))
    results = await take_probes(settings=svc.settings, store=svc.store, http=svc.http, now=now)
    await prune_probes(svc.store, before=now - PROBE_HISTORY)
    failing = [r for r in results if not r.healthy]
    if failing:
        detail = ", ".join(f"{r.path} ({r.error or '?'})" for r in failing)
        text = t("probe.failing", failing=len(failing), total=len(results), detail=detail[:300])
        return Reply(status="failed", summary=text, elements=(Text(text),))
    slowest = max((r.latency_ms or 0.0 for r in results), default=0.0)
    text = t("probe.healthy", total=len(results), ms=round(slowest))
    return Reply(status="succeeded", summary=text, elements=(Text(text),))


COMMANDS = (Command(name="probe", role=Role.ADMIN, run=run_probe, mutates=True),)
