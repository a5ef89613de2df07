"""``fanout demo --env E``: a crawl of the simulator in E's task shapes, so that ``fanout cost``
prices the tasks E's functions would write, while the simulator, rate and retry timing
stay the demo's own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fanout.cost import count_run, estimate, prices_for
from fanout.demo import demo_settings
from fanout.settings_files import find_settings
from fanout_core.storage import LocalDirStorage

from .conftest import ROOT


def test_demo_env_takes_the_environments_task_shapes_and_keeps_the_demos_rate_and_retries() -> None:
    dev, local = find_settings("dev"), find_settings("local")
    settings = demo_settings("dev", None)
    assert settings.name == "dev"
    assert settings.stages == dev.stages  # units_per_task, concurrency caps, weights, timeouts
    assert settings.max_attempts == dev.max_attempts
    assert settings.hermes_page_size == dev.hermes_page_size
    kept = ("hermes_url", "hermes_rate_limit", "hermes_rate_start", "retry_base_delay_s", "retry_max_delay_s")
    assert {n: getattr(settings, n) for n in kept} == {n: getattr(local, n) for n in kept}
    assert (settings.pacing, settings.token_secret_name) == (local.pacing, local.token_secret_name)


def test_demo_without_env_runs_with_the_local_environment_as_it_is() -> None:
    assert demo_settings("local", None) == find_settings("local")


def test_a_dev_shaped_demo_writes_devs_tasks_and_cost_counts_their_requests(tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    demo = ["demo", "--size", "tiny", "--env", "dev", "--run-id", "d", "--bucket-dir", str(bucket)]
    done = subprocess.run(
        [sys.executable, "-m", "fanout", *demo, "--processes", "1", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert f"fanout cost d --bucket-dir {bucket} --env dev" in done.stdout

    # tiny: 3 warriors x 3 troops x 4 groups. dev: 10 warriors and 20 troops a task, so one
    # part of the seed and one troops task per warrior (local's 1 a task: 3 parts, 9 tasks).
    counts = count_run(LocalDirStorage(bucket), "d", find_settings("dev"))
    assert [(s.tasks, s.invocations) for s in counts.stages] == [(1 + 1, 2), (3, 3), (9, 9)]
    listing_tasks, leaves = 2 + 3, 9
    lists = 0  # done-marker and plan checks are HEADs, billed as GETs (docs/cost.md)
    children = 1 + 3 + 9  # the seed's part, the troops tasks, the data_groups tasks
    puts = (listing_tasks + leaves) + listing_tasks + children + leaves + 1 + (1 + 1 + 2)
    bill = estimate(counts, prices_for("us-east-1"), rate_limit=50, pacing="shared")
    lines = {li.component: li.quantity for li in bill["lines"]}
    assert lines["S3 PUT + LIST"] == puts + lists == 46
    assert lines["Lambda requests"] == 14

    shown = subprocess.run(
        [sys.executable, "-m", "fanout", "cost", "d", "--bucket-dir", str(bucket), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["stages"]["troops"]["tasks"] == 3
    assert {c["component"]: c["quantity"] for c in doc["components"]}["S3 PUT + LIST"] == 46
