"""Forecast accuracy: does ``fanout plan``'s range hold the real call count?

``python -m bench.forecast [--size full] [--seeds 10] [--trees uniform,skewed,tailed] [--json]``

For each tree and each of ``--seeds`` simulator seeds (the plan's own random draw takes
the same seed), a simulator serves the tree in process, ``fanout.plan`` samples it through
the real Hermes client (unpaced: the sample's calls are counted, not timed) and its
forecast is compared with the simulator's truth, ``Universe.expected_calls``. Trees:
``uniform``, the size preset as it is; ``skewed``, the first warrior with 50x the troops
of the others (``heavy_first_warrior``); ``tailed``, data-group sizes heavy-tailed
(Pareto, ``heavy_tailed_records``). Figures per tree: how many ranges hold the actual
count, the point estimate's error (mean and worst, in %), the range's width, and the
sampling cost (calls, and as a share of the actual count).
Targets (issue 23): the range holds the actual count in >= 9 of 10 seeds on every tree;
the uniform tree's point estimate within +-15 %.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from typing import Any

from fanout import plan
from fanout.simulator import HermesSimulator, SimConfig, Universe
from fanout_core.api_client import ApiClient, CallStats
from fanout_core.api_description import builtin

TREES: dict[str, dict[str, Any]] = {
    "uniform": {},
    "skewed": {"heavy_first_warrior": 50},
    "tailed": {"heavy_tailed_records": True},
}
PAGE_SIZE = 100


def one(size: str, tree: str, seed: int, max_calls: int) -> dict[str, Any]:
    """One forecast against its truth."""
    config = SimConfig.from_size(size, seed=seed, **TREES[tree])
    actual = Universe(config).expected_calls(PAGE_SIZE)
    api = builtin()
    with HermesSimulator(config) as sim:
        client = ApiClient(api, sim.url, config.token, page_size=PAGE_SIZE, stats=CallStats())
        sample = plan.take_sample(api, client, None, max_calls=max_calls, rng=random.Random(seed))
    fc = plan.forecast_of(api, sample, seed=seed)
    c = fc.calls
    return {
        "tree": tree,
        "seed": seed,
        "actual": actual,
        "estimate": round(c.estimate),
        "low": round(c.low),
        "high": round(c.high),
        "held": c.low <= actual <= c.high,
        "error_pct": round(100 * (c.estimate - actual) / actual, 2),
        "width_pct": round(100 * (c.high - c.low) / actual, 2),
        "sample_calls": sample.calls,
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    errors = [abs(r["error_pct"]) for r in runs]
    return {
        "seeds": len(runs),
        "held": sum(r["held"] for r in runs),
        "mean_abs_error_pct": round(sum(errors) / len(errors), 2),
        "worst_abs_error_pct": max(errors),
        "mean_width_pct": round(sum(r["width_pct"] for r in runs) / len(runs), 2),
        "sample_calls_mean": round(sum(r["sample_calls"] for r in runs) / len(runs), 1),
        "sample_share_pct": round(100 * sum(r["sample_calls"] / r["actual"] for r in runs) / len(runs), 3),
        "actual_calls": sorted({r["actual"] for r in runs}),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.forecast", description=__doc__.split("\n")[0])
    p.add_argument("--size", default="full", choices=("tiny", "demo", "full"))
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--trees", default=",".join(TREES))
    p.add_argument("--max-sample-calls", type=int, default=plan.DEFAULT_MAX_CALLS)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    trees = [t for t in args.trees.split(",") if t]
    unknown = [t for t in trees if t not in TREES]
    if unknown:
        p.error(f"unknown tree {unknown[0]!r}; choose from {', '.join(TREES)}")
    figures: dict[str, Any] = {"size": args.size, "trees": {}}
    for tree in trees:
        runs = [one(args.size, tree, seed, args.max_sample_calls) for seed in range(1, args.seeds + 1)]
        figures["trees"][tree] = {**summarise(runs), "runs": runs}
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"forecast accuracy at size {args.size}, {args.seeds} seeds per tree")
    print(f"  {'tree':<8} {'held':>6} {'mean err %':>10} {'worst %':>8} {'width %':>8} {'sample calls':>12}")
    for tree, f in figures["trees"].items():
        print(
            f"  {tree:<8} {f['held']:>3}/{f['seeds']:<2} {f['mean_abs_error_pct']:>10} "
            f"{f['worst_abs_error_pct']:>8} {f['mean_width_pct']:>8} "
            f"{f['sample_calls_mean']:>7} ({f['sample_share_pct']} %)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
