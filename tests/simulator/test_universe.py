"""The universe without HTTP: determinism, record schema, presets and config validation."""

from __future__ import annotations

import re
from typing import Any

import pytest

from fanout.simulator import (
    SimConfig,
    Universe,
)

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
