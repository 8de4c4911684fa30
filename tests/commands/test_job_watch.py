"""Jobs are watched: a late subscriber starts from the last state; a finished job answers at once."""

from __future__ import annotations

import asyncio

import pytest

from commands.job_watch import JobBoard, JobEvent
from core.errors import GardenBotError
from core.reply import Reply

DONE = Reply(status="succeeded", summary="done")


async def test_a_late_watcher_starts_from_the_last_progress_then_sees_the_end() -> None:
    board = JobBoard()
    board.opened(7)
    board.progress(7, 10, "dumping")
    board.progress(7, 60, "checking")
    seen: list[JobEvent] = []

    async def watch() -> None:
        async for event in board.watch(7):
            seen.append(event)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0)
    board.finished(7, DONE)
    await asyncio.wait_for(watcher, 5)

    assert [(e.percent, e.text, e.reply) for e in seen] == [(60, "checking", None), (60, "checking", DONE)]


async def test_watching_a_finished_job_gives_its_result_at_once() -> None:
    board = JobBoard()
    board.opened(8)
    board.finished(8, DONE)

    assert await asyncio.wait_for(board.result(8), 5) == DONE


async def test_watching_a_job_this_process_never_ran_is_refused() -> None:
    with pytest.raises(GardenBotError):
        await JobBoard().result(9)
