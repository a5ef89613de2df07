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


def test_fleet_runs_a_tiny_tree_through_the_map_engine(capsys) -> None:
    argv = ["--size", "tiny", "--rate", "100", "--cold-start-s", "0.01", "--latency-ms", "1", "5"]
    code = fleet.main([*argv, "--runs", "dev-sfn:shared", "--json"])
    (run,) = json.loads(capsys.readouterr().out)["runs"]
    assert code == 0 and run["engine"] == "stepfunctions"
    assert run["rows_exact"], run["verify"]
    assert run["sqs_requests"] == 0
    per_batch = fleet.load_environment("dev-sfn", fleet.CDK_JSON).items_per_batch
    # every task but the seed runs in a child; the tiny tree's stages: 3 parts, 9, 9 tasks
    assert run["child_workflows"] == sum(math.ceil(n / per_batch) for n in (3, 9, 9))
    assert run["state_transitions"] >= 1 + 3 + run["child_workflows"]
    assert all(run["instances"][s] <= run["reserved"][s] for s in run["reserved"])
