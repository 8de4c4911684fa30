"""The warm log worker: started once and kept, replaced when it dies, given no secret, and the
reports it helps read are the same as reading the window in one process."""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest

from runbooks import logworkers
from runbooks.log_report import summarize_logs
from runbooks.security import SecurityThresholds, scan_security

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SECRET = "xoxb-not-for-log-workers"


def where_read(span: tuple[int, int], after: bool) -> tuple[int, tuple[int, int], bool, list[str]]:
    return os.getpid(), span, after, sorted(os.environ)


def dies_elsewhere(parent: int, span: tuple[int, int], after: bool) -> tuple[int, tuple[int, int]]:
    if os.getpid() != parent:
        os._exit(3)  # the worker dies in the middle of its part
    return os.getpid(), span


def fails_here(parent: int, span: tuple[int, int], after: bool) -> tuple[int, tuple[int, int]]:
    if os.getpid() == parent:
        raise ValueError("a part read here failed")  # e.g. a line the scan could not take
    return os.getpid(), span


@pytest.fixture
def fresh_workers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No worker left from another test; every window worth two parts."""
    logworkers.close()
    monkeypatch.setattr(logworkers, "COLD_MIN_BYTES", 1)
    monkeypatch.setattr(logworkers, "WARM_MIN_BYTES", 1)
    monkeypatch.setattr(logworkers, "parts_wanted", lambda: 2)
    yield
    logworkers.close()


def gone(pid: int) -> bool:
    """Whether the process has exited, all its threads too (only then can its parent reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        threads = len(list(Path(f"/proc/{pid}/task").iterdir()))
    except FileNotFoundError:
        return True
    return state == "Z" and threads <= 1


def test_one_worker_is_started_and_kept_for_later_scans(fresh_workers: None) -> None:
    first = logworkers.scan_parts(where_read, [(0, 10), (10, 20)])
    second = logworkers.scan_parts(where_read, [(0, 5), (5, 9)])

    assert first[1][0] != os.getpid()
    assert second[1][0] == first[1][0]
    assert second[1][1:3] == ((5, 9), True)
    assert logworkers.worker_pids() == [first[1][0]]


def test_a_small_first_scan_is_read_here_and_leaves_a_worker_for_the_next(
    fresh_workers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logworkers, "COLD_MIN_BYTES", 1000)  # a worker is waited for over 1000 bytes
    with logworkers.lease() as first:
        alone = first.parts(100)
        helpers = list(first.workers)
    (pid,) = logworkers.worker_pids()  # started after the first scan
    logworkers.warm_up(wait=True)
    with logworkers.lease() as second:
        parts = second.parts(100)
        here, there = second.scan(where_read, [(0, 10), (10, 20)])

    assert (alone, helpers) == (1, [])
    assert parts == 2 and there[0] == pid and here[0] == os.getpid()


def test_a_large_first_scan_starts_the_worker_and_waits_for_it(fresh_workers: None) -> None:
    with logworkers.lease() as first:
        parts = first.parts(10)
        _, there = first.scan(where_read, [(0, 10), (10, 20)])

    assert parts == 2 and there[0] != os.getpid() and logworkers.worker_pids() == [there[0]]


def test_a_killed_worker_is_replaced_at_the_next_scan(fresh_workers: None) -> None:
    (_, (killed, *_)) = logworkers.scan_parts(where_read, [(0, 10), (10, 20)])
    os.kill(killed, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not gone(killed) and time.monotonic() < deadline:
        time.sleep(0.01)

    here, there = logworkers.scan_parts(where_read, [(0, 10), (10, 20)])

    assert there[0] not in (killed, os.getpid())
    assert there[1] == (10, 20) and here[1] == (0, 10)


def test_a_worker_dying_in_its_part_leaves_the_part_read_here_then_is_replaced(
    fresh_workers: None,
) -> None:
    logworkers.warm_up()
    (dead,) = logworkers.worker_pids()

    results = logworkers.scan_parts(partial(dies_elsewhere, os.getpid()), [(0, 10), (10, 20)])
    replaced = logworkers.scan_parts(where_read, [(0, 10), (10, 20)])

    assert results == [(os.getpid(), (0, 10)), (os.getpid(), (10, 20))]
    assert replaced[1][0] not in (dead, os.getpid())


def test_a_scan_failing_here_leaves_no_answer_for_the_next_scan_to_read(fresh_workers: None) -> None:
    with pytest.raises(ValueError):
        logworkers.scan_parts(partial(fails_here, os.getpid()), [(0, 10), (10, 20)])
    after = logworkers.scan_parts(where_read, [(0, 5), (5, 9)])

    assert [part[1] for part in after] == [(0, 5), (5, 9)]  # not the failed scan's (10, 20)


def test_a_numpy_py_in_the_working_directory_is_not_what_the_worker_imports(
    fresh_workers: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "numpy.py").write_text("raise SystemExit('a planted numpy ran')\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)

    _, there = logworkers.scan_parts(where_read, [(0, 10), (10, 20)])

    assert there[0] != os.getpid()  # read in the worker, which imported the real numpy


def test_the_worker_gets_no_secret_from_this_process(
    fresh_workers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", SECRET)
    monkeypatch.setenv("GARDENBOT_AUDIT_KEY", SECRET)
    logworkers.warm_up(wait=True)  # past its exec: /proc/<pid>/environ is empty while it forks
    (pid,) = logworkers.worker_pids()

    started_with = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    _, there = logworkers.scan_parts(where_read, [(0, 10), (10, 20)])

    assert {entry.split(b"=")[0] for entry in started_with if entry} == {b"PATH", b"PYTHONPATH"}
    assert SECRET.encode() not in b"".join(started_with)
    assert there[0] == pid and set(there[3]) <= {"PATH", "PYTHONPATH", "LC_CTYPE"}


def test_close_stops_the_worker(fresh_workers: None) -> None:
    logworkers.warm_up()
    (pid,) = logworkers.worker_pids()

    logworkers.close()

    assert logworkers.worker_pids() == []
    assert gone(pid)


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An API log with bursts and ids in paths, and an auth log with failures, over a day."""
    rng = random.Random(21)
    root = tmp_path_factory.mktemp("workers")
    start = int(NOW.timestamp()) - 86_400
    api, auth = [], []
    for second in range(0, 86_400, 2):
        burst = second % 7200 == 0  # one address, 40 requests in a second: a burst every 2 hours
        for _ in range(40 if burst else rng.choice([1, 1, 2])):
            address = "192.0.2.9" if burst else f"198.51.100.{rng.randrange(30)}"
            path = rng.choice(["/api/estimates", f"/api/estimates/{rng.randrange(999)}", "/health"])
            status, ms = rng.choice(["200", "200", "503"]), rng.randrange(2000)
            api.append(f'{address} - - {start + second} "GET {path} HTTP/1.1" {status} {ms}')
        if second % 10 == 0:
            stamp = datetime.fromtimestamp(start + second, UTC).isoformat()
            what = "authentication failed" if rng.random() < 0.3 else "login ok"
            auth.append(f"203.0.113.{rng.randrange(5)} {stamp} {what} user=u{rng.randrange(9)}")
    (root / "api.log").write_text("\n".join(api) + "\n")
    (root / "auth.log").write_text("\n".join(auth) + "\n")
    return root / "api.log", root / "auth.log"


def test_reports_read_with_the_warm_worker_equal_reading_in_one_process(
    logs: tuple[Path, Path], fresh_workers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    api, auth = logs
    limits = SecurityThresholds(requests_per_minute=30)
    logworkers.warm_up()
    helped = [summarize_logs(error_log=None, api_log=api, now=NOW) for _ in range(2)]
    secured = [scan_security(auth_log=auth, api_log=api, now=NOW, thresholds=limits) for _ in range(2)]
    (pid,) = logworkers.worker_pids()

    monkeypatch.setattr(logworkers, "parts_wanted", lambda: 1)
    logworkers.close()
    alone = summarize_logs(error_log=None, api_log=api, now=NOW)
    alone_secured = scan_security(auth_log=auth, api_log=api, now=NOW, thresholds=limits)

    assert logworkers.worker_pids() == [] and pid != os.getpid()
    for summary in helped:
        assert summary.top_endpoints == alone.top_endpoints and summary.requests == alone.requests > 40_000
        assert (summary.average_ms, summary.p95_ms, summary.server_errors) == (
            alone.average_ms,
            alone.p95_ms,
            alone.server_errors,
        )
        counted = [(s.lines, s.skipped) for s in summary.sources]
        assert counted == [(s.lines, s.skipped) for s in alone.sources]
    for report in secured:
        assert report.request_bursts == alone_secured.request_bursts and len(report.request_bursts) >= 5
        assert report.failed_login_bursts == alone_secured.failed_login_bursts
        assert report.failed_logins == alone_secured.failed_logins > 0
