"""``fanout demo``: the whole crawl on one machine against the bundled simulator.

With ``--api FILE`` the simulator serves that description and the run's rows are checked
against its truth (``fanout.simulator.truth``) row for row; Hermes' demo counts them as it
always has.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import replace

from fanout.api_choice import is_builtin
from fanout.audit import count_rows
from fanout.bucket import StorageSpec
from fanout.failure_report import redrive_command
from fanout.run_summary import show_summary
from fanout.settings_files import find_settings, parse_for
from fanout.simulator import run_in_subprocess
from fanout.simulator.truth import expected_rows, simulator_config, universe_for
from fanout.start_run import start_run
from fanout_core.api_description import ApiDescription
from fanout_core.bodies import manifest_body
from fanout_core.settings import EnvironmentSettings, environment_to_raw
from fanout_core.stages import STAGE_NAMES, StageTable
from fanout_core.storage import Storage

DEMO_TOKEN = "demo-token"
DEMO_ENV = "local"
"""The environment a demo runs with unless ``--env`` names another, and whose settings for
the simulator, the rate and retry timing a demo always keeps."""
TAKEN_FROM_ENV = (
    "stages",
    "max_attempts",
    "hermes_page_size",
    "hermes_timeout_s",
    "hermes_request_deadline_s",
    "hermes_max_pages",
    "hermes_max_items_per_list",
    "max_records_per_task",
)
"""What ``demo --env E`` takes from E: every stage setting (units_per_task, reserved
concurrency, rate weight, memory, timeout...), so the bucket holds the tasks E's functions
would write, and the crawl's limits. The rest (Hermes URL, token, rate limit and start,
retry delays, account, region) stays the demo's: a simulator on this machine, paced to a
rate it can serve, retried in seconds, not E's minutes. E's ``pacing`` and ``engine`` do not apply to a crawl
on one machine (``fanout cost --env E`` prices them)."""


def demo_settings(env: str, config: str | None, table: StageTable | None = None) -> EnvironmentSettings:
    """The settings a demo crawls with: the ``local`` environment's, with ``env``'s task
    shapes and limits (``TAKEN_FROM_ENV``) laid over them; ``config`` overlays ``env``.
    ``table``: the run's (its stage names; the product's by default)."""
    names = table.names if table is not None else STAGE_NAMES
    if env == DEMO_ENV:
        return find_settings(DEMO_ENV, config, names)
    shapes = find_settings(env, config, names)
    own = find_settings(DEMO_ENV, None, names)
    merged = replace(own, name=shapes.name, **{name: getattr(shapes, name) for name in TAKEN_FROM_ENV})
    # Checked as the leaf workers will read it, so a mix that does not hold is one line here.
    return parse_for(shapes.name, environment_to_raw(merged), names)


def _tree(api: ApiDescription, sizes: tuple[int, ...]) -> str:
    """``10 orgs x 4 teams x ...``: how many units each stage's level has per list."""
    levels = api.stage_levels
    return " x ".join(
        f"{n} {level.name.replace('_', ' ')}" for n, level in zip(sizes[: len(levels)], levels, strict=True)
    )


def run_demo(
    args: argparse.Namespace,
    storage_from_args: Callable[[argparse.Namespace], tuple[Storage, str]],
    concurrency: dict[str, int],
    processes: int = 1,
    storage_spec: StorageSpec | None = None,
    *,
    table: StageTable,
) -> int:
    api = table.api
    hermes = is_builtin(api)
    config = simulator_config(
        api,
        args.size,
        awkward_ids=args.awkward_ids,
        rate_limit=args.rate_limit,
        **({"token": DEMO_TOKEN} if hermes else {}),
    )
    universe = universe_for(api, config)
    settings = demo_settings(args.env, args.config, table)
    if args.rate_limit:
        settings = replace(settings, hermes_rate_limit=args.rate_limit)
    storage, where = storage_from_args(args)
    run_id = args.run_id or "demo-" + time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    expected_calls = universe.expected_calls(settings.hermes_page_size)
    print(
        f"fanout demo: run {run_id}, {_tree(api, config.sizes_for(len(api.levels)))}\n"
        f"  about {expected_calls} API calls",
        file=sys.stderr,
    )
    with run_in_subprocess(config, api=None if hermes else api) as url:
        served = "hermes" if hermes else f"{api.name} (from {api.source})"
        print(f"  {served} simulator at {url}\n  bucket at {where}", file=sys.stderr)
        outcome = start_run(
            storage,
            settings,
            run_id=run_id,
            manifest=manifest_body(None, api),
            hermes_url=url,
            token=config.token,
            table=table,
            concurrency=concurrency,
            pacing=not args.no_pacing,
            progress=None if args.quiet else sys.stderr,
            processes=processes,
            storage_spec=storage_spec,
            compact=not getattr(args, "no_compact", False),
        )
    if hermes:
        expected = sum(1 for _ in universe.expected_rows())
        written, _files = count_rows(storage, run_id, table)
        match = written == expected
    else:  # row for row: every value of every column, as the truth normalizes it
        from fanout.audit import output_rows
        from fanout.simulator.truth import compare_rows

        want = list(expected_rows(api, config))
        expected = len(want)
        match = compare_rows(output_rows(storage, run_id, table)[0], want).exact
    rows = [
        (
            "rows expected",
            f"{expected} (the simulator's truth){'' if match else ' - MISMATCH'}",
        )
    ]
    doc: dict[str, object] = {"rows_expected": expected, "rows_match": match}
    if outcome.compaction is not None:
        done = outcome.compaction
        rows.append(("compacted into", f"{len(done.files)} file(s), generation {done.generation}"))
    doc["compacted_files"] = len(outcome.compaction.files) if outcome.compaction is not None else None
    if args.env != DEMO_ENV:
        cost = cost_command(run_id, storage_spec or StorageSpec(bucket_dir=where), args.env, args.config)
        rows.append((f"tasks shaped as {args.env}", f"what it costs deployed: {cost}"))
    command = redrive_command(
        run_id,
        storage_spec or StorageSpec(bucket_dir=where),
        env=args.env,
        config=args.config,
        api=getattr(args, "api", None),
    )
    show_summary(outcome, storage, where, as_json=args.json, redrive=command, extra_rows=rows, extra_doc=doc)
    return 0 if outcome.ok and match else 1


def cost_command(run_id: str, spec: StorageSpec, env: str, config: str | None) -> str:
    """The ``fanout cost`` that prices a demo run as ``env`` would run it deployed."""
    argv = ["fanout", "cost", run_id, *spec.argv(), "--env", env]
    if config:
        argv += ["--config", config]
    return " ".join(shlex.quote(a) for a in argv)
