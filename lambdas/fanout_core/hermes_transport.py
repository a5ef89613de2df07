"""The Hermes client's transport: one total deadline per call, down to each socket read.

The client's own sessions mount DeadlineAdapter, whose connections hand every response a
reader that bounds each recv (status line, headers, body) by the time left before the
call's deadline (a thread-local set around each send, ``REQUEST_DEADLINE``). Nothing runs
in another thread: the socket's timeout is lowered as the deadline comes closer, only then
(one syscall).

The same machinery serves any other HTTP call that must be bounded (the CLI's preflight):
``deadline_session`` builds such a session, ``request_deadline`` sets the deadline around a
send, ``read_capped`` reads a body within a byte cap and the deadline.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager, ProxyManager

REQUEST_DEADLINE = threading.local()
"""The monotonic deadline of the call this thread is making (``value``; None between calls)."""
_READ_SIZE = 256 * 1024


class BodyTooLarge(Exception):
    """A response body went past the reader's byte cap (``read_capped``)."""


class _DeadlineReader(io.RawIOBase):
    """A socket's raw reader whose every read ends by ``deadline`` (monotonic seconds)."""

    def __init__(self, sock: Any, deadline: float):
        self._raw = sock.makefile("rb", buffering=0)  # counted as an open file of the socket
        self._sock = sock
        self._deadline = deadline
        self._per_read: float | None = sock.gettimeout()
        self._lowered = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request's deadline has passed")
        if self._per_read is None or left < self._per_read:
            self._sock.settimeout(left)
            self._lowered = True
        result: int | None = self._raw.readinto(buffer)
        return result

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
            if self._lowered:
                with contextlib.suppress(OSError):  # the connection may be closed already
                    self._sock.settimeout(self._per_read)
        super().close()


class _DeadlineSocket:
    """What http.client's response reads from: the socket, behind a _DeadlineReader."""

    __slots__ = ("_deadline", "_sock")

    def __init__(self, sock: Any, deadline: float):
        self._sock = sock
        self._deadline = deadline

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))


class _DeadlineResponse(http.client.HTTPResponse):
    def __init__(self, sock: Any, debuglevel: int = 0, method: str | None = None, url: str | None = None):
        deadline = getattr(REQUEST_DEADLINE, "value", None)
        if deadline is not None:
            sock = _DeadlineSocket(sock, deadline)
        super().__init__(sock, debuglevel, method, url)


class _DeadlineHTTPConnection(HTTPConnection):
    response_class = _DeadlineResponse


class _DeadlineHTTPSConnection(HTTPSConnection):
    response_class = _DeadlineResponse


class _DeadlineHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _DeadlineHTTPConnection


class _DeadlineHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


_DEADLINE_POOLS = {"http": _DeadlineHTTPConnectionPool, "https": _DeadlineHTTPSConnectionPool}


class DeadlineAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections keep to the calling client's request deadline."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _DEADLINE_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        manager: PoolManager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if type(manager) is ProxyManager:  # SOCKS proxies keep their own connections
            manager.pool_classes_by_scheme = _DEADLINE_POOLS
        return manager


def deadline_session(base_url: str, *, pool_size: int = 4) -> requests.Session:
    """A session whose every response keeps to ``REQUEST_DEADLINE`` (proxies read once, as
    the environment gives them for ``base_url``)."""
    session = requests.Session()
    adapter = DeadlineAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    # Read proxy settings once: with trust_env requests re-reads the environment
    # and ~/.netrc on every call, which doubled the client's CPU per call.
    session.proxies.update(requests.utils.get_environ_proxies(base_url))
    session.trust_env = False
    return session


@contextmanager
def request_deadline(deadline: float) -> Iterator[None]:
    """Around a send on a ``deadline_session``: the response it builds reads by ``deadline``."""
    REQUEST_DEADLINE.value = deadline
    try:
        yield
    finally:
        REQUEST_DEADLINE.value = None


def read_capped(raw: Any, max_bytes: int, deadline: float) -> bytes:
    """A response's whole (decoded) body, read piece by piece so that neither ``max_bytes``
    (BodyTooLarge) nor ``deadline`` (TimeoutError) waits for more than one socket read."""
    chunks: list[bytes] = []
    size = 0
    while True:
        # read1: whatever one socket read brought (iter_content would wait for 256 KB).
        chunk = raw.read1(_READ_SIZE, decode_content=True)
        if not chunk:
            break
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge(f"a body larger than the {max_bytes}-byte cap")
        chunks.append(chunk)
        if time.monotonic() > deadline:
            raise TimeoutError("the request's deadline has passed")
    # The whole body is read: the connection goes back to the pool (closing the
    # response unread would close it).
    raw.release_conn()
    return b"".join(chunks)
