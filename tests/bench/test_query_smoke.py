"""bench/query.py runs end to end at the tiny size: identical results before and after
compaction, one file after, the run id read as text. No timing is asserted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import query  # noqa: E402
from fanout.simulator import SimConfig, Universe  # noqa: E402


def test_query_bench_compares_identical_results(capsys: pytest.CaptureFixture[str]) -> None:
    query.main(["--size", "tiny", "--repeat", "1", "--json"])
    figures = json.loads(capsys.readouterr().out)
    assert figures["rows"] == sum(1 for _ in Universe(SimConfig.from_size("tiny")).expected_rows())
    assert figures["files_before"] == 9 and figures["files_after"] == 1
    assert all(q["identical"] for q in figures["queries"].values())
    assert all(q["glob_identical"] for q in figures["queries"].values())  # data/run=<run>/ reads alike
    assert figures["queries"]["count(*)"]["result"] == [[figures["rows"]]]
    assert figures["run_id_types"]["run= folder, inferred"] == "DATE"
    assert figures["run_id_types"]["run_id column"].startswith("VARCHAR")
