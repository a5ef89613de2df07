"""The ``fanout`` command. Exit codes are a contract:

``local run``: 0 every task finished, 1 the run finished with failure records,
2 bad manifest or bad usage (nothing started). ``status``: 0 complete with no
failure, 1 complete with failures, 3 not complete yet, 2 bad usage.
``demo`` behaves like ``local run``.

One module per command (``*_command.py``), each registering its own subparser;
``common.py`` holds what they share.
"""

from __future__ import annotations

import argparse
import sys

from fanout.bucket_env import resolve_environment
from fanout.cli import (
    compact_command,
    cost_command,
    demo_command,
    hermes_command,
    local_run_command,
    redrive_command,
    report_command,
    status_command,
)
from fanout.cli.common import EXIT_USAGE, UsageError
from fanout_core.errors import SettingsError

COMMANDS = (
    demo_command,
    local_run_command,
    status_command,
    redrive_command,
    hermes_command,
    compact_command,
    cost_command,
    report_command,
)


def build_parser() -> argparse.ArgumentParser:
    from fanout import __version__

    parser = argparse.ArgumentParser(prog="fanout", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--version", action="version", version=f"fanout {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 2 for usage errors, 0 for --help
        return int(exc.code or 0)
    try:
        resolve_environment(args)  # --env, else the bucket's tags, else local
        return int(args.run(args))
    except (UsageError, SettingsError) as exc:
        print(f"fanout: {exc}", file=sys.stderr)
        return EXIT_USAGE
