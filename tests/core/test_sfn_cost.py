"""``fanout cost`` for engine ``stepfunctions``: its transitions, batch invocations and no
SQS retries, on counts given by hand (the bucket counting itself is ``tests/e2e``'s)."""

from __future__ import annotations

from decimal import Decimal

from fanout.cost import (
    Batching,
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
    # leaf's 18 tasks on a cap of 8 in batches of ceil(18 / 8) = 3 (at most 4): 6 children;
    # the parent: the seed, 3 Maps, the leaf's count, choice and size
    assert stepfunctions_transitions(_counts(), Batching(4, 8)) == (1 + 3 + 3) + (2 + 9 + 6) + 2


def test_the_leafs_children_fill_its_cap_once_up_to_items_per_batch() -> None:
    leaf = [s.tasks for s in _counts().stages][-1]
    assert [Batching(4, cap).size(leaf, fans_out=False) for cap in (1, 5, 8, 18, 40)] == [4, 4, 3, 1, 1]
    assert Batching(4, 8).size(leaf, fans_out=True) == 1


def test_the_engine_adds_its_transitions_and_invokes_per_batch_without_sqs() -> None:
    prices = prices_for("us-east-1")
    plain = estimate(_counts(), prices, 50, pacing="static")
    sfn = estimate(_counts(), prices, 50, pacing="static", engine="stepfunctions", batching=Batching(4, 8))
    lines = {li.component: li for li in sfn["lines"]}
    assert lines["Step Functions (est.)"].quantity == 26
    assert lines["Step Functions (est.)"].cost == 26 * Decimal("0.025") / 1000
    assert lines["Lambda requests"].quantity == 1 + 17 + 2  # the seed, 17 children, 2 retries
    assert lines["SQS retries"].quantity == 0
    assert not [li for li in plain["lines"] if li.component.startswith("Step Functions")]
    assert {li.component: li.quantity for li in plain["lines"]}["SQS retries"] == 3 * 2


def test_the_talks_run_priced_as_standard_and_as_express_children() -> None:
    """The figures of docs/engines.md: 51,051 calls, 50 warrior parts (and the seed), 1,000 troop
    tasks, 5,000 leaf tasks, a task a child above the leaf and prod-sfn's leaf (a cap of
    100, at most 25 a child: the count stops at 1,000, so 10 a child), ~8,200 s of Lambda
    time, no retries."""
    costs = child_workflow_costs(
        [1 + 50, 1000, 5000], Batching(25, 100), Decimal(8200), 0, prices_for("us-east-1")
    )
    assert (costs["children"], costs["transitions"]) == (50 + 1000 + 500, 1557)
    assert round(costs["standard"], 4) == Decimal("0.0389")
    assert round(costs["express"], 4) == Decimal("0.0101")
    assert costs["express"] < costs["standard"]


def test_this_versions_task_sizes_priced_as_standard_and_as_express_children() -> None:
    """docs/engines.md's figures at ``units_per_task`` 10, 20, 50: 5 warrior parts (and the
    seed), 50 troop tasks, 1,000 leaf tasks in prod-sfn's batches (one wave of 100
    children) and in dev-sfn's (a cap of 8, at most 32 a child: 32 children); Standard is
    the cheaper one."""
    prod = child_workflow_costs(
        [1 + 5, 50, 1000], Batching(25, 100), Decimal(8200), 0, prices_for("us-east-1")
    )
    assert (prod["children"], prod["transitions"]) == (5 + 50 + 100, 162)
    assert prod["standard"] == Decimal("0.00405")
    assert round(prod["express"], 4) == Decimal("0.0087")
    dev = child_workflow_costs([1 + 5, 50, 1000], Batching(32, 8), Decimal(8200), 0, prices_for("us-east-1"))
    assert (dev["children"], dev["transitions"]) == (5 + 50 + 32, 94)
    assert dev["standard"] < prod["standard"] < prod["express"]
