"""The Hermes simulator keeps the API contract (shared/hermes-api.yaml) and its truth.

Real HTTP against a simulator on a free port: the crawler is tested against this server,
so a bug here would hide (or invent) a bug there.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from fanout.simulator import (
    HermesSimulator,
    SimConfig,
    Universe,
    add_serve_arguments,
    config_from_args,
    run_in_subprocess,
    serve_from_args,
)

TOKEN = "sim-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROOT = Path(__file__).resolve().parent.parent


# ---- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start simulators on free ports; all are stopped when the test ends."""
    started: list[HermesSimulator] = []

    def _serve(config: SimConfig) -> HermesSimulator:
        sim = HermesSimulator(config)
        sim.start()
        started.append(sim)
        return sim

    yield _serve
    for sim in started:
        sim.stop()


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        s.headers.update(AUTH)
        yield s


def seg(identifier: str) -> str:
    return quote(identifier, safe="")


def list_all(s: requests.Session, url: str, page_size: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """Every item of one list, following next_page_token; returns (items, calls)."""
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {} if page_size is None else {"page_size": page_size}
    calls = 0
    while True:
        r = s.get(url, params=params, timeout=5)
        calls += 1
        r.raise_for_status()
        body = r.json()
        assert set(body) == {"items", "next_page_token"}
        items.extend(body["items"])
        if body["next_page_token"] is None:
            return items, calls
        params = {**params, "page_token": body["next_page_token"]}


def crawl(s: requests.Session, base: str, page_size: int | None = None) -> tuple[list[tuple[Any, ...]], int]:
    """A complete crawl: expected_rows()-shaped rows and the number of list calls."""
    rows: list[tuple[Any, ...]] = []
    warriors, calls = list_all(s, f"{base}/v1/warriors", page_size)
    for w in warriors:
        wurl = f"{base}/v1/warriors/{seg(w['warrior_id'])}/troops"
        troops, n = list_all(s, wurl, page_size)
        calls += n
        for t in troops:
            turl = f"{wurl}/{seg(t['troop_id'])}/data_groups"
            groups, n = list_all(s, turl, page_size)
            calls += n
            for g in groups:
                records, n = list_all(s, f"{turl}/{seg(g['data_group_id'])}/data", page_size)
                calls += n
                ids = (w["warrior_id"], t["troop_id"], t["service"], g["data_group_id"])
                rows.extend((*ids, r["ts"], r["metric"], r["value"], r["unit"]) for r in records)
    return rows, calls


def first_paths(universe: Universe) -> tuple[str, str, str]:
    return next(universe.iter_group_paths())


def data_path(w: str, t: str, g: str) -> str:
    return f"/v1/warriors/{seg(w)}/troops/{seg(t)}/data_groups/{seg(g)}/data"


VARIED = SimConfig(
    warriors=3,
    troops_per_warrior=3,
    groups_per_troop=3,
    records_per_group=3,
    vary_records=True,
    empty_group_every=4,
)


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


# ---- rate limit and faults -------------------------------------------------------------------


def test_rate_limit_answers_429_with_integer_retry_after_then_recovers(
    serve: Any, session: requests.Session
) -> None:
    sim = serve(SimConfig(rate_limit=5, rate_burst=2))
    statuses = [session.get(f"{sim.url}/v1/warriors", timeout=5) for _ in range(6)]
    limited = [r for r in statuses if r.status_code == 429]
    assert limited, [r.status_code for r in statuses]
    retry_after = limited[0].headers["Retry-After"]
    assert retry_after.isdigit() and int(retry_after) >= 0
    assert limited[0].json()["error"] == "rate_limited"
    time.sleep(max(int(retry_after), 0.25))
    assert session.get(f"{sim.url}/v1/warriors", timeout=5).status_code == 200
    assert sim.stats.rate_limited == len(limited)
    assert sim.stats.injected_429 == 0


def test_rate_limit_is_per_token(serve: Any) -> None:
    sim = serve(SimConfig(rate_limit=1, rate_burst=1))
    ok = requests.get(f"{sim.url}/v1/warriors", headers=AUTH, timeout=5)
    limited = requests.get(f"{sim.url}/v1/warriors", headers=AUTH, timeout=5)
    wrong = requests.get(f"{sim.url}/v1/warriors", headers={"Authorization": "Bearer x"}, timeout=5)
    assert (ok.status_code, limited.status_code, wrong.status_code) == (200, 429, 401)


def test_rate_limit_retry_after_can_be_an_http_date(serve: Any, session: requests.Session) -> None:
    sim = serve(SimConfig(rate_limit=1, rate_burst=1, retry_after_format="http-date"))
    session.get(f"{sim.url}/v1/warriors", timeout=5)
    r = session.get(f"{sim.url}/v1/warriors", timeout=5)
    assert r.status_code == 429
    when = parsedate_to_datetime(r.headers["Retry-After"])
    assert 0 <= when.timestamp() - time.time() <= 3


def _statuses(sim: HermesSimulator, n: int) -> list[tuple[int, bool]]:
    """(status, body is JSON) for n sequential requests on one connection."""
    out = []
    with requests.Session() as s:
        s.headers.update(AUTH)
        for _ in range(n):
            r = s.get(f"{sim.url}/v1/warriors", timeout=5)
            try:
                r.json()
                is_json = True
            except ValueError:
                is_json = False
            out.append((r.status_code, is_json))
    return out


@pytest.mark.parametrize(
    ("field", "is_fault"),
    [
        ("error_rate_5xx", lambda st, ok: st in (500, 502, 503, 504)),
        ("error_rate_429", lambda st, ok: st == 429),
        ("garbage_rate", lambda st, ok: st == 200 and not ok),
    ],
)
def test_injected_fault_share_matches_rate_and_repeats_with_fault_seed(
    serve: Any, field: str, is_fault: Any
) -> None:
    overrides: dict[str, Any] = {field: 0.3}
    config = dataclasses.replace(SimConfig(fault_seed=11), **overrides)
    first = _statuses(serve(config), 100)
    second = _statuses(serve(config), 100)
    assert first == second
    share = sum(is_fault(st, ok) for st, ok in first) / len(first)
    assert 0.2 <= share <= 0.4, share
    non_faults = [(st, ok) for st, ok in first if not is_fault(st, ok)]
    assert set(non_faults) == {(200, True)}


def test_injected_429_retry_after_is_0_or_1(serve: Any, session: requests.Session) -> None:
    sim = serve(SimConfig(error_rate_429=1.0, fault_seed=3))
    values = {session.get(f"{sim.url}/v1/warriors", timeout=5).headers["Retry-After"]
              for _ in range(30)}  # fmt: skip
    assert values == {"0", "1"}
    assert sim.stats.injected_429 == 30 and sim.stats.rate_limited == 0


def test_hang_makes_the_client_time_out(serve: Any, session: requests.Session) -> None:
    sim = serve(SimConfig(hang_rate=1.0, hang_s=3.0))
    with pytest.raises(requests.Timeout):
        session.get(f"{sim.url}/v1/warriors", timeout=0.3)
    t0 = time.monotonic()
    sim.stop()
    assert time.monotonic() - t0 < 2
    assert sim.stats.hangs == 1


def test_latency_delays_every_request(serve: Any, session: requests.Session) -> None:
    sim = serve(SimConfig(latency_s=0.15))
    t0 = time.monotonic()
    session.get(f"{sim.url}/v1/warriors", timeout=5).raise_for_status()
    assert time.monotonic() - t0 >= 0.15


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


# ---- the universe without HTTP ---------------------------------------------------------------


def test_same_seed_gives_the_same_universe() -> None:
    config = SimConfig.from_size("tiny")
    assert list(Universe(config).expected_rows()) == list(Universe(config).expected_rows())
    assert Universe(config).warriors() == Universe(config).warriors()


def test_different_seeds_give_different_data() -> None:
    a = Universe(SimConfig.from_size("tiny", seed=1))
    b = Universe(SimConfig.from_size("tiny", seed=2))
    assert list(a.expected_rows()) != list(b.expected_rows())


def test_records_match_the_schema() -> None:
    u = Universe(SimConfig(warriors=4, records_per_group=50))
    records = [r for w, t, g in u.iter_group_paths() for r in u.records(w, t, g)]
    for r in records:
        assert set(r) == {"ts", "metric", "value", "unit"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r["ts"])
        assert r["value"] is None or isinstance(r["value"], float)
        assert r["unit"] is None or isinstance(r["unit"], str)
    assert any(r["value"] is None for r in records)
    assert any(r["unit"] is None for r in records)


def test_vary_records_and_empty_groups() -> None:
    u = Universe(SimConfig(records_per_group=5, vary_records=True, empty_group_every=3))
    counts = [len(u.records(w, t, g)) for w, t, g in u.iter_group_paths()]
    assert all(0 <= n <= 10 for n in counts)
    assert counts[2::3] == [0] * len(counts[2::3])
    assert len(set(counts)) > 3


def test_full_preset_makes_51051_calls() -> None:
    u = Universe(SimConfig.from_size("full"))
    assert u.expected_calls() == 51_051
    assert len(u.warriors()) == 50


def test_full_preset_records_of_one_group_are_generated_on_demand() -> None:
    u = Universe(SimConfig.from_size("full"))
    assert len(u.records("w-0049", "t-0049-19", "g-0049-19-049")) == 24


@pytest.mark.parametrize(
    ("size", "low", "high"), [("tiny", 10, 300), ("demo", 2000, 3000), ("full", 51051, 51051)]
)
def test_presets_call_counts(size: str, low: int, high: int) -> None:
    assert low <= Universe(SimConfig.from_size(size)).expected_calls() <= high


@pytest.mark.parametrize(
    "kwargs",
    [
        {"default_page_size": 0},
        {"default_page_size": 2000},
        {"error_rate_5xx": 1.5},
        {"error_rate_5xx": 0.6, "garbage_rate": 0.6},
        {"rate_limit": 0},
        {"warriors": -1},
    ],
)
def test_invalid_config_is_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SimConfig(**kwargs)


def test_unknown_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="tiny"):
        SimConfig.from_size("huge")


