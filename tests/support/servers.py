"""Throwaway databases and Redis prefixes on the real servers the tests run against."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import redis

ADMIN_DSN = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    """A local port with nothing listening (bound for a moment, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dsn_for(database: str) -> str:
    """The admin DSN pointed at another database."""
    return psycopg.conninfo.make_conninfo(ADMIN_DSN, dbname=database)


def url_for(database: str) -> str:
    base, _, _ = ADMIN_DSN.rpartition("/")
    return f"{base}/{database}"


def create_database(prefix: str = "gbt") -> str:
    name = f"{prefix}_{secrets.token_hex(5)}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    return name


def drop_database(name: str) -> None:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(psycopg.sql.Identifier(name))
        )


@contextmanager
def throwaway_database(prefix: str = "gbt") -> Iterator[str]:
    """Yield a URL to a new empty database, dropped afterwards."""
    name = create_database(prefix)
    try:
        yield url_for(name)
    finally:
        drop_database(name)


@contextmanager
def redis_prefix() -> Iterator[str]:
    """Yield a unique key prefix; every key under it is deleted afterwards."""
    prefix = f"gbt:{secrets.token_hex(4)}:"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
