"""``fanout failures``: every failed task and unit of a run, why, and the redrive to run."""

from __future__ import annotations

import argparse
import json
from typing import Any

from fanout.cli.common import (
    EXIT_FAILURES,
    EXIT_OK,
    UsageError,
    add_api_args,
    add_settings_args,
    add_storage_args,
    open_run,
    spec_from_args,
    stage_arg,
    table_from_args,
)
from fanout_core.stages import STAGE_NAMES


def register(sub: Any) -> None:
    p = sub.add_parser(
        "failures",
        help="list every failed task and unit of a run, and the redrive command to run",
        description=(
            "Reads the run's failure records (failed/ in the bucket) and lists each failed task and "
            "unit with its error kind, HTTP status and message, grouped by reason with what to do, "
            "then the exact `fanout redrive` that re-triggers them. Exit 0 none, 1 some, 2 usage."
        ),
    )
    p.add_argument("run_id", help="the run id (the manifest's name without .json)")
    p.add_argument("--stage", metavar="STAGE", help=f"only this stage's failures ({', '.join(STAGE_NAMES)})")
    p.add_argument(
        "--error-class", metavar="KIND", help="only failures of this kind (not_found, unauthorized, ...)"
    )
    p.add_argument("--json", action="store_true", help="print them as JSON")
    add_api_args(p)
    add_storage_args(p)
    add_settings_args(p)
    p.set_defaults(run=_failures)


def _failures(args: argparse.Namespace) -> int:
    from fanout.failure_report import (
        UnknownKind,
        check_kind,
        failed_items,
        group_failures,
        read_failures,
        record_matches,
        record_to_json,
        redrive_command,
        render_groups,
        render_listing,
    )

    if args.error_class is not None:
        try:
            check_kind(args.error_class)
        except UnknownKind as exc:
            raise UsageError(str(exc)) from None
    table = table_from_args(args)
    stage = stage_arg(args, table)
    storage, where = open_run(args, args.run_id)
    kind = args.error_class
    records = [
        r
        for r in read_failures(storage, args.run_id, stage=stage, table=table)
        if record_matches(r, kind, table)
    ]
    items = failed_items(records, kind, table)
    groups = group_failures(items)
    units = sum(1 for i in items if i.unit_id is not None)
    command = redrive_command(
        args.run_id,
        spec_from_args(args),
        stage=stage,
        kind=kind,
        env=args.env,
        config=args.config,
        api=args.api,
    )
    if args.json:
        doc = {
            "run_id": args.run_id,
            "bucket": where,
            "tasks": len(records),
            "units": units,
            "failures": [record_to_json(r, kind, table) for r in records],
            "groups": [g.to_json() for g in groups],
            "redrive_command": command if records else None,
        }
        print(json.dumps(doc, indent=2))
        return EXIT_FAILURES if records else EXIT_OK
    if not records:
        print(f"run {args.run_id} in {where}: no failure record" + (" matches" if kind or args.stage else ""))
        return EXIT_OK
    print(f"run {args.run_id} in {where}: {len(records)} failed task(s), {units} failed unit(s)")
    print()
    for line in render_listing(records, kind, table):
        print(line)
    print()
    for line in render_groups(groups):
        print(line)
    print()
    print("fix the cause, then redrive them (locally this runs them too):")
    print(f"  {command}")
    return EXIT_FAILURES
