"""``fanout plan``: a forecast from a bounded sample, against the simulator."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from fanout.simulator import SimConfig, Universe

from .conftest import TOKEN, fanout_cli
from .doc_blocks import schemas, violations

SCHEMAS = schemas()
UNIFORM = SimConfig(token=TOKEN, warriors=20, troops_per_warrior=10, groups_per_troop=20, records_per_group=5)
"""4,221 calls, every list alike: a sample of any size finds the whole truth (its range's
top still allows for units too rare to show in it)."""


def _plan(manifest: Path, url: str, *extra: str) -> tuple[int, dict, str]:
    proc = fanout_cli("plan", str(manifest), "--hermes-url", url, "--json", *extra)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, json.loads(out) if out else {}, err


def _manifest(tmp_path: Path) -> Path:
    path = tmp_path / "p1.json"
    path.write_text('{"warriors": "all"}')
    return path


def test_plan_json_keeps_to_its_documented_shape(
    simulator: Callable[[SimConfig], str], tmp_path: Path
) -> None:
    code, doc, err = _plan(_manifest(tmp_path), simulator(UNIFORM))
    assert code == 0, err
    assert violations(doc, SCHEMAS["plan"], SCHEMAS) == []


def test_plan_of_a_uniform_tree_finds_the_exact_call_count(
    simulator: Callable[[SimConfig], str], tmp_path: Path
) -> None:
    _code, doc, _err = _plan(_manifest(tmp_path), simulator(UNIFORM))
    actual = Universe(UNIFORM).expected_calls(100)
    assert doc["calls"]["estimate"] == doc["calls"]["low"] == actual < doc["calls"]["high"]
    assert doc["rows"]["estimate"] == 20 * 10 * 20 * 5


def test_plan_spends_at_most_a_hundredth_of_the_estimate(
    simulator: Callable[[SimConfig], str], tmp_path: Path
) -> None:
    _code, doc, _err = _plan(_manifest(tmp_path), simulator(UNIFORM))
    assert doc["sample"]["calls"] <= 0.01 * doc["calls"]["estimate"] + 1
    assert doc["sample"]["calls"] <= doc["sample"]["budget"]


def test_plan_spends_no_more_than_max_sample_calls(
    simulator: Callable[[SimConfig], str], tmp_path: Path
) -> None:
    _code, doc, _err = _plan(_manifest(tmp_path), simulator(UNIFORM), "--max-sample-calls", "12")
    assert doc["sample"]["calls"] <= 12


def test_plan_of_named_warriors_lists_no_first_level(
    simulator: Callable[[SimConfig], str], tmp_path: Path
) -> None:
    path = tmp_path / "named.json"
    path.write_text('{"warriors": ["w-0000", "w-0001"]}')
    _code, doc, _err = _plan(path, simulator(UNIFORM))
    assert doc["first_level"] == {"name": "warriors", "units": 2, "calls": 0}
    assert doc["calls"]["estimate"] == 2 * (1 + 10 * (1 + 20))


def test_plan_text_ends_its_summary_with_the_time_at_r(
    simulator: Callable[[SimConfig], str], tmp_path: Path
) -> None:
    proc = fanout_cli("plan", str(_manifest(tmp_path)), "--hermes-url", simulator(UNIFORM))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "about 4,221 calls (4,221-" in out and "s at 100000/s" in out


def test_plan_of_a_bad_manifest_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"troops": "all"}')
    proc = fanout_cli("plan", str(path), "--hermes-url", "http://127.0.0.1:9")
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert err.startswith("fanout: bad manifest:") and err.count("\n") == 1


def test_plan_of_a_described_api_counts_its_calls_and_rows(tmp_path: Path) -> None:
    from fanout.simulator import HermesSimulator
    from fanout.simulator.truth import simulator_config, universe_for
    from fanout_core import api_description

    path = Path(__file__).resolve().parents[1] / "fixtures" / "apis" / "two_level.yaml"
    api = api_description.load(path)
    config = simulator_config(api, "demo", token="plan-secret")
    manifest = tmp_path / "shops.json"
    manifest.write_text('{"shops": "all"}')
    with HermesSimulator(config, api=api) as sim:
        proc = fanout_cli(
            "plan", str(manifest), "--api", str(path), "--api-url", sim.url, "--json",
            env={api.auth.env or "": "plan-secret"},
        )  # fmt: skip
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    doc = json.loads(out)
    assert doc["calls"]["estimate"] == universe_for(api, config).expected_calls(None)
    assert doc["rows"]["estimate"] == 120 * 24
    assert violations(doc, SCHEMAS["plan"], SCHEMAS) == []  # priced at default stage settings


def test_plan_shows_the_limit_an_earlier_run_learned(
    simulator: Callable[[SimConfig], str], tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    from fanout import learned_limit
    from fanout_core.storage import LocalDirStorage

    url = simulator(UNIFORM)
    bucket = tmp_path / "bucket"
    learned_limit.write(LocalDirStorage(bucket), url, 148.0, 120.0, now=datetime(2026, 12, 7, tzinfo=UTC))
    proc = fanout_cli("plan", str(_manifest(tmp_path)), "--hermes-url", url, "--bucket-dir", str(bucket))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "limit learned 148/s on 2026-12-07: ~35 s at 120/s" in out


def test_local_run_with_plan_prints_the_plans_line_before_it_runs(
    simulator: Callable[[SimConfig], str], tmp_path: Path
) -> None:
    url = simulator(UNIFORM)
    proc = fanout_cli(
        "local", "run", str(_manifest(tmp_path)), "--hermes-url", url, "--bucket-dir", str(tmp_path / "b"),
        "--plan", "--quiet", "--no-compact",
    )  # fmt: skip
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "fanout: plan: about 4,221 calls (4,221-" in err


def test_plan_range_holds_a_skewed_tree_whose_heavy_unit_the_sample_missed(
    simulator: Callable[[SimConfig], str], tmp_path: Path
) -> None:
    """25 warriors, one with 10x the troops of the others: a 1 % budget samples a few of
    them, and where the heavy one is not among them the range's top still holds the crawl
    (the subtrees its unseen troops bring), not only the point estimate's tree."""
    config = SimConfig(
        token=TOKEN,
        warriors=25,
        troops_per_warrior=4,
        groups_per_troop=25,
        records_per_group=2,
        heavy_first_warrior=10,
    )
    _code, doc, err = _plan(_manifest(tmp_path), simulator(config))
    actual = Universe(config).expected_calls(100)
    assert doc["levels"][0]["sampled"] < 25, err  # a sample, not a census
    assert doc["calls"]["estimate"] < actual  # the heavy warrior was missed...
    assert doc["calls"]["low"] <= actual <= doc["calls"]["high"]  # ...and the range allows for it


def test_plan_lists_a_small_top_level_whole_so_a_heavy_unit_is_never_missed(
    simulator: Callable[[SimConfig], str], tmp_path: Path
) -> None:
    """The demo tree (10 warriors) with one warrior of 50x troops: the top's 10 lists fit in
    half the 1 % budget, so all are listed and the estimate is the crawl."""
    config = SimConfig.from_size("demo", token=TOKEN, heavy_first_warrior=50)
    _code, doc, err = _plan(_manifest(tmp_path), simulator(config))
    assert doc["levels"][0]["sampled"] == 10 and doc["levels"][0]["census"], err
    assert doc["calls"]["estimate"] == Universe(config).expected_calls(100)
