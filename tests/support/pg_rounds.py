"""Count the round trips a client makes to PostgreSQL: a TCP relay in front of the real server.

Point a DSN at `RoundTrips.dsn(database_url)` and every byte goes through here unchanged. Per
connection, once the server has said ReadyForQuery for the first time (start-up and authentication
are not counted), each time the client sends after the server last spoke is one round trip: the
client waited for an answer before it could go on. `exchanges` counts the server's ReadyForQuery
messages after start-up: one per simple query or Sync, so pipelined statements show as more
exchanges than round trips. Connections opened are counted apart (`connects`).

Runs in its own thread with its own event loop, so a test on one loop and a `gardenbot serve`
subprocess can both be measured. Only for 127.0.0.1; TLS is refused (sslmode=disable in the DSN).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

SSL_REQUEST = 80877103
GSS_REQUEST = 80877104


@dataclass(frozen=True)
class Counts:
    round_trips: int
    exchanges: int
    connects: int

    def __sub__(self, other: Counts) -> Counts:
        return Counts(
            self.round_trips - other.round_trips,
            self.exchanges - other.exchanges,
            self.connects - other.connects,
        )


class _Link:
    """One client connection: who spoke last, and the server's message stream parsed for 'Z'."""

    def __init__(self, owner: RoundTrips) -> None:
        self.owner = owner
        self.ready = False
        self.server_spoke_last = True  # the first client bytes after ready count as a round trip
        self.pending_single_byte = False  # an SSLRequest/GSSENCRequest is answered with one bare byte
        self.client_first = True
        self.buffer = b""
        self.client_buffer = b""
        self.prepared: dict[bytes, str] = {}  # this connection's prepared statements, by name

    def from_client(self, data: bytes) -> None:
        if self.ready:
            self._note_statements(data)
        if self.client_first and len(data) >= 8:
            self.client_first = False
            (code,) = struct.unpack("!I", data[4:8])
            self.pending_single_byte = code in (SSL_REQUEST, GSS_REQUEST)
        elif self.client_first:
            self.client_first = False
        if self.ready and self.server_spoke_last:
            self.owner.add(round_trips=1)
        self.server_spoke_last = False

    def _note_statements(self, data: bytes) -> None:
        """Keep the text of each statement the client runs, when asked to (`statements`); the
        names of prepared statements are learnt all along, so a later Bind can be named."""
        self.client_buffer += data
        while len(self.client_buffer) >= 5:
            kind = self.client_buffer[0:1]
            (length,) = struct.unpack("!I", self.client_buffer[1:5])
            if len(self.client_buffer) < 1 + length:
                break
            body, self.client_buffer = self.client_buffer[5 : 1 + length], self.client_buffer[1 + length :]
            ran: str | None = None
            if kind == b"Q":
                ran = body.split(b"\0")[0].decode(errors="replace")
            elif kind == b"P":
                name, query = body.split(b"\0")[:2]
                if name:  # prepared for later Binds by name; run by the Bind that follows
                    self.prepared[name] = query.decode(errors="replace")
                else:
                    ran = query.decode(errors="replace")
            elif kind == b"B" and (name := body.split(b"\0")[1]):
                ran = self.prepared.get(name, f"(prepared {name!r})")
            if ran is not None and self.owner.statements is not None:
                self.owner.statements.append(ran)

    def from_server(self, data: bytes) -> None:
        self.server_spoke_last = True
        if self.pending_single_byte and not self.buffer:
            self.pending_single_byte = False
            self.client_first = True  # the StartupMessage (untyped) comes next
            data = data[1:]
        self.buffer += data
        while len(self.buffer) >= 5:
            kind = self.buffer[0:1]
            (length,) = struct.unpack("!I", self.buffer[1:5])
            if len(self.buffer) < 1 + length:
                break
            self.buffer = self.buffer[1 + length :]
            if kind == b"Z":
                if self.ready:
                    self.owner.add(exchanges=1)
                self.ready = True


class RoundTrips:
    """A counting relay to `upstream` (host, port); `counts()` is the running total."""

    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.upstream = upstream
        self.port = 0
        self._lock = threading.Lock()
        self._round_trips = 0
        self._exchanges = 0
        self._connects = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pg-round-trips", daemon=True)
        self._server: asyncio.Server | None = None
        self.statements: list[str] | None = None  # a list to keep each statement's text in, if wanted

    def add(self, *, round_trips: int = 0, exchanges: int = 0, connects: int = 0) -> None:
        with self._lock:
            self._round_trips += round_trips
            self._exchanges += exchanges
            self._connects += connects

    def counts(self) -> Counts:
        with self._lock:
            return Counts(self._round_trips, self._exchanges, self._connects)

    def dsn(self, database_url: str) -> str:
        """The same database through this relay, without TLS."""
        parts = urlsplit(database_url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        query = "&".join(q for q in (parts.query, "sslmode=disable") if q)
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))

    def start(self) -> None:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self.port = future.result(timeout=10)

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            relays = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in relays:
                task.cancel()
            await asyncio.gather(*relays, return_exceptions=True)
            await asyncio.sleep(0.05)  # the closed transports finish closing

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.add(connects=1)
        link = _Link(self)
        try:
            server_r, server_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.close()
            return
        try:
            await asyncio.gather(
                _pump(client_r, server_w, link.from_client), _pump(server_r, client_w, link.from_server)
            )
        except asyncio.CancelledError:
            pass  # stopped: the relay ends with the connection
        finally:
            for writer in (client_w, server_w):
                writer.close()
            await asyncio.gather(client_w.wait_closed(), server_w.wait_closed(), return_exceptions=True)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: object) -> None:
    assert callable(seen)
    try:
        while data := await reader.read(65536):
            seen(data)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.write_eof()


@contextlib.contextmanager
def counting_round_trips(upstream: tuple[str, int] | None = None) -> Iterator[RoundTrips]:
    """A relay to the test PostgreSQL (or `upstream`), counting; stopped afterwards."""
    if upstream is None:
        from tests.support.servers import ADMIN_DSN

        parts = urlsplit(ADMIN_DSN)
        upstream = (parts.hostname or "127.0.0.1", parts.port or 5432)
    relay = RoundTrips(upstream)
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()
