"""``fanout status``: per-stage task counts of a run, read from the bucket; with
``--queues`` also each stage's queue depth (engine ``queue``: its stage and retry queues;
``s3_events``: its retry queue) and dead letters, from SQS and CloudWatch."""

from __future__ import annotations

import argparse
import json
from typing import Any

from fanout.cli.common import (
    EXIT_FAILURES,
    EXIT_INCOMPLETE,
    EXIT_OK,
    UsageError,
    add_api_args,
    add_settings_args,
    add_stale_args,
    add_storage_args,
    non_negative_int,
    open_run,
    spec_from_args,
    stale_threshold,
    table_from_args,
)
from fanout_core.errors import FanoutError, SettingsError


def register(sub: Any) -> None:
    status = sub.add_parser("status", help="per-stage task counts of a run, read from the bucket")
    status.add_argument("run_id", help="the run id (the manifest's name without .json)")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.add_argument(
        "--show-pending", type=non_negative_int, default=5, metavar="N", help="list up to N unfinished tasks"
    )
    status.add_argument(
        "--queues",
        action="store_true",
        help="with --bucket: each stage's queued messages (waiting, in flight, delayed), dead "
        "letters and oldest message's age (needs AWS access to the stack)",
    )
    add_api_args(status)
    add_stale_args(status)
    add_storage_args(status)
    add_settings_args(status)
    add_stack_args(status)

    status.set_defaults(run=_status)


def add_stack_args(p: argparse.ArgumentParser) -> None:
    """Where the deployed stack is, for the commands that read its queues."""
    g = p.add_argument_group("where the stack is (--queues, --from-dlq)")
    g.add_argument("--stack-name", help="the stack whose outputs name the queues (default Fanout-<env>)")
    g.add_argument(
        "--aws-endpoint-url", help="endpoint for CloudFormation, SQS and CloudWatch (a moto server, ...)"
    )


def open_queues(args: argparse.Namespace) -> Any:
    """The stack's stage queues; a usage error (exit 2), one line, without access to them."""
    from fanout.queues import STACK_NAME, QueueEngineError, connect

    if not args.bucket:
        raise UsageError("the stage queues are deployed: give --bucket B")
    stack = args.stack_name or STACK_NAME.format(env=args.env)
    try:
        return connect(stack, region=args.region, endpoint_url=args.aws_endpoint_url)
    except QueueEngineError as exc:
        raise UsageError(f"{exc}; give --stack-name, --region or --env") from None


def _queue_depths(args: argparse.Namespace) -> tuple[Any, list[Any]]:
    from fanout.aws_clients import AWS_ERRORS, aws_problem
    from fanout.queues import queue_status

    access = open_queues(args)
    try:
        return access, queue_status(access.sqs, access.urls, cloudwatch=access.cloudwatch)
    except AWS_ERRORS as exc:
        raise UsageError(
            f"no AWS access to the queues of stack {access.stack_name} ({aws_problem(exc)})"
        ) from None


