"""The audit log: every action, who asked and who approved, append-only and hash-chained.

Each row's `hash` is the HMAC-SHA256, keyed with GARDENBOT_AUDIT_KEY (kept outside the database),
of a canonical JSON of its fields plus the previous row's hash: altering or removing a row breaks
the chain at that point and `verify()` names it, and without the key nobody can re-chain the rows.
Rows written before the chain was keyed (chain_version 1) carry a plain SHA-256 and may only come
before the keyed ones. Deleting the newest rows leaves a shorter chain that is still whole: the
published head (`head()`, checked with `verify(head=...)`) is what catches that.

The chain stays one line across processes because the database lets every row have at most one
successor (a unique index on prev_hash), and a new record is inserted only if the hash it links to
is still the newest row's. So an append is one statement, one round trip: each process remembers
the head it last wrote or saw, chains the records waiting in it onto that head, and inserts them all
at once. If another process appended meanwhile, nothing is inserted, the statement answers with the
real head, and the records are chained again onto it. When the store is down, records go to a local
spool (store/spool.py) and are written, in order, once it is back.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import hmac
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TextIO

import psycopg

from core.errors import StoreUnavailable
from core.secrets import mask_args, mask_text
from store.db import Conn, Store
from store.spool import AuditSpool

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
BATCH_SIZE = 500
DRAIN_CHUNK = 200  # spooled records read and filtered (already stored?) at a time
APPEND_BATCH = 100  # new records written per statement, when that many wait in this process
APPEND_TRIES = 20  # chained again onto another process's newer head at most this often, then spooled
RECORD_ID_KEY = "audit_log_record_id_key"  # the unique constraint a replayed record runs into
WRITE_TIMEOUT_S = 3.0  # longest a request waits on an audit write before the record is spooled
RETRY_AFTER_S = 5.0  # after a failure, spool at once for this long rather than wait on the pool
MAX_DURATION_MS = 2**31 - 1  # the column is a PostgreSQL integer
CHAIN_UNKEYED, CHAIN_KEYED = 1, 2  # chain_version: plain SHA-256 (before keying), HMAC-SHA256
MIN_KEY_BYTES = 32
FIRST_ID = -(2**63)  # the smallest bigint

COLUMNS = (
    "id, record_id, at, correlation_id, source, actor, approver, channel, command, args,"
    " event, outcome, duration_ms, detail, prev_hash, hash, chain_version"
)
CSV_FIELDS = [c.strip() for c in COLUMNS.split(",")]
TEXT_FIELDS = ("correlation_id", "source", "actor", "approver", "channel", "command", "event")


@dataclass(frozen=True)
class AuditRecord:
    """One thing that happened, as its producer saw it."""

    record_id: uuid.UUID
    at: datetime
    correlation_id: str
    source: str
    actor: str
    command: str
    event: str
    outcome: str
    args: dict[str, Any] = field(default_factory=dict)
    approver: str | None = None
    channel: str | None = None
    duration_ms: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.at.tzinfo is None or self.at.utcoffset() is None:
            raise ValueError("AuditRecord.at must be timezone-aware")
        if self.duration_ms is not None and not 0 <= self.duration_ms <= MAX_DURATION_MS:
            raise ValueError(f"AuditRecord.duration_ms out of range: {self.duration_ms}")

    @classmethod
    def new(
        cls,
        *,
        correlation_id: str,
        source: str,
        actor: str,
        command: str,
        event: str,
        outcome: str,
        args: Mapping[str, Any] | None = None,
        approver: str | None = None,
        channel: str | None = None,
        duration_ms: int | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> AuditRecord:
        return AuditRecord(
            record_id=uuid.uuid4(),
            at=datetime.now(UTC),
            correlation_id=correlation_id,
            source=source,
            actor=actor,
            command=command,
            event=event,
            outcome=outcome,
            args=dict(args or {}),
            approver=approver,
            channel=channel,
            duration_ms=duration_ms,
            detail=dict(detail or {}),
        )


@dataclass(frozen=True)
class AuditEntry(AuditRecord):
    """A record as stored: its place in the log and its link in the chain."""

    id: int = field(kw_only=True)
    prev_hash: str = field(kw_only=True)
    hash: str = field(kw_only=True)
    chain_version: int = field(default=CHAIN_KEYED, kw_only=True)


@dataclass(frozen=True)
class Head:
    """The newest record: what is published, and what `verify(head=...)` checks later."""

    id: int
    hash: str

    def __str__(self) -> str:
        return f"{self.id}:{self.hash}"


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int  # rows read, the bad one included
    first_bad_id: int | None
    reason: str  # "intact", "hash mismatch", "chain broken (prev_hash)", "unkeyed record ...", "head ...",
    # "no record from before keying is accepted", "the last record from before keying is missing"
    head: Head | None = None  # the newest record read (when intact)
    keyed_from: int | None = None  # id of the first keyed record; rows before it are unkeyed
    unkeyed: int = 0  # rows from before the chain was keyed


def parse_pinned_head(text: str) -> Head:
    """`ID:HASH` (as `audit verify` prints a head) -> Head; ValueError when the id is missing."""
    ident, digest = parse_head(text)
    if ident is None:
        raise ValueError("ID:HASH, the id included")
    return Head(ident, digest)


def parse_head(text: str) -> tuple[int | None, str]:
    """`HASH` or `ID:HASH` (as published) -> (id or None, lower-case hex hash); ValueError if neither."""
    ident, _, digest = text.strip().rpartition(":")
    digest = digest.lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError("a head is a 64-digit hex hash, or ID:HASH as published")
    if ident and not ident.isdigit():
        raise ValueError("a head is a 64-digit hex hash, or ID:HASH as published")
    return (int(ident) if ident else None), digest


class AuditLog:
    """Writes, checks, lists and exports the audit log of the bot's store."""

    def __init__(
        self,
        store: Store,
        spool_path: Path,
        *,
        key: bytes,
        unkeyed_until: Head | None = None,
        retry_after_s: float = RETRY_AFTER_S,
    ) -> None:
        """`unkeyed_until`: the last record an earlier release wrote before the chain was keyed
        (settings.audit_unkeyed_until); unkeyed records are accepted up to it and none without it."""
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the audit key must be at least {MIN_KEY_BYTES} bytes")
        self.store = store
        self._key = key
        self._unkeyed_until = unkeyed_until
        self.spool = AuditSpool(spool_path)
        self.retry_after_s = retry_after_s
        self._store_down_until = 0.0
        self._pending_writes: set[asyncio.Future[None]] = set()
        self._head: str | None = None  # the newest hash this process wrote or saw; checked at insert
        self._appending = asyncio.Lock()  # one append statement in flight per process
        self._waiting: list[tuple[AuditRecord, asyncio.Future[None]]] = []

    async def record(self, rec: AuditRecord) -> None:
        """Write one record; when the store is down, keep it in the spool (no error for that).

        Once called, the record ends up stored or spooled even if the caller is cancelled meanwhile
        (a command's work bound, shutdown): the write is its own task and may still store it, and
        the spool's replay skips a record that is stored already.
        """
        rec = prepared(rec)
        if time.monotonic() < self._store_down_until:
            await self._spool(rec)
            return
        write = asyncio.ensure_future(self._write(rec))
        # A store that hangs (frozen, overloaded) counts as down: the record goes to the spool at
        # once. The write itself is left to finish if the store wakes; the spool replay skips it.
        try:
            done, _ = await asyncio.wait({write}, timeout=WRITE_TIMEOUT_S)
        except asyncio.CancelledError:
            await self._keep_unless_written(rec, write)
            raise
        if write.cancelled():  # the writer was stopped (shutdown), not the store
            await self._spool(rec, why="its write was cancelled")
            return
        if write in done:
            failure = write.exception()
            if failure is None:
                return
            if not isinstance(failure, StoreUnavailable):
                raise failure
        else:
            self._leave_running(write)
        self._store_down_until = time.monotonic() + self.retry_after_s
        await self._spool(rec)

    async def _keep_unless_written(self, rec: AuditRecord, write: asyncio.Future[None]) -> None:
        """The caller is gone: spool the record unless its write already succeeded. A write still
        running may store it too; the replay skips it then."""
        if write.done() and not write.cancelled():
            failure = write.exception()
            if failure is None:
                return
            if not isinstance(failure, StoreUnavailable):  # refused for itself: would be again
                log.error("audit record %s refused by the store: %s", rec.record_id, type(failure).__name__)
                return
        if not write.done():
            self._leave_running(write)
        await self._spool(rec, why="its caller was cancelled before it was written")

    def _leave_running(self, write: asyncio.Future[None]) -> None:
        self._pending_writes.add(write)
        write.add_done_callback(self._forget_write)

    async def _write(self, rec: AuditRecord) -> None:
        if self.spool.has_lines():
            await self.drain_spool()  # older records first, so the chain keeps their order
            if self.spool.has_lines():  # another drainer is at it: queue behind the older ones
                await self._spool(rec)
                return
        await self._append_new(rec)

    def _forget_write(self, write: asyncio.Future[None]) -> None:
        self._pending_writes.discard(write)
        if not write.cancelled() and write.exception() is not None:
            log.info(
                "a late audit write failed (%s); the spool holds the record", type(write.exception()).__name__
            )

    async def drain_spool(self) -> int:
        """Write spooled records in order, skipping any already stored; then empty the spool."""
        async with self.spool.taken() as batch:
            if batch.busy:
                return 0  # another drainer (here or in another process) writes them
            records: list[AuditRecord] = []
            for line in batch.lines:
                try:
                    records.append(record_from_json(line))
                except (KeyError, TypeError, ValueError):
                    batch.unreadable.append(canonical_json(line).encode())
            written = 0
            for start in range(0, len(records), DRAIN_CHUNK):
                written += await self._append(records[start : start + DRAIN_CHUNK], batch.unreadable)
            batch.clear()
        if written:
            log.info("audit spool drained: %d record(s) written", written)
        self._store_down_until = 0.0
        return written

    def spooled(self) -> int:
        return self.spool.count()

    async def head(self) -> Head | None:
        """The newest record's id and hash, or None for an empty log."""
        async with self.store.connection() as conn:
            cur = await conn.execute("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1")
            row = await cur.fetchone()
        return None if row is None else Head(int(row["id"]), str(row["hash"]))

    async def verify(self, *, head: str | None = None) -> VerifyResult:
        """Recompute every hash and link in id order; stop at the first row that does not match.

        `head` (`HASH` or `ID:HASH`, as published) must name a record that is still there, unchanged.
        """
        want_id, want_hash = parse_head(head) if head is not None else (None, "")
        check = _ChainCheck(self._key, self._unkeyed_until)
        # aclosing: stopping at a bad row gives the connection back at once
        async with aclosing(self._rows_in_order(since=None)) as rows:
            async for entry in rows:
                bad = check.step(entry)
                if bad is not None:
                    return check.result(entry.id, bad)
                if want_hash and want_id == entry.id and entry.hash != want_hash:
                    return check.result(entry.id, "head differs")
                if want_hash and entry.hash == want_hash and want_id in (None, entry.id):
                    want_hash = ""  # found, intact so far
        if want_hash:
            return check.result(want_id, "head missing")
        if check.pin_missing():
            assert self._unkeyed_until is not None
            return check.result(self._unkeyed_until.id, PIN_MISSING)
        return check.result(None, "intact")

    async def unkeyed_start(self) -> UnkeyedStart | None:
        """The records at the log's start that are chained without the key, as an earlier release
        wrote them (what `audit_unkeyed_until` would name), or None if the log does not start so."""
        check = _ChainCheck(self._key, None)
        first: AuditEntry | None = None
        last: AuditEntry | None = None
        vouched_by: int | None = None
        count = 0
        async with aclosing(self._rows_in_order(since=None)) as rows:
            async for entry in rows:
                if entry.chain_version == CHAIN_UNKEYED and check.plain_step(entry) is None:
                    first, last, count = first or entry, entry, count + 1
                    continue
                if last is not None and entry.chain_version == CHAIN_KEYED and entry.prev_hash == last.hash:
                    keyed = chain_hash(entry, entry.prev_hash, self._key)
                    vouched_by = entry.id if hmac.compare_digest(keyed, entry.hash) else None
                break
        if first is None or last is None:
            return None
        return UnkeyedStart(count, first.at, last.at, Head(last.id, last.hash), vouched_by)

    async def export(
        self,
        out: TextIO,
        *,
        since: datetime | None = None,
        fmt: Literal["jsonl", "csv"] = "jsonl",
    ) -> int:
        """Write rows in chain order as JSON lines or CSV (UTF-8 kept readable); return count."""
        _require_aware(since)
        writer = csv.DictWriter(out, fieldnames=CSV_FIELDS) if fmt == "csv" else None
        if writer is not None:
            writer.writeheader()
        count = 0
        async with aclosing(self._rows_in_order(since=since)) as rows:
            async for entry in rows:
                row = entry_as_json(entry)
                if writer is not None:
                    for key in ("args", "detail"):
                        row[key] = canonical_json(row[key])
                    writer.writerow(row)
                else:
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
                count += 1
        return count

    async def entries(
        self, *, actor: str | None = None, since: datetime | None = None, limit: int = 50
    ) -> list[AuditEntry]:
        """The newest records first, optionally one actor's and only since a time."""
        _require_aware(since)
        async with self.store.connection() as conn:
            cur = await conn.execute(
                f"SELECT {COLUMNS} FROM audit_log"
                " WHERE (%(actor)s::text IS NULL OR actor = %(actor)s)"
                " AND (%(since)s::timestamptz IS NULL OR at >= %(since)s)"
                " ORDER BY at DESC, id DESC LIMIT %(limit)s",
                {"actor": actor, "since": since, "limit": max(1, limit)},
            )
            return [entry_from_row(row) for row in await cur.fetchall()]

    async def _spool(self, rec: AuditRecord, *, why: str = "bot store down") -> None:
        # Shielded: a caller cancelled while the spool lock is busy must not leave the line unwritten.
        append = asyncio.ensure_future(self.spool.append(record_as_json(rec)))
        append.add_done_callback(_report_spool_failure)
        await asyncio.shield(append)
        log.warning("audit record %s kept in the local spool: %s", rec.record_id, why)

    async def _append_new(self, rec: AuditRecord) -> None:
        """Queue a new record; whoever holds the append lock writes every queued one in one statement."""
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        written.add_done_callback(_consume)
        self._waiting.append((rec, written))
        async with self._appending:
            while not written.done():
                batch, self._waiting = self._waiting[:APPEND_BATCH], self._waiting[APPEND_BATCH:]
                assert batch, "a queued record was lost"
                await self._write_batch(batch)
        await written

    async def _write_batch(self, batch: list[tuple[AuditRecord, asyncio.Future[None]]]) -> None:
        """Write the batch and settle each record's future. A record the store refuses for itself
        (not for being down) fails alone: the others are written one by one."""
        try:
            await self._insert_new([queued for queued, _ in batch])
        except StoreUnavailable as exc:
            for _, done in batch:
                done.set_exception(exc)  # each writer spools its own record
        except Exception as exc:
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                return
            for position in range(len(batch)):
                try:
                    await self._write_batch(batch[position : position + 1])
                except BaseException:
                    self._waiting[1:1] = batch[position + 1 :]  # after the one put back first
                    raise
        except BaseException:
            self._waiting[:0] = batch  # cancelled: the next appender writes them
            raise
        else:
            for _, done in batch:
                done.set_result(None)

    async def _insert_new(self, records: Sequence[AuditRecord]) -> int:
        """Chain `records` onto the head this process knows and insert them if it is still the newest;
        else chain them again onto the head the store answered with. One round trip when no other
        process appended since this one last did."""
        stored = [await self._as_stored(rec) for rec in records]
        for _ in range(APPEND_TRIES):
            prev = self._head or GENESIS_HASH
            rows, last = _chained(stored, prev, self._key)
            try:
                async with self.store.connection() as conn:
                    pinned = self._unkeyed_until.hash if self._unkeyed_until is not None else ""
                    cur = await conn.execute(
                        _insert_if_head_sql(len(rows)), [*_flat(rows), GENESIS_HASH, prev, pinned]
                    )
                    answer = await cur.fetchone()
            except psycopg.errors.UniqueViolation as exc:
                # Another process linked a row to the same head after this statement's snapshot
                # (the next try sees it), or a late write stored some of these records already.
                if exc.diag.constraint_name == RECORD_ID_KEY:
                    stored = await self._not_yet_stored(stored)
                    if not stored:
                        return 0
                continue
            assert answer is not None
            if int(answer["inserted"]) == len(rows):
                self._head = last
                return len(rows)
            if answer["head"] == prev and not answer["head_keyed"]:
                # Keyed records chained onto it would vouch for whatever precedes them.
                log.error(
                    "the audit log's newest record is chained without the key and is not the one"
                    " audit_unkeyed_until names: records stay in the local spool;"
                    " run `gardenbot audit verify`"
                )
                raise StoreUnavailable("store.unavailable")
            self._head = str(answer["head"]) if answer["head"] is not None else GENESIS_HASH
        log.warning("audit appends kept losing the race for the head; spooling")
        raise StoreUnavailable("store.unavailable")

    async def _as_stored(self, rec: AuditRecord) -> AuditRecord:
        """The record as PostgreSQL gives it back. JSON without floats comes back as it went in;
        floats (1e20 comes back as 100000000000000000000) are normalised by PostgreSQL itself."""
        if not (_has_float(rec.args) or _has_float(rec.detail)):
            return replace(
                rec, args=json.loads(canonical_json(rec.args)), detail=json.loads(canonical_json(rec.detail))
            )
        async with self.store.connection() as conn:
            return await _as_stored(conn, rec)

    async def _not_yet_stored(self, records: Sequence[AuditRecord]) -> list[AuditRecord]:
        async with self.store.connection() as conn:
            cur = await conn.execute(
                "SELECT record_id FROM audit_log WHERE record_id = ANY(%s)", ([r.record_id for r in records],)
            )
            known = {row["record_id"] for row in await cur.fetchall()}
        return [r for r in records if r.record_id not in known]

    async def _append(self, records: Sequence[AuditRecord], refused: list[bytes]) -> int:
        """Spooled records: those not stored yet, in order, chained and inserted APPEND_BATCH to a
        statement as new ones are; return how many were new. A few round trips for a whole chunk,
        each its own use of a connection (so within the store's bound over a slow link too).
        A record the store refuses for itself goes to `refused` (kept aside, not retried for ever)."""
        once: dict[uuid.UUID, AuditRecord] = {}
        for rec in records:  # a record may be spooled twice (its write timed out, then failed)
            once.setdefault(rec.record_id, rec)
        async with self._appending:
            missing = await self._not_yet_stored(list(once.values())) if once else []
            written = 0
            for start in range(0, len(missing), APPEND_BATCH):
                chunk = missing[start : start + APPEND_BATCH]
                try:
                    written += await self._insert_new(chunk)
                except psycopg.Error:  # not StoreUnavailable: one of them is refused for itself
                    written += await self._append_one_by_one(chunk, refused)
            return written

    async def _append_one_by_one(self, records: Sequence[AuditRecord], refused: list[bytes]) -> int:
        written = 0
        for rec in records:
            try:
                written += await self._insert_new([rec])
            except psycopg.Error as exc:
                log.error(
                    "audit record %s refused by the store (%s): kept aside in %s",
                    rec.record_id,
                    type(exc).__name__,
                    self.spool.rejected_path,
                )
                refused.append(canonical_json(record_as_json(rec)).encode())
        return written

    async def _rows_in_order(self, *, since: datetime | None) -> AsyncGenerator[AuditEntry, None]:
        """Every row in id order, read in batches so a long log is never held in memory.

        Each batch is its own bounded use of a connection: a long log takes as long as it takes,
        a store that stops answering fails the read within the store's bound.
        """
        after, beyond = FIRST_ID, ">="  # every id the column holds: a row given id 0 or below is read too
        while True:
            async with self.store.connection() as conn:
                cur = await conn.execute(
                    f"SELECT {COLUMNS} FROM audit_log WHERE id {beyond} %s"
                    " AND (%s::timestamptz IS NULL OR at >= %s) ORDER BY id LIMIT %s",
                    (after, since, since, BATCH_SIZE),
                )
                rows = await cur.fetchall()
            for row in rows:
                yield entry_from_row(row)
            if len(rows) < BATCH_SIZE:
                return
            after, beyond = int(str(rows[-1]["id"])), ">"


