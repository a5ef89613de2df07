"""The simulator keeps the API contract (docs/hermes-api.yaml): auth, pagination, ids, 404/400."""

from __future__ import annotations

import base64
import dataclasses
import re
from typing import Any

import pytest
import requests

from fanout.simulator import (
    SimConfig,
    Universe,
)

from .conftest import TOKEN, VARIED, crawl, data_path, first_paths, list_all, seg

# ---- health and auth -------------------------------------------------------------------------


def test_health_needs_no_auth(serve: Any) -> None:
    sim = serve(SimConfig())
    r = requests.get(f"{sim.url}/v1/health", timeout=5)
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    assert r.headers["Content-Type"].startswith("application/json")


def test_health_is_never_faulted(serve: Any) -> None:
    sim = serve(SimConfig(error_rate_5xx=1.0, rate_limit=1, rate_burst=1))
    statuses = {requests.get(f"{sim.url}/v1/health", timeout=5).status_code for _ in range(5)}
    assert statuses == {200}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer "},
        {"Authorization": TOKEN},
    ],
    ids=["missing", "wrong", "basic-scheme", "empty", "no-scheme"],
)
def test_missing_or_wrong_token_is_401(serve: Any, headers: dict[str, str]) -> None:
    sim = serve(SimConfig())
    r = requests.get(f"{sim.url}/v1/warriors", headers=headers, timeout=5)
    assert r.status_code == 401
    assert set(r.json()) == {"error", "message"}


def test_bearer_scheme_is_case_insensitive(serve: Any) -> None:
    sim = serve(SimConfig())
    r = requests.get(f"{sim.url}/v1/warriors", headers={"Authorization": f"bearer {TOKEN}"}, timeout=5)
    assert r.status_code == 200


# ---- pagination and the truth ----------------------------------------------------------------


@pytest.mark.parametrize("page_size", [1, 2, None, 1000])
def test_crawl_returns_the_universe_and_expected_calls(
    serve: Any, session: requests.Session, page_size: int | None
) -> None:
    sim = serve(VARIED)
    rows, calls = crawl(session, sim.url, page_size)
    assert rows == list(sim.universe.expected_rows())
    assert calls == sim.universe.expected_calls(page_size)
    assert sim.stats.pages_served == calls


def test_every_level_lists_exactly_the_universe_items(serve: Any, session: requests.Session) -> None:
    sim = serve(VARIED)
    u = sim.universe
    base = sim.url
    assert list_all(session, f"{base}/v1/warriors", 2)[0] == u.warriors()
    for w in u.warriors():
        wid = w["warrior_id"]
        assert list_all(session, f"{base}/v1/warriors/{wid}/troops", 2)[0] == u.troops(wid)
        for t in u.troops(wid):
            tid = t["troop_id"]
            turl = f"{base}/v1/warriors/{wid}/troops/{tid}/data_groups"
            assert list_all(session, turl, 2)[0] == u.data_groups(wid, tid)
            for g in u.data_groups(wid, tid):
                gid = g["data_group_id"]
                got = list_all(session, f"{turl}/{gid}/data", 2)[0]
                assert got == u.records(wid, tid, gid)


def test_empty_list_is_one_page_with_null_token(serve: Any, session: requests.Session) -> None:
    sim = serve(SimConfig(warriors=1, troops_per_warrior=1, groups_per_troop=2, empty_group_every=1))
    w, t, g = first_paths(sim.universe)
    body = session.get(sim.url + data_path(w, t, g), timeout=5).json()
    assert body == {"items": [], "next_page_token": None}
    assert sim.universe.expected_calls() == 1 + 1 + 1 + 2


def test_expected_calls_counts_pages_per_list() -> None:
    # 1 warriors page; 2 troops lists of 3 pages (5 items / 2); 10 groups lists of 1 page;
    # 10 record lists: 7 records -> 4 pages.
    u = Universe(SimConfig(warriors=2, troops_per_warrior=5, groups_per_troop=1, records_per_group=7))
    assert u.expected_calls(2) == 1 + 2 * 3 + 10 * 1 + 10 * 4


