"""``fanout status``: per-stage task counts of a run, read from the bucket alone."""

from __future__ import annotations

import argparse
import json
from typing import Any

from fanout.cli.common import (
    EXIT_FAILURES,
    EXIT_INCOMPLETE,
    EXIT_OK,
    UsageError,
    add_settings_args,
    add_stale_args,
    add_storage_args,
    non_negative_int,
    stale_threshold,
    storage_from_args,
)
from fanout_core.errors import FanoutError
from fanout_core.keys import RUN_ID_RE


def register(sub: Any) -> None:
    status = sub.add_parser("status", help="per-stage task counts of a run, read from the bucket")
    status.add_argument("run_id", help="the run id (the manifest's name without .json)")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.add_argument(
        "--show-pending", type=non_negative_int, default=5, metavar="N", help="list up to N unfinished tasks"
    )
    add_stale_args(status)
    add_storage_args(status)
    add_settings_args(status)

    status.set_defaults(run=_status)


def _status(args: argparse.Namespace) -> int:
    from fanout.status import run_status

    if not RUN_ID_RE.fullmatch(args.run_id):
        raise UsageError(f"run id {args.run_id!r} must match [A-Za-z0-9._-]{{1,64}}")
    storage, where = storage_from_args(args)
    try:
        status = run_status(storage, args.run_id, stale_after=stale_threshold(args))
    except FanoutError as exc:
        raise UsageError(str(exc)) from exc
    if args.json:
        doc: dict[str, Any] = {
            "run_id": status.run_id,
            "bucket": where,
            "seeded": status.seeded,
            "complete": status.complete,
            "data_files": status.data_files,
            "stages": {
                s.stage: {
                    "written": s.written,
                    "finished": s.finished,
                    "failed": s.failed,
                    "pending": s.open,
                }
                for s in status.stages
            },
        }
        print(json.dumps(doc, indent=2))
    else:
        print(f"run {status.run_id} in {where}")
        if not status.seeded:
            print("  no manifest for this run")
        print(f"  {'stage':<12} {'written':>8} {'finished':>9} {'failed':>7} {'pending':>8} {'stale':>6}")
        for s in status.stages:
            print(
                f"  {s.stage:<12} {s.written:>8} {s.finished:>9} {s.failed:>7} {s.open:>8} {len(s.stale):>6}"
            )
        print(f"  data files: {status.data_files}")
        print(f"  complete: {'yes' if status.complete else 'no'}")
        pending = [k for s in status.stages for k in s.pending][: args.show_pending]
        for key in pending:
            print(f"    pending: {key}")
        if status.stale:
            print(
                f"  {len(status.stale)} task(s) look lost; "
                f"`fanout redrive {status.run_id} --stale` re-triggers them"
            )
    if not status.complete:
        return EXIT_INCOMPLETE
    return EXIT_FAILURES if status.failed else EXIT_OK
