"""``fanout cost`` for engine ``stepfunctions``: its transitions, batch invocations and no
SQS retries, on counts given by hand (the bucket counting itself is ``tests/e2e``'s)."""

from __future__ import annotations

from decimal import Decimal

from fanout.cost import (
    RunCounts,
    StageCounts,
    child_workflow_costs,
    estimate,
    prices_for,
    stepfunctions_transitions,
)


def _counts() -> RunCounts:
    # The seed and 2 parts; 9 troop tasks; 18 leaf tasks, 2 of them retried once.
    stages = [
        StageCounts("warriors", 512, 2, tasks=3, finished=3, invocations=3),
        StageCounts("troops", 512, 4, tasks=9, finished=9, invocations=9),
        StageCounts("data_groups", 512, 8, tasks=18, finished=18, invocations=20),
    ]
    return RunCounts("r", stages)


def test_transitions_are_the_parents_steps_each_childs_task_and_each_retry() -> None:
    # a task a child above the leaf: warriors 2 parts -> 2 children, troops 9 -> 9; the
    # leaf in batches of 4: data_groups 18 -> 5
    assert stepfunctions_transitions(_counts(), 4) == (1 + 3) + (2 + 9 + 5) + 2


def test_the_engine_adds_its_transitions_and_invokes_per_batch_without_sqs() -> None:
    prices = prices_for("us-east-1")
    plain = estimate(_counts(), prices, 50, pacing="static")
    sfn = estimate(_counts(), prices, 50, pacing="static", engine="stepfunctions", items_per_batch=4)
    lines = {li.component: li for li in sfn["lines"]}
    assert lines["Step Functions (est.)"].quantity == 22
    assert lines["Step Functions (est.)"].cost == 22 * Decimal("0.025") / 1000
    assert lines["Lambda requests"].quantity == 1 + 16 + 2  # the seed, 16 children, 2 retries
    assert lines["SQS retries"].quantity == 0
    assert not [li for li in plain["lines"] if li.component.startswith("Step Functions")]
    assert {li.component: li.quantity for li in plain["lines"]}["SQS retries"] == 3 * 2


def test_the_talks_run_priced_as_standard_and_as_express_children() -> None:
    """The figures of docs/engines.md: 51,051 calls, 50 warrior parts (and the seed), 1,000 troop
    tasks, 5,000 leaf tasks, a task a child above the leaf and leaf batches of 4, ~8,200 s
    of Lambda time, no retries."""
    costs = child_workflow_costs([1 + 50, 1000, 5000], 4, Decimal(8200), 0, prices_for("us-east-1"))
    assert (costs["children"], costs["transitions"]) == (50 + 1000 + 1250, 2304)
    assert round(costs["standard"], 4) == Decimal("0.0576")
    assert round(costs["express"], 3) == Decimal("0.011")
    assert costs["express"] < costs["standard"]


def test_this_versions_task_sizes_priced_as_standard_and_as_express_children() -> None:
    """docs/engines.md's figures at ``units_per_task`` 10, 20, 50: 5 warrior parts (and the
    seed), 50 troop tasks, 1,000 leaf tasks; Standard is the cheaper one."""
    costs = child_workflow_costs([1 + 5, 50, 1000], 4, Decimal(8200), 0, prices_for("us-east-1"))
    assert (costs["children"], costs["transitions"]) == (5 + 50 + 250, 309)
    assert round(costs["standard"], 4) == Decimal("0.0077")
    assert round(costs["express"], 4) == Decimal("0.0088")
