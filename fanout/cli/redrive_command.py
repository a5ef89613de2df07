"""``fanout redrive``: re-trigger a run's failed (and lost) tasks."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from fanout.cli.common import (
    EXIT_FAILURES,
    EXIT_OK,
    UsageError,
    add_concurrency_args,
    add_settings_args,
    add_stale_args,
    add_storage_args,
    concurrency_from_args,
    processes_from_args,
    spec_from_args,
    stale_threshold,
    storage_from_args,
)
from fanout_core.keys import RUN_ID_RE
from fanout_core.stages import STAGE_NAMES
from fanout_core.storage import Storage


def register(sub: Any) -> None:
    redrive = sub.add_parser("redrive", help="re-trigger failed (and lost) tasks of a run")
    redrive.add_argument("run_id", help="the run id (the manifest's name without .json)")
    redrive.add_argument("--stage", choices=STAGE_NAMES, help="only this stage's failures")
    redrive.add_argument("--error-class", help="only failures of this error class (e.g. TransientError)")
    redrive.add_argument(
        "--stale", action="store_true", help="also re-trigger tasks pending past the threshold"
    )
    redrive.add_argument("--hermes-url", help="with --bucket-dir: run the redriven tasks locally to the end")
    redrive.add_argument("--json", action="store_true", help="print the result as JSON")
    add_stale_args(redrive)
    add_storage_args(redrive)
    add_settings_args(redrive)
    add_concurrency_args(redrive)

    redrive.set_defaults(run=_redrive, resumable=True)


def _redrive(args: argparse.Namespace) -> int:
    from fanout.progress import print_table, summary_rows
    from fanout.redrive import describe, redrive
    from fanout.settings_files import find_settings
    from fanout.start_run import start_run

    if not RUN_ID_RE.fullmatch(args.run_id):
        raise UsageError(f"run id {args.run_id!r} must match [A-Za-z0-9._-]{{1,64}}")
    storage, where = storage_from_args(args)
    stale_after = stale_threshold(args) if args.stale else None

    def do(target: Storage) -> Any:
        return redrive(
            target,
            args.run_id,
            stage=args.stage,
            error_class=args.error_class,
            stale=args.stale,
            stale_after=stale_after,
        )

    if args.bucket or not args.hermes_url:
        if not args.bucket and not args.hermes_url:
            raise UsageError(
                "locally, redrive runs the tasks too: give --hermes-url (token from $HERMES_TOKEN)"
            )
        done = describe(do(storage))
        print(json.dumps(done, indent=2) if args.json else f"redrive of {args.run_id} in {where}: {done}")
        return EXIT_OK
    token = os.environ.get("HERMES_TOKEN")
    if not token:
        raise UsageError("set HERMES_TOKEN to the Hermes bearer token")
    outcome = start_run(
        storage,
        find_settings(args.env, args.config),
        run_id=args.run_id,
        manifest=None,
        hermes_url=args.hermes_url,
        token=token,
        concurrency=concurrency_from_args(args),
        pacing=not args.no_pacing,
        progress=None if args.quiet else sys.stderr,
        prepare=do,
        processes=processes_from_args(args),
        storage_spec=spec_from_args(args),
    )
    rows = [("redrive", str(describe(outcome.prepared))), *summary_rows(outcome, where)]
    if args.json:
        print(json.dumps(dict(rows), indent=2))
    else:
        print_table(rows)
    return EXIT_OK if outcome.ok else EXIT_FAILURES
