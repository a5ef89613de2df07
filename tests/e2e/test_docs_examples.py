"""The examples of docs/operating.md, run as a user would paste them, in order, in one folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fanout.simulator import SimConfig, Universe

from .conftest import ROOT, TOKEN
from .doc_blocks import blocks

EXAMPLES = blocks("example", ROOT / "docs" / "operating.md")


def _run(argv: list[str], cwd: Path, url: str) -> subprocess.CompletedProcess[str]:
    """A block in a fresh shell whose ``fanout`` is this checkout's, with the user's two variables set."""
    env = {
        **os.environ,
        "HERMES_URL": url,
        "HERMES_TOKEN": TOKEN,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'lambdas'}",
    }
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_operating_guide_runs_a_crawl_finds_its_failure_redrives_and_queries_it(simulator, tmp_path):
    clean = SimConfig.from_size("tiny", token=TOKEN, awkward_ids=True)
    universe = Universe(clean)
    troop = universe.troops(universe.warriors()[0]["warrior_id"])[0]["troop_id"]
    broken = simulator(
        SimConfig.from_size("tiny", token=TOKEN, awkward_ids=True, not_found_ids=frozenset({troop}))
    )
    assert list(EXAMPLES) == ["first_run", "find_failures", "query"]

    first = _run(["bash", "-c", EXAMPLES["first_run"]], tmp_path, broken)
    assert first.returncode == 1, first.stderr  # the 404 troop: one failure record
    assert "not_found" in first.stdout and "fanout redrive 2026-11-27" in first.stderr

    fixed = _run(["bash", "-c", EXAMPLES["find_failures"]], tmp_path, simulator(clean))
    assert fixed.returncode == 0, fixed.stderr  # the last command: status of the complete run
    assert f"unit {troop}  not_found  HTTP 404" in fixed.stdout  # what `fanout failures` listed
    assert fixed.stdout.rstrip().endswith("complete: yes")

    query = _run([sys.executable, "-c", EXAMPLES["query"]], tmp_path, "unused")
    assert query.returncode == 0, query.stderr
    rows = list(universe.expected_rows())
    groups = len({r[3] for r in rows})
    lines = query.stdout.splitlines()
    assert lines[0] == "left to infer, run is a DATE"
    assert lines[1] == f"[('2026-11-27', 'VARCHAR', {len(rows)}, {groups})]"
    assert lines[2] == f"pandas: {len(rows)} rows of run ['2026-11-27']"
