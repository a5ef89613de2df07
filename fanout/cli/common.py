"""What every ``fanout`` command shares: exit codes, usage errors, where the bucket is, settings."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from fanout.bucket import StorageSpec
from fanout.leaf_workers import default_processes
from fanout_core.stages import STAGE_NAMES
from fanout_core.storage import Storage

EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3
DEFAULT_BUCKET_DIR = "fanout-data"


class UsageError(Exception):
    pass


def add_storage_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where the bucket is")
    g.add_argument(
        "--bucket-dir",
        help=f"local directory standing in for the bucket (default ./{DEFAULT_BUCKET_DIR})",
    )
    g.add_argument("--bucket", help="an S3 bucket name instead of a local directory")
    g.add_argument("--s3-endpoint-url", help="S3 endpoint (a moto server, MinIO, ...)")
    g.add_argument("--region", help="AWS region for --bucket")


def add_settings_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--env",
        default=None,
        help="environment in cdk.json whose settings to use (default: with --bucket, the "
        "one its tags name; else local)",
    )
    p.add_argument("--config", help="path of cdk.json (default ./cdk.json, else the project's)")


def add_concurrency_args(p: argparse.ArgumentParser) -> None:
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


def add_stale_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--stale-after",
        type=float,
        metavar="SECONDS",
        help="a pending task older than this counts as lost "
        "(default: the stage's maximum event age plus its retry window, from --env)",
    )


def stale_threshold(args: argparse.Namespace) -> Any:
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


def processes_from_args(args: argparse.Namespace) -> int:
    if args.processes is None:
        return default_processes()
    if args.processes < 1:
        raise UsageError("--processes must be at least 1")
    return int(args.processes)


def concurrency_from_args(args: argparse.Namespace) -> dict[str, int]:
    out = {}
    for name in STAGE_NAMES:
        value = getattr(args, f"{name}concurrency", None)
        if value is not None:
            if value < 1:
                raise UsageError(f"--{name.replace('_', '-')}-concurrency must be at least 1")
            out[name] = value
    return out
