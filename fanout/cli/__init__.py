"""The ``fanout`` command. Exit codes are a contract:

``local run``: 0 every task finished, 1 the run finished with failure records,
2 bad manifest or bad usage (nothing started), 4 stopped because the bucket refused a
write (full disk, read-only directory; the same command resumes). ``status``: 0 complete with no
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
    check_command,
    compact_command,
    cost_command,
    demo_command,
    failures_command,
    hermes_command,
    local_run_command,
    plan_command,
    redrive_command,
    report_command,
    runs_command,
    status_command,
)
from fanout.cli.common import EXIT_STORAGE, EXIT_USAGE, FanoutParser, UsageError, interrupted, one_line
from fanout_core.errors import SettingsError, StorageFault

DESCRIPTION = """\
Crawl the Hermes API into Parquet files: on this machine (demo, local run) or
through a deployed pipeline's bucket (status, redrive, compact, cost, report)."""
EPILOG = """exit codes:
  0  done: every task finished (status: the run is complete)
  1  finished with failure records, or a check failed
  2  bad usage or a bad manifest: nothing was started
  3  status, compact: the run is not complete yet
  130  stopped by Ctrl-C: run the same command again to resume

Run "fanout COMMAND --help" for a command's options."""

COMMANDS = (
    demo_command,
    local_run_command,
    check_command,
    status_command,
    failures_command,
    runs_command,
    redrive_command,
    hermes_command,
    compact_command,
    cost_command,
    report_command,
    plan_command,
)


def build_parser() -> argparse.ArgumentParser:
    from fanout import __version__

    parser = FanoutParser(
        prog="fanout",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"fanout {__version__}", help="show the version"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 2 for usage errors, 0 for --help
        return int(exc.code or 0)
    args.argv = argv
    try:
        resolve_environment(args)  # --env, else the bucket's tags, else local
        return int(args.run(args))
    except (UsageError, SettingsError) as exc:
        print(f"fanout: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except StorageFault as exc:
        print(
            f"fanout: stopped: {one_line(exc)}; nothing is lost: fix it, then run the same command "
            "again to resume",
            file=sys.stderr,
        )
        return EXIT_STORAGE
    except KeyboardInterrupt:
        return interrupted(args)