# ---- CLI hooks and subprocess ----------------------------------------------------------------


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(argv)


def test_config_from_args_applies_the_preset_then_the_flags(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HERMES_TOKEN", raising=False)
    args = _parse(
        [
            *("--size", "demo", "--warriors", "3", "--latency-ms", "20", "--awkward-ids"),
            *("--not-found", "a b", "--not-found", "c+d", "--page-size", "50"),
        ]
    )
    config = config_from_args(args)
    assert (config.warriors, config.troops_per_warrior) == (3, 10)
    assert config.latency_s == pytest.approx(0.02)
    assert config.awkward_ids and config.default_page_size == 50
    assert config.not_found_ids == frozenset({"a b", "c+d"})
    assert config.token == "sim-token"
    assert (args.host, args.port) == ("127.0.0.1", 8080)


def test_token_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERMES_TOKEN", "from-env")
    assert config_from_args(_parse([])).token == "from-env"
    assert config_from_args(_parse(["--token", "flag"])).token == "flag"


def test_serve_prints_its_url_and_stops_on_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fanout.simulator", "--size", "tiny", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.fullmatch(
            r"hermes simulator listening on (http://127\.0\.0\.1:\d+) "
            r"\(3 warriors, ~\d+ calls for a full crawl\)\n",
            line,
        )
        assert match, line
        assert requests.get(f"{match.group(1)}/v1/health", timeout=5).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_run_in_subprocess_serves_the_config() -> None:
    config = SimConfig(warriors=2, token="other")
    with run_in_subprocess(config) as url:
        r = requests.get(f"{url}/v1/warriors", headers={"Authorization": "Bearer other"})
        assert r.json()["items"] == Universe(config).warriors()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/v1/health", timeout=2)


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


def test_serve_reports_a_taken_port(serve: Any, capsys: pytest.CaptureFixture[str]) -> None:
    sim = serve(SimConfig())
    port = int(sim.url.rsplit(":", 1)[1])
    assert serve_from_args(_parse(["--port", str(port)])) == 1
    assert "cannot listen" in capsys.readouterr().err


def test_serve_reports_an_invalid_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert serve_from_args(_parse(["--port", "0", "--error-rate-5xx", "2"])) == 2
    assert "error_rate_5xx" in capsys.readouterr().err
