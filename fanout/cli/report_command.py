"""``fanout report``: a self-contained HTML page of a run (calls/s against R, queue depth,
failures, cost), drawn from the bucket with matplotlib."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fanout.cli.common import EXIT_OK, UsageError, add_settings_args, add_storage_args, storage_from_args
from fanout_core.keys import RUN_ID_RE


def register(sub: Any) -> None:
    p = sub.add_parser("report", help="write a self-contained HTML report of a run (pictures, cost)")
    p.add_argument("run_id", help="the run id (the manifest's name without .json)")
    p.add_argument("--output", "-o", help="where to write it (default fanout-report-<run>.html)")
    p.add_argument(
        "--price-region", help="region whose list prices to use (default: --env's, else us-east-1)"
    )
    add_storage_args(p)
    add_settings_args(p)
    p.set_defaults(run=_report)


def _report(args: argparse.Namespace) -> int:
    from fanout.report import render_report
    from fanout.settings_files import find_settings

    if not RUN_ID_RE.fullmatch(args.run_id):
        raise UsageError(f"run id {args.run_id!r} must match [A-Za-z0-9._-]{{1,64}}")
    settings = find_settings(args.env, args.config)
    storage, _where = storage_from_args(args)
    if not storage.exists(f"{_seed_key(args.run_id)}"):
        raise UsageError(f"run {args.run_id!r} has no manifest in this bucket")
    try:
        page = render_report(storage, args.run_id, settings, args.price_region)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    out = Path(args.output or f"fanout-report-{args.run_id}.html")
    out.write_text(page, encoding="utf-8")
    print(out)
    return EXIT_OK


def _seed_key(run_id: str) -> str:
    from fanout_core.stages import STAGES

    return STAGES.seed(run_id).key
