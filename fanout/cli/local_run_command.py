"""``fanout local run``: run (or resume) a manifest to the end with the local runtime."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from fanout.bucket import StorageSpec
from fanout.cli.common import (
    EXIT_FAILURES,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    add_api_args,
    add_concurrency_args,
    add_settings_args,
    add_storage_args,
    api_from_args,
    concurrency_from_args,
    integer,
    one_line,
    positive_float,
    processes_from_args,
    share,
    share_below_one,
    spec_from_args,
    storage_from_args,
    table_from_args,
)
from fanout.cli.compact_command import add_no_compact_arg
from fanout_core.api_description import ApiDescription
from fanout_core.keys import RUN_ID_RE
from fanout_core.settings import EnvironmentSettings
from fanout_core.storage import Storage

RATE_LIMIT_ENV = "FANOUT_RATE_LIMIT"


def register(sub: Any) -> None:
    local = sub.add_parser("local", help="the local runtime")
    local_sub = local.add_subparsers(dest="local_command", required=True)
    run = local_sub.add_parser("run", help="run a manifest to the end (resumes an interrupted run)")
    run.add_argument("manifest", help="manifest file; its name without .json is the run id")
    add_api_args(
        run,
        url_help="the API's base URL (--hermes-url: Hermes', the part before /v1; default: --env's "
        "hermes_url for Hermes, else the description's base_url); secret from $HERMES_TOKEN (the "
        "description's auth.env)",
    )
    run.add_argument(
        "--rate-limit",
        type=positive_float,
        metavar="R",
        help=f"calls/s to pace the whole run to (default: ${RATE_LIMIT_ENV}, else --env's hermes_rate_limit)",
    )
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    chaos = run.add_argument_group("fault injection (to prove that nothing is lost)")
    chaos.add_argument(
        "--duplicate-rate", type=share, default=0.0, help="share of events delivered twice (0 to 1)"
    )
    chaos.add_argument(
        "--storage-fault-rate",
        type=share_below_one,
        default=0.0,
        help="share of reads/writes that fail transiently (0 up to 1)",
    )
    chaos.add_argument("--fault-seed", type=integer, help="seed for the injected faults")
    add_storage_args(run)
    add_settings_args(run)
    add_concurrency_args(run)
    add_no_compact_arg(run)
    run.add_argument(
        "--no-check",
        action="store_true",
        help="skip the preflight (Hermes reachable, token taken, bucket writable) before seeding",
    )

    run.add_argument(
        "--plan",
        action="store_true",
        help="first print fanout plan's one line (about N calls, ~T at R): a sample of up to 200 more calls",
    )
    run.set_defaults(run=_local_run, resumable=True)


def _local_run(args: argparse.Namespace) -> int:
    from fanout.api_choice import base_url_for, secret_for
    from fanout.failure_report import redrive_command
    from fanout.preflight import check_usage
    from fanout.run_summary import show_summary
    from fanout.settings_files import find_settings
    from fanout.start_run import start_run
    from fanout_core.bodies import parse_manifest
    from fanout_core.errors import BadManifest

    api = api_from_args(args)
    table = table_from_args(args)
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
        parse_manifest(body, api)
    except BadManifest as exc:
        print(f"fanout: bad manifest: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    token = secret_for(api)
    settings = pacing_settings(find_settings(args.env, args.config, table.names), args.rate_limit)
    hermes_url = check_usage(base_url_for(api, args.api_url, settings.hermes_url), token, api)
    spec = spec_from_args(args)
    if not args.no_check and not _preflight(api, hermes_url, token, spec):
        return EXIT_USAGE
    estimated_calls = None
    if args.plan:
        from fanout.cli.plan_command import summary_before_run

        line, estimated_calls = summary_before_run(api, body, settings, hermes_url, token)
        print(f"fanout: plan: {line}", file=sys.stderr)
    # The seed is written without injected faults; the runtime and its workers get them.
    storage, where = storage_from_args(args, faults=False)
    wrap = None
    if spec.fault_rate:
        from fanout.faults import FlakyStorage

        def wrap(inner: Storage) -> Storage:
            return FlakyStorage(inner, spec.fault_rate, seed=spec.fault_seed)

    try:
        outcome = start_run(
            storage,
            settings,
            run_id=name,
            manifest=body,
            hermes_url=hermes_url,
            token=token,
            concurrency=concurrency_from_args(args, table),
            pacing=not args.no_pacing,
            progress=None if args.quiet else sys.stderr,
            estimated_calls=estimated_calls,
            duplicate_rate=args.duplicate_rate,
            seed=args.fault_seed,
            processes=processes_from_args(args),
            storage_spec=spec,
            wrap_storage=wrap,
            compact=not args.no_compact,
            table=table,
        )
    except BadManifest as exc:
        print(f"fanout: bad manifest: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    command = redrive_command(
        name, spec, hermes_url=hermes_url, env=args.env, config=args.config, api=args.api
    )
    show_summary(outcome, storage, where, as_json=args.json, redrive=command)
    return EXIT_OK if outcome.ok else EXIT_FAILURES


def pacing_settings(settings: EnvironmentSettings, rate_limit: float | None) -> EnvironmentSettings:
    """``settings`` paced to ``--rate-limit``, else to ``$FANOUT_RATE_LIMIT``, else as they are."""
    if rate_limit is None and os.environ.get(RATE_LIMIT_ENV):
        try:
            rate_limit = positive_float(os.environ[RATE_LIMIT_ENV])
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"${RATE_LIMIT_ENV}: {exc}") from None
    if rate_limit is None:
        return settings
    return dataclasses.replace(settings, hermes_rate_limit=rate_limit)


def _preflight(api: ApiDescription, hermes_url: str, token: str, spec: StorageSpec) -> bool:
    """``fanout check``'s checks, before anything is seeded; False (and why) if the run cannot work.

    A 429 or 5xx is only a warning: the run's retries may get past it.
    """
    from fanout.preflight import print_findings, run_checks

    where = f"s3://{spec.bucket}/" if spec.bucket else str(spec.bucket_dir)
    clean = dataclasses.replace(spec, fault_rate=0.0)
    findings = run_checks(hermes_url, token, clean, where, timeout_s=5.0, api=api)
    print_findings(findings, lambda line: print(f"fanout: {line}", file=sys.stderr), quiet_ok=True)
    if any(f.stops_run for f in findings):
        print(
            "fanout: nothing was started; fix the cause above (`fanout check` repeats the checks), "
            "then run the same command again",
            file=sys.stderr,
        )
        return False
    return True
