"""Reading a large log window in two processes: one part here, the next in a worker process.

The window is cut at a line start (runbooks.logscan.window_spans); each part is scanned with the
same code and the results merged by the caller, which also settles whatever straddles the cut
(a minute, a sliding window). The worker is `python -m runbooks.logworkers`, started afresh: it
imports only what the work needs (not the bot: a `multiprocessing` spawn would import the parent's
main module, seconds and a hundred MB for `gardenbot`), gets no environment beyond where to find
Python modules (no secret reaches it), and hands back its result pickled on stdout. Starting it costs
about 0.3 s, so only windows over `PARALLEL_MIN_BYTES` use one; if it fails, its part is read here.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Callable
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


def _start(work: Callable[[Span, bool], object], span: Span) -> subprocess.Popen[bytes]:
    env = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "PATH": os.defpath}
    worker = subprocess.Popen(
        [sys.executable, "-m", "runbooks.logworkers"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    assert worker.stdin is not None
    worker.stdin.write(pickle.dumps((work, span, True)))  # a few hundred bytes: fits the pipe
    worker.stdin.close()
    return worker


def _result(worker: subprocess.Popen[bytes]) -> tuple[bool, object]:
    assert worker.stdout is not None
    with worker.stdout:
        out = worker.stdout.read()
    if worker.wait() != 0 or not out:
        return False, None
    return True, pickle.loads(out)  # noqa: S301 - our own worker's answer, over its own pipe


def scan_parts(work: Callable[[Span, bool], Result], spans: list[Span]) -> list[Result]:
    """`work(span, after)` for each span, in order: the first here, the others in worker processes
    at the same time (`work` must be picklable: a module-level function or a partial of one)."""
    workers = []
    for span in spans[1:]:
        try:
            workers.append(_start(work, span))
        except OSError:
            break  # no process to be had: the rest is read here
    results = [work(spans[0], False)]
    for index, span in enumerate(spans[1:]):
        done, value = _result(workers[index]) if index < len(workers) else (False, None)
        results.append(value if done else work(span, True))  # type: ignore[arg-type]
    return results


def _serve() -> None:
    work, span, after = pickle.load(sys.stdin.buffer)  # noqa: S301 - from the process that started us
    pickle.dump(work(span, after), sys.stdout.buffer)


if __name__ == "__main__":
    _serve()
