"""A Hermes that misbehaves on purpose, through the real CLI: ``fanout hermes serve`` with a
hostile mode and ``fanout local run`` against it, each in its own process.

One test per promise of "exactly once and always ending" (issue 8, what to build 1-6):
children decided once, everything bounded, records validated per unit, ids safe in every
position, nothing in a task trusted, secrets never shown. Each checks the rows against
the simulator's truth, the failure records against the cause, and that the run ended in
bounded time. (Event screening, reachable only through the Lambda entrypoints, is covered
on moto by ``tests/handlers/test_refusals.py``.)
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from task_bodies import data_groups_task

from fanout.audit import compare, output_rows
from fanout.simulator import SimConfig, Universe
from fanout_core import keys
from fanout_core.failures import FailureRecord
from fanout_core.fan_out import Plan
from fanout_core.stages import STAGES
from fanout_core.storage import LocalDirStorage

from .conftest import TOKEN, fanout_cli
from .test_cli import _finish, _manifest

HOSTILE_ENV: dict[str, Any] = {
    "hermes_rate_limit": 100000,
    "max_attempts": 4,
    "retry_base_delay_s": 0.02,
    "retry_max_delay_s": 0.1,
    "stages": {
        "warriors": {"reserved_concurrency": 2, "units_per_task": 2},
        "troops": {"reserved_concurrency": 3},
        "data_groups": {"reserved_concurrency": 4, "units_per_task": 2},
    },
}


@contextlib.contextmanager
def hermes_serve(*flags: str) -> Iterator[str]:
    """``fanout hermes serve`` on a free port; yields its URL, stops it at the end."""
    proc = fanout_cli("hermes", "serve", "--port", "0", "--token", TOKEN, *flags)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert " listening on " in line, proc.stderr.read() if proc.stderr else line
        yield line.split(" listening on ", 1)[1].split()[0]
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


class LocalRun:
    """``fanout local run`` of one manifest against one bucket, with chosen settings."""

    def __init__(self, tmp_path: Path, run_id: str, env: dict[str, Any] | None = None, **changes: Any):
        settings = {**HOSTILE_ENV, **(env or {}), **changes}
        self.config = tmp_path / "cdk.json"
        self.config.write_text(json.dumps({"context": {"environments": {"hostile": settings}}}))
        self.bucket = tmp_path / "bucket"
        self.store = LocalDirStorage(self.bucket)
        self.run_id = run_id
        self.manifest = _manifest(tmp_path, f"{run_id}.json", {"warriors": "all"})

    def __call__(self, url: str, *extra: str, timeout: float = 120) -> tuple[int, dict[str, str], str, float]:
        """Exit code, the JSON summary, stderr and the seconds the run took."""
        args = ["local", "run", str(self.manifest), "--hermes-url", url, "--bucket-dir", str(self.bucket)]
        args += ["--env", "hostile", "--config", str(self.config), "--json", "--quiet", "--processes", "1"]
        started = time.monotonic()
        code, out, err = _finish(fanout_cli(*args, *extra), timeout=timeout)
        took = time.monotonic() - started
        return code, (json.loads(out) if out.strip() else {}), err, took

    def failures(self) -> list[FailureRecord]:
        return [FailureRecord.from_bytes(self.store.get(k)) for k in self.store.list("failed/")]

    def failed_units(self) -> dict[tuple[str, ...], dict[str, Any]]:
        """Each failed unit's id path (warrior, troop, data group) -> its entry."""
        out = {}
        for record in self.failures():
            for unit in record.units:
                path = tuple(unit[f] for f in ("warrior_id", "troop_id", "data_group_id") if f in unit)
                out[path] = unit
        return out

    def rows_match(self, expected: Any) -> None:
        rows, _files = output_rows(self.store, self.run_id)
        comparison = compare(rows, expected)
        assert comparison.exact, comparison.summary()


def kept_groups(store: LocalDirStorage, run_id: str) -> list[tuple[str, str, str]]:
    """Every (warrior, troop, data group) the troops stage's plans decided on: the listings
    the run kept, whatever the server answered to later fetches."""
    out = []
    leaf = STAGES.leaf.input_prefix
    for key in store.list(f"plans/{STAGES.child_of(STAGES.first).input_prefix}"):  # type: ignore[union-attr]
        for child_key, body in Plan.from_bytes(store.get(key)).children:
            assert child_key.startswith(leaf) and run_id in child_key
            task = STAGES.leaf.body.from_bytes(body)
            out += [(*task.path, unit.id) for unit in task.units]
    return out


# -- 1. children decided once ------------------------------------------------------------------


