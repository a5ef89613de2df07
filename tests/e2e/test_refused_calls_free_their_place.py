"""A local run against a server that refuses a share of the calls whatever the rate: a leaf
task waiting out a refused call's Retry-After gives its place to another task, in the
runtime's own threads and in worker processes, and nothing is lost."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fanout.audit import compare, output_rows
from fanout.bucket import StorageSpec
from fanout.simulator import HermesSimulator, SimConfig, Universe
from fanout.start_run import start_run
from fanout_core.bodies import manifest_body
from fanout_core.storage import LocalDirStorage

from .conftest import TOKEN, fast_settings

GROUP = re.compile(r"GET (/v1/warriors/[^/]+/troops/[^/]+/data_groups/[^/]+)/data\?")


def _interleaved(lines: tuple[str, ...]) -> bool:
    """Whether some data group's record calls (a refused one and its retry) have another
    group's call between them: another task was at work while it waited."""
    groups = [m.group(1) for line in lines if (m := GROUP.search(line))]
    seen_done: set[str] = set()
    for i, group in enumerate(groups):
        if group in seen_done:
            return True
        if i + 1 < len(groups) and groups[i + 1] != group:
            seen_done.add(group)
    return False


@pytest.mark.parametrize("processes", [1, 2])
def test_a_leaf_task_waiting_out_a_retry_after_gives_its_place_to_another(tmp_path: Path, processes: int):
    # One place at work; half the calls refused with Retry-After 1. Before: the one
    # leaf thread slept through each refusal and the next group waited for it.
    config = SimConfig.from_size("tiny", token=TOKEN, refuse_share=0.5, request_log_size=10_000)
    settings = fast_settings(
        stages={"data_groups": {"reserved_concurrency": 1, "units_per_task": 1}},
        max_attempts=10,
    )
    store = LocalDirStorage(tmp_path)
    with HermesSimulator(config) as sim:
        outcome = start_run(
            store,
            settings,
            run_id="r1",
            manifest=manifest_body(None),
            hermes_url=sim.url,
            token=TOKEN,
            pacing=False,
            processes=processes,
            storage_spec=StorageSpec(bucket_dir=str(tmp_path)),
        )
        stats = sim.stats
    assert stats.refused_share > 0
    assert _interleaved(stats.recent_requests)
    assert outcome.report.ok
    rows, _ = output_rows(store, "r1")
    comparison = compare(rows, Universe(config).expected_rows())
    assert comparison.exact, comparison.summary()
