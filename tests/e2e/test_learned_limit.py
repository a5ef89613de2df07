"""A limit adaptive pacing found is kept in the bucket and the next run starts from it."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import fanout.start_run as start_run_module
from fanout import learned_limit
from fanout.report import render_report
from fanout.simulator import HermesSimulator, SimConfig, Universe
from fanout.start_run import make_budget, start_run
from fanout_core.adaptive_rate import RATE, W_MAX, Tuning
from fanout_core.bodies import manifest_body
from fanout_core.storage import LocalDirStorage

from .conftest import TOKEN, fast_settings

UNTOLD = SimConfig(
    token=TOKEN, warriors=4, troops_per_warrior=5, groups_per_troop=25, records_per_group=3, rate_limit=40
)
"""525 calls against a limit of 40/s that nobody tells the run: about 13 s of crawling (a
limit low enough that a loaded test machine still reaches it)."""


def _run_counting_429s(sim: HermesSimulator, store: LocalDirStorage, run_id: str, **settings: object):
    """One run; the simulator's 429s in its first 10 s (a snapshot taken then)."""
    sim.reset_stats()
    first: list[int] = []
    timer = threading.Timer(10.0, lambda: first.append(sim.stats.by_status.get(429, 0)))
    timer.start()
    try:
        outcome = start_run(
            store,
            fast_settings(hermes_rate_start=100, **settings),
            run_id=run_id,
            manifest=manifest_body(None),
            hermes_url=sim.url,
            token=TOKEN,
        )
    finally:
        timer.join()
    return outcome, first[0]


def test_a_second_run_starts_from_the_limit_the_first_one_learned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real runs against a simulator whose limit nobody tells them. (That the learned start
    meets fewer 429s is shown on a fake clock, tests/core/test_learned_limit_pacing.py: the
    count of real runs' 429s depends on how loaded the machine is.)"""
    started: list[object] = []

    def spy(settings: Any, caps: Any, learned: Any = None) -> Any:
        started.append(learned)
        return make_budget(settings, caps, learned)

    monkeypatch.setattr(start_run_module, "make_budget", spy)
    store = LocalDirStorage(tmp_path)
    with HermesSimulator(UNTOLD) as sim:
        first, first_429s = _run_counting_429s(sim, store, "r1")
        kept = learned_limit.read(store, sim.url)
        second, _ = _run_counting_429s(sim, store, "r2")
    assert first_429s > 0 and kept is not None and first.limit == kept
    assert kept.learned_on == datetime.now(UTC).strftime("%Y-%m-%d")
    assert started == [None, kept]
    assert first.ok and second.ok and second.limit is not None
    assert second.report.stages["data_groups"].records == sum(1 for _ in Universe(UNTOLD).expected_rows())
    assert f"<td>{second.limit.line()}</td>" in render_report(store, "r2", fast_settings())


def test_the_limit_record_is_keyed_by_a_hash_of_the_url_and_holds_no_token(tmp_path: Path) -> None:
    store = LocalDirStorage(tmp_path)
    with HermesSimulator(UNTOLD) as sim:
        _run_counting_429s(sim, store, "r1")
        url = sim.url
    keys = list(store.list(learned_limit.PREFIX))
    assert keys == [learned_limit.key_for(url)]
    body = store.get(keys[0])
    assert TOKEN.encode() not in body and b"127.0.0.1" not in body


def test_remember_limit_false_keeps_nothing(tmp_path: Path) -> None:
    store = LocalDirStorage(tmp_path)
    with HermesSimulator(UNTOLD) as sim:
        outcome, _ = _run_counting_429s(sim, store, "r1", remember_limit=False)
    assert outcome.limit is None
    assert list(store.list(learned_limit.PREFIX)) == []


def test_a_run_starts_just_below_the_learned_limit() -> None:
    learned = learned_limit.LearnedLimit(148.0, 120.0, "2026-12-07")
    budget = make_budget(fast_settings(hermes_rate_start=50), {"a": 4}, learned)
    assert budget.state[RATE] == Tuning().beta * 120.0
    assert budget.state[W_MAX] == 120.0
    assert budget.learned() is None  # nothing learned by this run yet


def test_a_configured_r_stays_the_upper_bound_of_the_learned_start() -> None:
    learned = learned_limit.LearnedLimit(148.0, 120.0, "2026-12-07")
    assert learned_limit.start_rate(learned, 80.0) == 80.0
    budget = make_budget(fast_settings(hermes_rate_limit=80), {"a": 4}, learned)
    assert budget.state[W_MAX] == 80.0


def test_a_limit_record_reads_back_and_says_when_it_was_learned(tmp_path: Path) -> None:
    store = LocalDirStorage(tmp_path)
    kept = learned_limit.write(store, "http://h:1/", 148.4, 131.0, now=datetime(2026, 12, 7, tzinfo=UTC))
    assert learned_limit.read(store, "http://h:1") == kept
    assert kept.line() == "limit learned 148/s on 2026-12-07"


def test_every_kept_limit_is_read_for_a_page_that_knows_no_url(tmp_path: Path) -> None:
    store = LocalDirStorage(tmp_path)
    day = datetime(2026, 12, 7, tzinfo=UTC)
    kept = [learned_limit.write(store, f"http://h:{port}", 100.0 + port, 90.0, now=day) for port in (1, 2)]
    assert sorted(learned_limit.kept(store), key=lambda k: k.limit) == kept


def test_a_broken_limit_record_is_ignored(tmp_path: Path) -> None:
    store = LocalDirStorage(tmp_path)
    for body in (
        b"not json",
        b"[]",
        b'{"limit": "fast", "held": 1, "learned_on": "2026-12-07"}',
        b" " * 5000,
    ):
        store.put(learned_limit.key_for("http://h:1"), body)
        assert learned_limit.read(store, "http://h:1") is None
