"""run_task on a local bucket with a Hermes made of dicts: what each stage writes, that it
writes it once, and how one unit's permanent failure differs from a whole-task failure.

The ``settings`` fixture puts two units in every task, so batching shows with a few ids.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import task_bodies as tb
import task_keys
from task_bodies import data_group, troop, warriors_part

from fanout_core import keys
from fanout_core.bodies import Unit, manifest_body
from fanout_core.errors import BadManifest, BadTask, PermanentError, TransientError
from fanout_core.failures import FailureRecord
from fanout_core.output import COLUMNS, read_parquet_bytes
from fanout_core.pipeline import TaskContext, TaskResult, run_task
from fanout_core.stages import STAGES, stage_for_key
from fanout_core.storage import LocalDirStorage

RUN = "r1"
FETCHED_AT = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)


def rec(ts: str, metric: str, value: float | None, unit: str | None) -> dict[str, Any]:
    return {"ts": ts, "metric": metric, "value": value, "unit": unit}


def world(fake_hermes: type, **overrides: Any) -> Any:
    """Warriors w1..w3; w1 has troops t1..t3 (listed out of order), w2 has t4, w3 none;
    (w1, t1) has groups g1..g3, where g2 holds no records and g3 a null value and unit."""
    data: dict[str, Any] = dict(
        warriors=["w2", "w1", "w3"],
        troops={
            "w1": [
                {"troop_id": "t3", "service": "search"},
                {"troop_id": "t1", "service": "auth"},
                {"troop_id": "t2", "service": "billing"},
            ],
            "w2": [{"troop_id": "t4", "service": "ledger"}],
        },
        data_groups={
            ("w1", "t1"): [
                {"data_group_id": "g3", "name": "errors 3"},
                {"data_group_id": "g1", "name": "metrics 1"},
                {"data_group_id": "g2", "name": "latency 2"},
            ],
            ("w1", "t2"): [{"data_group_id": "g4", "name": "traffic 4"}],
        },
        records={
            ("w1", "t1", "g1"): [
                rec("2026-11-27T08:00:00Z", "cpu_pct", 12.5, "%"),
                rec("2026-11-27T08:05:00Z", "requests", 3, "1/s"),
            ],
            ("w1", "t1", "g2"): [],
            ("w1", "t1", "g3"): [rec("2026-11-27T08:10:00Z", "queue_depth", None, None)],
            ("w1", "t2", "g4"): [rec("2026-11-27T08:15:00Z", "errors", -0.25, "1/s")],
        },
    )
    data.update(overrides)
    return fake_hermes(**data)


@pytest.fixture
def ctx_for(store: LocalDirStorage, settings) -> Callable[..., TaskContext]:
    def make(hermes: Any, fetched_at: datetime = FETCHED_AT) -> TaskContext:
        return TaskContext(
            storage=store, client=hermes, settings=settings, table=STAGES, clock=lambda: fetched_at
        )

    return make


def snapshot(store: LocalDirStorage, *, skip_done: bool = False) -> dict[str, bytes]:
    return {k: store.get(k) for k in store.list("") if not (skip_done and k.startswith("done/"))}


class CountingStore:
    """The storage calls a task makes, in order (each is one S3 request)."""

    def __init__(self, inner: LocalDirStorage):
        self.inner = inner
        self.calls: list[tuple[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        def call(key: str, *args: Any) -> Any:
            self.calls.append((name, key))
            return method(key, *args)

        return call


def put(store: LocalDirStorage, key: str, body: bytes) -> str:
    store.put(key, body)
    return key


# The task of each stage over the world above, put in the bucket.
def seed_task(store: LocalDirStorage) -> str:
    return put(store, task_keys.manifest_key(RUN), manifest_body(["w3", "w1", "w2"]))


def seed_all_task(store: LocalDirStorage) -> str:
    return put(store, task_keys.manifest_key(RUN), manifest_body(None))


def warriors_task(store: LocalDirStorage, warriors: tuple[str, ...] = ("w1", "w2")) -> str:
    return put(store, task_keys.warriors_part_key(RUN, 0), warriors_part(RUN, warriors).to_bytes())


def troops_task(
    store: LocalDirStorage, troops: tuple[Unit, ...] = (troop("t1", "auth"), troop("t2", "billing"))
) -> str:
    return put(store, task_keys.troops_task_key(RUN, "w1", 0), tb.troops_task(RUN, "w1", troops).to_bytes())


def data_groups_task(store: LocalDirStorage, groups: tuple[str, ...] = ("g1", "g2", "g3")) -> str:
    names = {"g1": "metrics 1", "g2": "latency 2", "g3": "errors 3"}
    task = tb.data_groups_task(RUN, "w1", "t1", "auth", tuple(data_group(g, names.get(g, g)) for g in groups))
    return put(store, task_keys.data_groups_task_key(RUN, "w1", "t1", 0), task.to_bytes())


STAGE_TASKS = {
    "seed": seed_task,
    "seed-all": seed_all_task,
    "warriors": warriors_task,
    "troops": troops_task,
    "data_groups": data_groups_task,
}


def children(store: LocalDirStorage, prefix: str) -> dict[str, bytes]:
    return {k: store.get(k) for k in store.list(prefix)}


def done_marker(store: LocalDirStorage, key: str) -> dict[str, Any]:
    return json.loads(store.get(keys.done_key(key)))


def failure(store: LocalDirStorage, key: str) -> FailureRecord:
    return FailureRecord.from_bytes(store.get(keys.failed_key(key)))


# --- the seed manifest -----------------------------------------------------------------------


def test_a_seed_list_is_split_into_sorted_parts_of_units_per_task(store, fake_hermes, ctx_for) -> None:
    hermes = world(fake_hermes)
    result = run_task(seed_task(store), ctx_for(hermes))
    assert children(store, f"amazon_warriors/run={RUN}/") == {
        task_keys.warriors_part_key(RUN, 0): warriors_part(RUN, ("w1", "w2")).to_bytes(),
        task_keys.warriors_part_key(RUN, 1): warriors_part(RUN, ("w3",)).to_bytes(),
    }
    assert result.children == 2
    assert hermes.total_calls == 0


def test_a_seed_of_all_lists_the_warriors_once_and_splits_them(store, fake_hermes, ctx_for) -> None:
    hermes = world(fake_hermes)
    result = run_task(seed_all_task(store), ctx_for(hermes))
    assert children(store, f"amazon_warriors/run={RUN}/") == {
        task_keys.warriors_part_key(RUN, 0): warriors_part(RUN, ("w1", "w2")).to_bytes(),
        task_keys.warriors_part_key(RUN, 1): warriors_part(RUN, ("w3",)).to_bytes(),
    }
    assert result.children == 2
    assert hermes.calls == {"list_warriors": 1}


def test_a_seed_of_all_with_no_warriors_is_permanent(store, fake_hermes, ctx_for) -> None:
    key = seed_all_task(store)
    with pytest.raises(PermanentError, match="no warriors"):
        run_task(key, ctx_for(fake_hermes(warriors=[])))
    assert not store.exists(keys.done_key(key))


def test_a_seed_that_is_not_a_manifest_is_bad_manifest(store, fake_hermes, ctx_for) -> None:
    key = put(store, task_keys.manifest_key(RUN), b'{"warriors": []}')
    with pytest.raises(BadManifest, match="empty list"):
        run_task(key, ctx_for(world(fake_hermes)))


def test_the_done_marker_counts_what_the_task_created(store, fake_hermes, ctx_for) -> None:
    key = seed_task(store)
    run_task(key, ctx_for(world(fake_hermes)))
    marker = done_marker(store, key)
    assert marker["stage"] == "warriors"
    assert (marker["children"], marker["files"], marker["records"], marker["failed_units"]) == (2, 0, 0, 0)


# --- warriors parts and troops tasks ---------------------------------------------------------


def test_a_warriors_part_writes_one_troops_task_per_troop_batch(store, fake_hermes, ctx_for) -> None:
    result = run_task(warriors_task(store), ctx_for(world(fake_hermes)))
    assert children(store, "troops/") == {
        task_keys.troops_task_key(RUN, "w1", 0): tb.troops_task(
            RUN, "w1", (troop("t1", "auth"), troop("t2", "billing"))
        ).to_bytes(),
        task_keys.troops_task_key(RUN, "w1", 1): tb.troops_task(
            RUN, "w1", (troop("t3", "search"),)
        ).to_bytes(),
        task_keys.troops_task_key(RUN, "w2", 0): tb.troops_task(
            RUN, "w2", (troop("t4", "ledger"),)
        ).to_bytes(),
    }
    assert result.children == 3


def test_a_warrior_without_troops_creates_nothing_and_fails_nothing(store, fake_hermes, ctx_for) -> None:
    key = warriors_task(store, ("w3",))
    result = run_task(key, ctx_for(world(fake_hermes)))
    assert result.children == 0 and result.failed_units == []
    assert set(store.list("")) == {key, keys.done_key(key), "plans/" + key}


def test_a_troops_task_writes_one_data_groups_task_per_group_batch(store, fake_hermes, ctx_for) -> None:
    result = run_task(troops_task(store), ctx_for(world(fake_hermes)))
    assert children(store, "data_groups/") == {
        task_keys.data_groups_task_key(RUN, "w1", "t1", 0): tb.data_groups_task(
            RUN, "w1", "t1", "auth", (data_group("g1", "metrics 1"), data_group("g2", "latency 2"))
        ).to_bytes(),
        task_keys.data_groups_task_key(RUN, "w1", "t1", 1): tb.data_groups_task(
            RUN, "w1", "t1", "auth", (data_group("g3", "errors 3"),)
        ).to_bytes(),
        task_keys.data_groups_task_key(RUN, "w1", "t2", 0): tb.data_groups_task(
            RUN, "w1", "t2", "billing", (data_group("g4", "traffic 4"),)
        ).to_bytes(),
    }
    assert result.children == 3


class _WritesPerAttempt:
    """A bucket that takes ``allowed`` child writes per attempt, then throttles (SlowDown)."""

    def __init__(self, inner: LocalDirStorage, allowed: int, prefix: str) -> None:
        self.inner, self.allowed, self.prefix = inner, allowed, prefix
        self.left = allowed
        self.child_writes: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def new_attempt(self) -> None:
        self.left = self.allowed

    def put_if_absent(self, key: str, body: bytes) -> bool:
        if key.startswith(self.prefix):
            if self.left == 0:
                raise TransientError(f"SlowDown: {key}", status=503, kind="storage")
            self.left -= 1
            self.child_writes.append(key)
        return self.inner.put_if_absent(key, body)


def test_a_retried_fan_out_writes_only_the_children_its_earlier_attempts_did_not(
    store, fake_hermes, ctx_for, settings
) -> None:
    key = troops_task(store)
    throttled = _WritesPerAttempt(store, allowed=1, prefix="data_groups/")
    ctx = TaskContext(
        storage=throttled,
        client=world(fake_hermes),
        settings=settings,
        table=STAGES,
        clock=lambda: FETCHED_AT,
    )
    attempts = 0
    while not store.exists(keys.done_key(key)):
        attempts += 1
        assert attempts <= 3, "each attempt must keep what the one before it wrote"
        throttled.new_attempt()
        with contextlib.suppress(TransientError):
            run_task(key, ctx)
    assert attempts == 3  # three children, one write let through per attempt
    assert sorted(throttled.child_writes) == sorted(children(store, "data_groups/"))  # each written once
    assert len(children(store, "data_groups/")) == 3


def test_a_fan_out_whose_children_are_all_written_already_writes_none_again(
    store, fake_hermes, ctx_for, settings
) -> None:
    key = troops_task(store)
    hermes = world(fake_hermes)
    run_task(key, ctx_for(hermes))
    store.delete(keys.done_key(key))  # a crash after the last child, before the done marker
    watched = _WritesPerAttempt(store, allowed=0, prefix="data_groups/")
    ctx = TaskContext(
        storage=watched, client=hermes, settings=settings, table=STAGES, clock=lambda: FETCHED_AT
    )
    result = run_task(key, ctx)
    assert watched.child_writes == [] and result.children == 0
    assert store.exists(keys.done_key(key))


# --- data groups and Parquet -----------------------------------------------------------------


def test_a_data_groups_task_writes_one_parquet_with_exactly_the_records(store, fake_hermes, ctx_for) -> None:
    key = data_groups_task(store)
    result = run_task(key, ctx_for(world(fake_hermes)))
    data_key = task_keys.data_key_for_task(key)
    assert list(store.list("data/")) == [data_key]
    frame = read_parquet_bytes(store.get(data_key))
    assert tuple(frame.columns) == COLUMNS
    rows = frame.to_dict("records")
    common = {"run_id": RUN, "warrior_id": "w1", "troop_id": "t1", "service": "auth"}
    expected = [
        {
            **common,
            "data_group_id": "g1",
            "ts": "2026-11-27T08:00:00Z",
            "metric": "cpu_pct",
            "value": 12.5,
            "unit": "%",
        },
        {
            **common,
            "data_group_id": "g1",
            "ts": "2026-11-27T08:05:00Z",
            "metric": "requests",
            "value": 3.0,
            "unit": "1/s",
        },
        {
            **common,
            "data_group_id": "g3",
            "ts": "2026-11-27T08:10:00Z",
            "metric": "queue_depth",
            "value": None,
            "unit": None,
        },
    ]
    assert len(rows) == len(expected)
    for row, want in zip(rows, expected, strict=True):
        assert {
            k: row[k]
            for k in ("run_id", "warrior_id", "troop_id", "service", "data_group_id", "metric", "unit")
        } == {
            k: want[k]
            for k in ("run_id", "warrior_id", "troop_id", "service", "data_group_id", "metric", "unit")
        }
        assert row["ts"] == datetime.fromisoformat(want["ts"].replace("Z", "+00:00"))
        assert row["fetched_at"] == FETCHED_AT
        if want["value"] is None:
            assert math.isnan(row["value"])
        else:
            assert row["value"] == want["value"]
    assert (result.files, result.records) == (1, 3)


def test_parquet_types_are_utc_timestamps_float_values_and_string_units(store, fake_hermes, ctx_for) -> None:
    key = data_groups_task(store)
    run_task(key, ctx_for(world(fake_hermes)))
    frame = read_parquet_bytes(store.get(task_keys.data_key_for_task(key)))
    assert str(frame["ts"].dt.tz) == "UTC" and str(frame["fetched_at"].dt.tz) == "UTC"
    assert frame["value"].dtype == "float64"
    assert frame["unit"].tolist() == ["%", "1/s", None]


def test_a_group_with_no_records_still_writes_a_file_with_the_schema(store, fake_hermes, ctx_for) -> None:
    key = data_groups_task(store, ("g2",))
    result = run_task(key, ctx_for(world(fake_hermes)))
    frame = read_parquet_bytes(store.get(task_keys.data_key_for_task(key)))
    assert tuple(frame.columns) == COLUMNS
    assert len(frame) == 0
    assert str(frame["ts"].dtype) == "datetime64[us, UTC]" and frame["value"].dtype == "float64"
    assert (result.files, result.records) == (1, 0)


# --- running a task again --------------------------------------------------------------------


@pytest.mark.parametrize("stage", list(STAGE_TASKS))
def test_a_done_task_run_again_fetches_and_writes_nothing(store, fake_hermes, ctx_for, stage: str) -> None:
    hermes = world(fake_hermes)
    key = STAGE_TASKS[stage](store)
    run_task(key, ctx_for(hermes))
    calls, before = hermes.total_calls, snapshot(store)
    result = run_task(key, ctx_for(hermes))
    assert result.skipped
    assert (result.children, result.files, result.records) == (0, 0, 0)
    assert hermes.total_calls == calls
    assert snapshot(store) == before


@pytest.mark.parametrize("stage", list(STAGE_TASKS))
def test_a_rerun_after_a_crash_before_the_done_marker_creates_no_duplicate(
    store, fake_hermes, ctx_for, stage: str
) -> None:
    hermes = world(fake_hermes)
    key = STAGE_TASKS[stage](store)
    first = run_task(key, ctx_for(hermes))
    assert first.children + first.files > 0
    store.delete(keys.done_key(key))  # the crash: outputs written, no marker
    before = snapshot(store)
    second = run_task(key, ctx_for(hermes, fetched_at=datetime(2026, 11, 28, tzinfo=UTC)))
    assert not second.skipped
    assert (second.children, second.files, second.records) == (0, 0, 0)
    assert snapshot(store, skip_done=True) == before
    assert store.exists(keys.done_key(key))


def test_a_rerun_after_a_crash_before_the_failure_record_still_records_the_failed_unit(
    store, fake_hermes, ctx_for
) -> None:
    # The Parquet of the good groups was written, then the process died before the failure
    # record (and the done marker): the rerun must not lose the failed group.
    hermes = world(fake_hermes, not_found={"g2"})
    key = data_groups_task(store)
    run_task(key, ctx_for(hermes))
    expected = failure(store, key).units
    store.delete(keys.done_key(key))
    store.delete(keys.failed_key(key))
    run_task(key, ctx_for(hermes))
    assert store.exists(keys.failed_key(key))
    assert failure(store, key).units == expected


def test_a_rerun_after_such_a_crash_takes_the_failed_units_from_the_footer_not_a_refetch(
    store, fake_hermes, ctx_for
) -> None:
    # Refetching could disagree with the file (the 404 fixed meanwhile): the group would then
    # be in neither the Parquet nor a failure record. The footer keeps the first answer.
    broken = world(fake_hermes, not_found={"g2"})
    key = data_groups_task(store)
    run_task(key, ctx_for(broken))
    expected = failure(store, key).units
    store.delete(keys.done_key(key))
    store.delete(keys.failed_key(key))
    fixed = world(fake_hermes)
    run_task(key, ctx_for(fixed), attempts=2)  # the runtime's retry of the attempt that stopped
    assert fixed.total_calls == 0
    assert failure(store, key).units == expected


def test_a_first_attempt_after_such_a_crash_refetches_but_keeps_the_footers_failed_units(
    store, fake_hermes, ctx_for
) -> None:
    # A first attempt does not ask whether the file exists (one LIST per task saved): when
    # it does meet one (Lambda's own retry of a crashed invocation), the footer still wins.
    key = data_groups_task(store)
    run_task(key, ctx_for(world(fake_hermes, not_found={"g2"})))
    expected = failure(store, key).units
    store.delete(keys.done_key(key))
    store.delete(keys.failed_key(key))
    before = store.get(task_keys.data_key_for_task(key))
    result = run_task(key, ctx_for(world(fake_hermes)))
    assert failure(store, key).units == expected == result.failed_units
    assert (result.files, result.records) == (0, 0)
    assert store.get(task_keys.data_key_for_task(key)) == before
    assert done_marker(store, key)["failed_units"] == 1


def test_a_first_attempt_of_a_leaf_task_sends_no_list(store, fake_hermes, ctx_for) -> None:
    # Three requests that S3 bills as PUT or LIST: the done marker check, the file, the marker.
    counted = CountingStore(store)
    key = data_groups_task(store)
    ctx = TaskContext(
        storage=counted, client=world(fake_hermes), settings=ctx_for(None).settings, table=STAGES
    )
    run_task(key, ctx)
    assert counted.calls == [
        ("exists", keys.done_key(key)),
        ("get", key),
        ("put_if_absent", task_keys.data_key_for_task(key)),
        ("put", keys.done_key(key)),
    ]


def test_a_leaf_task_whose_every_group_fails_asks_whether_an_earlier_attempt_wrote_its_file(
    store, fake_hermes, ctx_for
) -> None:
    # No file to create would tell: without the check, a refetch that now fails every group
    # would record units that an earlier attempt's file holds, and their redrive double them.
    key = data_groups_task(store, ("g1", "g3"))
    run_task(key, ctx_for(world(fake_hermes)))
    store.delete(keys.done_key(key))
    result = run_task(key, ctx_for(world(fake_hermes, not_found={"g1", "g3"})))
    assert result.failed_units == []
    assert not store.exists(keys.failed_key(key))


# --- one unit fails permanently --------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "failed_id", "unit"),
    [
        ("warriors", "w2", {"warrior_id": "w2"}),
        ("troops", "t2", {"warrior_id": "w1", "troop_id": "t2", "service": "billing"}),
        (
            "data_groups",
            "g2",
            {
                "warrior_id": "w1",
                "troop_id": "t1",
                "service": "auth",
                "data_group_id": "g2",
                "name": "latency 2",
            },
        ),
    ],
)
def test_a_404_unit_fails_alone_in_one_units_failure_record(
    store, fake_hermes, ctx_for, stage: str, failed_id: str, unit: dict[str, str]
) -> None:
    hermes = world(fake_hermes, not_found={failed_id})
    key = STAGE_TASKS[stage](store)
    result = run_task(key, ctx_for(hermes))
    assert list(store.list("failed/")) == [keys.failed_key(key)]
    record = failure(store, key)
    assert (record.run_id, record.stage, record.task_key, record.kind) == (RUN, stage, key, "units")
    assert (record.status, record.transient, record.error_class) == (404, False, "PermanentError")
    assert len(record.units) == 1
    assert {k: record.units[0][k] for k in unit} == unit
    assert record.units[0]["status"] == 404
    assert failed_id in record.message
    assert result.failed_units == record.units
    assert done_marker(store, key)["failed_units"] == 1


@pytest.mark.parametrize(
    ("stage", "sibling_outputs"),
    [
        ("warriors", [task_keys.troops_task_key(RUN, "w1", 0), task_keys.troops_task_key(RUN, "w1", 1)]),
        (
            "troops",
            [
                task_keys.data_groups_task_key(RUN, "w1", "t1", 0),
                task_keys.data_groups_task_key(RUN, "w1", "t1", 1),
            ],
        ),
    ],
)
def test_the_siblings_of_a_404_unit_are_finished(
    store, fake_hermes, ctx_for, stage: str, sibling_outputs: list[str]
) -> None:
    failed_id = {"warriors": "w2", "troops": "t2"}[stage]
    prefix = {"warriors": "troops/", "troops": "data_groups/"}[stage]
    run_task(STAGE_TASKS[stage](store), ctx_for(world(fake_hermes, not_found={failed_id})))
    assert list(store.list(prefix)) == sibling_outputs


def test_the_parquet_of_a_task_with_a_404_group_holds_the_other_groups(store, fake_hermes, ctx_for) -> None:
    key = data_groups_task(store)
    result = run_task(key, ctx_for(world(fake_hermes, not_found={"g3"})))
    frame = read_parquet_bytes(store.get(task_keys.data_key_for_task(key)))
    assert frame["data_group_id"].tolist() == ["g1", "g1"]
    assert (result.files, result.records) == (1, 2)


def test_a_data_groups_task_whose_every_group_is_404_writes_no_parquet(store, fake_hermes, ctx_for) -> None:
    key = data_groups_task(store, ("g1", "g3"))
    result = run_task(key, ctx_for(world(fake_hermes, not_found={"g1", "g3"})))
    assert list(store.list("data/")) == []
    assert [u["data_group_id"] for u in failure(store, key).units] == ["g1", "g3"]
    assert "and 1 more unit" in failure(store, key).message
    assert result.files == 0 and store.exists(keys.done_key(key))


# --- whole-task failures ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "transient_id"),
    [("seed-all", None), ("warriors", "w2"), ("troops", "t2"), ("data_groups", "g3")],
)
def test_a_transient_error_propagates_and_leaves_no_done_marker(
    store, fake_hermes, ctx_for, stage: str, transient_id: str | None
) -> None:
    hermes = world(
        fake_hermes,
        transient={transient_id} if transient_id else set(),
        warriors_error=None if transient_id else TransientError("503", status=503),
    )
    key = STAGE_TASKS[stage](store)
    with pytest.raises(TransientError):
        run_task(key, ctx_for(hermes))
    assert not store.exists(keys.done_key(key))
    assert list(store.list("failed/")) == []
    assert list(store.list("data/")) == []


@pytest.mark.parametrize(
    "key",
    [
        task_keys.manifest_key(RUN),
        task_keys.warriors_part_key(RUN, 0),
        task_keys.troops_task_key(RUN, "w1", 0),
        task_keys.data_groups_task_key(RUN, "w1", "t1", 0),
    ],
)
def test_a_missing_task_object_is_bad_task(store, fake_hermes, ctx_for, key: str) -> None:
    with pytest.raises(BadTask, match="does not exist"):
        run_task(key, ctx_for(world(fake_hermes)))


@pytest.mark.parametrize(
    "key",
    [
        task_keys.warriors_part_key(RUN, 0),
        task_keys.troops_task_key(RUN, "w1", 0),
        task_keys.data_groups_task_key(RUN, "w1", "t1", 0),
    ],
)
@pytest.mark.parametrize("body", [b"\x00garbage", b"[]", b'{"run_id": "r1"}'])
def test_a_garbage_task_body_is_bad_task(store, fake_hermes, ctx_for, key: str, body: bytes) -> None:
    store.put(key, body)
    hermes = world(fake_hermes)
    with pytest.raises(BadTask):
        run_task(key, ctx_for(hermes))
    assert hermes.total_calls == 0
    assert not store.exists(keys.done_key(key))


def test_a_key_under_no_stage_is_bad_task(store, fake_hermes, ctx_for) -> None:
    key = put(store, "elsewhere/run=r1/part-00000.json", b"{}")
    with pytest.raises(BadTask, match="no stage"):
        run_task(key, ctx_for(world(fake_hermes)))


@pytest.mark.parametrize(
    ("key", "body"),
    [
        ("amazon_warriors/bad run!.json", manifest_body(["w1"])),
        ("amazon_warriors/run=bad run!/part-00000.json", warriors_part(RUN, ("w1",)).to_bytes()),
        (
            "troops/run=bad run!/warrior=w1/part-00000.json",
            tb.troops_task(RUN, "w1", (troop("t1", "auth"),)).to_bytes(),
        ),
        (
            "data_groups/run=bad run!/warrior=w1/troop=t1/part-00000.json",
            tb.data_groups_task(RUN, "w1", "t1", "auth", (data_group("g1", "metrics 1"),)).to_bytes(),
        ),
    ],
)
def test_a_bad_run_id_in_the_key_is_bad_manifest(store, fake_hermes, ctx_for, key: str, body: bytes) -> None:
    store.put(key, body)
    hermes = world(fake_hermes)
    with pytest.raises(BadManifest, match="run id"):
        run_task(key, ctx_for(hermes))
    assert hermes.total_calls == 0
    assert set(store.list("")) == {key}


@pytest.mark.parametrize(
    ("key", "body"),
    [
        ("amazon_warriors/run=r2/part-00000.json", warriors_part(RUN, ("w1",)).to_bytes()),
        (
            "troops/run=r2/warrior=w1/part-00000.json",
            tb.troops_task(RUN, "w1", (troop("t1", "auth"),)).to_bytes(),
        ),
        (
            "data_groups/run=r2/warrior=w1/troop=t1/part-00000.json",
            tb.data_groups_task(RUN, "w1", "t1", "auth", (data_group("g1", "metrics 1"),)).to_bytes(),
        ),
    ],
)
def test_a_task_body_of_another_run_than_its_key_is_bad_task(
    store, fake_hermes, ctx_for, key: str, body: bytes
) -> None:
    store.put(key, body)
    with pytest.raises(BadTask, match="run"):
        run_task(key, ctx_for(world(fake_hermes)))
    assert set(store.list("")) == {key}


# --- the whole chain, awkward ids ------------------------------------------------------------


def drive(store: LocalDirStorage, ctx: TaskContext, first: str) -> list[TaskResult]:
    """Run ``first`` and every task object it creates, breadth-first, as notifications would."""
    queue, results, seen = [first], [], set()
    while queue:
        key = queue.pop(0)
        seen.add(key)
        results.append(run_task(key, ctx))
        queue += [k for k in store.list("") if k not in seen and k not in queue and stage_for_key(k)]
    return results


AWKWARD_W = ["a b", "a+b", "o'brien", "Ωμέγα"]
AWKWARD_T = ["a=b", "100%", "戦士"]
AWKWARD_G = ["%2F x", "(g), 1:2@h~"]


@pytest.fixture
def awkward(fake_hermes) -> Any:
    return fake_hermes(
        warriors=AWKWARD_W,
        troops={w: [{"troop_id": t, "service": "svc " + t} for t in AWKWARD_T] for w in AWKWARD_W},
        data_groups={
            (w, t): [{"data_group_id": g, "name": g} for g in AWKWARD_G] for w in AWKWARD_W for t in AWKWARD_T
        },
        records={
            (w, t, g): [rec("2026-11-27T08:00:00Z", f"{w}|{t}|{g}", 1.0, None)]
            for w in AWKWARD_W
            for t in AWKWARD_T
            for g in AWKWARD_G
        },
    )


def test_awkward_ids_flow_into_keys_unmangled(store, ctx_for, awkward) -> None:
    drive(store, ctx_for(awkward), seed_all_task(store))
    troop_keys = list(store.list("troops/"))
    assert {keys.decode_id(k.split("/")[2][len("warrior=") :]) for k in troop_keys} == set(AWKWARD_W)
    paths = {task_keys.parse_data_key(k) for k in store.list("data/")}
    assert paths == {(RUN, w, t) for w in AWKWARD_W for t in AWKWARD_T}


def test_awkward_ids_flow_into_task_bodies_unmangled(store, ctx_for, awkward) -> None:
    drive(store, ctx_for(awkward), seed_all_task(store))
    troops: dict[str, list[str]] = {}
    for k in store.list("troops/"):  # each warrior's parts, in part order
        body = STAGES.named("troops").body.from_bytes(store.get(k))
        (warrior_id,) = body.path
        troops.setdefault(warrior_id, []).extend(t.id for t in body.units)
    assert troops == {w: sorted(AWKWARD_T) for w in AWKWARD_W}


def test_awkward_ids_flow_into_parquet_columns_unmangled(store, ctx_for, awkward) -> None:
    drive(store, ctx_for(awkward), seed_all_task(store))
    rows = [row for k in store.list("data/") for row in read_parquet_bytes(store.get(k)).to_dict("records")]
    assert len(rows) == len(AWKWARD_W) * len(AWKWARD_T) * len(AWKWARD_G)
    for row in rows:
        assert row["metric"] == f"{row['warrior_id']}|{row['troop_id']}|{row['data_group_id']}"
        assert row["service"] == "svc " + row["troop_id"]
    assert {r["warrior_id"] for r in rows} == set(AWKWARD_W)
    assert {r["troop_id"] for r in rows} == set(AWKWARD_T)
    assert {r["data_group_id"] for r in rows} == set(AWKWARD_G)


def test_a_whole_run_writes_every_record_once(store, fake_hermes, ctx_for) -> None:
    hermes = world(fake_hermes)
    results = drive(store, ctx_for(hermes), seed_task(store))
    rows = [row for k in store.list("data/") for row in read_parquet_bytes(store.get(k)).to_dict("records")]
    fetched = sorted((w, t, g, r["metric"]) for (w, t, g), recs in hermes.records.items() for r in recs)
    assert sorted((r["warrior_id"], r["troop_id"], r["data_group_id"], r["metric"]) for r in rows) == fetched
    assert sum(r.records for r in results) == len(fetched)
    assert list(store.list("failed/")) == []
    assert all(store.exists(keys.done_key(r.key)) for r in results)
