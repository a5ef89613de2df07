"""Several ``fanout local run`` of one manifest at once (a cron job overlapping a manual run):
each exits 0 with no traceback, the rows are exact, and the run is compacted exactly once."""

from __future__ import annotations

import json
from pathlib import Path

from fanout.audit import compare, output_rows
from fanout.simulator import SimConfig, Universe
from fanout_core.compaction import read_current, small_files
from fanout_core.storage import LocalDirStorage

from .conftest import TOKEN, fanout_cli


def test_three_local_runs_of_one_manifest_at_once_all_exit_0_and_leave_one_generation(
    simulator, tmp_path: Path
):
    config = SimConfig.from_size("tiny", token=TOKEN, latency_s=0.01)
    url = simulator(config)
    bucket = tmp_path / "b"
    manifest = tmp_path / "overlap.json"
    manifest.write_text(json.dumps({"warriors": "all"}))
    argv = ["local", "run", str(manifest), "--hermes-url", url, "--bucket-dir", str(bucket), "--quiet"]

    procs = [fanout_cli(*argv) for _ in range(3)]
    outcomes = [(p, *p.communicate(timeout=300)) for p in procs]

    for proc, _out, err in outcomes:
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    store = LocalDirStorage(bucket)
    rows, _files = output_rows(store, "overlap")
    assert compare(rows, Universe(config).expected_rows()).exact
    current = read_current(store, "overlap")
    assert current is not None and current["generation"] == 1
    assert small_files(store, "overlap") == []
    assert sorted(store.list("data/run=overlap/")) == sorted(f["key"] for f in current["files"])
