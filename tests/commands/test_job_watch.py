"""Jobs are watched: a late subscriber starts from the last state; a finished job answers at once."""

from __future__ import annotations

import asyncio

import pytest

from commands.job_watch import JobBoard, JobEvent
from core.errors import GardenBotError
from core.reply import Fields, Reply

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


async def test_a_private_result_is_whole_for_watchers_then_the_board_keeps_only_its_summary() -> None:
    board = JobBoard(private_keep_seconds=0)
    board.opened(5, "user reset-password", requested_by="U0ADMIN")
    secret = Fields((("Temporary password", "`s3cret-Temp-Pass`"),))
    private = Reply(
        status="succeeded", summary="Password reset for a@example.jp", elements=(secret,), visibility="asker"
    )
    watcher = asyncio.create_task(board.result(5))
    await asyncio.sleep(0)  # the asking surface is subscribed before the job ends

    board.finished(5, private)
    delivered = await watcher
    await asyncio.sleep(0)  # the board's grace (0 here) passes
    late = await board.result(5)

    assert secret in delivered.elements
    assert (late.summary, late.visibility, late.elements) == (private.summary, "asker", ())
    assert "s3cret-Temp-Pass" not in repr(board.__dict__)
