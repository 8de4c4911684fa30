"""A local stand-in for Slack's Web API that records every call and answers like Slack.

Point a client at it with `AsyncWebClient(base_url=standin.url)` (or SLACK_API_URL=standin.url).
It runs an HTTP server in a background thread so it answers while a test's event loop is busy;
POSTs to `standin.response_url(name)` are recorded as method "response_url" (Slack's response_url).
Files go up the way Slack's current API takes them: files.getUploadURLExternal hands out an upload
URL on this server, the bytes are POSTed there (recorded as method "file_upload"), and
files.completeUploadExternal shares them; `standin.uploaded(file_id)` returns the bytes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

TEAM_ID = "T0GARDEN"
BOT_USER_ID = "U0GARDENBOT"
BOT_ID = "B0GARDENBOT"

Answer = tuple[int, dict[str, str], bytes | None]  # status, headers, body (None: drop connection)


@dataclass(frozen=True)
class SlackCall:
    """One request as the stand-in received it."""

    method: str
    params: dict[str, Any]
    headers: dict[str, str]
    http_method: str = "POST"
    status: int = 200

    @property
    def token(self) -> str | None:
        auth = self.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[len("bearer ") :]
        token = self.params.get("token")
        return str(token) if token is not None else None

    def json_param(self, name: str) -> Any:
        """A parameter that form bodies carry as a JSON string (blocks, attachments, view)."""
        value = self.params.get(name)
        return json.loads(value) if isinstance(value, str) else value


@dataclass
class _Fault:
    kind: str  # "rate_limit", "fail" or "drop"
    times: int
    method: str | None
    retry_after: int = 1
    status: int = 200
    error: str = "internal_error"


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    calls: list[SlackCall] = field(default_factory=list)
    faults: list[_Fault] = field(default_factory=list)
    usergroups: dict[str, list[str]] = field(default_factory=dict)
    messages: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    ts_counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    ts_base: int = field(default_factory=lambda: int(time.time()))
    base_url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)  # file id -> uploaded bytes
    file_counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))


def _parse_body(content_type: str, raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    if "json" in content_type:
        parsed = json.loads(raw)
        return parsed if isinstance(parsed, dict) else {"_body": parsed}
    if "multipart" in content_type:
        return {"_raw": raw}
    return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))


class SlackApiStandIn:
    """Records calls to /api/<method> and answers them the way Slack does."""

    def __init__(self) -> None:
        self._state = _State()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> SlackApiStandIn:
        self._server = _Server(("127.0.0.1", 0), _handler_for(self._answer))
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="slack-api-standin",
            daemon=True,
        )
        self._thread.start()
        self._state.base_url = f"http://127.0.0.1:{self.port}/"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> SlackApiStandIn:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- addresses -------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the stand-in is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """slack_sdk's base_url format: ends with /api/."""
        return f"http://127.0.0.1:{self.port}/api/"

    def response_url(self, name: str = "default") -> str:
        """A URL to put in a payload's response_url; POSTs to it are recorded."""
        return f"http://127.0.0.1:{self.port}/hooks/{name}"

    # --- what was sent ---------------------------------------------------------------------
    @property
    def calls(self) -> list[SlackCall]:
        with self._state.lock:
            return list(self._state.calls)

    def calls_to(self, method: str) -> list[SlackCall]:
        return [call for call in self.calls if call.method == method]

    def message(self, channel: str, ts: str) -> dict[str, Any] | None:
        """The latest text/blocks of a message posted (and maybe updated) through the stand-in."""
        with self._state.lock:
            return self._state.messages.get((channel, ts))

    def uploaded(self, file_id: str) -> bytes | None:
        """The bytes POSTed to the upload URL handed out for this file id."""
        with self._state.lock:
            return self._state.files.get(file_id)

    def reset(self) -> None:
        """Forget calls and faults (configured user groups stay)."""
        with self._state.lock:
            self._state.calls.clear()
            self._state.faults.clear()

    async def wait_for(self, method: str, count: int = 1, timeout: float = 5.0) -> list[SlackCall]:
        """Poll until `count` calls to `method` were answered with 200; raise TimeoutError."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            done = [c for c in self.calls_to(method) if c.status == 200]
            if len(done) >= count:
                return done
            if loop.time() >= deadline:
                raise TimeoutError(f"{len(done)} of {count} {method} calls after {timeout} s")
            await asyncio.sleep(0.01)

    # --- how to answer ---------------------------------------------------------------------
    def rate_limit(self, times: int, retry_after: int = 1, method: str | None = None) -> None:
        """Answer the next `times` calls (of `method`, or any) with 429 and Retry-After."""
        self._add_fault(_Fault("rate_limit", times, method, retry_after=retry_after))

    def fail(
        self,
        times: int,
        method: str | None = None,
        error: str = "internal_error",
        status: int = 200,
    ) -> None:
        """Answer the next `times` calls with {"ok": false, "error": error} (HTTP `status`)."""
        self._add_fault(_Fault("fail", times, method, status=status, error=error))

    def drop(self, times: int, method: str | None = None) -> None:
        """Close the connection without answering, the next `times` calls."""
        self._add_fault(_Fault("drop", times, method))

    def set_usergroup(self, group_id: str, user_ids: list[str]) -> None:
        with self._state.lock:
            self._state.usergroups[group_id] = list(user_ids)

    def _add_fault(self, fault: _Fault) -> None:
        if fault.times > 0:
            with self._state.lock:
                self._state.faults.append(fault)

    def _take_fault(self, method: str) -> _Fault | None:
        """Called with the lock held: the first fault that applies, used once."""
        for fault in self._state.faults:
            if fault.method is None or fault.method == method:
                fault.times -= 1
                if fault.times <= 0:
                    self._state.faults.remove(fault)
                return fault
        return None

    def _next_ts(self) -> str:
        return f"{self._state.ts_base}.{next(self._state.ts_counter):06d}"

    def _answer(self, call: SlackCall) -> tuple[SlackCall, Answer]:
        """Decide the answer and record the call, atomically."""
        with self._state.lock:
            fault = self._take_fault(call.method)
            if fault is None:
                status, headers, body = 200, {}, self._reply_to(call)
            elif fault.kind == "rate_limit":
                status = 429
                headers = {"Retry-After": str(fault.retry_after)}
                body = {"ok": False, "error": "ratelimited"}
            elif fault.kind == "fail":
                status, headers, body = fault.status, {}, {"ok": False, "error": fault.error}
            else:
                status, headers, body = 0, {}, None
            recorded = SlackCall(call.method, call.params, call.headers, call.http_method, status)
            self._state.calls.append(recorded)
        if body is None:
            return recorded, (0, {}, None)
        if call.method == "response_url" and status == 200:
            return recorded, (200, {"Content-Type": "text/plain"}, b"ok")
        if call.method == "file_upload" and status == 200:
            return recorded, (
                200,
                {"Content-Type": "text/plain"},
                f"OK - {len(call.params['_bytes'])}".encode(),
            )
        encoded = json.dumps(body).encode()
        return recorded, (
            status,
            {"Content-Type": "application/json; charset=utf-8", **headers},
            encoded,
        )

    def _reply_to(self, call: SlackCall) -> dict[str, Any]:
        """Called with the lock held: Slack's answer for a successful call."""
        p = call.params
        channel = str(p.get("channel", ""))
        if call.method == "chat.postMessage":
            ts = self._next_ts()
            message = self._message(p, ts)
            self._state.messages[(channel, ts)] = message
            return {"ok": True, "channel": channel, "ts": ts, "message": message}
        if call.method == "chat.update":
            ts = str(p.get("ts", ""))
            message = self._message(p, ts)
            self._state.messages[(channel, ts)] = message
            return {"ok": True, "channel": channel, "ts": ts, "text": message["text"]}
        if call.method == "chat.delete":
            ts = str(p.get("ts", ""))
            if self._state.messages.pop((channel, ts), None) is None:
                return {"ok": False, "error": "message_not_found"}
            return {"ok": True, "channel": channel, "ts": ts}
        if call.method == "chat.postEphemeral":
            return {"ok": True, "message_ts": self._next_ts()}
        if call.method == "auth.test":
            return {
                "ok": True,
                "url": "https://garden-dx.slack.com/",
                "team": "Garden DX",
                "user": "gardenbot",
                "team_id": TEAM_ID,
                "user_id": BOT_USER_ID,
                "bot_id": BOT_ID,
                "is_enterprise_install": False,
            }
        if call.method == "usergroups.users.list":
            group = str(p.get("usergroup", ""))
            if group not in self._state.usergroups:
                return {"ok": False, "error": "no_such_subteam"}
            return {"ok": True, "users": list(self._state.usergroups[group])}
        if call.method == "conversations.open":
            users = str(p.get("users", "")).replace(",", "")
            return {"ok": True, "channel": {"id": f"D{users or 'X'}"[:11]}}
        if call.method == "conversations.create":
            name = str(p.get("name", ""))
            return {"ok": True, "channel": {"id": f"C0NEW{next(self._state.ids):04d}", "name": name}}
        if call.method == "conversations.invite":
            return {"ok": True, "channel": {"id": channel}}
        if call.method in ("files.getUploadURLExternal", "file_upload", "files.completeUploadExternal"):
            return self._file_reply(call)
        if call.method in ("views.open", "views.update", "views.push"):
            view = call.json_param("view") or {}
            return {"ok": True, "view": {"id": "V0GARDEN", **view}}
        return {"ok": True}

    def _file_reply(self, call: SlackCall) -> dict[str, Any]:
        """Called with the lock held: the three steps of an external upload."""
        p = call.params
        if call.method == "files.getUploadURLExternal":
            if not p.get("filename") or not str(p.get("length", "")).isdigit():
                return {"ok": False, "error": "invalid_arguments"}
            file_id = f"F0{next(self._state.file_counter):08d}"
            return {"ok": True, "upload_url": f"{self._state.base_url}upload/{file_id}", "file_id": file_id}
        if call.method == "file_upload":
            self._state.files[str(p["_file_id"])] = p["_bytes"]
            return {"ok": True}
        shared = call.json_param("files") or []
        if not shared or any(str(f.get("id")) not in self._state.files for f in shared):
            return {"ok": False, "error": "file_not_found"}
        return {"ok": True, "files": [{"id": f["id"], "title": f.get("title") or ""} for f in shared]}

    @staticmethod
    def _message(params: dict[str, Any], ts: str) -> dict[str, Any]:
        blocks = params.get("blocks")
        return {
            "type": "message",
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "ts": ts,
            "text": params.get("text", ""),
            "blocks": json.loads(blocks) if isinstance(blocks, str) else blocks or [],
        }


