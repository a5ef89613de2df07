"""The benchmarks run end to end at a tiny size and report well-formed, truthful figures.

No timing is asserted (the machine is shared; the figures are for the benchmark runs to
quote): only that each benchmark completes, counts what it should and that every peer's
rows equal the simulator's truth.

The dlt peer is not run here: dlt (with pyarrow) lives only in the benchmark's own
venv (requirements-bench.txt), never in the test environment; bench/throughput.py
checks its rows against the truth every time it runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # bench/ is a folder of scripts, not an installed package
    sys.path.insert(0, str(ROOT))

from bench import fleet, ratelimit, throughput  # noqa: E402
from fanout.simulator import SimConfig, Universe  # noqa: E402
from fanout_core.stages import STAGES  # noqa: E402

TINY = SimConfig.from_size("tiny")
TINY_CALLS = Universe(TINY).expected_calls(100)
TINY_ROWS = sum(1 for _ in Universe(TINY).expected_rows())


def run_json(main: Any, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def check_peer(peer: dict[str, Any]) -> None:
    assert peer["rows"] == TINY_ROWS
    assert peer["rows_exact"], peer["verify"]
    assert peer["verify"]["rows_found"] == TINY_ROWS
    assert peer["calls"] == TINY_CALLS
    for figure in ("wall_s", "calls_per_s", "cpu_s_per_1k_calls", "peak_rss_mb", "x_fanout"):
        assert isinstance(peer[figure], int | float) and peer[figure] > 0, figure
    assert peer["files"] == peer["verify"]["files_found"] > 0


@pytest.mark.slow
def test_throughput_fanout_and_plain_write_exactly_the_truth(capsys):
    argv = ["--size", "tiny", "--peers", "fanout,plain", "--processes", "2"]
    code, result = run_json(throughput.main, argv, capsys)
    assert code == 0
    assert result["concurrency"]["fanout_processes"] == 2
    assert result["expected"] == {"calls": TINY_CALLS, "rows": TINY_ROWS}
    peers = {p["peer"]: p for p in result["peers"]}
    assert set(peers) == {"fanout", "plain"}
    for peer in peers.values():
        check_peer(peer)
    assert peers["fanout"]["calls_reported"] == TINY_CALLS
    assert peers["fanout"]["details"]["processes"] == 2
    # The data groups were fetched by the worker processes, not by the peer's main process.
    assert peers["fanout"]["http_requests_main_process"] < TINY_CALLS
    assert peers["plain"]["http_requests_main_process"] == TINY_CALLS  # its own count is right
    assert peers["fanout"]["x_fanout"] == 1.0
    groups = TINY.warriors * TINY.troops_per_warrior * TINY.groups_per_troop
    assert peers["plain"]["files"] == groups  # one file per data group
    assert peers["fanout"]["files"] < groups  # units_per_task groups per file
    assert {t["target"] for t in result["targets"]} >= {"fanout wall <= 0.5 x plain wall"}


@pytest.mark.slow
def test_ratelimit_reports_paced_untold_and_unpaced_runs(capsys):
    code, result = run_json(ratelimit.main, ["--size", "tiny", "--rate", "400"], capsys)
    assert code == 0
    runs = {r["mode"]: r for r in result["runs"]}
    assert set(runs) == {"paced", "untold", "unpaced"}
    assert runs["paced"]["rate_told"] == 400 and runs["untold"]["rate_told"] == 100_000
    for r in runs.values():
        assert r["rows_exact"] and r["failures"] == 0, r["verify"]
        assert r["calls_needed"] == TINY_CALLS
        assert r["calls"] >= TINY_CALLS  # 429s and retries only add calls
        assert 0.0 <= r["throttled_share"] <= 1.0
        assert r["elapsed_s"] > 0 and r["ideal_s"] == round(TINY_CALLS / 400, 2)
    assert len(result["targets"]) == 6  # judged on the paced runs only


def test_ratelimit_shape_has_about_the_calls_asked_for():
    for calls in (4_000, 20_000):
        config = ratelimit.shape(calls, None, 0.5, 200.0, None)
        assert abs(Universe(config).expected_calls(100) - calls) <= ratelimit.CALLS_PER_WARRIOR / 2


def test_fleet_runs_a_tiny_tree_as_static_and_adaptive_fleets(capsys):
    argv = ["--size", "tiny", "--rate", "100", "--cold-start-s", "0.01", "--latency-ms", "1", "5"]
    argv += ["--runs", "dev:static,prod:adaptive:data_groups=3,weights=1/1/1"]
    code, result = run_json(fleet.main, argv, capsys)
    assert code == 0
    runs = {r["run"]: r for r in result["runs"]}
    assert set(runs) == {"dev:static", "prod:adaptive:data_groups=3,weights=1/1/1"}
    assert runs["dev:static"]["reserved"] == {
        "warriors": 4,
        "troops": 8,
        "data_groups": 16,
    }  # scaled by R 100 / 50
    varied = runs["prod:adaptive:data_groups=3,weights=1/1/1"]
    assert varied["reserved"]["data_groups"] == 3 and varied["weights"]["data_groups"] == 1.0
    for r in runs.values():
        assert r["rows_exact"], r["verify"]
        assert r["calls"] >= TINY_CALLS == r["calls_needed"]
        assert 0 < r["accepted_vs_rate"] <= 1.2
        assert r["time_vs_ideal"] > 0 and r["instance_s"] > 0
        assert 1 <= sum(r["instances"].values()) <= sum(r["reserved"].values())
        assert all(r["instances"][s] <= r["reserved"][s] for s in r["reserved"])
    assert len(result["targets"]) == 6


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_fleet_settings_keep_each_instances_deployed_share_of_r(env):
    """R and every reservation (the retry consumers' too) scale together, so a static
    instance paces at the calls/s it would deployed (to the rounding of reservations)."""
    deployed = fleet.load_environment(env, fleet.CDK_JSON)
    scaled = fleet.fleet_settings(fleet.parse_run(f"{env}:static"), 200.0)
    for stage in ("troops", "data_groups"):
        assert scaled.instance_rate(stage) == pytest.approx(deployed.instance_rate(stage), rel=0.05)


def test_fleet_with_a_limit_told_too_high_measures_against_the_servers(capsys):
    argv = ["--size", "tiny", "--rate", "100", "--server-rate", "60", "--cold-start-s", "0.01"]
    argv += ["--latency-ms", "1", "5", "--runs", "dev:shared"]
    code, result = run_json(fleet.main, argv, capsys)
    assert code == 0
    (r,) = result["runs"]
    assert (result["rate_told"], result["server_rate"], r["rate_limit"], r["rate_told"]) == (100, 60, 60, 100)
    assert r["ideal_s"] == round(TINY_CALLS / 60, 2)
    assert r["reserved"]["data_groups"] == 16  # the fleet is shaped by the R it was told
    assert r["time_vs_ideal"] == pytest.approx(r["elapsed_s"] / r["ideal_s"], rel=0.01)  # both rounded
    accepted = r["calls"] - r["throttled"]
    assert r["accepted_vs_rate"] == pytest.approx(accepted / r["elapsed_s"] / 60, rel=0.01)
    assert r["rows_exact"], r["verify"]
    # the shared budget's writes (on 50 calls with cuts, no figure to hold), per call and judged
    assert r["budget_writes"] > 0
    assert r["budget_writes_per_call"] == round(r["budget_writes"] / r["calls"], 3)
    assert sum(r["budget_writes_by_kind"].values()) == r["budget_writes"]  # every write has its kind
    assert r["budget_writes_by_kind"]["lease"] > 0
    assert any(t["target"].startswith("budget writes <= 0.2 per call") for t in result["targets"])


def test_fleet_models_the_queue_engine_with_its_sqs_requests(capsys):
    argv = ["--size", "tiny", "--rate", "100", "--cold-start-s", "0.01", "--latency-ms", "1", "5"]
    argv += ["--runs", "dev:adaptive,dev-queue:adaptive"]
    code, result = run_json(fleet.main, argv, capsys)
    assert code == 0
    runs = {r["run"]: r for r in result["runs"]}
    events, queue = runs["dev:adaptive"], runs["dev-queue:adaptive"]
    assert (events["engine"], queue["engine"]) == ("s3_events", "queue")
    for r in (events, queue):
        assert r["rows_exact"], r["verify"]
        assert r["tasks"] > 1
    # No retry without faults: s3_events sends nothing to SQS; queue sends, receives and
    # deletes every task once.
    assert events["sqs_requests"] == 0
    assert queue["sqs_requests"] == 3 * queue["tasks"]


def test_s3_requests_counts_one_file_and_no_existence_check_per_first_leaf_attempt(tmp_path: Path) -> None:
    from bench import s3_requests

    result = s3_requests.measure("tiny", "dev", str(tmp_path))
    assert result["ok"] and result["api_calls"] == TINY_CALLS
    leaf_tasks = result["by_kind"]["task data_groups"]["GET"]
    assert result["by_kind"]["output"]["PUT"] == leaf_tasks > 0
    assert result["by_kind"]["output"]["LIST"] <= 1  # the runtime's own status at start, no task's
    assert "HEAD" not in result["by_kind"]["output"]
    assert result["put_plus_list"] == sum(
        row.get("PUT", 0) + row.get("LIST", 0) for row in result["by_kind"].values()
    )


def test_s3_requests_counts_an_existence_check_as_a_head_billed_as_a_get(tmp_path: Path) -> None:
    """``S3Storage.exists`` is a HeadObject: each task checks its done marker once, which is a
    GET on the bill, not a LIST."""
    from bench import s3_requests

    result = s3_requests.measure("tiny", "dev", str(tmp_path))
    done, tasks = (
        result["by_kind"]["done"],
        sum(row.get("GET", 0) for kind, row in result["by_kind"].items() if kind.startswith("task ")),
    )
    # LISTs of done/: the runtime's own start-of-run listing per stage, no task's.
    assert done["HEAD"] >= tasks > 0 and done.get("LIST", 0) <= len(STAGES)
    assert result["get"] == sum(row.get("GET", 0) + row.get("HEAD", 0) for row in result["by_kind"].values())


def test_fleet_splits_the_time_lost_against_r_into_start_middle_and_tail() -> None:
    """A run at R = 100: 2 s ramping (50 calls), 5 s at R (one 429 in it), a 2 s tail (60 calls)."""
    accepted = [0, 20, 50, 150, 250, 350, 450, 550, 590, 610]
    samples = [(float(t), n + (1 if t >= 4 else 0), 1 if t >= 4 else 0) for t, n in enumerate(accepted)]
    lost = fleet.lost_seconds(samples, 100.0)
    assert lost == {"start": 1.5, "middle": 0.0, "tail": 1.4, "start_at_r_s": 2.0}
    assert lost["start"] + lost["middle"] + lost["tail"] == pytest.approx(9 - 610 / 100)
