"""``fanout compact``: rewrite a complete run's small Parquet files into a few large ones."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from fanout.cli.common import (
    EXIT_INCOMPLETE,
    EXIT_OK,
    UsageError,
    add_api_args,
    add_storage_args,
    open_run,
    positive_float,
    spec_from_args,
    table_from_args,
)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "compact",
        help="compact a complete run's output into files of ~128 MB (idempotent, resumable)",
        description=(
            "Rewrite a complete run's Parquet files into a new generation of large files, make "
            "it current, then remove the small ones. Safe to rerun or to run after a kill. "
            "`demo` and `local run` do this at their end unless given --no-compact."
        ),
    )
    p.add_argument("run_id", help="the run id (the manifest's name without .json)")
    p.add_argument(
        "--target-mb",
        type=positive_float,
        default=128.0,
        help="input megabytes per compacted file (default 128)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_api_args(p)
    add_storage_args(p)
    p.set_defaults(run=_compact, resumable=True)


def add_no_compact_arg(p: argparse.ArgumentParser) -> None:
    """``--no-compact`` for the commands that run a run to its end."""
    p.add_argument(
        "--no-compact", action="store_true", help="leave the small files; `fanout compact RUN` later"
    )


def _compact(args: argparse.Namespace) -> int:
    from fanout.compact import describe, uri_base
    from fanout_core.compaction import NotComplete, compact_run

    if args.target_mb <= 0:
        raise UsageError("--target-mb must be positive")
    spec = spec_from_args(args)
    storage, _where = open_run(args, args.run_id)
    try:
        result = compact_run(
            storage,
            args.run_id,
            table=table_from_args(args),
            target_bytes=int(args.target_mb * 1024 * 1024),
            uri_base=uri_base(storage, spec),
        )
    except NotComplete as exc:
        print(f"fanout: {exc}; `fanout status {args.run_id}` shows what is pending", file=sys.stderr)
        return EXIT_INCOMPLETE
    if args.json:
        print(
            json.dumps(
                {
                    "run_id": result.run_id,
                    "state": result.state,
                    "generation": result.generation,
                    "inputs": result.inputs,
                    "files": result.files,
                    "rows": result.rows,
                    "written": result.written,
                    "deleted": result.deleted,
                },
                indent=2,
            )
        )
    else:
        print(describe(result))
    return EXIT_OK
