"""A raw-socket HTTP/1.1 server for the Hermes client's tests: it records each request's raw
request line exactly as the client sent it (no decoding, no normalisation) and lets a test
write whatever bytes it likes back, as slowly as it likes.

It does not use the bundled simulator (or http.server's path handling), so what a test
asserts is what went over the wire.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Request:
    line: str
    """The raw request line, e.g. ``GET /v1/warriors?page_size=100 HTTP/1.1``."""
    headers: dict[str, str]

    @property
    def target(self) -> str:
        return self.line.split(" ")[1]


Handler = Callable[[Request, "Conn"], None]


@dataclass
class Conn:
    sock: socket.socket
    closed: threading.Event = field(default_factory=threading.Event)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        """A whole keep-alive response with a Content-Length."""
        head = [f"HTTP/1.1 {status} X", "Content-Type: application/json", f"Content-Length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.send(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)

    def drip(self, data: bytes, every_s: float) -> None:
        """Send ``data`` one byte at a time, ``every_s`` apart; stops when the client hangs up."""
        for i in range(len(data)):
            if self.closed.is_set():
                return
            try:
                self.sock.sendall(data[i : i + 1])
            except OSError:
                return
            time.sleep(every_s)


class RawServer:
    def __init__(self, handler: Handler):
        self.handler = handler
        self.requests: list[Request] = []
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._conns: list[Conn] = []
        self._stopping = threading.Event()
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def lines(self) -> list[str]:
        return [r.line for r in self.requests]

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            conn = Conn(sock)
            self._conns.append(conn)
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: Conn) -> None:
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.sock.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                line, *header_lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for h in header_lines:
                    name, _, value = h.partition(":")
                    headers[name.strip().lower()] = value.strip()
                request = Request(line, headers)
                self.requests.append(request)
                self.handler(request, conn)
        except OSError:
            return
        finally:
            conn.closed.set()
            conn.sock.close()

    def stop(self) -> None:
        self._stopping.set()
        self._listener.close()
        for conn in self._conns:
            conn.closed.set()
            with suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)


@contextmanager
def raw_server(handler: Handler) -> Iterator[RawServer]:
    server = RawServer(handler)
    try:
        yield server
    finally:
        server.stop()


def servers() -> Iterator[Callable[[Handler], RawServer]]:
    """The body of a fixture (``serve = pytest.fixture(servers)``): start servers, all stopped after."""
    started: list[RawServer] = []

    def start(handler: Handler) -> RawServer:
        started.append(RawServer(handler))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def page(items: list[dict[str, Any]], token: str | None = None) -> bytes:
    return json.dumps({"items": items, "next_page_token": token}).encode()


def always(status: int, body: bytes, headers: dict[str, str] | None = None) -> Handler:
    return lambda _request, conn: conn.reply(status, body, headers)


def echoes_the_token(status: int) -> Handler:
    """A server that answers ``status`` and quotes the bearer token it was sent back in its
    error message, spelled the ways a careless server spells it: as it is, Python-repr'd
    (str and the header's raw bytes), JSON-escaped inside JSON text, and percent-encoded."""
    from urllib.parse import quote

    def handle(request: Request, conn: Conn) -> None:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        echoed = [
            token,
            repr(token),
            ascii(token),
            repr(token.encode("latin-1")),
            repr(token.encode("utf-8")),
            json.dumps({"token": token}),
            json.dumps({"token": token}, ensure_ascii=False),
            quote(token, safe=""),
        ]
        message = "bad token: " + " | ".join(echoed)
        conn.reply(status, json.dumps({"error": "unauthorized", "message": message}).encode())

    return handle
