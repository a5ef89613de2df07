"""json-server 0.17.4 as the tests run it: the fixture serves the generated db as expected.

What json-server 0.17 sends, found by experiment and held by the tests below (a crawler
that follows ``rel="next"`` relies on it):

- ``GET /users/{id}/posts`` and ``/posts/{id}/comments`` answer the children whose ``userId``
  / ``postId`` is that id, as a bare JSON array in db order; an unknown parent is ``200 []``.
- ``?_page=N&_limit=L`` (L defaults to 10; no upper bound) adds ``X-Total-Count`` (all the
  children, every page) and a ``Link`` header: ``<URL>; rel="first", <URL>; rel="prev",
  <URL>; rel="next", <URL>; rel="last"``, comma-separated, rel quoted, only the rels that
  apply. URLs are absolute, built from the request's own ``Host`` header and path, with the
  ``page=N`` text swapped: every other query parameter (an ``api_key`` too) is kept. So the
  client must start at ``_page=1`` written just so (``_page=01`` makes a next link that
  points at itself).
- The last page has first/prev/last and no next. A list that fits one page (``0 < n <= L``,
  a full single page included), an empty list and a page past the end all send ``Link:``
  with an empty value: "no next" is the only stop signal a client needs.
- ``?_limit=L`` without ``_page`` sends ``X-Total-Count`` and no ``Link`` header at all.
- Header names are sent as ``X-Total-Count`` and ``Link`` (case-insensitive in HTTP anyway).
- A query parameter named after an item field filters on it (``?draft=true``); any other is
  ignored (``page_size=5`` changes nothing): fixed parameters a description adds must not
  collide with field names.
- A float with no fraction (3.0 in db.json) is served as ``3``: JavaScript has one number type.
"""

from __future__ import annotations

import base64
import math
import urllib.parse

import pytest

from .conftest import API_KEY, BASIC_PASSWORD, BASIC_USER, JsonServer
from .http_get import follow_next, get
from .json_db import children

LIMIT = 5
NESTED = [("users", "posts", "userId"), ("posts", "comments", "postId")]


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


def _parent_with(server: JsonServer, parents: str, resource: str, key: str, count: int) -> int:
    """The id of the first parent with exactly ``count`` children."""
    for parent in server.db[parents]:
        if len(children(server.db, resource, key, parent["id"])) == count:
            return int(parent["id"])
    raise AssertionError(f"the generated db has no {parents} with {count} {resource}")


@pytest.mark.parametrize(("parents", "resource", "key"), NESTED)
def test_a_nested_route_answers_each_parents_children_in_db_order(json_server, parents, resource, key):
    served = 0
    for parent in json_server.db[parents]:
        answer = get(f"{json_server.url}/{parents}/{parent['id']}/{resource}")
        assert answer.status == 200
        assert answer.json() == children(json_server.db, resource, key, parent["id"])
        served += len(answer.json())
    assert served == len(json_server.db[resource])


@pytest.mark.parametrize(("parents", "resource", "key"), NESTED)
def test_the_link_next_chain_covers_every_child_once_and_the_total_counts_them(
    json_server, parents, resource, key
):
    for parent in json_server.db[parents]:
        expected = [c["id"] for c in children(json_server.db, resource, key, parent["id"])]
        pages = follow_next(f"{json_server.url}/{parents}/{parent['id']}/{resource}?_page=1&_limit={LIMIT}")
        assert [item["id"] for page in pages for item in page.json()] == expected
        assert len(pages) == max(1, math.ceil(len(expected) / LIMIT))
        assert {page.headers["X-Total-Count"] for page in pages} == {str(len(expected))}


def test_the_top_level_list_pages_by_link_next_too(json_server):
    pages = follow_next(f"{json_server.url}/users?_page=1&_limit=3")
    assert [item for page in pages for item in page.json()] == json_server.db["users"]
    assert len(pages) == 3


def test_link_urls_are_absolute_on_the_host_the_client_named_and_keep_the_query_as_written(json_server):
    user = _parent_with(json_server, "users", "posts", "userId", 9)
    path = f"/users/{user}/posts?_limit={LIMIT}&_page=1"
    answer = get(json_server.url + path, {"Host": "crawler.test:8443"})
    page = f"http://crawler.test:8443/users/{user}/posts?_limit={LIMIT}&_page="
    assert answer.headers["Link"] == f'<{page}1>; rel="first", <{page}2>; rel="next", <{page}2>; rel="last"'


def test_the_last_page_has_first_prev_and_last_but_no_next(json_server):
    user = _parent_with(json_server, "users", "posts", "userId", 9)
    answer = get(f"{json_server.url}/users/{user}/posts?_page=2&_limit={LIMIT}")
    assert [item["id"] for item in answer.json()] == [
        p["id"] for p in children(json_server.db, "posts", "userId", user)[LIMIT:]
    ]
    assert set(answer.links) == {"first", "prev", "last"}


