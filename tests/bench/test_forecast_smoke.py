"""bench/forecast.py runs end to end at the tiny size and reports its figures. No timing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import forecast  # noqa: E402
from fanout.simulator import SimConfig, Universe  # noqa: E402


def test_forecast_bench_reports_coverage_error_and_sampling_cost(capsys: pytest.CaptureFixture[str]) -> None:
    forecast.main(["--size", "tiny", "--seeds", "2", "--json"])
    figures = json.loads(capsys.readouterr().out)
    assert set(figures["trees"]) == {"uniform", "skewed", "tailed"}
    uniform = figures["trees"]["uniform"]
    assert uniform["seeds"] == 2 and 0 <= uniform["held"] <= 2
    assert [r["actual"] for r in uniform["runs"]] == [
        Universe(SimConfig.from_size("tiny", seed=s)).expected_calls(100) for s in (1, 2)
    ]
    assert all(r["low"] <= r["estimate"] <= r["high"] for t in figures["trees"].values() for r in t["runs"])
    assert all(0 < r["sample_calls"] <= 200 for t in figures["trees"].values() for r in t["runs"])