def test_listings_that_change_between_attempts_and_repeat_ids_give_each_group_once(tmp_path: Path):
    """Odd fetches of a troop's listing add a group, even ones lack it, and every listing
    names one id twice; storage faults force re-attempts that list again. The rows are the
    truth as of the listings the plans kept, each group once, each repeat counted."""
    config = SimConfig.from_size("tiny", token=TOKEN, changing_listings=True, duplicate_ids=True)
    run = LocalRun(tmp_path, "changing", max_attempts=12)
    with hermes_serve("--size", "tiny", "--changing-listings", "--duplicate-ids") as url:
        code, summary, err, _ = run(url, "--storage-fault-rate", "0.1", "--fault-seed", "5")
    assert code == 0, err
    assert int(summary["retries"]) > 0  # attempts were repeated, so listings were fetched again
    groups = kept_groups(run.store, "changing")
    assert len(groups) == len(set(groups))
    universe = Universe(config)
    extras = {(w, t, g["data_group_id"]) for w, t, g in _extra_groups(universe)}
    assert extras & set(groups)  # some first fetch was an odd one: the extra group was kept
    run.rows_match(universe.expected_rows_for(groups))
    troop_listings = config.warriors
    group_listings = config.warriors * config.troops_per_warrior
    assert summary["duplicate_ids"] == troop_listings + group_listings


def _extra_groups(universe: Universe) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for w in universe.warriors():
        for t in universe.troops(w["warrior_id"]):
            extra = universe.extra_data_group(w["warrior_id"], t["troop_id"])
            assert extra is not None
            yield w["warrior_id"], t["troop_id"], extra


# -- 2. bounded everything ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["repeat", "cycle"])
def test_a_cursor_that_repeats_or_cycles_fails_its_unit_and_the_run_ends(tmp_path: Path, mode: str):
    config = SimConfig.from_size("tiny", token=TOKEN, cursor_loop=mode)
    run = LocalRun(tmp_path, f"loop-{mode}")
    with hermes_serve("--size", "tiny", "--cursor-loop", mode) as url:
        code, summary, err, took = run(url, timeout=60)
    assert code == 1, err
    universe = Universe(config)
    failed = run.failed_units()
    assert set(failed) == set(universe.expected_failures())
    (unit,) = failed.values()
    assert "next_page_token already followed" in unit["message"]
    assert unit["error_class"] == "PermanentError"
    assert summary["api_calls"] < universe.expected_calls() + 10  # no page loop
    assert took < 30, took
    run.rows_match(universe.expected_rows())


def test_a_server_that_drips_its_answers_cannot_hold_a_task_past_its_deadline(tmp_path: Path):
    """20 bytes/s: one page takes a minute, no socket read ever times out, and the request
    deadline (30 s) is longer than the stages' timeout_s (2 s, so a task deadline of 1.8 s):
    each attempt ends at its task deadline, the run ends with the seed's failure record."""
    stages = {
        name: {**spec, "timeout_s": 2}
        for name, spec in HOSTILE_ENV["stages"].items()  # type: ignore[attr-defined]
    }
    run = LocalRun(tmp_path, "drip", stages=stages, hermes_request_deadline_s=30, max_attempts=2)
    with hermes_serve("--size", "tiny", "--drip-bytes-per-s", "20") as url:
        code, _summary, err, took = run(url, timeout=60)
    assert code == 1, err
    (record,) = run.failures()
    assert record.task_key == STAGES.seed("drip").key
    assert record.attempts == 2
    assert "took longer than 1.8 s (the server is sending too slowly)" in record.message
    # It ended by itself: two attempts of 1.8 s each, the preflight's bounded call and
    # start-up; the bound is loose (a loaded 2-core CI machine), a hang would meet the
    # 60 s subprocess timeout instead.
    assert took < 45, took


def test_a_list_longer_than_max_pages_fails_only_its_group(tmp_path: Path):
    config = SimConfig.from_size("tiny", token=TOKEN)
    run = LocalRun(tmp_path, "pages", hermes_page_size=2, hermes_max_pages=3)
    with hermes_serve("--size", "tiny") as url:
        code, _summary, err, _ = run(url)
    assert code == 1, err
    universe = Universe(config)
    too_long = {}
    for w, t, g in universe.iter_group_paths():
        if len(universe.records(w, t, g)) > 6:
            too_long[(w, t, g)] = True
    assert too_long
    failed = run.failed_units()
    assert set(failed) == set(too_long)
    assert all("more than 3 pages (max_pages)" in u["message"] for u in failed.values())
    run.rows_match(universe.expected_rows_for(g for g in universe.iter_group_paths() if g not in too_long))


def test_a_group_with_more_records_than_a_task_may_hold_fails_alone(tmp_path: Path):
    config = SimConfig.from_size("tiny", token=TOKEN)
    run = LocalRun(tmp_path, "records", max_records_per_task=8)
    with hermes_serve("--size", "tiny") as url:
        code, _summary, err, _ = run(url)
    assert code == 1, err
    universe = Universe(config)
    failed = run.failed_units()
    assert failed
    assert all("max_records_per_task" in u["message"] for u in failed.values())
    kept = [g for g in universe.iter_group_paths() if g not in failed]
    assert all(len(universe.records(*g)) <= 8 for g in kept)
    run.rows_match(universe.expected_rows_for(kept))


# -- 3. records validated per unit ---------------------------------------------------------------


