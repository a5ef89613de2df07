"""The Lambda side of the learned limit on a fake clock: when an instance writes it (once,
after a 429-free window following a cut) and when a cold start seeds the fleet's budget."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from fanout_core import learned_limit
from fanout_core.adaptive_rate import Tuning
from fanout_core.assembly import SHARED_TUNING
from fanout_core.fleet_budget import SEED_AFTER_S, BudgetItem, FleetPacer, MemoryBudgetStore
from fanout_core.learned_limit import Finding, LimitKeeper
from fanout_core.storage import LocalDirStorage, NoSuchKey

from .fake_time import FakeTime

URL = "https://api.example.com/v1"


def _keeper(tmp_path: Path, t: FakeTime, quiet_s: float = 7.0) -> tuple[LimitKeeper, LocalDirStorage]:
    store = LocalDirStorage(tmp_path)
    return LimitKeeper(store, URL, quiet_s=quiet_s, clock=t.clock), store


def test_a_finding_is_written_only_once_its_quiet_window_has_passed(tmp_path: Path) -> None:
    t = FakeTime(100.0)
    keeper, store = _keeper(tmp_path, t)
    finding = Finding(limit=40.0, held=38.8, cut_at=100.0)
    t.now = 106.9
    keeper.offer(finding)
    assert keeper.written is None
    t.now = 107.0
    keeper.offer(finding)
    assert learned_limit.read(store, URL) == keeper.written
    assert keeper.written is not None and (keeper.written.limit, keeper.written.held) == (40.0, 38.8)


def test_a_429_of_the_instance_restarts_the_quiet_window(tmp_path: Path) -> None:
    t = FakeTime(100.0)
    keeper, store = _keeper(tmp_path, t)
    t.now = 105.0
    keeper.refused()
    t.now = 108.0
    keeper.offer(Finding(limit=40.0, held=38.8, cut_at=100.0))
    assert list(store.list(learned_limit.PREFIX)) == []
    t.now = 112.0
    keeper.offer(Finding(limit=40.0, held=38.8, cut_at=100.0))
    assert learned_limit.read(store, URL) is not None


def test_an_instance_writes_once_whatever_it_finds_later(tmp_path: Path) -> None:
    t = FakeTime(100.0)
    keeper, store = _keeper(tmp_path, t)
    t.now = 110.0
    keeper.offer(Finding(limit=40.0, held=38.8, cut_at=100.0))
    t.now = 130.0
    keeper.offer(Finding(limit=60.0, held=58.2, cut_at=120.0))
    kept = learned_limit.read(store, URL)
    assert kept is not None and kept.limit == 40.0


class _Refusing(LocalDirStorage):
    puts = 0

    def put(self, key: str, body: bytes) -> None:
        self.puts += 1
        raise OSError("bucket refused")


def test_a_write_that_fails_is_one_warning_and_is_not_tried_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    t = FakeTime(100.0)
    store = _Refusing(tmp_path)
    keeper = LimitKeeper(store, URL, quiet_s=7.0, clock=t.clock)
    t.now = 110.0
    with caplog.at_level(logging.INFO, logger="fanout"):
        for _ in range(3):
            keeper.offer(Finding(limit=40.0, held=38.8, cut_at=100.0))
    assert store.puts == 1
    assert [r.outcome for r in caplog.records] == ["limit_not_kept"]  # type: ignore[attr-defined]


def _fleet_pacer(store: MemoryBudgetStore, t: FakeTime, learned: float | None) -> FleetPacer:
    return FleetPacer(
        store,
        50.0,
        fallback_rate=5.0,
        tuning=SHARED_TUNING,
        learned=learned,
        clock=t.clock,
        sleep=t.sleep,
    )


def test_a_cold_start_seeds_an_idle_budget_item_at_the_learned_rate() -> None:
    t = FakeTime(10_000.0)
    store = MemoryBudgetStore()
    store.item = BudgetItem(tat=5_000.0, w_max=50.0, cut_at=5_000.0)  # the last run's cut, long past
    pacer = _fleet_pacer(store, t, 31.5)
    assert (store.item.w_max, store.item.cut_at) == (31.5, 10_000.0)
    assert pacer.rate == pytest.approx(Tuning().beta * 31.5)  # as right after a cut there
    assert pacer.found() is None  # a seed is no finding: a run would learn back what it was told


def test_a_cold_start_does_not_seed_over_a_recent_cut() -> None:
    """A running fleet that cut lately keeps what it found; one conditional write."""
    t = FakeTime(10_000.0)
    store = MemoryBudgetStore()
    recent = BudgetItem(tat=10_000.0, w_max=27.0, cut_at=10_000.0 - SEED_AFTER_S / 2)
    store.item = recent
    _fleet_pacer(store, t, 31.5)
    assert store.item == recent and store.writes == 1


def test_a_cold_start_with_nothing_learned_writes_nothing() -> None:
    t = FakeTime(10_000.0)
    store = MemoryBudgetStore()
    _fleet_pacer(store, t, None)
    assert store.writes == 0 and store.item == BudgetItem()


def test_a_cut_after_the_cold_start_is_found_in_the_fleets_rates() -> None:
    t = FakeTime(10_000.0)
    store = MemoryBudgetStore()
    pacer = _fleet_pacer(store, t, 31.5)
    for i in range(200):  # accepted, then refused: the limit is below the seeded rate
        pacer.acquire()
        t.now += 0.01
        (pacer.on_success() if i < 60 else pacer.on_throttled(None))
    found = pacer.found()
    assert found is not None and found[1] > 10_000.0 and found[0] != 31.5


def test_the_record_a_keeper_writes_has_the_local_runs_shape(tmp_path: Path) -> None:
    t = FakeTime(100.0)
    keeper, store = _keeper(tmp_path, t)
    t.now = 110.0
    keeper.offer(Finding(limit=40.0, held=38.8, cut_at=100.0))
    body = store.get(learned_limit.key_for(URL))
    assert set(json.loads(body)) == {"limit", "held", "learned_on"}
    with pytest.raises(NoSuchKey):
        store.get(learned_limit.key_for(URL + "/other"))