UNKEYED_REFUSED = "no record from before keying is accepted"
PIN_MISSING = "the last record from before keying is missing"


@dataclass(frozen=True)
class UnkeyedStart:
    """Records at the start of the log chained without the key (written before it was keyed)."""

    count: int
    first_at: datetime
    last_at: datetime
    last: Head
    vouched_by: int | None = None  # a keyed record chained right after the last: the key's holder wrote it


class _ChainCheck:
    """Walks the chain row by row: the unkeyed rows an earlier release wrote first, up to the one
    `unkeyed_until` names (none without it: whoever can write the database can chain those), then
    the keyed chain."""

    def __init__(self, key: bytes, unkeyed_until: Head | None) -> None:
        self.key = key
        self.unkeyed_until = unkeyed_until
        self.pin_seen = False
        self.expected_prev = GENESIS_HASH
        self.checked = 0
        self.unkeyed = 0
        self.keyed_from: int | None = None
        self.last: Head | None = None

    def step(self, entry: AuditEntry) -> str | None:
        """None when the row is sound, else why not."""
        if entry.chain_version == CHAIN_UNKEYED and self.keyed_from is None:
            if self.unkeyed_until is None or self.pin_seen:
                self.checked += 1
                return UNKEYED_REFUSED
            bad = self.plain_step(entry)
            self.pin_seen = bad is None and Head(entry.id, entry.hash) == self.unkeyed_until
            return bad
        self.checked += 1
        if entry.chain_version != CHAIN_KEYED:
            return "unkeyed record inside the keyed chain"
        if self.keyed_from is None:
            if self.pin_missing():
                return PIN_MISSING
            self.keyed_from = entry.id
        return self._link(entry, chain_hash(entry, entry.prev_hash, self.key))

    def plain_step(self, entry: AuditEntry) -> str | None:
        """An unkeyed row checked as an earlier release chained it (plain SHA-256)."""
        self.checked += 1
        self.unkeyed += 1
        return self._link(entry, chain_hash(entry, entry.prev_hash))

    def pin_missing(self) -> bool:
        """The configured last unkeyed record was not met at the log's start."""
        return self.unkeyed_until is not None and not self.pin_seen

    def _link(self, entry: AuditEntry, digest: str) -> str | None:
        if not hmac.compare_digest(digest, entry.hash):
            return "hash mismatch"
        if entry.prev_hash != self.expected_prev:
            return "chain broken (prev_hash)"
        self.expected_prev = entry.hash
        self.last = Head(entry.id, entry.hash)
        return None

    def result(self, bad_id: int | None, reason: str) -> VerifyResult:
        ok = reason == "intact"
        return VerifyResult(
            ok=ok,
            checked=self.checked,
            first_bad_id=bad_id,
            reason=reason,
            head=self.last if ok else None,
            keyed_from=self.keyed_from,
            unkeyed=self.unkeyed,
        )


