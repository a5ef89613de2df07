"""The fleet bench models engine ``stepfunctions`` end to end at a tiny size: rows exact,
the state machine's dispatch counted (child workflows in batches, transitions), no SQS.
No timing is asserted."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # bench/ is a folder of scripts, not an installed package
    sys.path.insert(0, str(ROOT))

from bench import fleet  # noqa: E402
from fanout_aws.sfn_starter import SIZING_TRANSITIONS, stage_batch_size  # noqa: E402
from fanout_core.stages import STAGES  # noqa: E402


def test_fleet_runs_a_tiny_tree_through_the_map_engine(capsys) -> None:
    argv = ["--size", "tiny", "--rate", "100", "--cold-start-s", "0.01", "--latency-ms", "1", "5"]
    code = fleet.main([*argv, "--runs", "dev-sfn:shared", "--json"])
    (run,) = json.loads(capsys.readouterr().out)["runs"]
    assert code == 0 and run["engine"] == "stepfunctions"
    assert run["rows_exact"], run["verify"]
    assert run["sqs_requests"] == 0
    settings = fleet.load_environment("dev-sfn", fleet.CDK_JSON)
    units = [settings.stage(s).units_per_task for s in ("warriors", "troops", "data_groups")]
    # every task but the seed runs in a child; the tiny tree (3 warriors x 3 troops x 4
    # groups) in the environment's task sizes: the seed's parts, one warrior's troops a
    # task at most, one troop's groups a task at most; a task a child above the leaf, as
    # the definition's ItemBatcher says
    tasks = (math.ceil(3 / units[0]), 3 * math.ceil(3 / units[1]), 9 * math.ceil(4 / units[2]))
    scaled = fleet.fleet_settings(fleet.parse_run("dev-sfn:shared"), 100)  # the caps at --rate 100
    per_batch = stage_batch_size(scaled, STAGES.leaf, tasks[2])
    assert run["child_workflows"] == tasks[0] + tasks[1] + math.ceil(tasks[2] / per_batch)
    assert [run["map_timeline"][s]["batch"] for s in ("warriors", "troops")] == [1, 1]
    assert run["map_timeline"]["data_groups"]["batch"] == per_batch
    assert run["state_transitions"] >= 1 + 3 + SIZING_TRANSITIONS + run["child_workflows"]
    assert all(run["instances"][s] <= run["reserved"][s] for s in run["reserved"])


def test_the_text_report_prints_each_maps_timeline(capsys) -> None:
    argv = ["--size", "tiny", "--rate", "100", "--cold-start-s", "0.01", "--latency-ms", "1", "5"]
    assert fleet.main([*argv, "--runs", "dev-sfn:shared"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["run", "map", "start"])
    maps = [line.split()[1] for line in lines[header + 2 : header + 6]]
    assert maps == ["seed", "warriors", "troops", "data_groups"]
