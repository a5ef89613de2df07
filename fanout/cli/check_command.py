"""``fanout check``: is Hermes reachable, does it take the token, can the bucket be written."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from fanout.cli.common import (
    EXIT_FAILURES,
    EXIT_OK,
    add_settings_args,
    add_storage_args,
    positive_float,
    spec_from_args,
)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "check",
        help="check the Hermes URL, the token and the bucket before a run",
        description=(
            "Checks the URL's syntax (a bad one is a usage error, before any request), that Hermes "
            "answers, that it takes $HERMES_TOKEN for one listing of a single warrior, and with "
            "--bucket-dir or --bucket that the bucket can be listed and written (a probe object "
            "under fanout-check/ is written and deleted). Exit 0 all passed, 1 a check failed, 2 usage."
        ),
    )
    p.add_argument(
        "--hermes-url",
        help="Hermes base URL, the part before /v1 (default: --env's hermes_url); token from $HERMES_TOKEN",
    )
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=5.0,
        metavar="S",
        help="seconds to wait for each answer (default 5)",
    )
    add_storage_args(p)
    add_settings_args(p)
    p.set_defaults(run=_check)


def _check(args: argparse.Namespace) -> int:
    from fanout.preflight import check_usage, print_findings, run_checks
    from fanout.settings_files import find_settings

    url = args.hermes_url or find_settings(args.env, args.config).hermes_url
    url = check_usage(url, os.environ.get("HERMES_TOKEN"))
    spec = spec_from_args(args) if (args.bucket or args.bucket_dir) else None
    where = f"s3://{args.bucket}/" if args.bucket else str(args.bucket_dir)
    findings = run_checks(url, os.environ["HERMES_TOKEN"], spec, where, timeout_s=args.timeout)
    print_findings(findings, print)
    failed = [f for f in findings if f.fails_check]
    if failed:
        print(f"fanout check: {len(failed)} check(s) failed", file=sys.stderr)
        return EXIT_FAILURES
    return EXIT_OK
