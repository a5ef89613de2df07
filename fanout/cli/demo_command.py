"""``fanout demo``: the whole crawl against the bundled simulator, on this machine."""

from __future__ import annotations

import argparse
from typing import Any

from fanout.cli.common import (
    add_api_args,
    add_concurrency_args,
    add_settings_args,
    add_storage_args,
    concurrency_from_args,
    positive_float,
    processes_from_args,
    spec_from_args,
    storage_from_args,
    table_from_args,
)
from fanout.cli.compact_command import add_no_compact_arg


def register(sub: Any) -> None:
    demo = sub.add_parser("demo", help="crawl a bundled Hermes simulator locally, end to end")
    demo.add_argument(
        "--size",
        choices=["tiny", "demo", "full"],
        default="demo",
        help="data set size (full: ~51,000 calls)",
    )
    demo.add_argument("--run-id", help="run id (default demo-<timestamp>)")
    demo.add_argument(
        "--awkward-ids",
        action="store_true",
        help="identifiers with spaces, +, =, ' and non-Latin letters",
    )
    demo.add_argument(
        "--rate-limit",
        type=positive_float,
        help="the simulator's rate limit, calls/s (the pipeline paces to it)",
    )
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_api_args(demo)
    add_storage_args(demo)
    add_settings_args(demo)
    add_concurrency_args(demo)
    add_no_compact_arg(demo)

    demo.set_defaults(run=_demo, resumable=True)


def _demo(args: argparse.Namespace) -> int:
    import time

    from fanout.demo import run_demo

    if not args.run_id:  # chosen here so that the resume command can name it
        args.run_id = "demo-" + time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        args.resume_argv = [*args.argv, "--run-id", args.run_id]

    table = table_from_args(args)
    return run_demo(
        args,
        storage_from_args,
        concurrency_from_args(args, table),
        processes_from_args(args),
        spec_from_args(args),
        table=table,
    )
