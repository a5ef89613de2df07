"""``fanout local run``: run (or resume) a manifest to the end with the local runtime."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from fanout.cli.common import (
    EXIT_FAILURES,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    add_concurrency_args,
    add_settings_args,
    add_storage_args,
    concurrency_from_args,
    processes_from_args,
    spec_from_args,
    storage_from_args,
)
from fanout.cli.compact_command import add_no_compact_arg
from fanout_core.keys import RUN_ID_RE
from fanout_core.storage import Storage


def register(sub: Any) -> None:
    local = sub.add_parser("local", help="the local runtime")
    local_sub = local.add_subparsers(dest="local_command", required=True)
    run = local_sub.add_parser("run", help="run a manifest to the end (resumes an interrupted run)")
    run.add_argument("manifest", help="manifest file; its name without .json is the run id")
    run.add_argument("--hermes-url", required=True, help="Hermes base URL (token from $HERMES_TOKEN)")
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    chaos = run.add_argument_group("fault injection (to prove that nothing is lost)")
    chaos.add_argument("--duplicate-rate", type=float, default=0.0, help="share of events delivered twice")
    chaos.add_argument(
        "--storage-fault-rate", type=float, default=0.0, help="share of reads/writes that fail transiently"
    )
    chaos.add_argument("--fault-seed", type=int, help="seed for the injected faults")
    add_storage_args(run)
    add_settings_args(run)
    add_concurrency_args(run)
    add_no_compact_arg(run)

    run.set_defaults(run=_local_run)


def _local_run(args: argparse.Namespace) -> int:
    from fanout.failure_report import redrive_command
    from fanout.run_summary import show_summary
    from fanout.settings_files import find_settings
    from fanout.start_run import start_run
    from fanout_core.bodies import parse_manifest
    from fanout_core.errors import BadManifest

    path = Path(args.manifest)
    name = path.name[: -len(".json")] if path.name.endswith(".json") else path.name
    try:
        if not RUN_ID_RE.fullmatch(name):
            raise BadManifest(
                f"manifest file name {path.name!r}: the run id (name without .json) must match "
                "[A-Za-z0-9._-]{1,64}"
            )
        try:
            body = path.read_bytes()
        except OSError as exc:
            raise BadManifest(f"cannot read manifest {path}: {exc.strerror}") from None
        parse_manifest(body)
    except BadManifest as exc:
        print(f"fanout: bad manifest: {exc}", file=sys.stderr)
        return EXIT_USAGE
    token = os.environ.get("HERMES_TOKEN")
    if not token:
        print("fanout: set HERMES_TOKEN to the Hermes bearer token", file=sys.stderr)
        return EXIT_USAGE
    settings = find_settings(args.env, args.config)
    spec = spec_from_args(args)
    # The seed is written without injected faults; the runtime and its workers get them.
    storage, where = storage_from_args(args, faults=False)
    wrap = None
    if spec.fault_rate:
        from fanout.faults import FlakyStorage

        def wrap(inner: Storage) -> Storage:
            return FlakyStorage(inner, spec.fault_rate, seed=spec.fault_seed)

    if not 0 <= args.duplicate_rate <= 1:
        raise UsageError("--duplicate-rate must be in [0, 1]")
    try:
        outcome = start_run(
            storage,
            settings,
            run_id=name,
            manifest=body,
            hermes_url=args.hermes_url,
            token=token,
            concurrency=concurrency_from_args(args),
            pacing=not args.no_pacing,
            progress=None if args.quiet else sys.stderr,
            duplicate_rate=args.duplicate_rate,
            seed=args.fault_seed,
            processes=processes_from_args(args),
            storage_spec=spec,
            wrap_storage=wrap,
            compact=not args.no_compact,
        )
    except BadManifest as exc:
        print(f"fanout: bad manifest: {exc}", file=sys.stderr)
        return EXIT_USAGE
    command = redrive_command(name, spec, hermes_url=args.hermes_url, env=args.env, config=args.config)
    show_summary(outcome, storage, where, as_json=args.json, redrive=command)
    return EXIT_OK if outcome.ok else EXIT_FAILURES
