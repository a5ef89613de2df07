"""The ``fanout`` command. Exit codes are a contract:

``local run``: 0 every task finished, 1 the run finished with failure records,
2 bad manifest or bad usage (nothing started). ``status``: 0 complete with no
failure, 1 complete with failures, 3 not complete yet, 2 bad usage.
``demo`` behaves like ``local run``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from fanout.bucket import StorageSpec
from fanout.leaf_workers import default_processes
from fanout_core.errors import FanoutError, SettingsError
from fanout_core.keys import RUN_ID_RE
from fanout_core.stages import STAGE_NAMES
from fanout_core.storage import Storage

EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3
DEFAULT_BUCKET_DIR = "fanout-data"


class UsageError(Exception):
    pass


def _add_storage_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where the bucket is")
    g.add_argument(
        "--bucket-dir",
        help=f"local directory standing in for the bucket (default ./{DEFAULT_BUCKET_DIR})",
    )
    g.add_argument("--bucket", help="an S3 bucket name instead of a local directory")
    g.add_argument("--s3-endpoint-url", help="S3 endpoint (a moto server, MinIO, ...)")
    g.add_argument("--region", help="AWS region for --bucket")


def _add_settings_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--env",
        default="local",
        help="environment in cdk.json whose settings to use (default local)",
    )
    p.add_argument("--config", help="path of cdk.json (default ./cdk.json, else the project's)")


def _add_concurrency_args(p: argparse.ArgumentParser) -> None:
    for name in STAGE_NAMES:
        p.add_argument(
            f"--{name.replace('_', '-')}-concurrency",
            type=int,
            metavar="N",
            help=f"tasks of stage {name} run at once (default: its reserved concurrency)",
        )
    p.add_argument("--no-pacing", action="store_true", help="no client-side rate pacing (cap only)")
    p.add_argument(
        "--processes",
        type=int,
        metavar="N",
        help="worker processes for the Parquet-writing stage (default: one per core; 1: threads only)",
    )
    p.add_argument("--quiet", action="store_true", help="no live progress")


def _add_stale_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--stale-after",
        type=float,
        metavar="SECONDS",
        help="a pending task older than this counts as lost "
        "(default: the stage's maximum event age plus its retry window, from --env)",
    )


def _stale_after(args: argparse.Namespace) -> Any:
    from fanout.settings_files import find_settings
    from fanout.status import stale_after_s

    if args.stale_after is not None:
        if args.stale_after < 0:
            raise UsageError("--stale-after must be >= 0")
        return lambda _stage: args.stale_after
    settings = find_settings(args.env, args.config)
    return lambda stage: stale_after_s(settings, stage)


def spec_from_args(args: argparse.Namespace) -> StorageSpec:
    """Where the bucket is, as a spec that worker processes can open too."""
    if args.bucket and args.bucket_dir:
        raise UsageError("give --bucket or --bucket-dir, not both")
    if args.s3_endpoint_url and not args.bucket:
        raise UsageError("--s3-endpoint-url needs --bucket")
    fault_rate = getattr(args, "storage_fault_rate", 0.0) or 0.0
    if not 0 <= fault_rate < 1:
        raise UsageError("--storage-fault-rate must be in [0, 1)")
    return StorageSpec(
        bucket_dir=None if args.bucket else str(Path(args.bucket_dir or DEFAULT_BUCKET_DIR)),
        bucket=args.bucket,
        endpoint_url=args.s3_endpoint_url,
        region=args.region,
        fault_rate=fault_rate,
        fault_seed=getattr(args, "fault_seed", None),
    )


def storage_from_args(args: argparse.Namespace, *, faults: bool = True) -> tuple[Storage, str]:
    spec = spec_from_args(args)
    if not faults:
        spec = dataclasses.replace(spec, fault_rate=0.0)
    where = f"s3://{spec.bucket}/" if spec.bucket else str(Path(spec.bucket_dir or "").resolve())
    return spec.build(), where


def _processes(args: argparse.Namespace) -> int:
    if args.processes is None:
        return default_processes()
    if args.processes < 1:
        raise UsageError("--processes must be at least 1")
    return int(args.processes)


def _concurrency(args: argparse.Namespace) -> dict[str, int]:
    out = {}
    for name in STAGE_NAMES:
        value = getattr(args, f"{name}_concurrency", None)
        if value is not None:
            if value < 1:
                raise UsageError(f"--{name.replace('_', '-')}-concurrency must be at least 1")
            out[name] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    from fanout import __version__, simulator

    parser = argparse.ArgumentParser(prog="fanout", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"fanout {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

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
        type=float,
        help="the simulator's rate limit, calls/s (the pipeline paces to it)",
    )
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    _add_storage_args(demo)
    _add_settings_args(demo)
    _add_concurrency_args(demo)

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
    _add_storage_args(run)
    _add_settings_args(run)
    _add_concurrency_args(run)

    status = sub.add_parser("status", help="per-stage task counts of a run, read from the bucket")
    status.add_argument("run_id")
    status.add_argument("--json", action="store_true")
    status.add_argument(
        "--show-pending", type=int, default=5, metavar="N", help="list up to N unfinished tasks"
    )
    _add_stale_args(status)
    _add_storage_args(status)
    _add_settings_args(status)

    redrive = sub.add_parser("redrive", help="re-trigger failed (and lost) tasks of a run")
    redrive.add_argument("run_id")
    redrive.add_argument("--stage", choices=STAGE_NAMES, help="only this stage's failures")
    redrive.add_argument("--error-class", help="only failures of this error class (e.g. TransientError)")
    redrive.add_argument(
        "--stale", action="store_true", help="also re-trigger tasks pending past the threshold"
    )
    redrive.add_argument("--hermes-url", help="with --bucket-dir: run the redriven tasks locally to the end")
    redrive.add_argument("--json", action="store_true")
    _add_stale_args(redrive)
    _add_storage_args(redrive)
    _add_settings_args(redrive)
    _add_concurrency_args(redrive)

    hermes = sub.add_parser("hermes", help="the bundled Hermes simulator")
    hermes_sub = hermes.add_subparsers(dest="hermes_command", required=True)
    serve = hermes_sub.add_parser("serve", help="serve the simulated Hermes API")
    simulator.add_serve_arguments(serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 2 for usage errors, 0 for --help
        return int(exc.code or 0)
    try:
        if args.command == "demo":
            from fanout.demo import run_demo

            return run_demo(
                args, storage_from_args, _concurrency(args), _processes(args), spec_from_args(args)
            )
        if args.command == "local":
            return _local_run(args)
        if args.command == "status":
            return _status(args)
        if args.command == "redrive":
            return _redrive(args)
        if args.command == "hermes":
            from fanout import simulator

            return simulator.serve_from_args(args)
    except (UsageError, SettingsError) as exc:
        print(f"fanout: {exc}", file=sys.stderr)
        return EXIT_USAGE
    parser.error("unknown command")
    return EXIT_USAGE


def _local_run(args: argparse.Namespace) -> int:
    from fanout.progress import print_table, summary_rows
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
            concurrency=_concurrency(args),
            pacing=not args.no_pacing,
            progress=None if args.quiet else sys.stderr,
            duplicate_rate=args.duplicate_rate,
            seed=args.fault_seed,
            processes=_processes(args),
            storage_spec=spec,
            wrap_storage=wrap,
        )
    except BadManifest as exc:
        print(f"fanout: bad manifest: {exc}", file=sys.stderr)
        return EXIT_USAGE
    rows = summary_rows(outcome, where)
    if args.json:
        print(json.dumps(dict(rows), indent=2))
    else:
        print_table(rows)
    return EXIT_OK if outcome.ok else EXIT_FAILURES


def _status(args: argparse.Namespace) -> int:
    from fanout.status import run_status

    if not RUN_ID_RE.fullmatch(args.run_id):
        raise UsageError(f"run id {args.run_id!r} must match [A-Za-z0-9._-]{{1,64}}")
    storage, where = storage_from_args(args)
    try:
        status = run_status(storage, args.run_id, stale_after=_stale_after(args))
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


def _redrive(args: argparse.Namespace) -> int:
    from fanout.progress import print_table, summary_rows
    from fanout.redrive import describe, redrive
    from fanout.settings_files import find_settings
    from fanout.start_run import start_run

    if not RUN_ID_RE.fullmatch(args.run_id):
        raise UsageError(f"run id {args.run_id!r} must match [A-Za-z0-9._-]{{1,64}}")
    storage, where = storage_from_args(args)
    stale_after = _stale_after(args) if args.stale else None

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
        concurrency=_concurrency(args),
        pacing=not args.no_pacing,
        progress=None if args.quiet else sys.stderr,
        prepare=do,
        processes=_processes(args),
        storage_spec=spec_from_args(args),
    )
    rows = [("redrive", str(describe(outcome.prepared))), *summary_rows(outcome, where)]
    if args.json:
        print(json.dumps(dict(rows), indent=2))
    else:
        print_table(rows)
    return EXIT_OK if outcome.ok else EXIT_FAILURES


def _timestamp() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime())
