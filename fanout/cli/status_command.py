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
    open_run,
    spec_from_args,
    stale_threshold,
)
from fanout_core.errors import FanoutError


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
    from fanout.failure_report import (
        failed_items,
        group_failures,
        read_failures,
        redrive_command,
        render_groups,
    )
    from fanout.status import run_status

    storage, where = open_run(args, args.run_id)
    try:
        status = run_status(storage, args.run_id, stale_after=stale_threshold(args))
    except FanoutError as exc:
        raise UsageError(str(exc)) from exc
    groups = group_failures(failed_items(read_failures(storage, args.run_id))) if status.failed else []
    redrive = redrive_command(args.run_id, spec_from_args(args), env=args.env, config=args.config)
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
                    "stale": len(s.stale),
                }
                for s in status.stages
            },
            "failed_tasks": status.failed_keys,
            "stale_tasks": status.stale,
            "failures": [g.to_json() for g in groups],
            "redrive_command": redrive if status.failed else None,
        }
        print(json.dumps(doc, indent=2))
    else:
        print(f"run {status.run_id} in {where}")
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
        for line in render_groups(groups):
            print(f"  {line}")
        if status.failed:
            print(f"  {status.failed} task(s) failed (`fanout failures {status.run_id}` lists them);")
            print("  fix the cause, then")
            print(f"    {redrive}")
    if not status.complete:
        return EXIT_INCOMPLETE
    return EXIT_FAILURES if status.failed else EXIT_OK
