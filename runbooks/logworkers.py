"""Reading a large log window in two processes: one part here, the next in a worker process.

The window is cut at a line start (runbooks.logscan.window_spans); each part is scanned with the
same code and the results merged by the caller, which also settles whatever straddles the cut
(a minute, a sliding window). A worker is a fresh `spawn` process (safe beside the bot's threads
and event loop; about 0.3 s to start), so only windows over `PARALLEL_MIN_BYTES` use one.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

Result = TypeVar("Result")
Span = tuple[int, int]
WORKERS_MAX = 2


def parts_wanted() -> int:
    """How many parts to cut a large window into: the CPUs this process may use, at most two."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(WORKERS_MAX, cpus))


def scan_parts(work: Callable[[Span, bool], Result], spans: list[Span]) -> list[Result]:
    """`work(span, after)` for each span, in order: the first here, the others in worker processes
    at the same time (`work` must be picklable: a module-level function or a partial of one)."""
    if len(spans) == 1:
        return [work(spans[0], False)]
    context = multiprocessing.get_context("spawn")
    first: list[Result] = []
    try:
        with ProcessPoolExecutor(max_workers=len(spans) - 1, mp_context=context) as pool:
            later = [pool.submit(work, span, True) for span in spans[1:]]
            first.append(work(spans[0], False))
            return [*first, *(future.result() for future in later)]
    except (BrokenProcessPool, OSError, RuntimeError):
        # No worker to be had (a main module without its `if __name__ == "__main__"` guard, no
        # processes left, …): the same parts, one after the other, here.
        return (first or [work(spans[0], False)]) + [work(span, True) for span in spans[1:]]
