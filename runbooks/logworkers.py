"""Reading a log window in two processes: one part here, the next in a warm worker process.

The window is cut at a line start (runbooks.logscan.window_spans); each part is scanned with the
same code and the results merged by the caller, which also settles whatever straddles the cut
(a minute, a sliding window). The worker is `python -m runbooks.logworkers`: it imports only what
the work needs (not the bot: a `multiprocessing` spawn would import the parent's main module,
seconds and a hundred MB for `gardenbot`) and gets no environment beyond where to find Python
modules (no secret reaches it).

Starting one costs about 0.3 s (Python and numpy), so it is started once and kept: when the
process starts (`warm_up`), or after its first scan (during it only for a window over
`COLD_MIN_BYTES`: its imports would slow a smaller scan down). Each part is a request on its stdin
and a result on its stdout (length-prefixed pickles); the worker writes one byte when its imports
are done. A ready worker takes half of any window over `WARM_MIN_BYTES`; one still starting is
waited for only for a window over `COLD_MIN_BYTES`. A worker that died is replaced after the next
scan (its part read here meanwhile); it exits when its stdin closes (`close`, at exit, or when
this process dies). Workers belong to the process that started them: a forked child starts its own.
"""

from __future__ import annotations

import atexit
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any, TypeVar

Result = TypeVar("Result")
Span = tuple[int, int]
WORKERS_MAX = 2
COLD_MIN_BYTES = 64 * 1024 * 1024  # a worker still starting is waited for only for a window this large
WARM_MIN_BYTES = 4 * 1024 * 1024  # a ready worker takes a part of any window this large
READY = b"R"
LENGTH = struct.Struct("<Q")
PRELOAD = ("runbooks.log_report", "runbooks.security")  # what the worker imports before it is ready
CLOSE_WAIT_S = 2.0


def parts_wanted() -> int:
    """How many parts to cut a large window into: the CPUs this process may use, at most two."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(WORKERS_MAX, cpus))


class Worker:
    """One worker process, talked to over its own pipes."""

    def __init__(self) -> None:
        env = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "PATH": os.defpath}
        self.process = subprocess.Popen(
            [sys.executable, "-P", "-m", "runbooks.logworkers"],  # -P: the cwd is not put first on its path
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self.ready = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, timeout: float | None) -> bool:
        """Whether its imports are done, waiting at most `timeout` seconds (None: as long as it takes)."""
        if not self.ready and self.alive():
            out = self._out()
            if timeout is None or select.select([out], [], [], timeout)[0]:
                self.ready = out.read(1) == READY
        return self.ready

    def send(self, work: Callable[[Span, bool], object], span: Span) -> None:
        request = pickle.dumps((work, span, True))
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(LENGTH.pack(len(request)) + request)
        stdin.flush()

    def receive(self) -> object:
        """The answer to the last request; EOFError if the worker died."""
        out = self._out()
        head = out.read(LENGTH.size)
        if len(head) < LENGTH.size:
            raise EOFError("log worker stopped")
        (size,) = LENGTH.unpack(head)
        body = out.read(size)
        if len(body) < size:
            raise EOFError("log worker stopped")
        ok, value = pickle.loads(body)  # noqa: S301 - our own worker's answer, over its own pipe
        if not ok:
            raise EOFError(f"log worker failed: {value}")
        return value

    def stop(self) -> None:
        """Kill it (it failed a request) and reap it."""
        self.process.kill()
        self.process.wait()

    def close(self) -> None:
        """Close its stdin (it exits); kill it if it does not, or if it may still be starting."""
        try:
            if self.process.stdin is not None:
                self.process.stdin.close()
            if not self.ready:  # nothing to finish: do not wait for its imports
                self.process.kill()
            self.process.wait(CLOSE_WAIT_S)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def _out(self) -> IO[bytes]:
        assert self.process.stdout is not None
        return self.process.stdout


class Lease:
    """The workers one scan may use, and which of them it does use for its window."""

    def __init__(self, workers: list[Worker]) -> None:
        self.workers = workers
        self.using: list[Worker] = []

    def parts(self, window_bytes: int) -> int:
        """How many parts to cut a window of this size into (1: read it all here)."""
        if window_bytes >= COLD_MIN_BYTES:
            self.workers += _POOL.take(spawn=True)  # worth starting one now, if there is none yet
            self.using = [w for w in self.workers if w.wait_ready(None)]
        elif window_bytes >= WARM_MIN_BYTES:
            self.using = [w for w in self.workers if w.wait_ready(0)]
        else:
            self.using = []
        return 1 + len(self.using)

    def scan(self, work: Callable[[Span, bool], Result], spans: list[Span]) -> list[Result]:
        """`work(span, after)` for each span, in order: the first here, the others in the workers
        chosen by `parts` at the same time (`work` must be picklable: a module-level function or a
        partial of one). A part whose worker fails is read here."""
        sent: list[Worker] = []
        for worker, span in zip(self.using, spans[1:], strict=False):
            try:
                worker.send(work, span)
            except OSError:
                worker.stop()  # a dead worker: this part and the rest are read here
                break
            sent.append(worker)
        unread = list(sent)
        try:
            results = [work(spans[0], False)]
            for index, span in enumerate(spans[1:]):
                value: Any = None
                done = index < len(sent)
                if done:
                    unread.remove(sent[index])
                    try:
                        value = sent[index].receive()
                    except (OSError, EOFError, pickle.UnpicklingError):
                        sent[index].stop()  # replaced after this scan
                        done = False
                results.append(value if done else work(span, True))
        except BaseException:
            for worker in unread:  # its answer would be the next scan's first: out of step
                worker.stop()
            raise
        return results


class _Pool:
    """This process's workers: started once, lent to one scan at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[Worker] = []
        self._lent = 0
        self._owner = os.getpid()

    def take(self, spawn: bool) -> list[Worker]:
        """Hand the idle workers out (dead ones dropped), `spawn`ing the missing ones first
        (without waiting for them)."""
        with self._lock:
            self._own()
            for worker in [w for w in self._idle if not w.alive()]:
                self._idle.remove(worker)
                worker.close()
            if spawn:
                self._spawn()
            taken, self._idle = self._idle, []
            self._lent += len(taken)
            return taken

    def give_back(self, workers: list[Worker], spawn: bool = True) -> None:
        """Take the workers back, and start the missing ones for the next scan."""
        with self._lock:
            self._own()
            self._lent = max(0, self._lent - len(workers))
            for worker in workers:
                if worker.alive():
                    self._idle.append(worker)
                else:
                    worker.close()
            if spawn:
                self._spawn()

    def _own(self) -> None:
        if self._owner != os.getpid():  # a forked child: its parent's workers are not its own
            self.forget()

    def _spawn(self) -> None:
        while len(self._idle) + self._lent < parts_wanted() - 1:
            try:
                self._idle.append(Worker())
            except OSError:
                break  # no process to be had: parts are read here

    def pids(self) -> list[int]:
        with self._lock:
            return [w.pid for w in self._idle]

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.close()

    def forget(self) -> None:
        """In a forked child: drop the parent's workers (closing only this process's copies of
        their pipes, so they still exit when the parent closes them)."""
        for worker in self._idle:
            for pipe in (worker.process.stdin, worker.process.stdout):
                try:
                    if pipe is not None:
                        os.close(pipe.fileno())
                except (OSError, ValueError):
                    pass
        self._idle, self._lent, self._owner = [], 0, os.getpid()
        self._lock = threading.Lock()


