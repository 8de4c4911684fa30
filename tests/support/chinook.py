"""The Chinook sample database (a template, cloned per test) and stand-in pg tools."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

from tests.support.fixtures import CHINOOK_SQL
from tests.support.servers import ADMIN_DSN, create_database, drop_database, url_for

CHINOOK_ROWS = {
    "public.album": 347,
    "public.artist": 275,
    "public.customer": 59,
    "public.employee": 8,
    "public.genre": 25,
    "public.invoice": 412,
    "public.invoice_line": 2240,
    "public.media_type": 5,
    "public.playlist": 18,
    "public.playlist_track": 8715,
    "public.track": 3503,
}


def chinook_script() -> str:
    """The fixture without its DROP/CREATE DATABASE chinook and \\c lines."""
    kept = []
    for line in CHINOOK_SQL.read_text(encoding="utf-8").splitlines():
        head = line.strip().upper()
        if head.startswith(("DROP DATABASE", "CREATE DATABASE", "\\C")):
            continue
        kept.append(line)
    return "\n".join(kept) + "\n"


def load_chinook(url: str) -> None:
    """Run the fixture into an existing empty database with psql."""
    subprocess.run(
        ["psql", "--no-psqlrc", "-q", "-v", "ON_ERROR_STOP=1", "-d", url],
        input=chinook_script().encode(),
        check=True,
        stdout=subprocess.DEVNULL,
    )


def clone_database(template: str, prefix: str = "gbt") -> str:
    """A new database copied from template (which must have no sessions); returns its name."""
    name = create_database(prefix)
    drop_database(name)
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
        )
    return name


@contextmanager
def chinook_template() -> Iterator[str]:
    """Yield the name of a database holding Chinook, dropped afterwards."""
    name = create_database("gbt_chinook")
    try:
        load_chinook(url_for(name))
        yield name
    finally:
        drop_database(name)


def fake_pg_tool(folder: Path, name: str, version: str = "15.4", body: str = "exit 0") -> Path:
    """A shell script that answers --version like the real tool and otherwise runs body."""
    path = folder / name
    path.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "--version" ]; then echo "{name} (PostgreSQL) {version}"; exit 0; fi\n'
        f"{body}\n"
    )
    path.chmod(0o755)
    return path