def _status(args: argparse.Namespace) -> int:
    from fanout.failure_report import (
        failed_items,
        group_failures,
        read_failures,
        redrive_command,
        render_groups,
    )
    from fanout.status import run_status

    table = table_from_args(args)  # the description's table: picked here once, passed on
    storage, where = open_run(args, args.run_id)
    engine = engine_of(args) if args.bucket else None  # the settings read once
    if args.queues and engine == "stepfunctions":
        raise UsageError(NO_QUEUES)
    access, depths = _queue_depths(args) if args.queues else (None, [])
    stale_after = stale_threshold(args)
    if access is not None and depths and args.stale_after is None:
        from fanout.queues import stale_after_in_queue_mode
        from fanout.settings_files import find_settings

        stale_after = stale_after_in_queue_mode(find_settings(args.env, args.config), depths, access.urls)
    execution, execution_note = _execution(args, engine)
    if execution is not None and execution.status == "RUNNING" and args.stale_after is None:
        # engine stepfunctions: a stage's tasks wait for its Map (the stage above must
        # finish first) and the running execution owns them: none is lost yet
        stale_after = None
    try:
        status = run_status(storage, args.run_id, stale_after=stale_after, table=table)
    except FanoutError as exc:
        raise UsageError(str(exc)) from exc
    groups = (
        group_failures(failed_items(read_failures(storage, args.run_id, table=table), table=table))
        if status.failed
        else []
    )
    redrive = redrive_command(
        args.run_id, spec_from_args(args), env=args.env, config=args.config, api=args.api
    )
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
                    "stale": len(s.stale),
                }
                for s in status.stages
            },
            "failed_tasks": status.failed_keys,
            "stale_tasks": status.stale,
            "failures": [g.to_json() for g in groups],
            "redrive_command": redrive if status.failed else None,
        }
        if access is not None:
            doc["stack"] = access.stack_name
            doc["queues"] = {d.stage: {k: v for k, v in d.as_dict().items() if k != "stage"} for d in depths}
        if execution is not None or execution_note is not None:
            doc["execution"] = execution.as_dict() if execution is not None else None
            doc["execution_note"] = execution_note
        print(json.dumps(doc, indent=2))
    else:
        print(f"run {status.run_id} in {where}")
        print(f"  {'stage':<12} {'written':>8} {'finished':>9} {'failed':>7} {'pending':>8} {'stale':>6}")
        for s in status.stages:
            print(
                f"  {s.stage:<12} {s.written:>8} {s.finished:>9} {s.failed:>7} {s.open:>8} {len(s.stale):>6}"
            )
        print(f"  data files: {status.data_files} in {table.output_run_prefix(status.run_id)}")
        print(f"  complete: {'yes' if status.complete else 'no'}")
        if access is not None:
            _print_depths(access.stack_name, depths, access.urls)
        if execution is not None:
            _print_execution(execution)
        elif execution_note is not None:
            print(f"  execution: {execution_note}")
        pending = [k for s in status.stages for k in s.pending][: args.show_pending]
        for key in pending:
            print(f"    pending: {key}")
        if status.stale:
            print(
                f"  {len(status.stale)} task(s) look lost; "
                f"`fanout redrive {status.run_id} --stale` re-triggers them"
            )
        for line in render_groups(groups):
            print(f"  {line}")
        if status.failed:
            print(f"  {status.failed} task(s) failed (`fanout failures {status.run_id}` lists them);")
            print("  fix the cause, then")
            print(f"    {redrive}")
    if not status.complete:
        return EXIT_INCOMPLETE
    return EXIT_FAILURES if status.failed else EXIT_OK


def engine_of(args: argparse.Namespace) -> str | None:
    """The environment's engine; None when its settings cannot be read (a bucket's counts
    and a redrive by task objects need none)."""
    from fanout.settings_files import find_settings

    try:
        return find_settings(args.env, args.config).engine
    except (FanoutError, SettingsError):
        return None


NO_QUEUES = (
    "engine stepfunctions has no stage queues: `fanout status RUN --bucket B` shows the run's "
    "execution, `fanout redrive RUN --bucket B` redrives it"
)


def _execution(args: argparse.Namespace, engine: str | None) -> tuple[Any, str | None]:
    """Engine ``stepfunctions`` with ``--bucket``: the run's execution and its Map Runs
    (None and a one-line note when there is none or no AWS access); (None, None) else."""
    if not args.bucket or engine != "stepfunctions":
        return None, None
    from fanout.aws_clients import AWS_ERRORS, aws_problem
    from fanout.queues import STACK_NAME
    from fanout.sfn_runs import StepFunctionsError, connect, machine_arn, run_execution

    stack = args.stack_name or STACK_NAME.format(env=args.env)
    try:
        cloudformation, sfn = connect(args.region, args.aws_endpoint_url)
        found = run_execution(sfn, machine_arn(cloudformation, stack), args.run_id)
    except AWS_ERRORS as exc:
        return None, f"no AWS access to the run's execution in stack {stack} ({aws_problem(exc)})"
    except StepFunctionsError as exc:
        return None, str(exc)
    return (found, None) if found is not None else (None, f"run {args.run_id} has no execution")


def _print_execution(execution: Any) -> None:
    redrives = f", redriven {execution.redrive_count}x" if execution.redrive_count else ""
    print(f"  execution {execution.name}: {execution.status}{redrives}")
    print(f"  {'map run':<12} {'status':>9} {'succeeded':>9} {'failed':>7} {'pending':>8} {'running':>8}")
    for m in execution.map_runs:
        print(f"  {m.label:<12} {m.status:>9} {m.succeeded:>9} {m.failed:>7} {m.pending:>8} {m.running:>8}")


def _print_depths(stack: str, depths: list[Any], urls: Any) -> None:
    engines = {u.engine for u in urls.values()}
    which = "retry queues" if engines == {"s3_events"} else "stage and retry queues"
    print(f"  queues of stack {stack} (all runs; {which}, dead-letter queues):")
    print(f"  {'stage':<12} {'waiting':>8} {'in flight':>9} {'delayed':>8} {'dead':>6} {'oldest':>8}")
    for d in depths:
        oldest = "-" if d.oldest_age_s is None else f"{d.oldest_age_s:.0f} s"
        print(
            f"  {d.stage:<12} {d.waiting:>8} {d.in_flight:>9} {d.delayed:>8} {d.dead_letters:>6} {oldest:>8}"
        )
