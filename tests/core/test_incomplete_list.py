"""A list that reports its total and ends with another count fails permanently as
``incomplete_list`` (issue 23): items lost or doubled between pages are never taken as a
smaller or larger list."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fanout_core.api_description import builtin
from fanout_core.error_kinds import failure_fields
from fanout_core.errors import PermanentError, is_transient

from .raw_http import Conn, Request
from .test_api_client import OFFSET, PAGES, client, describe, query, reply_json, serve, shop_ids

__all__ = ["serve"]


def lying_offset_server(served: int, reported: int) -> Callable[[Request, Conn], None]:
    """Offset pages over ``served`` shops, each page reporting ``reported`` in X-Total-Count."""

    def reply(request: Request, conn: Conn) -> None:
        q = query(request)
        start, limit = int(q["offset"]), int(q["limit"])
        items = shop_ids(max(0, min(limit, served - start)), start)
        reply_json(conn, {"data": items}, {"X-Total-Count": str(reported)})

    return reply


WITH_TOTAL = OFFSET | {"total": {"header": "X-Total-Count"}}


def _listed(api: Any, url: str) -> list[dict[str, Any]]:
    return list(client(api, url).list("shops"))


def test_a_list_cut_short_of_its_total_fails_as_incomplete_list(serve: Any) -> None:
    server = serve(lying_offset_server(served=5, reported=7))
    with pytest.raises(
        PermanentError, match="ended with 5 items after 2 pages, but reported a total of 7"
    ) as exc:
        _listed(describe(WITH_TOTAL), server.url)
    assert exc.value.kind == "incomplete_list"


def test_a_list_longer_than_its_total_fails_as_incomplete_list(serve: Any) -> None:
    server = serve(lying_offset_server(served=9, reported=4))
    with pytest.raises(PermanentError) as exc:
        _listed(describe(WITH_TOTAL), server.url)
    assert exc.value.kind == "incomplete_list"


def test_a_list_that_matches_its_total_is_taken_whole(serve: Any) -> None:
    server = serve(lying_offset_server(served=7, reported=7))
    assert [s["id"] for s in _listed(describe(WITH_TOTAL), server.url)] == [f"s{i}" for i in range(7)]


def test_a_numbered_list_cut_short_of_its_body_total_fails_as_incomplete_list(serve: Any) -> None:
    def reply(request: Request, conn: Conn) -> None:
        number = int(query(request)["page"])
        reply_json(conn, {"data": shop_ids(2 if number == 0 else 1, 2 * number), "count": 6})

    server = serve(reply)
    with pytest.raises(PermanentError) as exc:
        _listed(describe(PAGES | {"total": {"path": "count"}}), server.url)
    assert exc.value.kind == "incomplete_list"


def test_a_list_without_a_named_total_is_taken_as_it_ends(serve: Any) -> None:
    server = serve(lying_offset_server(served=5, reported=7))
    assert len(_listed(describe(OFFSET), server.url)) == 5


def test_an_incomplete_list_is_recorded_as_a_permanent_failure_of_its_kind(serve: Any) -> None:
    server = serve(lying_offset_server(served=5, reported=7))
    with pytest.raises(PermanentError) as exc:
        _listed(describe(WITH_TOTAL), server.url)
    assert failure_fields(exc.value)["error_kind"] == "incomplete_list"
    assert not is_transient(exc.value)


def test_hermes_names_no_total() -> None:
    assert all(level.pagination.total is None for level in builtin().levels)
