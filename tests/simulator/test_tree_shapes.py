"""The skewed and heavy-tailed trees ``bench/forecast.py`` measures ``fanout plan`` on."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fanout.simulator import SimConfig, Universe
from fanout.simulator.described import DescribedUniverse
from fanout_core import api_description

TWO_LEVEL = Path(__file__).resolve().parents[1] / "fixtures" / "apis" / "two_level.yaml"


def _pages(n: int, page_size: int = 100) -> int:
    return max(1, math.ceil(n / page_size))


def _crawled_calls(u: Universe, page_size: int = 100) -> int:
    """Calls counted list by list from what the universe serves (not from its own formula)."""
    warriors = u.warriors()
    calls = _pages(len(warriors), page_size)
    for w in warriors:
        troops = u.troops(w["warrior_id"])
        calls += _pages(len(troops), page_size)
        for t in troops:
            groups = u.data_groups(w["warrior_id"], t["troop_id"])
            calls += _pages(len(groups), page_size)
            for g in groups:
                calls += _pages(len(u.records(w["warrior_id"], t["troop_id"], g["data_group_id"])), page_size)
    return calls


def test_heavy_first_warrior_lists_k_times_the_troops_of_the_others() -> None:
    u = Universe(SimConfig(warriors=4, troops_per_warrior=3, heavy_first_warrior=50))
    counts = [len(u.troops(w["warrior_id"])) for w in u.warriors()]
    assert counts == [150, 3, 3, 3]


def test_heavy_first_warrior_is_counted_in_expected_calls() -> None:
    config = SimConfig(
        warriors=3, troops_per_warrior=5, groups_per_troop=2, records_per_group=3, heavy_first_warrior=40
    )
    u = Universe(config)
    assert u.expected_calls(100) == _crawled_calls(u) == 1 + (2 + 1 + 1) + 210 + 210 * 2


def test_heavy_tailed_records_are_mostly_small_with_a_few_lists_of_many_pages() -> None:
    u = Universe(
        SimConfig(
            warriors=10,
            troops_per_warrior=10,
            groups_per_troop=50,
            records_per_group=24,
            heavy_tailed_records=True,
        )
    )
    counts = [u.record_count(w, t, g) for w in range(10) for t in range(10) for g in range(50)]
    assert sorted(counts)[len(counts) // 2] < 24  # the median is below the mean: a long right tail
    assert 15 < sum(counts) / len(counts) < 35
    assert max(counts) <= 2400
    assert 0.005 < sum(c > 100 for c in counts) / len(counts) < 0.05


def test_heavy_tailed_records_are_counted_in_expected_calls() -> None:
    config = SimConfig(
        warriors=2, troops_per_warrior=4, groups_per_troop=30, records_per_group=24, heavy_tailed_records=True
    )
    u = Universe(config)
    assert u.expected_calls(100) == _crawled_calls(u)
    assert u.expected_calls(100) > 1 + 2 + 8 + 240  # some group takes more than one page


def test_heavy_tailed_records_are_the_same_for_the_same_seed() -> None:
    config = SimConfig(heavy_tailed_records=True, seed=3)
    assert [Universe(config).record_count(0, 0, g) for g in range(20)] == [
        Universe(config).record_count(0, 0, g) for g in range(20)
    ]


@pytest.mark.parametrize("option", [{"heavy_first_warrior": 5}, {"heavy_tailed_records": True}])
def test_a_described_api_refuses_the_hermes_tree_shapes(option: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="Hermes' description only"):
        DescribedUniverse(api_description.load(TWO_LEVEL), SimConfig(**option))  # type: ignore[arg-type]


def test_heavy_first_warrior_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="heavy_first_warrior"):
        SimConfig(heavy_first_warrior=-1)


def test_the_tree_shapes_are_serve_options() -> None:
    import argparse

    from fanout.simulator import add_serve_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    config = config_from_args(parser.parse_args(["--heavy-first-warrior", "50", "--heavy-tailed-records"]))
    assert (config.heavy_first_warrior, config.heavy_tailed_records) == (50, True)
    assert SimConfig.from_json(config.to_json()) == config  # run_in_subprocess passes them on