def test_a_record_the_contract_does_not_allow_fails_its_group_and_siblings_finish(tmp_path: Path):
    config = SimConfig.from_size("tiny", token=TOKEN, bad_records=True)
    run = LocalRun(tmp_path, "records-bad")
    with hermes_serve("--size", "tiny", "--bad-records") as url:
        code, _summary, err, _ = run(url)
    assert code == 1, err
    universe = Universe(config)
    kinds = universe.bad_record_groups()
    failed = run.failed_units()
    assert set(failed) == set(universe.expected_failures())
    said = {kinds[path]: unit["message"] for path, unit in failed.items()}
    assert set(said) == {"huge_int_value", "missing_metric", "nan_value"}  # lowercase_ts is kept
    assert "value" in said["huge_int_value"] and "record 1 of" in said["huge_int_value"]
    assert "metric" in said["missing_metric"] and "record 1 of" in said["missing_metric"]
    assert "NaN" in said["nan_value"]
    assert all(u["error_class"] == "BadRecord" for u in failed.values())
    assert all(r.attempts == 1 for r in run.failures())  # permanent: never retried
    run.rows_match(universe.expected_rows())


# -- 4. ids safe in every position ------------------------------------------------------------------


def test_ids_dot_and_dot_dot_reach_the_server_as_themselves(tmp_path: Path):
    """The simulator answers a literal or normalised-away "." segment with 404; every row of
    the warriors and troops named "." and ".." arriving proves each call went out encoded."""
    config = SimConfig.from_size("tiny", token=TOKEN, dot_ids=True)
    run = LocalRun(tmp_path, "dots")
    with hermes_serve("--size", "tiny", "--dot-ids") as url:
        code, _summary, err, _ = run(url)
    assert code == 0, err
    universe = Universe(config)
    assert {w["warrior_id"] for w in universe.warriors()} >= {".", ".."}
    run.rows_match(universe.expected_rows())
    assert not run.failures()


def test_ids_of_128_characters_at_every_level_give_keys_s3_and_the_disk_accept(tmp_path: Path):
    """Each id percent-encodes to 380+ bytes; unshortened, a data key would be ~1,300 bytes
    and a folder name over 255. Keys stay under 1,024 bytes, every path component under
    255, and the Parquet columns hold the full ids."""
    config = SimConfig.from_size("tiny", token=TOKEN, long_ids=True)
    run = LocalRun(tmp_path, "long")
    with hermes_serve("--size", "tiny", "--long-ids") as url:
        code, _summary, err, _ = run(url, "--no-compact")
    assert code == 0, err
    universe = Universe(config)
    run.rows_match(universe.expected_rows())
    every_key = list(run.store.list(""))
    assert any(k.startswith("data/run=long/") for k in every_key)
    assert max(len(k.encode()) for k in every_key) < 1024
    assert max(len(part.encode()) for k in every_key for part in k.split("/")) <= 255
    assert any("~" in k for k in every_key)  # shortened with a digest


# -- 5. nothing in a task trusted ------------------------------------------------------------------


def test_a_task_whose_body_names_another_warrior_than_its_key_is_refused(tmp_path: Path):
    """A crafted data_groups task under warrior A whose body says warrior B: the resumed run
    gives it a failure record and writes no row into A's folder."""
    config = SimConfig.from_size("tiny", token=TOKEN)
    universe = Universe(config)
    a, b = (w["warrior_id"] for w in universe.warriors()[:2])
    troop_b = universe.troops(b)[0]
    groups = universe.data_groups(b, troop_b["troop_id"])[:1]
    run = LocalRun(tmp_path, "crafted")
    crafted = STAGES.leaf.address("crafted", (a, troop_b["troop_id"]), 7).key
    body = data_groups_task(
        "crafted", b, troop_b["troop_id"], troop_b["service"], tuple(_group(g) for g in groups)
    )
    run.store.put(crafted, body.to_bytes())
    with hermes_serve("--size", "tiny") as url:
        code, _summary, err, _ = run(url)
    assert code == 1, err
    (record,) = run.failures()
    assert record.task_key == crafted
    assert record.error_class == "BadTask"
    assert not run.store.exists(keys.done_key(crafted))
    rows, _ = output_rows(run.store, "crafted")
    assert compare(rows, universe.expected_rows()).exact  # nothing of B's written twice or under A


def _group(item: dict[str, Any]) -> Any:
    return STAGES.leaf.body.unit_from_item(item)


# -- 6. secrets never leave ------------------------------------------------------------------------


@pytest.mark.parametrize("token", [f"{TOKEN}\r\n", f" {TOKEN}", f"{TOKEN}\n"])
def test_a_token_with_whitespace_or_a_line_break_is_refused_at_start_without_being_shown(
    tmp_path: Path, token: str
):
    run = LocalRun(tmp_path, "tok")
    args = ["local", "run", str(run.manifest), "--hermes-url", "http://127.0.0.1:9"]
    args += ["--bucket-dir", str(run.bucket)]
    code, out, err = _finish(fanout_cli(*args, env={"HERMES_TOKEN": token}), timeout=60)
    assert code == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "whitespace or a control character" in err
    assert TOKEN not in err + out
    assert not run.store.exists(STAGES.seed("tok").key)  # refused before anything started