@pytest.mark.parametrize("count", [0, 1, LIMIT])
def test_a_list_that_fits_one_page_sends_an_empty_link_header(json_server, count):
    user = _parent_with(json_server, "users", "posts", "userId", count)
    answer = get(f"{json_server.url}/users/{user}/posts?_page=1&_limit={LIMIT}")
    assert len(answer.json()) == count
    assert answer.headers["Link"] == ""
    assert answer.headers["X-Total-Count"] == str(count)


def test_a_page_past_the_end_is_empty_with_an_empty_link_header(json_server):
    user = _parent_with(json_server, "users", "posts", "userId", 9)
    answer = get(f"{json_server.url}/users/{user}/posts?_page=3&_limit={LIMIT}")
    assert (answer.status, answer.json(), answer.headers["Link"]) == (200, [], "")
    assert answer.headers["X-Total-Count"] == "9"


def test_a_limit_without_a_page_sends_the_total_and_no_link_header(json_server):
    user = _parent_with(json_server, "users", "posts", "userId", 9)
    answer = get(f"{json_server.url}/users/{user}/posts?_limit={LIMIT}")
    assert len(answer.json()) == LIMIT
    assert answer.headers["X-Total-Count"] == "9"
    assert "Link" not in answer.headers


def test_an_unknown_parent_has_an_empty_child_list(json_server):
    answer = get(f"{json_server.url}/users/9999/posts?_page=1&_limit={LIMIT}")
    assert (answer.status, answer.json(), answer.headers["X-Total-Count"]) == (200, [], "0")


def test_a_query_parameter_naming_no_field_is_ignored(json_server):
    answer = get(f"{json_server.url}/posts?page_size=5")
    assert (answer.status, answer.json()) == (200, json_server.db["posts"])


def test_a_query_parameter_naming_a_field_filters_on_it(json_server):
    drafts = [p for p in json_server.db["posts"] if p["draft"]]
    assert 0 < len(drafts) < len(json_server.db["posts"])
    assert get(f"{json_server.url}/posts?draft=true").json() == drafts


def test_every_item_is_served_with_the_generated_fields_and_types(json_server):
    for resource in ("users", "posts", "comments"):
        assert get(f"{json_server.url}/{resource}").json() == json_server.db[resource]


def test_a_float_with_no_fraction_is_served_as_an_integer(json_server):
    post = next(p for p in json_server.db["posts"] if p["score"] == 3.0)
    assert '"score": 3,' in get(f"{json_server.url}/posts/{post['id']}").body.decode()


def test_the_auth_variant_refuses_a_request_without_credentials(json_server_auth):
    answer = get(f"{json_server_auth.url}/users?_page=1&_limit={LIMIT}")
    assert (answer.status, answer.json()) == (401, {"error": "unauthorized"})
    assert answer.headers["WWW-Authenticate"] == 'Basic realm="json-server"'


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ("", _basic(BASIC_USER, "wrong")),
        ("", _basic(BASIC_USER, BASIC_PASSWORD.split(":")[0])),
        ("&api_key=wrong", {}),
        ("&api_key=" + API_KEY, {}),  # raw: its "&" and "+" are read as a separator and a space
        ("", {"X-API-Key": "wrong"}),
    ],
)
def test_the_auth_variant_refuses_wrong_credentials(json_server_auth, query, headers):
    assert get(f"{json_server_auth.url}/users?_page=1{query}", headers).status == 401


def test_the_auth_variant_serves_a_client_with_basic_auth(json_server_auth):
    pages = follow_next(f"{json_server_auth.url}/users?_page=1&_limit=3", _basic(BASIC_USER, BASIC_PASSWORD))
    assert [item for page in pages for item in page.json()] == json_server_auth.db["users"]


def test_the_auth_variant_serves_a_client_with_the_api_key_header(json_server_auth):
    answer = get(f"{json_server_auth.url}/users", {"X-API-Key": API_KEY})
    assert answer.json() == json_server_auth.db["users"]


def test_next_links_keep_the_query_api_key_and_it_filters_nothing(json_server_auth):
    user = _parent_with(json_server_auth, "users", "posts", "userId", 9)
    key = urllib.parse.quote(API_KEY, safe="")
    pages = follow_next(f"{json_server_auth.url}/users/{user}/posts?api_key={key}&_page=1&_limit={LIMIT}")
    assert [page.status for page in pages] == [200, 200]
    assert f"api_key={key}&" in pages[0].links["next"]
    assert [item for page in pages for item in page.json()] == children(
        json_server_auth.db, "posts", "userId", user
    )
