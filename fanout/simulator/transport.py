"""HTTP/1.1 plumbing: the threaded socket server, a lean request parser, one-write answers.

Why its own module: this is what keeps the simulator fast enough for the benchmarks
(thousands of requests/s on one keep-alive connection: no email-package header parsing,
status line, headers and body in ONE send so no delayed-ACK stall), and it knows nothing
of Hermes' routes, which live in :mod:`fanout.simulator.server`.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fanout.simulator.server import HermesSimulator

_JSON = "application/json"


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    kind: str | None = None
    """What the stats count it as (see SimStats)."""
    drip: bool = False
    """Write it slowly (``SimConfig.drip_bytes_per_s``)."""


def _json_response(
    status: int, obj: object, headers: tuple[tuple[str, str], ...] = (), kind: str | None = None
) -> _Response:
    body = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return _Response(status, body, headers, kind)


def _error_response(
    status: int,
    error: str,
    message: str,
    headers: tuple[tuple[str, str], ...] = (),
    kind: str | None = None,
) -> _Response:
    return _json_response(status, {"error": error, "message": message}, headers, kind)


class _Reply(Exception):
    """Raised inside routing to answer with an error body."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512
    allow_reuse_address = True

    sim: HermesSimulator

    def __init__(self, address: tuple[str, int], sim: HermesSimulator) -> None:
        self.sim = sim
        self.stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, conn: socket.socket, add: bool) -> None:
        with self._conns_lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def close_connections(self) -> None:
        """Unblock handler threads parked on idle keep-alive connections."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or vanish mid-response are expected; stay quiet.
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            return
        super().handle_error(request, client_address)


_DATE_CACHE: tuple[int, str] = (0, "")


def _http_date() -> str:
    """The Date header, formatted once per second rather than once per response."""
    global _DATE_CACHE
    now = int(time.time())
    if _DATE_CACHE[0] != now:
        _DATE_CACHE = (now, formatdate(now, usegmt=True))
    return _DATE_CACHE[1]


_MAX_HEADERS = 100
_MAX_LINE = 65536


class _Headers(dict[str, str]):
    """Request headers keyed by lower-case name; ``get`` is case-insensitive like email's."""

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hermes-sim/1.0"
    sys_version = ""
    # Unbuffered writer: _send() builds status line, headers and body and writes them in
    # ONE sendall, so keep-alive clients never wait on a delayed ACK between two sends.
    wbufsize = 0
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: thousands of requests per second would flood the terminal."""

    def parse_request(self) -> bool:
        """http.server's request parsing without the email package.

        ``http.client.parse_headers`` costs more per request than everything the simulator
        does itself; a crawler benchmark must measure the crawler, not this parser. Only
        HTTP/1.0 and 1.1 are accepted; anything malformed gets the stdlib's error answers.
        """
        self.command = ""
        self.request_version = self.default_request_version
        self.close_connection = True
        raw: bytes = getattr(self, "raw_requestline", b"")  # set by handle_one_request
        self.requestline = str(raw, "iso-8859-1").rstrip("\r\n")
        words = self.requestline.split()
        if not words:
            return False
        if len(words) != 3 or words[2] not in ("HTTP/1.0", "HTTP/1.1"):
            self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request ({self.requestline!r})")
            return False
        self.command, self.path, self.request_version = words
        headers = _Headers()
        for _ in range(_MAX_HEADERS + 1):
            line = self.rfile.readline(_MAX_LINE + 1)
            if len(line) > _MAX_LINE:
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long")
                return False
            if line in (b"\r\n", b"\n", b""):
                break
            name, sep, value = str(line, "iso-8859-1").partition(":")
            if not sep:
                self.send_error(HTTPStatus.BAD_REQUEST, "Malformed header line")
                return False
            headers[name.strip().lower()] = value.strip()
        else:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers")
            return False
        self.headers = headers  # type: ignore[assignment]
        connection = headers.get("connection", "").lower()
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive" or self.request_version == "HTTP/1.1":
            self.close_connection = False
        return True

    def _send(self, resp: _Response) -> None:
        """Status line, headers and body in ONE write (see the class comment)."""
        lines = [
            f"HTTP/1.1 {resp.status} {HTTPStatus(resp.status).phrase}",
            f"Server: {self.server_version}",
            f"Date: {_http_date()}",
            f"Content-Type: {_JSON}",
            f"Content-Length: {len(resp.body)}",
        ]
        lines.extend(f"{k}: {v}" for k, v in resp.headers)
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if resp.drip:
            self._drip(head + resp.body)
        else:
            self.wfile.write(head + resp.body)

    def _drip(self, data: bytes) -> None:
        """Write a few bytes at a time at ``drip_bytes_per_s`` on average (stops on stop())."""
        rate = self.server.sim.config.drip_bytes_per_s or 1.0
        piece = max(1, int(rate // 100))
        pause = piece / rate
        stopping = self.server.stopping
        for i in range(0, len(data), piece):
            self.wfile.write(data[i : i + piece])
            if stopping.wait(pause):
                return

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol-level errors (bad request line, unsupported method) as JSON Error bodies."""
        self.close_connection = True
        status = HTTPStatus(code)
        error = status.phrase.lower().replace(" ", "_")
        resp = _error_response(status, error, message or status.description)
        sim = self.server.sim
        sim._counters.record(resp.status, None, sim._logged(self.requestline))
        with contextlib.suppress(OSError):
            self._send(resp)

    def do_GET(self) -> None:
        sim = self.server.sim
        # A GET body is meaningless here, but read it so the connection stays in sync.
        length = int(self.headers.get("Content-Length") or 0)
        if length > 0:
            self.rfile.read(length)
        resp = sim._handle(self)
        # Count before sending, so a client that has its answer also sees it in the stats.
        sim._counters.record(resp.status, resp.kind, sim._logged(self.requestline))
        self._send(resp)
