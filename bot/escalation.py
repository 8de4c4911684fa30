"""Escalation while `gardenbot serve` runs: page every level that falls due, once across replicas.

Each tick asks commands/incident_notices.py to make the pages due now (store/escalation.py claims
each one, so two replicas page once), then sleeps until the next deadline, at most TICK_S. The
scheduler will take this over; until then, like the audit head, its clock and sleep are injectable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from commands.incident_notices import escalate, next_escalation
from commands.services import Services
from core.errors import GardenBotError

log = logging.getLogger(__name__)

TICK_S = 2.0  # a page is late by at most this much (and by however long Slack takes)


async def escalation_once(services: Services, now: datetime) -> float:
    """One tick at `now`; how long to sleep before the next (up to TICK_S)."""
    try:
        made = await escalate(services, now)
        for page in made:
            log.info("INC-%s: level %s paged (%s)", page.incident_id, page.level, page.reason)
        due = await next_escalation(services)
    except GardenBotError as exc:  # store down: try again next tick
        log.warning("escalation tick skipped (%s)", type(exc).__name__)
        return TICK_S
    if due is None:
        return TICK_S
    return min(TICK_S, max(0.0, (due - services.clock()).total_seconds()))


async def escalate_forever(
    services: Services,
    *,
    clock: Callable[[], datetime] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Tick until cancelled; a failing tick is logged and the next one still runs."""
    now = clock or services.clock
    while True:
        try:
            wait = await escalation_once(services, now())
        except Exception:
            log.exception("escalation tick failed")
            wait = TICK_S
        await sleep(wait)