def test_default_page_size_comes_from_config(serve: Any, session: requests.Session) -> None:
    sim = serve(SimConfig(warriors=7, default_page_size=3))
    body = session.get(f"{sim.url}/v1/warriors", timeout=5).json()
    assert len(body["items"]) == 3
    assert body["next_page_token"] is not None


def test_page_token_is_long_and_opaque(serve: Any, session: requests.Session) -> None:
    sim = serve(SimConfig(warriors=5))
    token = session.get(f"{sim.url}/v1/warriors?page_size=1", timeout=5).json()["next_page_token"]
    assert len(token) >= 60
    assert "+" in token  # a client must query-encode it, not paste it into the URL


def test_page_token_pasted_unencoded_is_400(serve: Any, session: requests.Session) -> None:
    sim = serve(SimConfig(warriors=5))
    token = session.get(f"{sim.url}/v1/warriors?page_size=1", timeout=5).json()["next_page_token"]
    # "+" in a query string means space: the contract's opaque token arrives mangled.
    r = session.get(f"{sim.url}/v1/warriors?page_size=1&page_token={token}", timeout=5)
    assert r.status_code == 400


def test_page_token_survives_a_restart_with_the_same_seed(serve: Any, session: requests.Session) -> None:
    first = serve(SimConfig(warriors=5))
    token = session.get(f"{first.url}/v1/warriors?page_size=2", timeout=5).json()["next_page_token"]
    second = serve(SimConfig(warriors=5))
    r = session.get(f"{second.url}/v1/warriors", params={"page_size": 2, "page_token": token}, timeout=5)
    assert r.status_code == 200
    assert r.json()["items"] == second.universe.warriors()[2:4]


# ---- awkward identifiers ---------------------------------------------------------------------

# 8 x 2 x 2 is the smallest universe that uses every awkward id template.
AWKWARD = SimConfig(
    awkward_ids=True, warriors=8, troops_per_warrior=2, groups_per_troop=2, records_per_group=1
)


def test_awkward_ids_round_trip_through_encoded_segments(serve: Any, session: requests.Session) -> None:
    sim = serve(AWKWARD)
    rows, calls = crawl(session, sim.url)
    assert rows == list(sim.universe.expected_rows())
    assert calls == sim.universe.expected_calls()


def test_awkward_ids_hold_every_hostile_character() -> None:
    ids: set[str] = set()
    for path in Universe(AWKWARD).iter_group_paths():
        ids.update(path)
    text = "".join(ids)
    for ch in " +='%~(),:@":
        assert ch in text, ch
    assert re.search(r"[^\x00-\x7f]", text)
    assert "%2F" in text and "%20" in text and "%25" in text
    for ident in ids:
        assert 1 <= len(ident) <= 128
        assert "/" not in ident
        assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in ident)


def test_awkward_ids_are_unique() -> None:
    config = dataclasses.replace(AWKWARD, warriors=20, troops_per_warrior=10, groups_per_troop=10)
    paths = list(Universe(config).iter_group_paths())
    warriors = {w for w, _, _ in paths}
    troops = {t for _, t, _ in paths}
    groups = {g for _, _, g in paths}
    assert (len(warriors), len(troops), len(groups)) == (20, 200, 2000)


def test_id_with_encoded_slash_is_one_segment(serve: Any, session: requests.Session) -> None:
    sim = serve(AWKWARD)
    w, t, g = next(p for p in sim.universe.iter_group_paths() if "%2F" in p[1])
    r = session.get(sim.url + data_path(w, t, g), timeout=5)
    assert r.status_code == 200


def test_unencoded_percent_in_id_is_not_found(serve: Any, session: requests.Session) -> None:
    sim = serve(AWKWARD)
    wid = next(w["warrior_id"] for w in sim.universe.warriors() if "%20" in w["warrior_id"])
    # A client that forgets to encode "%" sends "%20", which the server decodes to a space.
    r = session.get(f"{sim.url}/v1/warriors/{wid.replace(' ', '%20')}/troops", timeout=5)
    assert r.status_code == 404