INSERT_COLUMNS = (
    "record_id, at, correlation_id, source, actor, approver, channel, command, args, event, outcome,"
    " duration_ms, detail, prev_hash, hash, chain_version"
)
_ROW_PLACEHOLDERS = (
    "%s::uuid, %s::timestamptz, %s::text, %s::text, %s::text, %s::text, %s::text, %s::text, %s::jsonb,"
    " %s::text, %s::text, %s::integer, %s::jsonb, %s::text, %s::text, %s::smallint"
)


def _insert_if_head_sql(count: int) -> str:
    """Insert `count` chained rows only if the first links to the newest row (GENESIS_HASH for an
    empty log) and that row is keyed or is the configured last unkeyed one; answer how many went
    in, which hash was the newest and whether it was keyed. The unique index on prev_hash stops
    two statements that both saw the same head."""
    values = ", ".join(f"({_ROW_PLACEHOLDERS})" for _ in range(count))
    return (
        "WITH head AS (SELECT hash, chain_version FROM audit_log ORDER BY id DESC LIMIT 1),"
        f" ins AS (INSERT INTO audit_log ({INSERT_COLUMNS}) SELECT * FROM (VALUES {values}) AS v"
        " WHERE coalesce((SELECT hash FROM head), %s) = %s"
        f" AND (coalesce((SELECT chain_version FROM head), {CHAIN_KEYED}) = {CHAIN_KEYED}"
        " OR (SELECT hash FROM head) = %s) RETURNING 1)"
        " SELECT (SELECT count(*) FROM ins) AS inserted, (SELECT hash FROM head) AS head,"
        f" coalesce((SELECT chain_version FROM head), {CHAIN_KEYED}) = {CHAIN_KEYED} AS head_keyed"
    )


