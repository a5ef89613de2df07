"""``fanout check``: is the API reachable, does it take the secret, can the bucket be written;
with ``--api``, also the description checked and one real call per level (``fanout.api_probe``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fanout.cli.common import (
    EXIT_FAILURES,
    EXIT_OK,
    add_api_args,
    add_settings_args,
    add_storage_args,
    api_from_args,
    positive_float,
    spec_from_args,
)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "check",
        help="check the Hermes URL, the token and the bucket before a run",
        description=(
            "Checks the URL's syntax (a bad one is a usage error, before any request), that Hermes "
            "answers, that it takes $HERMES_TOKEN for one listing of a single item of its first level, "
            "and with --bucket-dir or --bucket that the bucket can be listed and written (a probe "
            "object under fanout-check/ is written and deleted). With --api FILE: the description is "
            "checked first, then one call per level follows the first item down and the leaf's "
            "fields are printed as a columns: block for the description. Exit 0 all passed, 1 a "
            "check failed, 2 usage or a bad description."
        ),
    )
    add_api_args(
        p,
        url_help="the API's base URL (--hermes-url: Hermes', the part before /v1; default: --env's "
        "hermes_url for Hermes, else the description's base_url); secret from $HERMES_TOKEN (the "
        "description's auth.env)",
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


def _levels(api: Any) -> str:
    return " > ".join(lv.name for lv in api.levels)


def _check(args: argparse.Namespace) -> int:
    from fanout.api_choice import base_url_for, is_builtin, secret_for
    from fanout.preflight import check_usage, print_findings, run_checks
    from fanout.settings_files import find_settings

    api = api_from_args(args)
    if args.api is not None:
        print(f"ok   description: {api.source}: {api.name}, {len(api.levels)} levels ({_levels(api)})")
    token = secret_for(api)
    settings_url = find_settings(args.env, args.config).hermes_url if is_builtin(api) else ""
    url = check_usage(base_url_for(api, args.api_url, settings_url), token, api)
    spec = spec_from_args(args) if (args.bucket or args.bucket_dir) else None
    where = f"s3://{args.bucket}/" if args.bucket else str(args.bucket_dir)
    findings = run_checks(url, token, spec, where, timeout_s=args.timeout, api=api)
    print_findings(findings, print)
    failed = len([f for f in findings if f.fails_check])
    if args.api is not None and not any(f.fails_check and f.check in ("hermes", "api") for f in findings):
        from fanout.api_probe import probe_levels

        probed = probe_levels(api, url, token, timeout_s=args.timeout)
        for line in probed.lines:
            print(line)
        failed += 0 if probed.ok else 1
    if failed:
        print(f"fanout check: {failed} check(s) failed", file=sys.stderr)
        return EXIT_FAILURES
    return EXIT_OK