# ---- 404 and 400 -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/v1/warriors/nobody/troops",
        "/v1/warriors/w-0000/troops/t-9999-99/data_groups",
        "/v1/warriors/w-0000/troops/t-0000-00/data_groups/nothing/data",
        # A troop that exists, but under another warrior.
        "/v1/warriors/w-0001/troops/t-0000-00/data_groups",
        "/v1/nothing",
        "/v1/warriors/",
        "/v2/warriors",
    ],
)
def test_unknown_ids_and_routes_are_404(serve: Any, session: requests.Session, path: str) -> None:
    sim = serve(SimConfig(warriors=2, troops_per_warrior=2, groups_per_troop=2))
    r = session.get(sim.url + path, timeout=5)
    assert r.status_code == 404
    assert set(r.json()) == {"error", "message"}


@pytest.mark.parametrize("level", ["warrior", "troop", "data group"])
def test_not_found_ids_are_listed_but_answer_404(serve: Any, session: requests.Session, level: str) -> None:
    base = SimConfig(warriors=2, troops_per_warrior=2, groups_per_troop=2, records_per_group=2)
    w, t, g = first_paths(Universe(base))
    missing = {"warrior": w, "troop": t, "data group": g}[level]
    sim = serve(SimConfig(warriors=2, troops_per_warrior=2, groups_per_troop=2,
                          records_per_group=2, not_found_ids=frozenset({missing})))  # fmt: skip
    u = sim.universe
    listed = {
        "warrior": [x["warrior_id"] for x in u.warriors()],
        "troop": [x["troop_id"] for x in u.troops(w)],
        "data group": [x["data_group_id"] for x in u.data_groups(w, t)],
    }[level]
    assert missing in listed
    r = session.get(sim.url + data_path(w, t, g), timeout=5)
    assert r.status_code == 404
    assert missing in r.json()["message"]
    # Crawl: every reachable row arrives; the 404 costs one call and hides its subtree.
    rows, calls = [], 1
    warriors, _ = list_all(session, f"{sim.url}/v1/warriors")
    for wi in warriors:
        wurl = f"{sim.url}/v1/warriors/{seg(wi['warrior_id'])}/troops"
        r = session.get(wurl, timeout=5)
        calls += 1
        if r.status_code == 404:
            continue
        for ti in r.json()["items"]:
            turl = f"{wurl}/{seg(ti['troop_id'])}/data_groups"
            r = session.get(turl, timeout=5)
            calls += 1
            if r.status_code == 404:
                continue
            for gi in r.json()["items"]:
                r = session.get(f"{turl}/{seg(gi['data_group_id'])}/data", timeout=5)
                calls += 1
                if r.status_code == 404:
                    continue
                rows += [(wi["warrior_id"], ti["troop_id"], gi["data_group_id"], rec["ts"])
                         for rec in r.json()["items"]]  # fmt: skip
    assert rows == [(a, b, d, e) for a, b, _, d, e, *_ in u.expected_rows()]
    assert calls == u.expected_calls()
    assert len(list(u.expected_rows(exclude_not_found=False))) > len(rows)


@pytest.mark.parametrize("page_size", ["0", "1001", "-1", "abc", "", "1.5", "٣"])
def test_bad_page_size_is_400(serve: Any, session: requests.Session, page_size: str) -> None:
    sim = serve(SimConfig())
    r = session.get(f"{sim.url}/v1/warriors", params={"page_size": page_size}, timeout=5)
    assert r.status_code == 400
    assert r.json()["error"] == "bad_request"


def _tamper(token: str) -> str:
    raw = bytearray(base64.b64decode(token[4:]))
    raw[10] ^= 0x01
    return token[:4] + base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize("kind", ["garbage", "empty", "tampered", "other-list", "truncated"])
def test_bad_page_token_is_400(serve: Any, session: requests.Session, kind: str) -> None:
    sim = serve(SimConfig(warriors=4, troops_per_warrior=4))
    good = session.get(f"{sim.url}/v1/warriors?page_size=1", timeout=5).json()["next_page_token"]
    troops_url = f"{sim.url}/v1/warriors/w-0000/troops"
    other = session.get(f"{troops_url}?page_size=1", timeout=5).json()["next_page_token"]
    token = {
        "garbage": "not-a-token",
        "empty": "",
        "tampered": _tamper(good),
        "other-list": other,
        "truncated": good[:-6],
    }[kind]
    r = session.get(f"{sim.url}/v1/warriors", params={"page_size": 1, "page_token": token}, timeout=5)
    assert r.status_code == 400
