"""HTTP/1.1 behaviour: keep-alive, quick stop, stats, Connection: close, malformed requests."""

from __future__ import annotations

import http.client
import socket
import time
from typing import Any

import pytest
import requests

from fanout.simulator import (
    SimConfig,
)

from .conftest import AUTH

# ---- server behaviour ------------------------------------------------------------------------


def test_keep_alive_serves_many_requests_on_one_connection(serve: Any) -> None:
    sim = serve(SimConfig())
    host, port = sim.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.connect()
    sock = conn.sock
    for _ in range(20):
        conn.request("GET", "/v1/warriors", headers=AUTH)
        resp = conn.getresponse()
        assert resp.status == 200
        resp.read()
    assert conn.sock is sock
    conn.close()


def test_stop_is_quick_with_idle_keep_alive_connections(serve: Any) -> None:
    sim = serve(SimConfig())
    s = requests.Session()
    s.get(f"{sim.url}/v1/warriors", headers=AUTH, timeout=5)
    t0 = time.monotonic()
    sim.stop()
    assert time.monotonic() - t0 < 2
    s.close()


def test_stats_count_statuses_and_pages(serve: Any, session: requests.Session) -> None:
    sim = serve(SimConfig())
    session.get(f"{sim.url}/v1/health", timeout=5)
    session.get(f"{sim.url}/v1/warriors", timeout=5)
    session.get(f"{sim.url}/v1/warriors/nobody/troops", timeout=5)
    requests.get(f"{sim.url}/v1/warriors", timeout=5)
    stats = sim.stats
    assert stats.requests == 4
    assert stats.by_status == {200: 2, 401: 1, 404: 1}
    assert stats.pages_served == 1
    sim.reset_stats()
    assert sim.stats.requests == 0


def _raw_exchange(url: str, request: bytes) -> bytes:
    """Send raw bytes, read until the server closes the connection."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    "request_head",
    [
        b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /v1/health HTTP/1.0\r\n\r\n",
    ],
    ids=["connection-close", "http-1.0"],
)
def test_server_closes_when_the_client_asks(serve: Any, request_head: bytes) -> None:
    sim = serve(SimConfig())
    answer = _raw_exchange(sim.url, request_head)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nConnection: close\r\n" in answer
    assert answer.endswith(b'{"status":"ok"}')


@pytest.mark.parametrize(
    "request_head",
    [b"GET /v1/health\r\n\r\n", b"GET /v1/health HTTP/2.0\r\n\r\n", b"GET / HTTP/1.1\r\nbad\r\n\r\n"],
    ids=["no-version", "http-2", "header-without-colon"],
)
def test_malformed_requests_are_400(serve: Any, request_head: bytes) -> None:
    sim = serve(SimConfig())
    assert _raw_exchange(sim.url, request_head).startswith(b"HTTP/1.1 400 ")


def test_unsupported_method_is_a_json_error(serve: Any) -> None:
    sim = serve(SimConfig())
    r = requests.post(f"{sim.url}/v1/warriors", headers=AUTH, timeout=5)
    assert r.status_code == 501
    assert set(r.json()) == {"error", "message"}
