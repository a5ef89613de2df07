"""Pagination is bounded: a token that repeats or cycles, too many pages or too many items fail
that one list permanently instead of looping forever (or filling memory).

Each server gives up by itself after a few dozen pages (a null token), so a client that did
not stop would finish without the error rather than hang the suite.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from fanout_core.errors import PermanentError
from fanout_core.hermes import HermesClient

from .raw_http import Conn, Request, page, servers

serve = pytest.fixture(servers)
GIVE_UP_AFTER = 60


def client(url: str, **options: object) -> HermesClient:
    options.setdefault("max_retries", 0)
    options.setdefault("sleep", lambda _s: None)
    return HermesClient(url, "tok", **options)  # type: ignore[arg-type]


def tokens(next_token: Callable[[int], str | None], per_page: int = 1) -> Callable[[Request, Conn], None]:
    """A server whose n-th answer (counting from 1) carries ``next_token(n)``; null after GIVE_UP_AFTER."""
    count = itertools.count(1)

    def reply(_request: Request, conn: Conn) -> None:
        n = next(count)
        items = [{"troop_id": f"t{n}-{i}", "service": "s"} for i in range(per_page)]
        conn.reply(200, page(items, next_token(n) if n < GIVE_UP_AFTER else None))

    return reply


@pytest.mark.parametrize(
    ("next_token", "pages"),
    [
        pytest.param(lambda n: "A", 2, id="same-token-again"),
        pytest.param(lambda n: "AB"[(n - 1) % 2], 3, id="A-B-A"),
        pytest.param(lambda n: f"t{(n - 1) % 4}", 5, id="cycle-of-4"),
        pytest.param(lambda n: "x" * 100_000 + "AB"[(n - 1) % 2], 3, id="long-tokens"),
    ],
)
def test_a_next_page_token_that_repeats_fails_the_list_permanently(
    serve, next_token: Callable[[int], str], pages: int
) -> None:
    server = serve(tokens(next_token))
    hermes = client(server.url)
    with pytest.raises(PermanentError) as info:
        list(hermes.list("troops", ("w",)))
    message = str(info.value)
    assert f"{server.url}/v1/warriors/w/troops" in message
    assert "already followed" in message and f"after {pages} pages" in message
    assert info.value.status == 200
    assert len(server.requests) == hermes.stats.calls == pages


def test_the_same_token_in_two_lists_is_no_cycle(serve) -> None:
    server = serve(lambda r, conn: conn.reply(200, page([], None if "page_token" in r.target else "A")))
    hermes = client(server.url)
    assert list(hermes.list("troops", ("w1",))) == [] and list(hermes.list("troops", ("w2",))) == []
    assert len(server.requests) == 4


def test_a_list_past_max_pages_fails_naming_the_cap(serve) -> None:
    server = serve(tokens(lambda n: f"p{n}"))
    hermes = client(server.url, max_pages=5)
    with pytest.raises(PermanentError, match="more than 5 pages") as info:
        list(hermes.list("troops", ("w",)))
    assert "max_pages" in str(info.value) and "/v1/warriors/w/troops" in str(info.value)
    assert len(server.requests) == 5  # the sixth page is never asked for


def test_a_list_of_exactly_max_pages_is_read(serve) -> None:
    server = serve(tokens(lambda n: f"p{n}" if n < 5 else None))
    assert len(list(client(server.url, max_pages=5).list("troops", ("w",)))) == 5


def test_a_list_past_max_items_fails_and_yields_no_item_past_the_cap(serve) -> None:
    server = serve(tokens(lambda n: f"p{n}", per_page=3))
    got: list[str] = []
    with pytest.raises(PermanentError, match="more than 7 items") as info:
        for troop in client(server.url, page_size=3, max_items_per_list=7).list("troops", ("w",)):
            got.append(troop["troop_id"])
    assert "max_items_per_list" in str(info.value)
    assert len(got) == 6 and len(server.requests) == 3


def test_the_caps_hold_however_the_list_is_consumed(serve) -> None:
    server = serve(tokens(lambda n: f"p{n}"))
    pages = client(server.url, max_pages=3).list("troops", ("w",))
    assert [t["troop_id"] for t in itertools.islice(pages, 2)] == ["t1-0", "t2-0"]
    assert next(pages)["troop_id"] == "t3-0"
    with pytest.raises(PermanentError, match="more than 3 pages"):
        next(pages)
    assert len(server.requests) == 3


@pytest.mark.parametrize("option", ["max_pages", "max_items_per_list"])
@pytest.mark.parametrize("value", [0, -1])
def test_a_cap_below_one_is_refused(option: str, value: int) -> None:
    with pytest.raises(ValueError, match=option):
        HermesClient("http://h", "tok", **{option: value})  # type: ignore[arg-type]
