"""``fanout redrive``: re-trigger a run's failed (and lost) tasks."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from fanout.cli.common import (
    EXIT_FAILURES,
    EXIT_OK,
    UsageError,
    add_api_args,
    add_concurrency_args,
    add_settings_args,
    add_stale_args,
    add_storage_args,
    concurrency_from_args,
    open_run,
    processes_from_args,
    spec_from_args,
    stage_arg,
    stale_threshold,
    table_from_args,
)
from fanout.cli.status_command import NO_QUEUES, add_stack_args, engine_of, open_queues
from fanout_core.keys import RUN_ID_RE
from fanout_core.stages import STAGE_NAMES
from fanout_core.storage import Storage


def register(sub: Any) -> None:
    redrive = sub.add_parser("redrive", help="re-trigger failed (and lost) tasks of a run")
    redrive.add_argument("run_id", help="the run id (the manifest's name without .json)")
    redrive.add_argument(
        "--stage", metavar="STAGE", help=f"only this stage's failures ({', '.join(STAGE_NAMES)})"
    )
    redrive.add_argument(
        "--error-class",
        metavar="KIND",
        help="only failures of this kind (not_found, unauthorized, timeout, ...; `fanout failures RUN`)",
    )
    redrive.add_argument(
        "--stale", action="store_true", help="also re-trigger tasks pending past the threshold"
    )
    redrive.add_argument(
        "--from-dlq",
        action="store_true",
        help="with --bucket: move the run's messages from each stage's dead-letter queue back to "
        "its stage queue (engine queue) or retry queue (s3_events) (needs AWS access to the stack)",
    )
    add_api_args(
        redrive, url_help="with --bucket-dir: run the redriven tasks locally to the end at this base URL"
    )
    redrive.add_argument("--json", action="store_true", help="print the result as JSON")
    add_stale_args(redrive)
    add_storage_args(redrive)
    add_settings_args(redrive)
    add_concurrency_args(redrive)
    add_stack_args(redrive)

    redrive.set_defaults(run=_redrive, resumable=True)


def _redrive(args: argparse.Namespace) -> int:
    from fanout.api_choice import secret_for
    from fanout.failure_report import UnknownKind, check_kind, redrive_command
    from fanout.redrive import describe, is_empty, redrive, select_failures, to_json
    from fanout.run_summary import show_summary
    from fanout.settings_files import find_settings
    from fanout.start_run import start_run

    if not RUN_ID_RE.fullmatch(args.run_id):
        raise UsageError(f"run id {args.run_id!r} must match [A-Za-z0-9._-]{{1,64}}")
    if args.error_class is not None:
        try:
            check_kind(args.error_class)
        except UnknownKind as exc:
            raise UsageError(str(exc)) from None
    if args.from_dlq:
        if args.bucket and engine_of(args) == "stepfunctions":
            raise UsageError(NO_QUEUES)
        return _from_dead_letters(args)
    table = table_from_args(args)
    stage = stage_arg(args, table)
    if not args.bucket and not args.api_url:
        flag, variable = ("--api-url", table.api.auth.env) if args.api else ("--hermes-url", "HERMES_TOKEN")
        raise UsageError(f"locally, redrive runs the tasks too: give {flag} (token from ${variable})")
    storage, where = open_run(args, args.run_id)
    stale_after = stale_threshold(args) if args.stale else None
    matched = select_failures(storage, args.run_id, stage=stage, error_class=args.error_class, table=table)
    engine = engine_of(args) if args.bucket else None
    if not matched and not args.stale and engine != "stepfunctions":
        print(f"fanout: {_nothing(args)}", file=sys.stderr)
        return EXIT_FAILURES

    def do(target: Storage) -> Any:
        return redrive(
            target,
            args.run_id,
            stage=stage,
            error_class=args.error_class,
            stale=args.stale,
            stale_after=stale_after,
            table=table,
        )

    if args.bucket and engine == "stepfunctions":
        return _redrive_execution(args, do(storage), where)
    if args.bucket:
        result = do(storage)
        if args.json:
            print(json.dumps({"run_id": args.run_id, "bucket": where, **to_json(result)}, indent=2))
        else:
            print(f"redrive of {args.run_id} in {where}: {describe(result)}")
        if is_empty(result):
            print(f"fanout: {_nothing(args)}", file=sys.stderr)
            return EXIT_FAILURES
        return EXIT_OK
    token = secret_for(table.api)
    spec = spec_from_args(args)
    outcome = start_run(
        storage,
        find_settings(args.env, args.config, table.names),
        run_id=args.run_id,
        manifest=None,
        hermes_url=args.api_url,
        token=token,
        table=table,
        concurrency=concurrency_from_args(args, table),
        pacing=not args.no_pacing,
        progress=None if args.quiet else sys.stderr,
        prepare=do,
        processes=processes_from_args(args),
        storage_spec=spec,
    )
    command = redrive_command(
        args.run_id, spec, hermes_url=args.api_url, env=args.env, config=args.config, api=args.api
    )
    show_summary(
        outcome,
        storage,
        where,
        as_json=args.json,
        redrive=command,
        first_rows=[("redrive", describe(outcome.prepared))],
        extra_doc={"redrive": to_json(outcome.prepared)},
    )
    if is_empty(outcome.prepared):
        print(f"fanout: {_nothing(args)}", file=sys.stderr)
        return EXIT_FAILURES
    return EXIT_OK if outcome.ok else EXIT_FAILURES


def _redrive_execution(args: argparse.Namespace, result: Any, where: str) -> int:
    """Engine ``stepfunctions``: the failed tasks were written again (``result``); now
    the run's execution is redriven, or a fresh one started, and the output says which."""
    from fanout.aws_clients import AWS_ERRORS, aws_problem
    from fanout.queues import STACK_NAME
    from fanout.redrive import describe, is_empty, to_json
    from fanout.sfn_runs import StepFunctionsError, connect, machine_arn, redrive_run

    stack = args.stack_name or STACK_NAME.format(env=args.env)
    try:
        cloudformation, sfn = connect(args.region, args.aws_endpoint_url)
        outcome = redrive_run(
            sfn, machine_arn(cloudformation, stack), args.run_id, rewrote_tasks=not is_empty(result)
        )
    except AWS_ERRORS as exc:
        raise UsageError(
            f"no AWS access to the run's execution in stack {stack} ({aws_problem(exc)})"
        ) from None
    except StepFunctionsError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        doc = {"run_id": args.run_id, "bucket": where, **to_json(result)}
        doc["execution"] = {"action": outcome.action, "arn": outcome.execution_arn, "why": outcome.why}
        print(json.dumps(doc, indent=2))
    else:
        print(f"redrive of {args.run_id} in {where}: {describe(result)}")
        print(f"  {outcome.describe()}")
    return EXIT_OK


