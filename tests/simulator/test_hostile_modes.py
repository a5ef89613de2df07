"""The opt-in hostile modes do exactly what SimConfig says, and their truth is computable.

Plain HTTP (``requests``, raw sockets, ``http.client`` where a path must arrive unnormalised)
against a running simulator, so the crawler tests built on these modes can trust them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import re
import socket
import time
from typing import Any
from urllib.parse import quote

import pytest
import requests

from fanout.simulator import SimConfig, Universe, add_serve_arguments, config_from_args

from .conftest import AUTH, list_all, seg

SMALL = dict(warriors=2, troops_per_warrior=3, groups_per_troop=3, records_per_group=2)


def pages_of(s: requests.Session, url: str, page_size: int | None = None, limit: int = 20) -> list[Any]:
    """Every page body of one list, following next_page_token (at most ``limit`` pages)."""
    params: dict[str, Any] = {} if page_size is None else {"page_size": page_size}
    out = []
    for _ in range(limit):
        r = s.get(url, params=params, timeout=5)
        r.raise_for_status()
        out.append(r.json())
        if out[-1]["next_page_token"] is None:
            break
        params = {**params, "page_token": out[-1]["next_page_token"]}
    return out


def dedup_crawl(s: requests.Session, base: str, page_size: int | None = None) -> tuple[list[Any], int]:
    """A crawl that keeps each listed id once; returns (rows, calls)."""
    rows: list[Any] = []
    warriors, calls = list_all(s, f"{base}/v1/warriors", page_size)
    for w in warriors:
        wurl = f"{base}/v1/warriors/{seg(w['warrior_id'])}/troops"
        troops, n = list_all(s, wurl, page_size)
        calls += n
        for t in {t["troop_id"]: t for t in troops}.values():
            turl = f"{wurl}/{seg(t['troop_id'])}/data_groups"
            groups, n = list_all(s, turl, page_size)
            calls += n
            for g in {g["data_group_id"]: g for g in groups}.values():
                records, n = list_all(s, f"{turl}/{seg(g['data_group_id'])}/data", page_size)
                calls += n
                ids = (w["warrior_id"], t["troop_id"], t["service"], g["data_group_id"])
                rows += [(*ids, r["ts"], r["metric"], r["value"], r["unit"]) for r in records]
    return rows, calls


# ---- duplicate_ids ---------------------------------------------------------------------------


@pytest.mark.parametrize("page_size", [1, 2, None])
def test_duplicate_ids_repeat_one_item_on_the_next_page(
    serve: Any, session: requests.Session, page_size: int | None
) -> None:
    sim = serve(SimConfig(duplicate_ids=True, **SMALL))
    u = sim.universe
    w = u.warriors()[0]["warrior_id"]
    t = u.troops(w)[0]["troop_id"]
    for url, truth in (
        (f"{sim.url}/v1/warriors/{w}/troops", u.troops(w)),
        (f"{sim.url}/v1/warriors/{w}/troops/{t}/data_groups", u.data_groups(w, t)),
    ):
        pages = pages_of(session, url, page_size)
        assert len(pages) >= 2
        first, second = pages[0]["items"], pages[1]["items"]
        assert first[-1] == second[0]  # the same item, on two different pages
        listed = [item for page in pages for item in page["items"]]
        assert len(listed) == len(truth) + 1
        assert list({json.dumps(i): i for i in listed}.values()) == truth
    rows, calls = dedup_crawl(session, sim.url, page_size)
    assert rows == list(u.expected_rows())  # each record once
    assert calls == u.expected_calls(page_size)


# ---- changing_listings -----------------------------------------------------------------------


def test_changing_listings_add_an_extra_group_on_odd_fetches(serve: Any, session: requests.Session) -> None:
    sim = serve(SimConfig(changing_listings=True, **SMALL))
    u = sim.universe
    w = u.warriors()[0]["warrior_id"]
    t = u.troops(w)[1]["troop_id"]
    extra = u.extra_data_group(w, t)
    assert extra is not None and extra not in u.data_groups(w, t)
    url = f"{sim.url}/v1/warriors/{seg(w)}/troops/{seg(t)}/data_groups"
    listings = [list_all(session, url, page_size=1)[0] for _ in range(4)]
    assert listings[0] == listings[2] == [*u.data_groups(w, t), extra]
    assert listings[1] == listings[3] == u.data_groups(w, t)
    # The extra group's records are served whether or not the listing named it.
    gid = extra["data_group_id"]
    records = list_all(session, f"{url}/{seg(gid)}/data")[0]
    assert [(r["ts"], r["metric"]) for r in records] == [(r[4], r[5]) for r in u.group_rows(w, t, gid)]
    # The truth as of the listing a crawler kept.
    kept = [(w, t, g["data_group_id"]) for g in listings[0]]
    assert u.expected_rows_for(kept) == [r for p in kept for r in u.group_rows(*p)]
    base = [(w, t, g["data_group_id"]) for g in listings[1]]
    assert u.expected_rows_for(base) == [r for r in u.expected_rows() if (r[0], r[1]) == (w, t)]


def test_changing_listings_keep_their_version_across_pages(serve: Any, session: requests.Session) -> None:
    sim = serve(SimConfig(changing_listings=True, **SMALL))
    u = sim.universe
    w, t = u.warriors()[0]["warrior_id"], u.troops(u.warriors()[0]["warrior_id"])[0]["troop_id"]
    url = f"{sim.url}/v1/warriors/{seg(w)}/troops/{seg(t)}/data_groups"
    odd = session.get(url, params={"page_size": 2}, timeout=5).json()
    even = session.get(url, params={"page_size": 2}, timeout=5).json()
    rest_odd = list_all(session, url + f"?page_token={quote(odd['next_page_token'], safe='')}", 2)[0]
    rest_even = list_all(session, url + f"?page_token={quote(even['next_page_token'], safe='')}", 2)[0]
    assert odd["items"] + rest_odd == [*u.data_groups(w, t), u.extra_data_group(w, t)]
    assert even["items"] + rest_even == u.data_groups(w, t)


# ---- cursor_loop -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["repeat", "cycle"])
def test_cursor_loop_never_ends(serve: Any, session: requests.Session, mode: str) -> None:
    sim = serve(SimConfig(cursor_loop=mode, **SMALL))
    u = sim.universe
    w, t, g = next(u.iter_group_paths())
    url = f"{sim.url}/v1/warriors/{seg(w)}/troops/{seg(t)}/data_groups/{seg(g)}/data"
    tokens = [p["next_page_token"] for p in pages_of(session, url, limit=7)]
    assert None not in tokens and len(tokens) == 7
    a, b = tokens[0], tokens[1]
    if mode == "repeat":
        assert set(tokens) == {a}
    else:
        assert a != b and tokens == [a, b, a, b, a, b, a]
    # Truth: a correct crawler fails that group; nothing of it is expected.
    assert u.expected_failures() == {(w, t, g): "cursor_loop"}
    assert all(r[3] != g for r in u.expected_rows())
    assert len(list(u.expected_rows())) == len(list(Universe(SimConfig(**SMALL)).expected_rows())) - 2
    # Other lists end as usual.
    assert dedup_crawl_except(session, sim.url, g) == list(u.expected_rows())


def dedup_crawl_except(s: requests.Session, base: str, skip_group: str) -> list[Any]:
    rows: list[Any] = []
    for w in list_all(s, f"{base}/v1/warriors")[0]:
        wurl = f"{base}/v1/warriors/{seg(w['warrior_id'])}/troops"
        for t in list_all(s, wurl)[0]:
            turl = f"{wurl}/{seg(t['troop_id'])}/data_groups"
            for g in list_all(s, turl)[0]:
                if g["data_group_id"] == skip_group:
                    continue
                ids = (w["warrior_id"], t["troop_id"], t["service"], g["data_group_id"])
                records = list_all(s, f"{turl}/{seg(g['data_group_id'])}/data")[0]
                rows += [(*ids, r["ts"], r["metric"], r["value"], r["unit"]) for r in records]
    return rows


def test_cursor_loop_on_a_chosen_troop_fails_its_whole_subtree(serve: Any, session: requests.Session) -> None:
    base = Universe(SimConfig(**SMALL))
    w = base.warriors()[1]["warrior_id"]
    t = base.troops(w)[2]["troop_id"]
    sim = serve(SimConfig(cursor_loop="repeat", cursor_loop_ids=frozenset({t}), **SMALL))
    url = f"{sim.url}/v1/warriors/{seg(w)}/troops/{seg(t)}/data_groups"
    pages = pages_of(session, url, page_size=2, limit=5)
    assert len({p["next_page_token"] for p in pages}) == 1 and pages[-1]["next_page_token"]
    u = sim.universe
    assert u.expected_failures() == {(w, t): "cursor_loop"}
    assert [r for r in u.expected_rows() if r[1] == t] == []
    assert u.expected_calls() == base.expected_calls() - (1 + 3 * 1) + 1


# ---- drip_bytes_per_s ------------------------------------------------------------------------


def _timed_raw_get(url: str, path: str, read_timeout: float) -> tuple[bytes, float, float]:
    """(answer, seconds in all, longest gap between two reads) with a per-read timeout."""
    host, port = url.removeprefix("http://").split(":")
    head = f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH['Authorization']}\r\n"
    with socket.create_connection((host, int(port)), timeout=read_timeout) as sock:
        sock.sendall((head + "Connection: close\r\n\r\n").encode())
        t0 = last = time.monotonic()
        gap = 0.0
        chunks = []
        while chunk := sock.recv(65536):  # raises socket.timeout if a read waits too long
            now = time.monotonic()
            gap, last = max(gap, now - last), now
            chunks.append(chunk)
    return b"".join(chunks), time.monotonic() - t0, gap


def test_drip_writes_slowly_but_never_stalls_a_read(serve: Any) -> None:
    sim = serve(SimConfig(drip_bytes_per_s=400, warriors=1))
    answer, took, gap = _timed_raw_get(sim.url, "/v1/warriors", read_timeout=0.3)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    body = answer.split(b"\r\n\r\n", 1)[1]
    assert json.loads(body)["items"] == sim.universe.warriors()
    assert took >= 0.7 * len(answer) / 400
    assert gap < 0.1
    health, took_health, _ = _timed_raw_get(sim.url, "/v1/health", read_timeout=0.3)
    assert health.startswith(b"HTTP/1.1 200") and took_health < 0.1


def test_drip_share_picks_some_answers_reproducibly(serve: Any) -> None:
    def slow_ones() -> list[bool]:
        sim = serve(SimConfig(drip_bytes_per_s=2000, drip_share=0.5, fault_seed=4, warriors=1))
        return [_timed_raw_get(sim.url, "/v1/warriors", 1.0)[1] > 0.05 for _ in range(10)]

    first = slow_ones()
    assert 0 < sum(first) < 10
    assert slow_ones() == first


# ---- dot_ids ---------------------------------------------------------------------------------


def dot_seg(ident: str) -> str:
    """Encode one id as a path segment, with "." and ".." as %2E (the contract's rule)."""
    return {".": "%2E", "..": "%2E%2E"}.get(ident, quote(ident, safe=""))


def _raw_status(url: str, path: str) -> int:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", path, headers=AUTH)  # http.client sends the path as given
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_dot_ids_are_served_when_encoded_and_404_when_literal(serve: Any, session: requests.Session) -> None:
    sim = serve(SimConfig(dot_ids=True, **SMALL))
    u = sim.universe
    assert [w["warrior_id"] for w in u.warriors()] == [".", ".."]
    assert [t["troop_id"] for t in u.troops("..")][:2] == [".", ".."]
    for w in (".", ".."):
        assert _raw_status(sim.url, f"/v1/warriors/{dot_seg(w)}/troops") == 200
        for t in (".", ".."):
            assert _raw_status(sim.url, f"/v1/warriors/{dot_seg(w)}/troops/{dot_seg(t)}/data_groups") == 200
    for literal in (
        "/v1/warriors/./troops",
        "/v1/warriors/../troops",
        "/v1/warriors/%2E/troops/../data_groups",
        "/v1/warriors/./troops/./data_groups",
        "/v1/troops",  # what "/v1/warriors/../troops" becomes once normalised
        "/v1/warriors/data_groups",
    ):
        assert _raw_status(sim.url, literal) == 404, literal
    assert "GET /v1/warriors/../troops HTTP/1.1" in sim.stats.recent_requests
    assert "GET /v1/troops HTTP/1.1" in sim.stats.recent_requests
    # A crawl that encodes dots gets the whole truth. (Over http.client: requests would
    # "requote" %2E back into a literal "." - unreserved - and meet the 404 above.)
    rows = []
    for w in _raw_list(sim.url, "/v1/warriors"):
        wpath = f"/v1/warriors/{dot_seg(w['warrior_id'])}/troops"
        for t in _raw_list(sim.url, wpath):
            tpath = f"{wpath}/{dot_seg(t['troop_id'])}/data_groups"
            for g in _raw_list(sim.url, tpath):
                ids = (w["warrior_id"], t["troop_id"], t["service"], g["data_group_id"])
                records = _raw_list(sim.url, f"{tpath}/{dot_seg(g['data_group_id'])}/data")
                rows += [(*ids, r["ts"], r["metric"], r["value"], r["unit"]) for r in records]
    assert rows == list(u.expected_rows())


def _raw_list(url: str, path: str) -> list[Any]:
    """One list's items over http.client (the path goes out byte for byte); one page."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", path, headers=AUTH)
        resp = conn.getresponse()
        assert resp.status == 200, path
        body = json.loads(resp.read())
        assert body["next_page_token"] is None
        return list(body["items"])
    finally:
        conn.close()


def test_requests_turns_an_encoded_dot_back_into_a_literal_one(serve: Any, session: requests.Session) -> None:
    """Why dot ids are hostile: a client on requests cannot send %2E as such."""
    sim = serve(SimConfig(dot_ids=True, **SMALL))
    r = session.get(f"{sim.url}/v1/warriors/%2E/troops", timeout=5)
    assert r.status_code == 404
    assert sim.stats.recent_requests[-1] == "GET /v1/warriors/./troops HTTP/1.1"


def test_recent_requests_keep_the_last_n_raw_lines(serve: Any) -> None:
    sim = serve(SimConfig(request_log_size=3))
    for i in range(5):
        _raw_status(sim.url, f"/v1/warriors?page_size={i + 1}")
    assert sim.stats.recent_requests == tuple(f"GET /v1/warriors?page_size={i} HTTP/1.1" for i in (3, 4, 5))


# ---- bad_records -----------------------------------------------------------------------------


def test_bad_records_serve_each_defect_and_the_truth_says_which_groups_fail(
    serve: Any, session: requests.Session
) -> None:
    sim = serve(SimConfig(bad_records=True, **SMALL))
    u = sim.universe
    bad = u.bad_record_groups()
    assert sorted(bad.values()) == ["huge_int_value", "lowercase_ts", "missing_metric", "nan_value"]
    texts = {}
    for (w, t, g), kind in bad.items():
        r = session.get(f"{sim.url}/v1/warriors/{w}/troops/{t}/data_groups/{g}/data", timeout=5)
        assert r.status_code == 200
        texts[kind] = r.text
        assert json.loads(r.text)["items"] == u.records(w, t, g)  # Python's json reads NaN too
    huge = json.loads(texts["huge_int_value"])["items"][0]["value"]
    assert isinstance(huge, int) and huge == 10**400
    with pytest.raises(OverflowError):
        float(huge)
    assert '"value":NaN' in texts["nan_value"]
    with pytest.raises(ValueError):
        json.loads(texts["nan_value"], parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert math.isnan(json.loads(texts["nan_value"])["items"][0]["value"])
    assert "metric" not in json.loads(texts["missing_metric"])["items"][0]
    lower = json.loads(texts["lowercase_ts"])["items"][0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dt\d\d:\d\d:\d\dz", lower["ts"])
    # Truth: the three invalid groups fail whole; the lower-case one is kept.
    failing = {p: why for p, why in u.expected_failures().items()}
    assert failing == {p: f"bad_records:{k}" for p, k in bad.items() if k != "lowercase_ts"}
    kept = {r[3] for r in u.expected_rows()}
    for (_, _, g), kind in bad.items():
        assert (g in kept) == (kind == "lowercase_ts")
    lower_path = next(p for p, k in bad.items() if k == "lowercase_ts")
    assert lower["ts"] in {r[4] for r in u.expected_rows() if r[3] == lower_path[2]}
    clean = Universe(SimConfig(**SMALL))
    assert len(list(u.expected_rows())) == len(list(clean.expected_rows())) - 3 * 2


def test_hostile_modes_are_off_by_default_and_leave_the_truth_alone(serve: Any) -> None:
    config = SimConfig(**SMALL)
    assert not (config.duplicate_ids or config.changing_listings or config.dot_ids or config.bad_records)
    assert not config.long_ids
    assert config.cursor_loop is None and config.drip_bytes_per_s is None
    u = Universe(config)
    assert u.expected_failures() == {} and u.bad_record_groups() == {} and u.loop_ids() == frozenset()
    assert u.extra_data_group(*next(u.iter_group_paths())[:2]) is None


def test_serve_flags_set_the_hostile_modes() -> None:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(
        [
            *("--duplicate-ids", "--changing-listings", "--cursor-loop", "cycle"),
            *("--cursor-loop-id", "a b", "--drip-bytes-per-s", "50", "--drip-share", "0.25"),
            *("--dot-ids", "--bad-records", "--long-ids"),
        ]
    )
    c = config_from_args(args)
    assert (c.duplicate_ids, c.changing_listings, c.dot_ids, c.bad_records) == (True, True, True, True)
    assert c.long_ids
    assert (c.cursor_loop, c.cursor_loop_ids) == ("cycle", frozenset({"a b"}))
    assert (c.drip_bytes_per_s, c.drip_share) == (50, 0.25)
    assert SimConfig.from_json(c.to_json()) == c


def test_long_ids_are_128_characters_at_every_level_and_served(serve: Any, session: requests.Session) -> None:
    config = SimConfig(**SMALL, long_ids=True)
    u = Universe(config)
    paths = list(u.iter_group_paths())
    ids = {i for path in paths for i in path}
    assert {len(i) for i in ids} == {128}
    assert len(ids) == len({w for w, _, _ in paths}) + len({(w, t) for w, t, _ in paths}) + len(paths)
    w, t, g = paths[0]
    assert all(len(quote(i, safe="").encode()) > 380 for i in (w, t, g))
    base = serve(config).url
    groups, _calls = list_all(session, f"{base}/v1/warriors/{seg(w)}/troops/{seg(t)}/data_groups")
    assert g in [item["data_group_id"] for item in groups]
