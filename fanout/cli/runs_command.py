"""``fanout runs``: the runs a bucket holds, newest first."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fanout.cli.common import EXIT_OK, UsageError, add_storage_args, spec_from_args, storage_from_args


def register(sub: Any) -> None:
    p = sub.add_parser(
        "runs",
        help="list the runs in a bucket: started, complete, tasks, failures, rows (newest first)",
        description="One line per run whose manifest the bucket holds, read from the bucket alone.",
    )
    p.add_argument("--json", action="store_true", help="print them as JSON")
    add_storage_args(p)
    p.set_defaults(run=_runs)


def _runs(args: argparse.Namespace) -> int:
    from fanout.runs import list_runs, render_runs
    from fanout_core.errors import PermanentError, TransientError

    spec = spec_from_args(args)
    if spec.bucket_dir is not None and not Path(spec.bucket_dir).is_dir():
        raise UsageError(f"no bucket folder {spec.bucket_dir}")
    storage, where = storage_from_args(args)
    try:
        runs = list_runs(storage)
    except (TransientError, PermanentError) as exc:  # S3 (or its endpoint) would not answer
        raise UsageError(f"cannot read the bucket {where}: {exc}") from None
    if args.json:
        print(json.dumps({"bucket": where, "runs": [r.to_json() for r in runs]}, indent=2))
    elif not runs:
        print(f"no runs in {where}")
    else:
        print(f"{len(runs)} run(s) in {where}, newest first")
        for line in render_runs(runs):
            print(line)
    return EXIT_OK