_POOL = _Pool()
atexit.register(_POOL.close)
os.register_at_fork(after_in_child=_POOL.forget)


@contextmanager
def lease() -> Iterator[Lease]:
    """The idle workers for one scan, given back after it. None yet: one is started for a window
    over `COLD_MIN_BYTES`, else after the scan (its imports would slow this scan down)."""
    held = Lease(_POOL.take(spawn=False))
    try:
        yield held
    finally:
        _POOL.give_back(held.workers)


def warm_up(wait: bool = False) -> None:
    """Start the workers now (at a process's start), so the first scan finds them ready;
    `wait`: until their imports are done."""
    workers = _POOL.take(spawn=True)
    try:
        for worker in workers if wait else []:
            worker.wait_ready(None)
    finally:
        _POOL.give_back(workers)


def close() -> None:
    """Stop the idle workers (at shutdown; a later scan starts new ones)."""
    _POOL.close()


def worker_pids() -> list[int]:
    """Process ids of the idle workers."""
    return _POOL.pids()


def scan_parts(work: Callable[[Span, bool], Result], spans: list[Span]) -> list[Result]:
    """`work(span, after)` for each span, in order: the first here, the others in workers, waited
    for if they are still starting."""
    with lease() as held:
        held.workers += _POOL.take(spawn=True)
        held.using = [w for w in held.workers if w.wait_ready(None)]
        return held.scan(work, spans)


def _serve() -> None:
    for module in PRELOAD:
        __import__(module)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write(READY)
    stdout.flush()
    while head := stdin.read(LENGTH.size):
        (size,) = LENGTH.unpack(head)
        work, span, after = pickle.loads(stdin.read(size))  # noqa: S301 - from the process that started us
        try:
            answer = pickle.dumps((True, work(span, after)))
        except Exception as exc:
            answer = pickle.dumps((False, type(exc).__name__))
        stdout.write(LENGTH.pack(len(answer)) + answer)
        stdout.flush()


if __name__ == "__main__":
    _serve()
