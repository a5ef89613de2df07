"""Shared fixtures and helpers: simulators on free ports, and a minimal crawler over `requests`.

Real HTTP against a simulator on a free port: the crawler is tested against this server,
so a bug here would hide (or invent) a bug there.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from fanout.simulator import HermesSimulator, SimConfig, Universe

TOKEN = "sim-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROOT = Path(__file__).resolve().parents[2]


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
