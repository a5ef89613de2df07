"""``local run``'s pacing and settings flags, through the real CLI against the simulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fanout.audit import compare, output_rows
from fanout.simulator import HermesSimulator, SimConfig, Universe
from fanout.simulator.stats import SimStats
from fanout_core.storage import LocalDirStorage

from .conftest import TOKEN, fanout_cli

TINY = SimConfig.from_size("tiny", token=TOKEN)
SERVER_R = 25.0
R = 20.0
"""Paced a little under the server's limit: on a loaded machine a thread that stalls between
its turn and its send shortens the next gap, and the server's bucket holds only 2."""


def _run(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    manifest = tmp_path / "paced.json"
    manifest.write_text(json.dumps({"warriors": "all"}))
    proc = fanout_cli(
        "local", "run", str(manifest), "--bucket-dir", str(tmp_path / "b"), "--quiet", *args, env=env
    )
    _out, err = proc.communicate(timeout=120)
    return proc.returncode, err


def _data_files(tmp_path: Path) -> int:
    return sum(1 for k in LocalDirStorage(tmp_path / "b").list("data/") if k.endswith(".parquet"))


def _crawl_against_a_limited_server(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> SimStats:
    with HermesSimulator(SimConfig.from_size("tiny", token=TOKEN, rate_limit=SERVER_R, rate_burst=2)) as sim:
        code, err = _run(tmp_path, "--hermes-url", sim.url, "--no-compact", *args, env=env)
        assert code == 0, err
        return sim.stats


@pytest.mark.parametrize(
    ("args", "env"),
    [((f"--rate-limit={R}",), None), ((), {"FANOUT_RATE_LIMIT": str(R)})],
    ids=["--rate-limit", "FANOUT_RATE_LIMIT"],
)
def test_local_run_paces_to_the_rate_limit_it_is_given(tmp_path: Path, args, env):
    """The local env allows 100,000 calls/s; paced to the server's R, almost nothing is refused
    (a few at the start, where the two budgets' clocks differ)."""
    stats = _crawl_against_a_limited_server(tmp_path, *args, env=env)
    assert stats.rate_limited <= 5, stats
    assert stats.pages_served >= 49


def test_a_run_without_pacing_against_the_same_server_is_refused_often(tmp_path: Path):
    """The contrast that makes the test above mean something (--no-pacing: since adaptive
    pacing, a run without --rate-limit finds the limit by itself)."""
    stats = _crawl_against_a_limited_server(tmp_path, "--no-pacing")
    assert stats.rate_limited > 10, stats


def test_a_bad_rate_limit_in_the_environment_variable_is_a_usage_error(tmp_path: Path):
    code, err = _run(tmp_path, "--hermes-url", "http://127.0.0.1:9", env={"FANOUT_RATE_LIMIT": "-3"})
    assert code == 2
    assert "FANOUT_RATE_LIMIT" in err and "Traceback" not in err


def test_a_config_naming_one_setting_keeps_the_environments_others(tmp_path: Path):
    """Only hermes_rate_limit in the file: units_per_task stays the local env's 50, so one
    file per troop (9), not one per data group (36)."""
    config = tmp_path / "pace.json"
    config.write_text(json.dumps({"hermes_rate_limit": 5000}))
    with HermesSimulator(TINY) as sim:
        code, err = _run(tmp_path, "--hermes-url", sim.url, "--config", str(config), "--no-compact")
    assert code == 0, err
    assert _data_files(tmp_path) == TINY.warriors * TINY.troops_per_warrior


def test_without_hermes_url_the_environments_url_is_used(tmp_path: Path):
    with HermesSimulator(TINY) as sim:
        config = tmp_path / "cdk.json"
        config.write_text(json.dumps({"context": {"environments": {"local": {"hermes_url": sim.url}}}}))
        code, err = _run(tmp_path, "--config", str(config), "--no-compact")
        pages = sim.stats.pages_served
    assert code == 0, err
    assert pages >= 49
    assert _data_files(tmp_path) == TINY.warriors * TINY.troops_per_warrior


def test_a_run_against_a_server_refusing_a_share_whatever_the_rate_finishes(tmp_path: Path):
    """Issue 25: 80 calls/s and every 5th call refused (Retry-After: 1) whatever the rate.
    The adaptive pacing (R not told) cut at each of those 429s, down to 0.6 calls/s: a
    ~200-call crawl was still running after 400 s (121 s for 181 calls on the 2-core test
    machine, 1.5 calls/s). Now it learns they are not its own: about 25 s there, so the
    hang guard leaves four times that."""
    config = SimConfig(
        token=TOKEN,
        warriors=4,
        troops_per_warrior=4,
        groups_per_troop=12,
        records_per_group=5,
        rate_limit=80.0,
        refuse_share=0.2,
    )
    assert 200 <= Universe(config).expected_calls(100) <= 220
    manifest = tmp_path / "refused.json"
    manifest.write_text(json.dumps({"warriors": "all"}))
    with HermesSimulator(config) as sim:
        bucket = str(tmp_path / "b")
        proc = fanout_cli("local", "run", str(manifest), "--hermes-url", sim.url, "--bucket-dir", bucket)
        try:
            _out, err = proc.communicate(timeout=100)  # a hang guard, not a speed target
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert sim.stats.refused_share > 0
    assert proc.returncode == 0, err
    rows, _ = output_rows(LocalDirStorage(tmp_path / "b"), "refused")
    comparison = compare(rows, Universe(config).expected_rows())
    assert comparison.exact, comparison.summary()
