"""Two real processes (`python -m scheduler.demo`) on one bot store: every fire runs exactly once."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import datetime

import psycopg

from tests.support.runtime import REPO_ROOT

SECONDS = 5


def test_two_replica_processes_run_each_fire_exactly_once(store_url: str) -> None:
    # Migrate first, so neither replica waits on the other's migration during the test window.
    subprocess.run(
        [sys.executable, "-m", "scheduler.demo", "--database-url", store_url, "--seconds", "0"],
        check=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    replicas = [
        subprocess.Popen(
            [sys.executable, "-m", "scheduler.demo", "--database-url", store_url, "--seconds", str(SECONDS)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60)[0] for p in replicas]
    assert [p.returncode for p in replicas] == [0, 0]

    won = [[json.loads(line)["fire_time"] for line in out.splitlines()] for out in outputs]
    fires = won[0] + won[1]
    assert len(fires) >= SECONDS - 2
    assert Counter(fires).most_common(1)[0][1] == 1  # no fire ran in both processes
    with psycopg.connect(store_url) as conn:
        rows = conn.execute("SELECT fire_time, count(*) FROM schedule_runs GROUP BY 1").fetchall()
    assert all(count == 1 for _, count in rows)
    recorded = {fire for fire, _ in rows}
    assert {datetime.fromisoformat(f) for f in fires} <= recorded
