"""`GET /metrics` of the app `serve` runs, in-process, after real work: a backup taken through
`/garden backup` sets the last-good-backup gauge and times the job; an alert is counted; the scrape
passes `promtool check metrics`."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from datetime import UTC, datetime

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.bot.test_alerts_webhook import AUTH, PATH, payload, running, wait_until, world
from tests.support.runtime import BotWorld
from tests.support.servers import throwaway_database
from tests.support.signing import new_trigger_id, signed_headers, slash_body
from tests.support.slack_api import SlackApiStandIn

__all__ = ["world"]  # a fixture, used by name (`standin` is in tests/conftest.py)
LAST_GOOD = "gardenbot_last_good_backup_timestamp_seconds[]"


def scraped(text: str) -> dict[str, float]:
    return {
        sample.name + str(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def backup_then_scrape(world: BotWorld, standin: SlackApiStandIn) -> tuple[str, str]:
    """The scrape before anything ran, and the one after a backup and an alert."""
    async with running(world) as app:
        before = (await app.get("/metrics")).text
        body = slash_body(
            "backup",
            user="U0OPS",
            channel="C0OPS",
            trigger_id=new_trigger_id(),
            response_url=standin.response_url(),
        )
        assert (
            await app.post("/slack/events", content=body, headers=signed_headers(body))
        ).status_code == 200
        await wait_until(
            lambda: world.query("SELECT status FROM jobs WHERE command = 'backup' AND status <> 'running'"),
            timeout=60,
            what="the backup's end",
        )
        await app.post(PATH, content=payload("GardenDiskSpaceLow-firing"), headers=AUTH)
        after = ""
        for _ in range(100):  # the gauge is read from the catalog right after the job's end
            after = (await app.get("/metrics")).text
            if scraped(after)[LAST_GOOD] > 0:
                break
            await asyncio.sleep(0.1)
    return before, after


async def test_after_a_backup_the_scrape_carries_the_last_good_backup_and_the_job_duration(
    world: BotWorld, standin: SlackApiStandIn
) -> None:
    with throwaway_database("gbt_target") as target:
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute("CREATE TABLE plants (id int PRIMARY KEY, name text)")
            conn.execute("INSERT INTO plants VALUES (1, 'fern')")
        world.extra_env["GARDEN_DATABASE_URL"] = target
        before, after = await backup_then_scrape(world, standin)

    assert world.query("SELECT status FROM jobs") == [("succeeded",)]
    assert scraped(before)[LAST_GOOD] == 0
    got = scraped(after)
    [(finished,)] = world.query("SELECT extract(epoch FROM finished_at) FROM backups WHERE status = 'good'")
    assert got[LAST_GOOD] == pytest.approx(float(finished))
    assert got["gardenbot_job_duration_seconds_count[('kind', 'backup'), ('outcome', 'succeeded')]"] == 1
    assert got["gardenbot_alert_notifications_total[('status', 'firing')]"] == 1
    assert got["gardenbot_audit_spool_records[]"] == 0
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is missing: scripts/test.sh installs Debian's `prometheus` package")
    check = subprocess.run(
        [tool, "check", "metrics"], input=after.encode(), capture_output=True, timeout=60, check=False
    )
    assert check.returncode == 0, (check.stdout + check.stderr).decode()


async def test_the_last_good_backup_is_read_from_the_catalog_at_start_up(
    world: BotWorld, standin: SlackApiStandIn
) -> None:
    async with running(world):
        pass  # migrated
    world.query(
        "INSERT INTO backups (kind, database_name, file_name, status, started_at, finished_at, created_by)"
        " VALUES ('regular', 'garden', 'garden-1.dump', 'good', now() - interval '2 hours',"
        " '2026-11-28 02:00:00+00', 'U0OPS')"
    )
    async with running(world) as app:
        text = (await app.get("/metrics")).text

    assert scraped(text)[LAST_GOOD] == datetime(2026, 11, 28, 2, 0, tzinfo=UTC).timestamp()
