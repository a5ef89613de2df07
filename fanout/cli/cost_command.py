"""``fanout cost``: a run's bill on Lambda, estimated from its bucket, beside a server's."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fanout.cli.common import EXIT_OK, UsageError, add_settings_args, add_storage_args, open_run
from fanout_core import strict_json


def register(sub: Any) -> None:
    p = sub.add_parser(
        "cost",
        help="a run's estimated AWS bill (Lambda, S3, SQS, Secrets Manager, DynamoDB) beside a server's",
        description=(
            "Counts invocations, billed duration x memory, requests and bytes from the bucket "
            "(a local folder or a deployed bucket), prices them, and puts the same crawl on an "
            "on-demand and a Spot instance beside it. Method and prices: fanout/cost.py, docs/cost.md."
        ),
    )
    p.add_argument("run_id", help="the run id (the manifest's name without .json)")
    p.add_argument("--json", action="store_true", help="print the estimate as JSON")
    p.add_argument(
        "--price-region", help="region whose list prices to use (default: --env's region, else us-east-1)"
    )
    p.add_argument("--prices", metavar="FILE.json", help="override prices: a JSON object of name -> USD")
    add_storage_args(p)
    add_settings_args(p)
    p.set_defaults(run=_cost, env="dev")


def _cost(args: argparse.Namespace) -> int:
    from fanout.cost import count_run, estimate, prices_for, render_text, to_json
    from fanout.settings_files import find_settings
    from fanout_aws.sfn_starter import Batching

    storage, _where = open_run(args, args.run_id)
    settings = find_settings(args.env, args.config)
    overrides = None
    if args.prices:
        try:
            overrides = strict_json.loads(Path(args.prices).read_text())
        except (OSError, ValueError) as exc:
            raise UsageError(f"--prices {args.prices}: {exc}") from None
        if not isinstance(overrides, dict):
            raise UsageError("--prices must hold a JSON object of price name -> number")
    try:
        prices = prices_for(args.price_region or settings.region, overrides)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    counts = count_run(storage, args.run_id, settings)
    if not counts.stages[0].tasks:
        raise UsageError(f"run {args.run_id!r} has no tasks in this bucket")
    bill = estimate(
        counts,
        prices,
        settings.hermes_rate_limit,
        pacing=settings.pacing,
        engine=settings.engine,
        batching=Batching.of(settings),
    )
    print(json.dumps(to_json(bill), indent=2) if args.json else render_text(bill))
    return EXIT_OK