def _nothing(args: argparse.Namespace) -> str:
    """Why a redrive wrote nothing, in the filters the user gave."""
    given = [
        f"--{flag.replace('_', '-')} {getattr(args, flag)}"
        for flag in ("stage", "error_class")
        if getattr(args, flag)
    ]
    what = "no failure record" + (" matches " + " ".join(given) if given else "")
    if args.stale:
        what += " and no task is stale"
    return f"nothing to redrive: {what} in run {args.run_id} (fanout failures {args.run_id} lists them)"


def _from_dead_letters(args: argparse.Namespace) -> int:
    """``--from-dlq``: the run's dead letters back to where their stage consumes them (the
    stage queue in engine ``queue``, the retry queue in ``s3_events``)."""
    from fanout.aws_clients import AWS_ERRORS, aws_problem
    from fanout.queues import QueueEngineError, redrive_dead_letters, runs_of_message

    for flag, name in (("error_class", "error-class"), ("stale", "stale"), ("api_url", "hermes-url")):
        if getattr(args, flag):
            raise UsageError(f"--from-dlq moves messages; it takes no --{name}")
    if not args.bucket:
        raise UsageError("the dead-letter queues are deployed: give --bucket B")
    _storage, where = open_run(args, args.run_id)
    access = open_queues(args)
    moved: dict[str, int] = {}
    failures: tuple[type[BaseException], ...] = (*AWS_ERRORS, QueueEngineError)
    try:
        for stage, urls in access.urls.items():
            if args.stage in (None, stage):
                moved[stage] = redrive_dead_letters(
                    access.sqs, urls, keep=lambda body: args.run_id in runs_of_message(body)
                )
    except failures as exc:
        done = ", ".join(f"{s} {n}" for s, n in moved.items()) or "none"
        raise UsageError(
            f"dead letters of stack {access.stack_name}: {aws_problem(exc)} (moved so far: {done})"
        ) from None
    total = sum(moved.values())
    if args.json:
        print(
            json.dumps(
                {"run_id": args.run_id, "bucket": where, "stack": access.stack_name, "moved": moved}, indent=2
            )
        )
    else:
        per_stage = ", ".join(f"{s} {n}" for s, n in moved.items())
        print(
            f"redrive of {args.run_id} from the dead-letter queues of stack {access.stack_name}: "
            f"{total} message(s) moved back ({per_stage})"
        )
    if not total:
        print(
            f"fanout: nothing to redrive: no dead letter of run {args.run_id} in stack {access.stack_name}",
            file=sys.stderr,
        )
        return EXIT_FAILURES
    return EXIT_OK