@contextmanager
def workspace_standin() -> Iterator[SlackApiStandIn]:
    """The stand-in as the test bots' workspace has it: S0ONCALL, a group the test roles name
    (tests/support/runtime.py), is a user group holding U0ONCALL."""
    with SlackApiStandIn() as api:
        api.set_usergroup("S0ONCALL", ["U0ONCALL"])
        yield api


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up mid-request is normal in tests (timeouts, dropped connections).
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler_for(
    answer: Callable[[SlackCall], tuple[SlackCall, Answer]],
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 10  # idle keep-alive connections end rather than pin a thread

        def do_POST(self) -> None:
            self._serve()

        def do_GET(self) -> None:
            self._serve()

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if parts.path.startswith("/upload/"):  # an upload URL: the body is the file itself
                file_id = parts.path.removeprefix("/upload/")
                upload = {"_file_id": file_id, "_bytes": raw, "_file": file_id, "_raw": raw}
                headers = {k.lower(): v for k, v in self.headers.items()}
                _, (status, out_headers, body) = answer(
                    SlackCall("file_upload", upload, headers, self.command)
                )
                self._send(status, out_headers, body or b"")
                return
            if parts.path.startswith("/api/"):
                method = parts.path.removeprefix("/api/").strip("/")
            elif parts.path.startswith("/hooks/"):
                method = "response_url"
            else:
                self._send(404, {"Content-Type": "text/plain"}, b"not found")
                return
            params: dict[str, Any] = dict(parse_qsl(parts.query, keep_blank_values=True))
            params.update(_parse_body(self.headers.get("Content-Type", ""), raw))
            if method == "response_url":
                params["_hook"] = parts.path.removeprefix("/hooks/")
            headers = {k.lower(): v for k, v in self.headers.items()}
            _, (status, out_headers, body) = answer(SlackCall(method, params, headers, self.command))
            if body is None:
                self.close_connection = True
                return
            self._send(status, out_headers, body)

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # tests read .calls, not stderr

    return Handler
