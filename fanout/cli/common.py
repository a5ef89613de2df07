"""What every ``fanout`` command shares: exit codes, usage errors, where the bucket is, settings."""

from __future__ import annotations

import argparse
import dataclasses
import math
import shlex
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fanout.bucket import StorageSpec
from fanout_core.api_description import ApiDescription
from fanout_core.stages import STAGE_NAMES, StageTable
from fanout_core.storage import Storage

EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_INCOMPLETE, EXIT_STORAGE = 0, 1, 2, 3, 4
"""EXIT_STORAGE: the bucket refused a write (full disk, read-only directory); the run
stopped, nothing is lost, the same command resumes it once the cause is fixed."""
EXIT_INTERRUPTED = 130
"""Ctrl-C: 128 + SIGINT, what a shell reports for a command stopped by it."""
MAX_CONCURRENCY = 1000
"""The most tasks one stage may run at once (Lambda's default account concurrency)."""
MAX_PROCESSES = 64
"""The most worker processes the leaf stage may start."""
DEFAULT_BUCKET_DIR = "fanout-data"


class UsageError(Exception):
    pass


MAX_MESSAGE_CHARS = 300


def one_line(error: BaseException | str) -> str:
    """An error as the CLI prints it: one line, cut short (a message may quote its input)."""
    text = " ".join(str(error).split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


class FanoutParser(argparse.ArgumentParser):
    """An ArgumentParser without argparse's pitfalls: no abbreviated options (``--hermes``
    is not ``--hermes-url``), and every subcommand of it is one too."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def add_subparsers(self, **kwargs: Any) -> Any:
        kwargs.setdefault("parser_class", SubcommandParser)
        return super().add_subparsers(**kwargs)


class SubcommandParser(FanoutParser):
    """A subcommand's parser: an argument it does not know is its error, shown with its own
    usage, rather than left over for the top-level parser's usage line."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def interrupted(args: argparse.Namespace) -> int:
    """Ctrl-C: one line, no traceback, and for a command that resumes, the exact command to do so.

    Every write of a run is atomic and a task without its done marker runs again, so the
    same command picks up where this one stopped (``resume_argv``: the same arguments, plus
    whatever pins what this invocation chose, like demo's run id).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this short
    if getattr(args, "resumable", False):
        again = shlex.join(["fanout", *(getattr(args, "resume_argv", None) or args.argv)])
        sys.stderr.write(f"\nfanout: interrupted; nothing is lost. To resume, run:\n  {again}\n")
    else:
        sys.stderr.write("\nfanout: interrupted\n")
    sys.stderr.flush()
    return EXIT_INTERRUPTED


# -- typed numbers: a bad value is a usage error (exit 2) naming the option, never a traceback --


def _number(kind: Callable[[str], float], text: str) -> float:
    try:
        value = kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_int(text: str) -> int:
    """An integer of at least 1 (a concurrency, a count of processes)."""
    value = int(_number(int, text))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def at_most(limit: int) -> Callable[[str], int]:
    """An integer from 1 to ``limit`` (a stage's concurrency, the worker processes)."""

    def parse(text: str) -> int:
        value = positive_int(text)
        if value > limit:
            raise argparse.ArgumentTypeError(f"must be at most {limit}, got {value}")
        return value

    parse.__name__ = f"an integer from 1 to {limit}"
    return parse


def non_negative_int(text: str) -> int:
    value = int(_number(int, text))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def port_number(text: str) -> int:
    """A TCP port, or 0 for any free one."""
    value = int(_number(int, text))
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 0 to 65535, got {value}")
    return value


def positive_float(text: str) -> float:
    """A number above 0 (a rate limit in calls/s, a size in MB)."""
    value = _number(float, text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(float, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def share(text: str) -> float:
    """A share from 0 to 1 inclusive (a fault or duplicate rate)."""
    value = _number(float, text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {text}")
    return value


def share_below_one(text: str) -> float:
    """A share from 0 up to, not including, 1."""
    value = _number(float, text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {text}")
    return value


def integer(text: str) -> int:
    return int(_number(int, text))


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


def add_api_args(p: argparse.ArgumentParser, *, url_help: str | None = None) -> None:
    """``--api FILE`` (the API description; default Hermes' built-in) and, with ``url_help``,
    ``--api-url`` (its base URL), which ``--hermes-url`` still spells as before."""
    p.add_argument(
        "--api",
        metavar="FILE",
        help="the API description, YAML or JSON (default: Hermes' built-in; docs/describe-your-api.md)",
    )
    if url_help is not None:
        p.add_argument("--api-url", "--hermes-url", dest="api_url", metavar="URL", help=url_help)


def api_from_args(args: argparse.Namespace) -> ApiDescription:
    """The description ``--api`` names, loaded once per command (a bad one: one line, exit 2)."""
    from fanout.api_choice import load_api

    api = getattr(args, "_api", None)
    if api is None:
        api = load_api(getattr(args, "api", None))
        args._api = api
    return api


def table_from_args(args: argparse.Namespace) -> StageTable:
    """The stage table of ``--api``'s description (the product's for Hermes)."""
    from fanout.api_choice import table_of

    table = getattr(args, "_table", None)
    if table is None:
        table = table_of(api_from_args(args))
        args._table = table
    return table


def stage_arg(args: argparse.Namespace, table: StageTable) -> str | None:
    """``--stage``, checked against the run's table (its stages are the description's levels)."""
    stage = getattr(args, "stage", None)
    if stage is not None and stage not in table.names:
        raise UsageError(
            f"argument --stage: invalid choice: {stage!r} (choose from {', '.join(table.names)})"
        )
    return stage


def add_concurrency_args(p: argparse.ArgumentParser) -> None:
    for name in STAGE_NAMES:
        p.add_argument(
            f"--{name.replace('_', '-')}-concurrency",
            type=at_most(MAX_CONCURRENCY),
            metavar="N",
            help=f"tasks of stage {name} run at once (default: its reserved concurrency)",
        )
    p.add_argument(
        "--concurrency",
        action="append",
        metavar="STAGE=N",
        help="tasks of any stage (of --api's description) run at once; may be repeated",
    )
    p.add_argument("--no-pacing", action="store_true", help="no client-side rate pacing (cap only)")
    p.add_argument(
        "--processes",
        type=at_most(MAX_PROCESSES),
        metavar="N",
        help="worker processes for the Parquet-writing stage (default: one per core; 1: threads only)",
    )
    p.add_argument("--quiet", action="store_true", help="no live progress")


def add_stale_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--stale-after",
        type=non_negative_float,
        metavar="SECONDS",
        help="a pending task older than this counts as lost "
        "(default: the stage's maximum event age plus its retry window, from --env)",
    )


def stale_threshold(args: argparse.Namespace) -> Any:
    from fanout.settings_files import find_settings
    from fanout.status import stale_after_s

    if args.stale_after is not None:
        return lambda _stage: args.stale_after
    settings = find_settings(args.env, args.config, table_from_args(args).names)
    return lambda stage: stale_after_s(settings, stage)


def spec_from_args(args: argparse.Namespace) -> StorageSpec:
    """Where the bucket is, as a spec that worker processes can open too."""
    if args.bucket and args.bucket_dir:
        raise UsageError("give --bucket or --bucket-dir, not both")
    if args.s3_endpoint_url and not args.bucket:
        raise UsageError("--s3-endpoint-url needs --bucket")
    if args.bucket_dir and Path(args.bucket_dir).exists() and not Path(args.bucket_dir).is_dir():
        raise UsageError(f"--bucket-dir {args.bucket_dir} is a file, not a directory")
    fault_rate = getattr(args, "storage_fault_rate", 0.0) or 0.0
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
        from fanout.leaf_workers import default_processes

        return default_processes()
    return int(args.processes)


def concurrency_from_args(args: argparse.Namespace, table: StageTable | None = None) -> dict[str, int]:
    """The ``--<stage>-concurrency`` overrides given (argparse has checked each is 1 to
    MAX_CONCURRENCY), and ``--concurrency STAGE=N`` for any stage of ``table``."""
    names = table.names if table is not None else STAGE_NAMES
    out = {}
    for name in STAGE_NAMES:
        value = getattr(args, f"{name}_concurrency", None)
        if value is not None:
            if name not in names:
                raise UsageError(
                    f"--{name.replace('_', '-')}-concurrency: the API's stages are {', '.join(names)}; "
                    "use --concurrency STAGE=N"
                )
            out[name] = value
    for given in getattr(args, "concurrency", None) or ():
        name, _, text = given.partition("=")
        if name not in names:
            raise UsageError(f"--concurrency {given}: no stage {name!r}; stages are {', '.join(names)}")
        try:
            out[name] = at_most(MAX_CONCURRENCY)(text)
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"--concurrency {given}: {exc}") from None
    return out


def open_run(args: argparse.Namespace, run_id: str) -> tuple[Storage, str]:
    """The bucket of a run that must exist: a missing run (or bucket folder) is a usage error
    naming the runs there are, and no folder is created to find that out. A run crawled with
    another description than ``--api``'s is refused too (``fanout.api_choice``)."""
    from fanout.api_choice import check_recorded_api
    from fanout.runs import NoSuchRun, require_run
    from fanout_core.errors import PermanentError, TransientError
    from fanout_core.keys import RUN_ID_RE

    if not RUN_ID_RE.fullmatch(run_id):
        raise UsageError(f"run id {run_id!r} must match [A-Za-z0-9._-]{{1,64}}")
    spec = spec_from_args(args)
    if spec.bucket_dir is not None and not Path(spec.bucket_dir).is_dir():
        raise UsageError(f"no run {run_id} in this bucket; {spec.bucket_dir} does not exist")
    table = table_from_args(args)
    storage, where = storage_from_args(args)
    try:
        require_run(storage, run_id, table)
        check_recorded_api(storage, table, run_id)
    except NoSuchRun as exc:
        raise UsageError(str(exc)) from None
    except (TransientError, PermanentError) as exc:  # S3 (or its endpoint) would not answer
        raise UsageError(f"cannot read the bucket {where}: {exc}") from None
    return storage, where
