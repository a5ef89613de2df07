"""One client for any described API, against small raw HTTP servers: each pagination style
with its end signal and its bounds (a repeated cursor or URL, max pages, max items, a next
URL off the API's origin), each auth kind as the server sees it, the path template, the
fixed query, and the listing checks a description declares (integer ids, carried fields).

Every server ends its list by itself after a few dozen pages, so a client that did not
stop would finish without the expected error rather than hang the suite.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from fanout_core.api_client import ApiClient
from fanout_core.api_description import ApiDescription, from_doc, load
from fanout_core.error_kinds import failure_fields
from fanout_core.errors import BadRecord, PermanentError, SettingsError, TransientError

from .raw_http import Conn, Request, always, servers

serve = pytest.fixture(servers)
FIXTURES = Path(__file__).parents[1] / "fixtures" / "apis"
GIVE_UP_AFTER = 40
SECRET = "k3y-Sêcret+/="


def describe(pagination: dict[str, Any], auth: dict[str, Any] | None = None, **shops: Any) -> ApiDescription:
    """Two levels: shops (listed at /shops, ids in ``id``) and their sales (one int64 column)."""
    return from_doc(
        {
            "name": "shops",
            "auth": auth or {"type": "none"},
            "pagination": pagination,
            "levels": [
                {"name": "shops", "prefix": "shops/", "path": "/shops", "items": "data", "id": "id"} | shops,
                {"name": "sales", "path": "/shops/{shops}/sales", "items": "data"},
            ],
            "rows": {"columns": [{"name": "n", "type": "int64"}]},
        },
        source="<test>",
        lines={},
    )


def client(api: ApiDescription, url: str, secret: str = SECRET, **options: Any) -> ApiClient:
    options.setdefault("max_retries", 0)
    options.setdefault("sleep", lambda _s: None)
    return ApiClient(api, url, secret, **options)


def query(request: Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(request.target).query).items()}


def shop_ids(n: int, start: int = 0) -> list[dict[str, str]]:
    return [{"id": f"s{i}"} for i in range(start, start + n)]


def reply_json(conn: Conn, doc: Any, headers: dict[str, str] | None = None) -> None:
    conn.reply(200, json.dumps(doc).encode(), headers)


# --- cursor ---------------------------------------------------------------------------------

CURSOR = {
    "type": "cursor",
    "cursor_path": "meta.after",
    "cursor_param": "after",
    "page_size": 2,
    "page_size_param": "size",
}


def test_cursor_pages_are_followed_until_a_null_cursor(serve) -> None:
    def reply(request: Request, conn: Conn) -> None:
        start = int(query(request).get("after", "0"))
        reply_json(
            conn,
            {
                "data": shop_ids(2 if start < 4 else 1, start),
                "meta": {"after": str(start + 2) if start < 4 else None},
            },
        )

    server = serve(reply)
    got = list(client(describe(CURSOR), server.url).list("shops"))
    assert [s["id"] for s in got] == ["s0", "s1", "s2", "s3", "s4"]
    assert [r.target for r in server.requests] == [
        "/shops?size=2",
        "/shops?size=2&after=2",
        "/shops?size=2&after=4",
    ]


def test_a_repeated_cursor_fails_the_list(serve) -> None:
    server = serve(lambda _r, conn: reply_json(conn, {"data": shop_ids(1), "meta": {"after": "same"}}))
    with pytest.raises(PermanentError, match=r"meta\.after already followed"):
        list(client(describe(CURSOR), server.url).list("shops"))
    assert len(server.requests) == 2


# --- next URL in the body -------------------------------------------------------------------

NEXT_URL = {"type": "next_url", "next_url_path": "links.next", "page_size": 2, "page_size_param": "limit"}


def next_url_server(next_for: Callable[[int, str], str | None]) -> Callable[[Request, Conn], None]:
    """Page n (from 1) names ``next_for(n, own path)`` as its next URL; none after GIVE_UP_AFTER."""
    count = itertools.count(1)

    def reply(request: Request, conn: Conn) -> None:
        n = next(count)
        nxt = next_for(n, request.target) if n < GIVE_UP_AFTER else None
        reply_json(conn, {"data": shop_ids(2, 2 * n), "links": {"next": nxt}})

    return reply


def test_absolute_next_urls_are_followed_until_none(serve) -> None:
    box: list[str] = []
    server = serve(next_url_server(lambda n, _t: f"{box[0]}/shops?page={n + 1}" if n < 3 else None))
    box.append(server.url)
    got = list(client(describe(NEXT_URL), server.url).list("shops"))
    assert len(got) == 6
    assert [r.target for r in server.requests] == ["/shops?limit=2", "/shops?page=2", "/shops?page=3"]


def test_a_relative_next_url_resolves_against_the_current_page(serve) -> None:
    server = serve(next_url_server(lambda n, _t: f"?page={n + 1}" if n < 2 else ("next/" if n < 3 else None)))
    list(client(describe(NEXT_URL), server.url).list("shops"))
    assert [r.target for r in server.requests] == ["/shops?limit=2", "/shops?page=2", "/next/"]


def test_a_repeated_next_url_fails_the_list(serve) -> None:
    server = serve(next_url_server(lambda n, _t: f"/shops?page={1 + n % 2}"))
    with pytest.raises(PermanentError, match="next URL already followed"):
        list(client(describe(NEXT_URL), server.url).list("shops"))
    assert len(server.requests) == 3


def test_a_next_url_on_another_origin_is_not_followed(serve) -> None:
    elsewhere = serve(always(200, b'{"data": []}'))
    server = serve(next_url_server(lambda _n, _t: f"{elsewhere.url}/shops?page=2"))
    with pytest.raises(PermanentError, match="off the API's origin") as info:
        list(client(describe(NEXT_URL, {"type": "bearer", "env": "T"}), server.url).list("shops"))
    assert elsewhere.requests == [] and len(server.requests) == 1
    assert SECRET not in str(info.value)


def test_a_next_url_on_another_scheme_of_the_same_host_is_not_followed(serve) -> None:
    box: list[str] = []
    server = serve(next_url_server(lambda _n, _t: box[0].replace("http://", "https://") + "/shops?page=2"))
    box.append(server.url)
    with pytest.raises(PermanentError, match="off the API's origin"):
        list(client(describe(NEXT_URL), server.url).list("shops"))
    assert len(server.requests) == 1


# --- Link header ----------------------------------------------------------------------------

LINK = {"type": "link_header", "page_size": 2, "page_size_param": "per_page"}


def link_server(next_for: Callable[[int], str | None]) -> Callable[[Request, Conn], None]:
    count = itertools.count(1)

    def reply(_request: Request, conn: Conn) -> None:
        n = next(count)
        nxt = next_for(n) if n < GIVE_UP_AFTER else None
        links = (
            f'</shops?page=1>; rel="first", <{nxt}>; rel="next"' if nxt else '</shops?page=1>; rel="first"'
        )
        reply_json(conn, {"data": shop_ids(2, 2 * n)}, {"Link": links})

    return reply


def test_link_header_pages_are_followed_until_no_next(serve) -> None:
    server = serve(link_server(lambda n: f"/shops?page={n + 1}&per_page=2" if n < 3 else None))
    got = list(client(describe(LINK, items="data"), server.url).list("shops"))
    assert len(got) == 6
    assert [r.target for r in server.requests] == [
        "/shops?per_page=2",
        "/shops?page=2&per_page=2",
        "/shops?page=3&per_page=2",
    ]


def test_a_repeated_link_fails_the_list(serve) -> None:
    server = serve(link_server(lambda _n: "/shops?page=2"))
    with pytest.raises(PermanentError, match="next URL already followed"):
        list(client(describe(LINK), server.url).list("shops"))
    assert len(server.requests) == 2


def test_a_link_to_another_host_is_not_followed(serve) -> None:
    server = serve(link_server(lambda _n: "http://attacker.invalid/shops?page=2"))
    with pytest.raises(PermanentError, match=r"http://attacker\.invalid:80, off the API's origin"):
        list(client(describe(LINK), server.url).list("shops"))


def test_max_pages_of_the_description_bounds_a_list_that_never_ends(serve) -> None:
    server = serve(link_server(lambda n: f"/shops?page={n + 1}"))
    with pytest.raises(PermanentError, match="more than 3 pages") as info:
        list(client(describe(LINK | {"max_pages": 3}), server.url).list("shops"))
    assert info.value.kind == "too_large" and len(server.requests) == 3


def test_max_items_of_the_description_bounds_a_list(serve) -> None:
    server = serve(link_server(lambda n: f"/shops?page={n + 1}"))
    with pytest.raises(PermanentError, match="more than 5 items"):
        list(client(describe(LINK | {"max_items": 5}), server.url).list("shops"))
    assert len(server.requests) == 3


# --- offset ---------------------------------------------------------------------------------

OFFSET = {"type": "offset", "offset_param": "offset", "page_size": 3, "page_size_param": "limit"}


def offset_server(total: int, header: bool = False) -> Callable[[Request, Conn], None]:
    def reply(request: Request, conn: Conn) -> None:
        q = query(request)
        start, limit = int(q["offset"]), int(q["limit"])
        headers = {"X-Total": str(total)} if header else None
        reply_json(conn, {"data": shop_ids(max(0, min(limit, total - start)), start)}, headers)

    return reply


def test_offset_pages_end_on_a_short_page(serve) -> None:
    server = serve(offset_server(7))
    got = list(client(describe(OFFSET), server.url).list("shops"))
    assert [s["id"] for s in got] == [f"s{i}" for i in range(7)]
    assert [r.target for r in server.requests] == [
        "/shops?limit=3&offset=0",
        "/shops?limit=3&offset=3",
        "/shops?limit=3&offset=6",
    ]


def test_offset_pages_end_on_an_empty_page(serve) -> None:
    server = serve(offset_server(6))
    assert len(list(client(describe(OFFSET), server.url).list("shops"))) == 6
    assert len(server.requests) == 3


def test_offset_pages_end_when_the_total_is_reached(serve) -> None:
    server = serve(offset_server(6, header=True))
    api = describe(OFFSET | {"total": {"header": "X-Total"}})
    assert len(list(client(api, server.url).list("shops"))) == 6
    assert len(server.requests) == 2


# --- page number and single page ------------------------------------------------------------

PAGES = {"type": "page_number", "page_param": "page", "first_page": 0, "page_size": 2, "page_size_param": "n"}


def test_numbered_pages_start_at_first_page_and_end_on_a_short_page(serve) -> None:
    def reply(request: Request, conn: Conn) -> None:
        number = int(query(request)["page"])
        reply_json(conn, {"data": shop_ids(2 if number < 2 else 1, 2 * number)})

    server = serve(reply)
    assert len(list(client(describe(PAGES), server.url).list("shops"))) == 5
    assert [r.target for r in server.requests] == [
        "/shops?n=2&page=0",
        "/shops?n=2&page=1",
        "/shops?n=2&page=2",
    ]


def test_numbered_pages_end_when_the_total_in_the_body_is_reached(serve) -> None:
    server = serve(lambda request, conn: reply_json(conn, {"data": shop_ids(2), "count": 4}))
    api = describe(PAGES | {"total": {"path": "count"}})
    assert len(list(client(api, server.url).list("shops"))) == 4
    assert len(server.requests) == 2


def test_a_single_page_is_one_call_with_no_paging_parameters(serve) -> None:
    server = serve(always(200, json.dumps(shop_ids(3)).encode()))
    api = describe({"type": "single_page"}, items=".")
    assert len(list(client(api, server.url).list("shops"))) == 3
    assert [r.target for r in server.requests] == ["/shops"]


# --- auth -----------------------------------------------------------------------------------

EMPTY = always(200, b'{"data": []}')


def test_a_bearer_secret_is_sent_in_the_authorization_header(serve) -> None:
    server = serve(EMPTY)
    list(client(describe({"type": "single_page"}, {"type": "bearer", "env": "T"}), server.url).list("shops"))
    assert server.requests[0].headers["authorization"] == f"Bearer {SECRET}"


def test_an_api_key_header_is_sent_under_its_name(serve) -> None:
    server = serve(EMPTY)
    auth = {"type": "api_key", "in": "header", "name": "X-Api-Key", "env": "T"}
    list(client(describe({"type": "single_page"}, auth), server.url).list("shops"))
    assert server.requests[0].headers["x-api-key"] == SECRET
    assert "authorization" not in server.requests[0].headers


def test_basic_auth_sends_user_and_password_encoded(serve) -> None:
    server = serve(EMPTY)
    api = describe({"type": "single_page"}, {"type": "basic", "env": "T"})
    list(client(api, server.url, "ann:pa ss").list("shops"))
    assert server.requests[0].headers["authorization"] == "Basic " + base64.b64encode(b"ann:pa ss").decode()


def test_a_basic_secret_without_a_colon_is_refused_without_showing_it() -> None:
    with pytest.raises(SettingsError, match="user:password") as info:
        client(describe({"type": "single_page"}, {"type": "basic", "env": "T"}), "http://h", "annpass")
    assert "annpass" not in str(info.value)


def test_no_auth_sends_no_credentials(serve) -> None:
    server = serve(EMPTY)
    list(client(describe({"type": "single_page"}), server.url, "").list("shops"))
    assert "authorization" not in server.requests[0].headers and "?" not in server.requests[0].target


QUERY_KEY = {"type": "api_key", "in": "query", "name": "api_key", "env": "T"}


def test_a_query_key_is_sent_on_every_page_including_next_urls(serve) -> None:
    server = serve(next_url_server(lambda n, _t: f"/shops?page={n + 1}" if n < 2 else None))
    list(client(describe(NEXT_URL, QUERY_KEY), server.url, "abc123").list("shops"))
    assert [r.target for r in server.requests] == [
        "/shops?limit=2&api_key=abc123",
        "/shops?page=2&api_key=abc123",
    ]


def test_a_query_key_is_masked_in_an_error_and_its_failure_record(serve) -> None:
    def reply(request: Request, conn: Conn) -> None:
        conn.reply(404, json.dumps({"error": "not_found", "message": f"no {request.target}"}).encode())

    server = serve(reply)
    with pytest.raises(PermanentError) as info:
        list(client(describe({"type": "single_page"}, QUERY_KEY), server.url).list("shops"))
    assert "api_key=" in server.requests[0].target  # the server did echo the key back
    record = json.dumps(failure_fields(info.value))
    for text in (str(info.value), record):
        assert SECRET not in text and "k3y-S%C3%AAcret%2B%2F%3D" not in text and "***" in text


def test_a_query_key_is_masked_in_a_connection_error() -> None:
    api = describe({"type": "single_page"}, QUERY_KEY)
    with pytest.raises(TransientError) as info:
        list(client(api, "http://127.0.0.1:9").list("shops"))
    assert "k3y" not in str(info.value) and "k3y" not in json.dumps(failure_fields(info.value))


# --- paths, query, listing checks -----------------------------------------------------------


def test_the_path_template_takes_each_id_above_as_one_segment_and_the_fixed_query(serve) -> None:
    server = serve(always(200, b"[]", {"Link": ""}))
    builds = load(FIXTURES / "five_level.yaml")
    list(client(builds, server.url, "u:p").list("steps", ("a/b", "7", "..", "9")))
    assert server.requests[0].target == "/api/orgs/a%2Fb/teams/7/projects/%2E%2E/builds/9/steps?per_page=10"
    list(client(builds, server.url, "u:p").list("builds", ("o", "7", "p")))
    assert server.requests[1].target == "/api/orgs/o/teams/7/projects/p/builds?state=finished&per_page=10"


def test_a_level_is_listed_under_exactly_the_ids_above_it() -> None:
    with pytest.raises(ValueError, match="sales lists under 1 ids, got 0"):
        client(describe({"type": "single_page"}), "http://h").list("sales", ())


def test_integer_ids_come_back_as_their_decimal_strings(serve) -> None:
    server = serve(always(200, b'{"data": [{"id": 42, "region": "eu"}]}'))
    api = describe({"type": "single_page"}, id={"field": "id", "type": "integer"}, carry=["region"])
    assert list(client(api, server.url).list("shops")) == [{"id": "42", "region": "eu"}]


@pytest.mark.parametrize("ident", ["true", '"42"', "4.0"])
def test_an_integer_id_that_is_no_json_integer_is_transient(serve, ident: str) -> None:
    server = serve(always(200, f'{{"data": [{{"id": {ident}}}]}}'.encode()))
    api = describe({"type": "single_page"}, id={"field": "id", "type": "integer"})
    with pytest.raises(TransientError, match="has no valid 'id' \\(an integer\\)"):
        list(client(api, server.url).list("shops"))


def test_an_item_without_a_carried_field_is_transient(serve) -> None:
    server = serve(always(200, b'{"data": [{"id": "s1"}]}'))
    api = describe({"type": "single_page"}, carry={"area": "region"})
    with pytest.raises(TransientError, match="has no valid 'region'"):
        list(client(api, server.url).list("shops"))


def test_leaf_items_come_back_as_checked_rows(serve) -> None:
    server = serve(always(200, b'{"data": [{"n": 1, "other": "x"}, {"n": true}]}'))
    with pytest.raises(BadRecord, match="page 1, record 2 of 2: 'n' is True, not an integer"):
        list(client(describe({"type": "single_page"}), server.url).list("sales", ("s1",)))


def test_basic_credentials_echoed_by_the_server_are_masked(serve) -> None:
    def reply(request: Request, conn: Conn) -> None:
        said = f"bad {request.headers['authorization']} for ann, password hunter22"
        conn.reply(401, json.dumps({"error": "unauthorized", "message": said}).encode())

    server = serve(reply)
    api = describe({"type": "single_page"}, {"type": "basic", "env": "T"})
    with pytest.raises(PermanentError) as info:
        list(client(api, server.url, "ann:hunter22").list("shops"))
    message = str(info.value)
    assert "hunter22" not in message and base64.b64encode(b"ann:hunter22").decode() not in message
    assert "401" in message and "***" in message


def redirect_to(location: str) -> Callable[[Request, Conn], None]:
    def reply(request: Request, conn: Conn) -> None:
        if request.target.startswith("/moved"):
            reply_json(conn, {"data": shop_ids(1)})
        else:
            conn.reply(302, b"", {"Location": location})

    return reply


def test_a_redirect_off_the_origin_is_not_followed_and_keeps_the_key_header(serve) -> None:
    elsewhere = serve(always(200, b'{"data": []}'))
    server = serve(redirect_to(f"{elsewhere.url}/moved"))
    auth = {"type": "api_key", "in": "header", "name": "X-Api-Key", "env": "T"}
    with pytest.raises(PermanentError, match=r"redirects \(302\) to .* off the API's origin"):
        list(client(describe({"type": "single_page"}, auth), server.url).list("shops"))
    assert elsewhere.requests == []


def test_a_redirect_on_the_origin_is_followed(serve) -> None:
    server = serve(redirect_to("/moved"))
    assert list(client(describe({"type": "single_page"}), server.url).list("shops")) == [{"id": "s0"}]
    assert [r.target for r in server.requests] == ["/shops", "/moved"]


def test_the_two_level_fixture_is_crawled_whole_with_its_key_ids_and_rows(serve) -> None:
    sales = [
        {"id": 10, "sold_at": "2026-11-27t08:00:00z", "amount": 3, "paid": True, "day": "2026-11-27"}
        | {"customer": {"name": "Ann"}, "meta": {"b": 1}, "coupon": "X"},
        {"id": 11, "sold_at": "2026-11-27T09:00:00Z", "amount": 2.5, "paid": False, "day": "2026-11-28"}
        | {"customer": {"name": "Bo"}, "note": "gift"},
    ]

    def reply(request: Request, conn: Conn) -> None:
        q = query(request)
        assert q["api_key"] == "abc" and q["limit"] == "25"
        path = urlsplit(request.target).path
        if path == "/shops":
            reply_json(conn, {"data": [{"id": 1, "region": "eu"}] if q["offset"] == "0" else []})
        else:
            reply_json(conn, {"data": sales if path == "/shops/1/sales" else []})

    server = serve(reply)
    shops_api = load(FIXTURES / "two_level.yaml")
    api_client = client(shops_api, server.url, "abc")
    assert list(api_client.list("shops")) == [{"id": "1", "region": "eu"}]
    rows = list(api_client.list("sales", ("1",)))
    assert rows == [
        {"sale_id": 10, "sold_at": "2026-11-27T08:00:00Z", "amount": 3, "paid": True, "day": "2026-11-27"}
        | {"note": None, "customer_name": "Ann", "meta": '{"b":1}', "extra": '{"coupon":"X"}'},
        {"sale_id": 11, "sold_at": "2026-11-27T09:00:00Z", "amount": 2.5, "paid": False, "day": "2026-11-28"}
        | {"note": "gift", "customer_name": "Bo", "meta": None, "extra": None},
    ]
    assert [r.target for r in server.requests] == [
        "/shops?limit=25&offset=0&api_key=abc",
        "/shops/1/sales?limit=25&offset=0&api_key=abc",
    ]


def test_a_refused_secret_or_url_is_named_after_the_described_api() -> None:
    api = describe({"type": "single_page"}, QUERY_KEY)
    with pytest.raises(
        SettingsError, match=r"^the Shops API key is empty; store the bare API key Shops issued$"
    ):
        client(api, "http://h", "")
    with pytest.raises(SettingsError, match=r"^the Shops URL 'ftp://h' must start with http"):
        client(api, "ftp://h", "k")


# --- one request prepared per client --------------------------------------------------------


def test_the_pages_of_a_list_share_one_prepared_request(serve, monkeypatch) -> None:
    # Session.prepare_request per call was ~7 % of a leaf call's CPU: every page of every
    # list is the same GET but for its URL, so the client prepares it once and copies it.
    follows = {"/shops?limit=2": "/shops?page=2", "/shops?page=2": "/shops?page=3"}
    server = serve(next_url_server(lambda _n, target: follows.get(target)))
    api_client = client(describe(NEXT_URL), server.url)
    prepared: list[str] = []
    prepare = api_client.session.prepare_request

    def counted(request: Any) -> Any:
        prepared.append(request.url)
        return prepare(request)

    monkeypatch.setattr(api_client.session, "prepare_request", counted)
    for _ in range(2):
        assert len(list(api_client.list("shops"))) == 6
    assert len(server.requests) == 6
    assert prepared == [server.url]


def test_a_header_set_between_lists_is_sent_on_the_next(serve) -> None:
    server = serve(EMPTY)
    api_client = client(describe({"type": "single_page"}), server.url)
    list(api_client.list("shops"))
    api_client.session.headers["X-Trace"] = "on"
    list(api_client.list("shops"))
    assert [r.headers.get("x-trace") for r in server.requests] == [None, "on"]


def test_a_cookie_the_server_sets_is_sent_on_the_next_page(serve) -> None:
    # The request prepared once holds no cookie: a session that has one prepares each call.
    def reply(request: Request, conn: Conn) -> None:
        n = len(server.requests)
        nxt = "/shops?page=2" if n == 1 else None
        cookie = {"Set-Cookie": "session=abc; Path=/"} if n == 1 else None
        reply_json(conn, {"data": shop_ids(2, 2 * n), "links": {"next": nxt}}, cookie)

    server = serve(reply)
    list(client(describe(NEXT_URL), server.url).list("shops"))
    assert [r.headers.get("cookie") for r in server.requests] == [None, "session=abc"]
