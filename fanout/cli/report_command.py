"""``fanout report``: a self-contained HTML page of a run (calls/s against R, queue depth,
failures, cost), drawn from the bucket with matplotlib."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fanout.cli.common import EXIT_OK, UsageError, add_settings_args, add_storage_args, open_run


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

    storage, _where = open_run(args, args.run_id)
    settings = find_settings(args.env, args.config)
    try:
        page = render_report(storage, args.run_id, settings, args.price_region)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    out = Path(args.output or f"fanout-report-{args.run_id}.html")
    out.write_text(page, encoding="utf-8")
    print(out)
    return EXIT_OK
