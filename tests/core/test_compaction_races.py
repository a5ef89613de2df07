"""Compaction against concurrent compactors: each one adopts or steps aside, never fails, never
steps back. A concurrent compactor is modelled deterministically: storage that, at one chosen
call of the compactor under test, lets another compactor run to its end first."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from fanout_core.compaction import compact_run, current_files, read_current, small_files
from fanout_core.output import records_to_parquet
from fanout_core.stages import STAGES
from fanout_core.storage import LocalDirStorage, Storage

from .test_compaction import AWKWARD, KillAfter, Killed, rows_of, seed_complete_run


class Interleaved:
    """Storage that runs ``other`` (another process's work) once, just before the first call
    for which ``when(verb, key)`` holds, then carries on with that call."""

    def __init__(self, inner: Storage, when: Callable[[str, str], bool], other: Callable[[], object]):
        self.inner, self.when, self.other, self.fired = inner, when, other, False

    def _maybe(self, verb: str, key: str) -> None:
        if not self.fired and self.when(verb, key):
            self.fired = True
            self.other()

    def get(self, key: str) -> bytes:
        self._maybe("get", key)
        return self.inner.get(key)

    def exists(self, key: str) -> bool:
        self._maybe("exists", key)
        return self.inner.exists(key)

    def last_modified(self, key: str) -> float | None:
        return self.inner.last_modified(key)

    def list(self, prefix: str) -> Iterator[str]:
        self._maybe("list", prefix)
        return self.inner.list(prefix)

    def put(self, key: str, body: bytes) -> None:
        self._maybe("put", key)
        self.inner.put(key, body)

    def put_if_absent(self, key: str, body: bytes) -> bool:
        self._maybe("put_if_absent", key)
        return self.inner.put_if_absent(key, body)

    def delete(self, key: str) -> None:
        self._maybe("delete", key)
        self.inner.delete(key)


def _reading_a_small_file(verb: str, key: str) -> bool:
    return verb == "get" and key.startswith("data/") and "/warrior=" in key


def _late_file(store: Storage, run_id: str) -> int:
    """A small file a redrive writes after a compaction (warrior ``late``); its row count."""
    body, n = records_to_parquet(
        run_id=run_id,
        warrior_id="late",
        troop_id="t",
        service="svc",
        groups=[("g", [{"ts": "2026-11-27T08:00:00Z", "metric": "m", "value": 1.0, "unit": None}])],
        fetched_at=datetime(2026, 11, 27, tzinfo=UTC),
    )
    store.put(STAGES.leaf.address(run_id, ("late", "t"), 0).output_key(STAGES.output_prefix), body)
    return n


@pytest.mark.parametrize("planned_first", [False, True], ids=["racing-the-plan", "adopting-the-plan"])
def test_a_compactor_whose_inputs_another_committed_and_deleted_adopts_that_generation(
    store: LocalDirStorage, planned_first: bool
) -> None:
    seed_complete_run(store, "r1", warriors=AWKWARD[:3])
    truth = rows_of(store, "r1")
    if planned_first:  # the other compactor wrote its plan, then paused
        with pytest.raises(Killed):
            compact_run(KillAfter(store, 1), "r1")
    other: list[object] = []
    racing = Interleaved(store, _reading_a_small_file, lambda: other.append(compact_run(store, "r1")))

    result = compact_run(racing, "r1")

    assert racing.fired and other
    current = read_current(store, "r1")
    assert current is not None and current["generation"] == 1
    assert result.state == "current" and result.generation == 1
    assert result.files == [f["key"] for f in current["files"]]
    assert rows_of(store, "r1") == truth and small_files(store, "r1") == []
    assert sorted(store.list("data/run=r1/")) == sorted(result.files)


def test_a_late_compactor_never_commits_over_a_newer_generation_nor_leaves_a_stray_file(
    store: LocalDirStorage,
) -> None:
    seed_complete_run(store, "r1", warriors=AWKWARD[:2])
    truth = sum(rows_of(store, "r1").values())
    added: list[int] = []

    def others() -> None:  # while this one is about to write: gen 1, a redrive's file, gen 2
        compact_run(store, "r1")
        added.append(_late_file(store, "r1"))
        compact_run(store, "r1")

    def writing_an_output(verb: str, key: str) -> bool:
        return verb == "put_if_absent" and key.startswith("data/run=r1/gen-")

    result = compact_run(Interleaved(store, writing_an_output, others), "r1")

    current = read_current(store, "r1")
    assert current is not None and current["generation"] == 2
    assert result.state == "current" and result.generation == 2
    assert sum(rows_of(store, "r1").values()) == truth + added[0]
    assert sorted(store.list("data/run=r1/")) == sorted(f["key"] for f in current["files"])
    assert current_files(store, "r1") == [f["key"] for f in current["files"]]


def _racing_reader(store: Storage) -> Interleaved:
    """A reader's storage: a compaction commits and deletes the small files just as it reads one."""
    return Interleaved(store, _reading_a_small_file, lambda: compact_run(store, "r1"))


def test_runs_reads_a_run_whose_files_a_compaction_replaced_under_it(store: LocalDirStorage) -> None:
    from fanout.runs import list_runs

    truth = seed_complete_run(store, "r1", warriors=AWKWARD[:3])
    reader = _racing_reader(store)

    [summary] = list_runs(reader)

    assert reader.fired and read_current(store, "r1") is not None
    assert summary.run_id == "r1" and summary.rows == truth


def test_audit_counts_a_run_whose_files_a_compaction_replaced_under_it(store: LocalDirStorage) -> None:
    from fanout.audit import count_rows

    truth = seed_complete_run(store, "r1", warriors=AWKWARD[:3])
    reader = _racing_reader(store)

    rows, files = count_rows(reader, "r1")

    assert reader.fired and (rows, files) == (truth, 1)


def test_audit_reads_every_row_of_a_run_whose_files_a_compaction_replaced_under_it(
    store: LocalDirStorage,
) -> None:
    from fanout.audit import output_rows

    truth = seed_complete_run(store, "r1", warriors=AWKWARD[:3])
    reader = _racing_reader(store)

    rows, files = output_rows(reader, "r1")

    assert reader.fired and (len(rows), files) == (truth, 1)


def test_a_reader_that_keeps_losing_the_race_stops_with_one_line(store: LocalDirStorage) -> None:
    from fanout_core.compaction import ATTEMPTS, ReadRaced, consistent_read
    from fanout_core.errors import StorageFault
    from fanout_core.storage import NoSuchKey

    calls: list[int] = []

    def always_gone() -> int:
        calls.append(1)
        raise NoSuchKey("data/run=r1/x.parquet")

    with pytest.raises(ReadRaced, match="concurrent compactions") as raised:
        consistent_read(always_gone, "r1")
    assert len(calls) == ATTEMPTS and isinstance(raised.value, StorageFault)


def test_a_run_that_ends_while_another_process_still_has_its_tasks_is_left_to_that_process(
    store: LocalDirStorage,
) -> None:
    import io

    from fanout.compact import compact_finished_run

    seed_complete_run(store, "r1", warriors=["w"])
    store.put(STAGES.leaf.address("r1", ("w", "other"), 0).key, b"{}")  # the other process's task
    progress = io.StringIO()

    assert compact_finished_run(store, "r1", None, progress, []) is None

    assert "not compacted yet" in progress.getvalue() and "1 task(s) pending" in progress.getvalue()
    assert read_current(store, "r1") is None


def test_a_generation_compacted_outside_the_output_folder_moves_into_it(store: LocalDirStorage) -> None:
    """A run compacted before the output folder held the compacted files (into
    ``compacted/run=<run>/gen=1/``): compacting it again brings its rows back to ``data/``."""
    import json

    from fanout_core.bodies import dumps
    from fanout_core.compaction import current_key

    seed_complete_run(store, "r1", warriors=AWKWARD[:2])
    truth = rows_of(store, "r1")
    [moved] = compact_run(store, "r1").files
    old = "compacted/run=r1/gen=1/part-00000.parquet"
    store.put(old, store.get(moved))
    store.delete(moved)
    current = json.loads(store.get(current_key(STAGES, "r1")))
    current["files"] = [{"key": old, "rows": current["rows"]}]
    store.put(current_key(STAGES, "r1"), dumps(current))
    assert rows_of(store, "r1") == truth and not list(store.list("data/run=r1/gen-"))

    result = compact_run(store, "r1")

    assert result.state == "compacted" and result.generation == 2
    assert rows_of(store, "r1") == truth
    assert sorted(store.list("data/run=r1/")) == result.files and not store.exists(old)


def test_the_runs_command_during_a_compaction_exits_0_with_the_runs_rows(
    store: LocalDirStorage, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``fanout runs`` through the CLI's own entry point, its bucket compacted under it."""
    import json

    from fanout.bucket import StorageSpec
    from fanout.cli import main

    truth = seed_complete_run(store, "r1", warriors=AWKWARD[:3])
    reader = _racing_reader(store)
    monkeypatch.setattr(StorageSpec, "build", lambda self, **_kw: reader)

    code = main(["runs", "--bucket-dir", str(store.root), "--json"])

    out, err = capsys.readouterr()
    assert code == 0 and "Traceback" not in err and reader.fired
    [run] = json.loads(out)["runs"]
    assert run["run_id"] == "r1" and run["rows"] == truth
