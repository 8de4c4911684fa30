"""Progress of a long runbook, as structured steps: the command layer words them in the asker's language."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


# Every step a runbook reports; each is `progress.<key>` in both locales (tests/core/test_i18n.py).
STEP_KEYS = (
    "dumping",
    "checking_dump",
    "backup_written",
    "checking_checksum",
    "checksum_matched",
    "restoring",
    "counting_rows",
    "database_properties",
    "ready_to_swap",
    "swapping",
    "restored",
    "verified",
    "verify_rows_differ",
)


@dataclass(frozen=True)
class Step:
    """One progress report: `key` names the message (`progress.<key>` in the locales).

    percent is 0-100, or -1 when unknown; params fill the message's placeholders (a param whose
    name ends in `_bytes` is a size in bytes, formatted by the command layer).
    """

    key: str
    percent: int = -1
    params: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.key not in STEP_KEYS:
            raise ValueError(f"unknown progress step {self.key!r}: add it to STEP_KEYS and the locales")


ProgressCallback = Callable[[Step], Awaitable[None]]


async def report(progress: ProgressCallback | None, step: Step) -> None:
    """Progress is cosmetic: a failing callback is logged, never fails the operation."""
    if progress is None:
        return
    try:
        await progress(step)
    except Exception:
        log.warning("progress callback failed", exc_info=True)
