"""A total deadline per request: connect, headers and body together, not per socket read.

Servers that send a byte now and then never trip a read timeout (it is per recv); the call
must still end within its deadline (plus a read timeout, plus a little slack), as a
TransientError that says the server is sending too slowly.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable

import pytest
import requests

from fanout_core.deadlines import task_deadline
from fanout_core.errors import TransientError
from fanout_core.hermes import HermesClient

from .raw_http import Conn, Request, page, servers

serve = pytest.fixture(servers)
SLACK_S = 0.5
BODY = page([{"warrior_id": f"w{i}", "name": "n"} for i in range(20)])


def client(url: str, **options: object) -> HermesClient:
    options.setdefault("max_retries", 0)
    options.setdefault("sleep", lambda _s: None)
    return HermesClient(url, "tok", **options)  # type: ignore[arg-type]


def drip_body(request: Request, conn: Conn) -> None:
    conn.send(f"HTTP/1.1 200 OK\r\nContent-Length: {len(BODY)}\r\n\r\n".encode())
    conn.drip(BODY, 0.05)


def drip_headers(request: Request, conn: Conn) -> None:
    conn.send(b"HTTP/1.1 200 OK\r\n")
    conn.drip(b"X-Slow: " + b"a" * 400 + f"\r\nContent-Length: {len(BODY)}\r\n\r\n".encode() + BODY, 0.05)


def drip_status_line(request: Request, conn: Conn) -> None:
    conn.drip(f"HTTP/1.1 200 OK\r\nContent-Length: {len(BODY)}\r\n\r\n".encode() + BODY, 0.05)


def drip_chunks(request: Request, conn: Conn) -> None:
    conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    for i in range(len(BODY)):
        if conn.closed.is_set():
            return
        try:
            conn.send(b"1\r\n" + BODY[i : i + 1] + b"\r\n")
        except OSError:
            return
        time.sleep(0.05)
    conn.send(b"0\r\n\r\n")


DRIPS = [
    pytest.param(drip_body, id="body"),
    pytest.param(drip_headers, id="headers"),
    pytest.param(drip_status_line, id="status-line"),
    pytest.param(drip_chunks, id="chunked-body"),
]


@pytest.mark.parametrize("handler", DRIPS)
def test_a_dripping_server_ends_the_call_at_its_deadline(
    serve, handler: Callable[[Request, Conn], None]
) -> None:
    server = serve(handler)
    hermes = client(server.url, request_deadline_s=1.0, read_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(TransientError) as info:
        list(hermes.list("warriors", ()))
    took = time.monotonic() - started
    assert "took longer than 1 s (the server is sending too slowly)" in str(info.value)
    assert f"{server.url}/v1/warriors" in str(info.value)
    assert 0.9 <= took < 1.0 + SLACK_S, took


@pytest.mark.parametrize("handler", [drip_body, drip_chunks])
def test_the_deadline_holds_with_a_session_of_the_callers_too(
    serve, handler: Callable[[Request, Conn], None]
) -> None:
    # A plain requests.Session lacks the client's adapter: the body is still read piece
    # by piece, so the call ends within the deadline plus one read timeout.
    server = serve(handler)
    hermes = client(server.url, request_deadline_s=1.0, read_timeout=0.5, session=requests.Session())
    started = time.monotonic()
    with pytest.raises(TransientError, match="took longer than 1 s"):
        list(hermes.list("warriors", ()))
    assert time.monotonic() - started < 1.0 + 0.5 + SLACK_S


def test_the_task_deadline_caps_the_request_deadline(serve) -> None:
    server = serve(drip_body)
    hermes = client(server.url, request_deadline_s=60.0, read_timeout=20.0)
    hermes.set_deadline(time.monotonic() + 0.6)
    started = time.monotonic()
    with pytest.raises(TransientError, match=r"took longer than 0\.6 s"):
        list(hermes.list("warriors", ()))
    assert time.monotonic() - started < 0.6 + SLACK_S


def test_a_server_that_stops_sending_still_times_out_per_read(serve) -> None:
    def stall(request: Request, conn: Conn) -> None:
        conn.send(f"HTTP/1.1 200 OK\r\nContent-Length: {len(BODY)}\r\n\r\n".encode() + BODY[:10])
        conn.closed.wait(10)

    server = serve(stall)
    started = time.monotonic()
    with pytest.raises(TransientError, match="timeout") as info:
        list(client(server.url, request_deadline_s=30.0, read_timeout=0.3).list("warriors", ()))
    assert "took longer" not in str(info.value)
    assert time.monotonic() - started < 0.3 + SLACK_S


def test_a_slow_but_steady_server_within_the_deadline_is_read(serve) -> None:
    def slowish(request: Request, conn: Conn) -> None:
        conn.send(f"HTTP/1.1 200 OK\r\nContent-Length: {len(BODY)}\r\n\r\n".encode())
        for i in range(0, len(BODY), len(BODY) // 4 + 1):
            conn.send(BODY[i : i + len(BODY) // 4 + 1])
            time.sleep(0.05)

    server = serve(slowish)
    assert len(list(client(server.url, request_deadline_s=5.0).list("warriors", ()))) == 20


def test_connections_are_kept_alive_across_calls(serve) -> None:
    server = serve(lambda _r, conn: conn.reply(200, BODY))
    hermes = client(server.url)
    for _ in range(20):
        assert len(list(hermes.list("warriors", ()))) == 20
    assert server.connections == 1 and len(server.requests) == 20


def test_a_gzip_body_is_decoded_and_capped_decoded(serve) -> None:
    packed = gzip.compress(BODY)
    server = serve(lambda _r, conn: conn.reply(200, packed, {"Content-Encoding": "gzip"}))
    assert len(list(client(server.url).list("warriors", ()))) == 20
    with pytest.raises(Exception, match="byte cap"):
        list(client(server.url, max_page_bytes=len(packed) + 10).list("warriors", ()))


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf")])
def test_a_request_deadline_that_is_not_a_positive_number_is_refused(value: float) -> None:
    with pytest.raises(ValueError, match="request_deadline_s"):
        HermesClient("http://h", "tok", request_deadline_s=value)


def test_no_call_starts_once_the_task_deadline_has_passed(serve) -> None:
    requests_seen: list[Request] = []

    def answer(request: Request, conn: Conn) -> None:
        requests_seen.append(request)
        conn.reply(200, BODY)

    hermes = client(serve(answer).url)
    hermes.set_deadline(time.monotonic() - 0.01)
    with pytest.raises(TransientError, match="the task's deadline passed before this call could start"):
        list(hermes.list("warriors", ()))
    assert hermes.stats.calls == 0
    assert requests_seen == []


@pytest.mark.parametrize(
    ("given_s", "deadline_after_s"),
    [(900.0, 890.0), (300.0, 290.0), (100.0, 90.0), (30.0, 27.0), (3.0, 2.7), (0.0, 0.0), (-5.0, 0.0)],
)
def test_a_task_deadline_keeps_back_ten_seconds_or_a_tenth_for_the_outcome(
    given_s: float, deadline_after_s: float
) -> None:
    assert task_deadline(given_s, now=1000.0) == pytest.approx(1000.0 + deadline_after_s)
