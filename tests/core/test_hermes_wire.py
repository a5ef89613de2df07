"""What goes over the wire: the raw request line a server receives for awkward identifiers.

A raw-socket server records each request line exactly as sent, so nothing between the
client and the assertion (requests, urllib3, http.server) can decode or normalise it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fanout_core.hermes import HermesClient

from .raw_http import Conn, Request, always, page, servers

serve = pytest.fixture(servers)
EMPTY = page([])


def client(url: str) -> HermesClient:
    return HermesClient(url, "tok", max_retries=0, sleep=lambda _s: None)


@pytest.mark.parametrize(
    ("call", "target"),
    [
        pytest.param(
            lambda c: c.list("troops", (".",)), "/v1/warriors/%2E/troops?page_size=100", id="warrior-dot"
        ),
        pytest.param(
            lambda c: c.list("troops", ("..",)),
            "/v1/warriors/%2E%2E/troops?page_size=100",
            id="warrior-dotdot",
        ),
        pytest.param(
            lambda c: c.list("data_groups", ("..", ".")),
            "/v1/warriors/%2E%2E/troops/%2E/data_groups?page_size=100",
            id="troop-dot",
        ),
        pytest.param(
            lambda c: c.list("records", (".", "..", ".")),
            "/v1/warriors/%2E/troops/%2E%2E/data_groups/%2E/data?page_size=100",
            id="group-dot",
        ),
        pytest.param(
            lambda c: c.list("records", ("..", "..", "..")),
            "/v1/warriors/%2E%2E/troops/%2E%2E/data_groups/%2E%2E/data?page_size=100",
            id="all-dotdot",
        ),
        # Only the two dot segments change; every other id keeps quote(id, safe="").
        pytest.param(
            lambda c: c.list("records", ("...", ". .", "a.b")),
            "/v1/warriors/.../troops/.%20./data_groups/a.b/data?page_size=100",
            id="other-dots",
        ),
        pytest.param(
            lambda c: c.list("records", ("a b+c=d", "o'brien", "%2E")),
            "/v1/warriors/a%20b%2Bc%3Dd/troops/o%27brien/data_groups/%252E/data?page_size=100",
            id="punctuation",
        ),
        pytest.param(
            lambda c: c.list("troops", ("戦士 (1), ~x@y:z",)),
            "/v1/warriors/%E6%88%A6%E5%A3%AB%20%281%29%2C%20~x%40y%3Az/troops?page_size=100",
            id="any-script",
        ),
    ],
)
def test_the_server_receives_each_identifier_as_exactly_one_encoded_segment(
    serve, call: Callable[[HermesClient], Any], target: str
) -> None:
    server = serve(always(200, EMPTY))
    assert list(call(client(server.url))) == []
    assert server.lines == [f"GET {target} HTTP/1.1"]


@pytest.mark.parametrize(("ident", "segment"), [(".", "%2E"), ("..", "%2E%2E"), ("...", "..."), ("a", "a")])
def test_url_for_encodes_dot_segments(ident: str, segment: str) -> None:
    url = HermesClient("http://h:1", "tok").url_for("troops", (ident,))
    assert url == f"http://h:1/v1/warriors/{segment}/troops"


def test_a_page_token_with_dots_and_escapes_is_sent_as_is_query_encoded(serve) -> None:
    token = "./../%2E?a=b&c d+"

    def reply(request: Request, conn: Conn) -> None:
        first = "page_token=" not in request.target
        conn.reply(200, page([{"troop_id": "t", "service": "s"}], token if first else None))

    server = serve(reply)
    assert len(list(client(server.url).list("troops", ("..",)))) == 2
    assert server.lines == [
        "GET /v1/warriors/%2E%2E/troops?page_size=100 HTTP/1.1",
        "GET /v1/warriors/%2E%2E/troops?page_size=100&page_token=.%2F..%2F%252E%3Fa%3Db%26c+d%2B HTTP/1.1",
    ]


def test_a_base_url_with_a_path_prefix_keeps_it(serve) -> None:
    server = serve(always(200, EMPTY))
    list(client(server.url + "/hermes/").list("troops", (".",)))
    assert server.lines == ["GET /hermes/v1/warriors/%2E/troops?page_size=100 HTTP/1.1"]
