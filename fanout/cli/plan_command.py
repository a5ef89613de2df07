"""``fanout plan``: a forecast of a manifest's calls, rows, time and cost from a small sample."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from fanout.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    add_settings_args,
    add_storage_args,
    one_line,
    positive_int,
    storage_from_args,
)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "plan",
        help="forecast a manifest's calls (with a 90%% range), rows, time at R and cost, from a sample",
        description=(
            "Lists the first level as the seed would, lists a bounded random sample of units "
            "below it (paced at the environment's R; at most --max-sample-calls calls and "
            "about 1%% of the estimate) and extrapolates per level. Writes nothing. "
            "Method: fanout/plan.py; --json shape: docs/json-output.md."
        ),
    )
    p.add_argument("manifest", help="manifest file (as for local run)")
    p.add_argument("--api", metavar="FILE", help="the API description (default: the built-in Hermes)")
    p.add_argument(
        "--hermes-url",
        "--api-url",
        dest="hermes_url",
        help="the API's base URL (default: --env's hermes_url); secret from the description's variable",
    )
    p.add_argument("--json", action="store_true", help="print the forecast as JSON")
    p.add_argument(
        "--max-sample-calls",
        type=positive_int,
        default=200,
        metavar="N",
        help="most calls the sample may make (default 200)",
    )
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    add_settings_args(p)
    add_storage_args(p)  # where a limit learned by an earlier run is kept
    p.set_defaults(run=_plan)


def _plan(args: argparse.Namespace) -> int:
    import random

    from fanout import plan
    from fanout.cost import prices_for
    from fanout.preflight import check_usage
    from fanout.settings_files import find_settings
    from fanout_core import api_description
    from fanout_core.bodies import parse_manifest
    from fanout_core.errors import BadManifest, FanoutError
    from fanout_core.stages import table_for

    try:
        api = api_description.load(args.api) if args.api else api_description.builtin()
    except (OSError, ValueError) as exc:
        raise UsageError(f"--api {args.api}: {exc}") from None
    try:
        body = Path(args.manifest).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read manifest {args.manifest}: {exc.strerror}") from None
    try:
        manifest = parse_manifest(body, api)
    except BadManifest as exc:
        print(f"fanout: bad manifest: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    settings = find_settings(args.env, args.config)
    secret = os.environ.get(api.auth.env or "", "") if api.auth.type != "none" else ""
    url = check_usage(args.hermes_url or settings.hermes_url, secret or "none")
    client = _client(api, settings, url, secret)
    try:
        sample = plan.take_sample(
            api,
            client,
            None if manifest.ids is None else [str(i) for i in manifest.ids],
            max_calls=args.max_sample_calls,
            rng=random.Random(args.seed),
        )
    except FanoutError as exc:
        print(f"fanout: plan: {one_line(exc)}", file=sys.stderr)
        return 1
    fc = plan.forecast_of(api, sample)
    rate = settings.hermes_rate_limit
    try:
        prices = prices_for(settings.region)
    except ValueError:
        prices = prices_for(None)
    bills = plan.costs(fc, settings, prices, table_for(api))
    kept = _learned(args, url)
    if args.json:
        print(json.dumps(plan.to_json(fc, rate, bills, kept), indent=2))
    else:
        print(plan.render_text(fc, rate, bills, kept))
    return EXIT_OK


def summary_before_run(
    api: Any, manifest: bytes, settings: Any, url: str, token: str
) -> tuple[str, float | None]:
    """``local run --plan``: the plan's one line (or why there is none; the run goes on) and
    its estimate of the calls, which the live display's ETA starts from."""
    import random

    from fanout import plan
    from fanout_core.bodies import parse_manifest
    from fanout_core.errors import FanoutError

    ids = parse_manifest(manifest, api).ids
    client = _client(api, settings, url, token)
    first = None if ids is None else [str(i) for i in ids]
    try:
        sample = plan.take_sample(api, client, first, max_calls=plan.DEFAULT_MAX_CALLS, rng=random.Random(0))
    except FanoutError as exc:
        return f"none: the sample failed ({one_line(exc)})", None
    fc = plan.forecast_of(api, sample)
    return plan.summary_line(fc, settings.hermes_rate_limit), fc.calls.estimate


def _learned(args: argparse.Namespace, url: str) -> Any:
    """The limit an earlier run learned against ``url`` (None: none, or the bucket unreadable)."""
    from fanout import learned_limit
    from fanout_core.errors import StorageFault

    storage, _where = storage_from_args(args, faults=False)
    try:
        return learned_limit.read(storage, url)
    except StorageFault:
        return None


def _client(api: Any, settings: Any, url: str, secret: str) -> Any:
    """The run's own client for ``api``, paced never faster than the environment's R."""
    from fanout_core.api_client import CallStats
    from fanout_core.assembly import hermes_client
    from fanout_core.pacing import Pacer

    pacer = Pacer(settings.hermes_rate_limit)
    return hermes_client(
        settings, url=url, token=secret, pacer=pacer, stats=CallStats(), pool_size=1, api=api
    )