def _row(rec: AuditRecord, prev: str, digest: str) -> tuple[Any, ...]:
    return (
        rec.record_id,
        rec.at,
        rec.correlation_id,
        rec.source,
        rec.actor,
        rec.approver,
        rec.channel,
        rec.command,
        canonical_json(rec.args),
        rec.event,
        rec.outcome,
        rec.duration_ms,
        canonical_json(rec.detail),
        prev,
        digest,
        CHAIN_KEYED,
    )


def _chained(records: Sequence[AuditRecord], prev: str, key: bytes) -> tuple[list[tuple[Any, ...]], str]:
    """The rows of `records` linked one after the other from `prev`, and the last one's hash."""
    rows = []
    for rec in records:
        digest = chain_hash(rec, prev, key)
        rows.append(_row(rec, prev, digest))
        prev = digest
    return rows, prev


def _flat(rows: Sequence[tuple[Any, ...]]) -> list[Any]:
    return [value for row in rows for value in row]


def _has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, Mapping):
        return any(_has_float(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(_has_float(item) for item in value)
    return False


def _report_spool_failure(append: asyncio.Future[None]) -> None:
    if not append.cancelled() and append.exception() is not None:
        log.error("an audit record could not be spooled: %s", type(append.exception()).__name__)


def _consume(future: asyncio.Future[None]) -> None:
    """A queued record's outcome is read by its writer; if that one is gone, it is read here."""
    if not future.cancelled():
        future.exception()


async def _as_stored(conn: Conn, rec: AuditRecord) -> AuditRecord:
    cur = await conn.execute(
        "SELECT %s::jsonb AS args, %s::jsonb AS detail",
        (canonical_json(rec.args), canonical_json(rec.detail)),
    )
    row = await cur.fetchone()
    assert row is not None
    return replace(rec, args=_as_dict(row["args"]), detail=_as_dict(row["detail"]))


def prepared(rec: AuditRecord) -> AuditRecord:
    """Secrets masked (a last defence), text PostgreSQL can store, `at` in UTC; every field of the
    JSON type its column gives back (what is hashed is what verify reads: 12 as "12", True as 1)."""
    changes: dict[str, Any] = {
        name: _clean(mask_text(str(value)))
        for name in (*TEXT_FIELDS, "outcome")
        if (value := getattr(rec, name)) is not None
    }
    if rec.duration_ms is not None:
        changes["duration_ms"] = int(rec.duration_ms)
    changes["args"] = _mask_deep(_jsonable(rec.args))
    changes["detail"] = _mask_deep(_jsonable(rec.detail))
    changes["at"] = rec.at.astimezone(UTC)
    return replace(rec, **changes)


def chain_hash(rec: AuditRecord, prev_hash: str, key: bytes | None = None) -> str:
    """Hex HMAC-SHA256 (with `key`) of the canonical JSON of every record field, the previous hash
    and the chain version; without a key, the plain SHA-256 of rows from before keying."""
    body = record_as_json(rec)
    body["prev_hash"] = prev_hash
    if key is None:
        return hashlib.sha256(canonical_json(body).encode()).hexdigest()
    body["chain_version"] = CHAIN_KEYED
    return hmac.new(key, canonical_json(body).encode(), hashlib.sha256).hexdigest()


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def record_as_json(rec: AuditRecord) -> dict[str, Any]:
    """The record's own fields as JSON values (also the spool line)."""
    return {
        "record_id": str(rec.record_id),
        "at": rec.at.astimezone(UTC).isoformat(timespec="microseconds"),
        "correlation_id": rec.correlation_id,
        "source": rec.source,
        "actor": rec.actor,
        "approver": rec.approver,
        "channel": rec.channel,
        "command": rec.command,
        "args": rec.args,
        "event": rec.event,
        "outcome": rec.outcome,
        "duration_ms": rec.duration_ms,
        "detail": rec.detail,
    }


def record_from_json(line: Mapping[str, Any]) -> AuditRecord:
    return AuditRecord(
        record_id=uuid.UUID(str(line["record_id"])),
        at=datetime.fromisoformat(str(line["at"])),
        correlation_id=str(line["correlation_id"]),
        source=str(line["source"]),
        actor=str(line["actor"]),
        command=str(line["command"]),
        event=str(line["event"]),
        outcome=str(line["outcome"]),
        args=_as_dict(line.get("args")),
        approver=_opt_str(line.get("approver")),
        channel=_opt_str(line.get("channel")),
        duration_ms=_opt_int(line.get("duration_ms")),
        detail=_as_dict(line.get("detail")),
    )


def entry_as_json(entry: AuditEntry) -> dict[str, Any]:
    """A stored row for export: the record fields plus id and chain link."""
    return {
        "id": entry.id,
        **record_as_json(entry),
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
        "chain_version": entry.chain_version,
    }


def entry_from_row(row: Mapping[str, Any]) -> AuditEntry:
    at = row["at"]
    assert isinstance(at, datetime)
    return AuditEntry(
        id=int(row["id"]),
        record_id=uuid.UUID(str(row["record_id"])),
        at=at.astimezone(UTC),
        correlation_id=str(row["correlation_id"]),
        source=str(row["source"]),
        actor=str(row["actor"]),
        command=str(row["command"]),
        event=str(row["event"]),
        outcome=str(row["outcome"]),
        args=_as_dict(row["args"]),
        approver=_opt_str(row["approver"]),
        channel=_opt_str(row["channel"]),
        duration_ms=_opt_int(row["duration_ms"]),
        detail=_as_dict(row["detail"]),
        prev_hash=str(row["prev_hash"]),
        hash=str(row["hash"]),
        chain_version=int(row["chain_version"]),
    )


def _mask_deep(value: Any) -> Any:
    """mask_args leaves lists alone; DSNs and password=... inside lists are masked here."""
    if isinstance(value, Mapping):
        return {key: _mask_deep(item) for key, item in mask_args(value).items()}
    if isinstance(value, list | tuple):
        return [_mask_deep(item) for item in value]
    if isinstance(value, str):
        return mask_text(value)
    return value


def _jsonable(value: Any) -> Any:
    """JSON values jsonb accepts: str keys, no NUL, no NaN, anything else as text."""
    if isinstance(value, Mapping):
        return {_clean(str(key)): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, bool | int) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return _clean(str(value))


def _clean(text: str) -> str:
    # PostgreSQL text refuses NUL and lone surrogates cannot be encoded as UTF-8.
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


def _as_dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _require_aware(moment: datetime | None) -> None:
    if moment is not None and (moment.tzinfo is None or moment.utcoffset() is None):
        raise ValueError("since must be timezone-aware")
