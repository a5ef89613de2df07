"""Compaction: exactly once, resumable after a kill between any two writes, rows exact at every point.

A killed compaction is modelled by storage that raises after its N-th write or delete
(every write is atomic, so between two of them is every point a kill can land); after
each kill a reader following the protocol (``current_files``) must still see every row
exactly once, and the next call must finish the job.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from fanout_core import keys
from fanout_core.bodies import dumps
from fanout_core.compaction import (
    NotComplete,
    compact_run,
    current_files,
    current_key,
    pending_tasks,
    small_files,
    symlink_key,
)
from fanout_core.output import ROW_GROUP_ROWS, read_parquet_bytes, records_to_parquet
from fanout_core.stages import STAGES
from fanout_core.storage import LocalDirStorage, Storage

AWKWARD = ["Ωmega warrior", "a+b=c 'd'", "100%", "東京", "..", "plain"]


class Killed(Exception):
    pass


class KillAfter:
    """Storage that dies at its ``n``-th write or delete (that call does nothing)."""

    def __init__(self, inner: Storage, n: int):
        self.inner, self.left = inner, n

    def _tick(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise Killed

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def last_modified(self, key: str) -> float | None:
        return self.inner.last_modified(key)

    def list(self, prefix: str) -> Iterator[str]:
        return self.inner.list(prefix)

    def put(self, key: str, body: bytes) -> None:
        self._tick()
        self.inner.put(key, body)

    def put_if_absent(self, key: str, body: bytes) -> bool:
        self._tick()
        return self.inner.put_if_absent(key, body)

    def delete(self, key: str) -> None:
        self._tick()
        self.inner.delete(key)


def seed_complete_run(
    store: Storage, run_id: str, *, warriors: list[str], troops: int = 3, parts: int = 2
) -> int:
    """A finished run as the pipeline leaves it: seed, its done marker, small files per task."""
    seed = STAGES.seed(run_id)
    store.put(seed.key, b'{"warriors": "all"}')
    store.put(seed.done_key, dumps({"stage": "warriors"}))
    rows = 0
    for w in warriors:
        for t in range(troops):
            troop = f"troop {t} ü"
            for part in range(parts):
                address = STAGES.leaf.address(run_id, (w, troop), part)
                groups = [
                    (
                        f"g{part}-{g}",
                        [
                            {
                                "ts": f"2026-11-27T{8 + i % 10:02d}:{(5 * i) % 60:02d}:00Z",
                                "metric": "cpu_pct",
                                "value": None if i % 7 == 0 else i / 1000,
                                "unit": None if i % 5 == 0 else "%",
                            }
                            for i in range(4 + g)
                        ],
                    )
                    for g in range(3)
                ]
                body, n = records_to_parquet(
                    run_id=run_id,
                    warrior_id=w,
                    troop_id=troop,
                    service="svc",
                    groups=groups,
                    fetched_at=datetime(2026, 11, 27, 9, tzinfo=UTC),
                )
                store.put(address.output_key(STAGES.output_prefix), body)
                rows += n
    return rows


def rows_of(store: Storage, run_id: str) -> Counter[tuple[object, ...]]:
    found: Counter[tuple[object, ...]] = Counter()
    for key in current_files(store, run_id):
        frame = read_parquet_bytes(store.get(key))
        for row in frame.astype(object).where(frame.notna(), None).itertuples(index=False, name=None):
            found[row] += 1
    return found


def test_compaction_packs_a_run_into_one_file_with_every_row(store: LocalDirStorage) -> None:
    expected_rows = seed_complete_run(store, "r1", warriors=AWKWARD)
    before = rows_of(store, "r1")
    assert sum(before.values()) == expected_rows and len(small_files(store, "r1")) == 36

    result = compact_run(store, "r1", uri_base="s3://b/")

    assert result.state == "compacted" and result.generation == 1 and result.inputs == 36
    assert result.files == ["data/run=r1/gen-00001-part-00000.parquet"]
    assert rows_of(store, "r1") == before
    assert small_files(store, "r1") == []
    assert store.get(symlink_key(STAGES, "r1")) == b"s3://b/data/run=r1/gen-00001-part-00000.parquet\n"
    frame = read_parquet_bytes(store.get(result.files[0]))
    assert set(frame["warrior_id"]) == set(AWKWARD)  # the exact ids, from the columns
    again = compact_run(store, "r1", uri_base="s3://b/")
    assert again.state == "current" and again.files == result.files and again.deleted == 0


def test_outputs_pack_whole_warriors_up_to_the_target(store: LocalDirStorage) -> None:
    seed_complete_run(store, "r1", warriors=AWKWARD)
    per_warrior = sum(len(store.get(k)) for k in small_files(store, "r1")) / len(AWKWARD)
    result = compact_run(store, "r1", target_bytes=int(per_warrior * 2.5))
    assert len(result.files) == 3
    warriors_per_file = [set(read_parquet_bytes(store.get(k))["warrior_id"]) for k in result.files]
    assert [len(w) for w in warriors_per_file] == [2, 2, 2]
    assert set().union(*warriors_per_file) == set(AWKWARD)


def test_a_warrior_larger_than_the_target_is_cut_between_its_files(store: LocalDirStorage) -> None:
    seed_complete_run(store, "r1", warriors=["only"], troops=4)
    one = max(len(store.get(k)) for k in small_files(store, "r1"))
    result = compact_run(store, "r1", target_bytes=one * 3)
    assert len(result.files) == 3  # 8 files of about one size, 3 per output
    assert sum(rows_of(store, "r1").values()) == result.rows


def test_compacted_rows_are_sorted_and_row_groups_bounded(store: LocalDirStorage) -> None:
    seed_complete_run(store, "r1", warriors=AWKWARD)
    key = compact_run(store, "r1").files[0]
    frame = read_parquet_bytes(store.get(key))
    order = frame[["ts", "warrior_id", "troop_id", "data_group_id"]].apply(tuple, axis=1).tolist()
    assert order == sorted(order)
    import io

    import fastparquet

    pf = fastparquet.ParquetFile(io.BytesIO(store.get(key)))
    assert all(rg.num_rows <= ROW_GROUP_ROWS for rg in pf.row_groups)
    assert pf.statistics["min"]["ts"][0] is not None  # statistics are written


def test_an_incomplete_run_is_refused(store: LocalDirStorage) -> None:
    seed_complete_run(store, "r1", warriors=["w"])
    pending = STAGES.leaf.address("r1", ("w", "t"), 0)
    store.put(pending.key, b"{}")
    assert pending_tasks(store, "r1") == [pending.key]
    with pytest.raises(NotComplete, match="1 task"):
        compact_run(store, "r1")
    assert not store.exists(current_key(STAGES, "r1"))
    store.put(keys.failed_key(pending.key), b"{}")  # a failed task settles it too
    assert compact_run(store, "r1").state == "compacted"


def test_a_run_with_no_output_is_empty(store: LocalDirStorage) -> None:
    seed_complete_run(store, "r1", warriors=[])
    assert compact_run(store, "r1").state == "empty"
    assert current_files(store, "r1") == []


@pytest.mark.parametrize("seed", range(12))
def test_killed_at_random_points_and_resumed_rows_stay_exact(store: LocalDirStorage, seed: int) -> None:
    """Kill after a random number of writes, over and over; every reader view is exact."""
    seed_complete_run(store, "r1", warriors=AWKWARD[: 2 + seed % 4])
    truth = rows_of(store, "r1")
    one = max(len(store.get(k)) for k in small_files(store, "r1"))
    rnd = random.Random(seed)
    kills = 0
    while True:
        try:
            result = compact_run(
                KillAfter(store, rnd.randint(0, 6)), "r1", target_bytes=one * 5, uri_base="s3://b/"
            )
            break
        except Killed:
            kills += 1
            assert rows_of(store, "r1") == truth  # readers never see both, nor a part
    assert kills > 0
    assert rows_of(store, "r1") == truth
    assert small_files(store, "r1") == []
    assert result.state in ("compacted", "current")
    current = json.loads(store.get(current_key(STAGES, "r1")))
    assert list(store.list("compacted/run=r1/gen=1/")) == ["compacted/run=r1/gen=1/plan.json"]
    assert sorted(store.list("data/run=r1/")) == sorted(f["key"] for f in current["files"])
    assert compact_run(store, "r1").state == "current"


def test_every_single_kill_point_resumes(store: LocalDirStorage) -> None:
    seed_complete_run(store, "probe", warriors=AWKWARD[:3])
    one = max(len(store.get(k)) for k in small_files(store, "probe"))
    writes = 0
    counting = KillAfter(store, 10**9)
    compact_run(counting, "probe", target_bytes=one * 4, uri_base="s3://b/")
    writes = 10**9 - counting.left
    assert writes > 10
    for n in range(writes):
        run = f"k{n}"
        seed_complete_run(store, run, warriors=AWKWARD[:3])
        truth = rows_of(store, run)
        with pytest.raises(Killed):
            compact_run(KillAfter(store, n), run, target_bytes=one * 4, uri_base="s3://b/")
        assert rows_of(store, run) == truth
        assert compact_run(store, run, target_bytes=one * 4, uri_base="s3://b/").state in (
            "compacted",
            "current",
        )
        assert rows_of(store, run) == truth and small_files(store, run) == []


def test_two_compactors_at_once_agree_on_one_plan(store: LocalDirStorage) -> None:
    seed_complete_run(store, "r1", warriors=AWKWARD)
    truth = rows_of(store, "r1")
    one = max(len(store.get(k)) for k in small_files(store, "r1"))
    with pytest.raises(Killed):  # the first stops right after writing its plan
        compact_run(KillAfter(store, 1), "r1", target_bytes=one * 4)
    plan = store.get("compacted/run=r1/gen=1/plan.json")
    second = compact_run(store, "r1", target_bytes=one * 40)  # another target: the plan decides
    assert store.get("compacted/run=r1/gen=1/plan.json") == plan
    assert len(second.files) > 1 and rows_of(store, "r1") == truth


def test_files_that_arrive_after_a_compaction_go_into_the_next_generation(store: LocalDirStorage) -> None:
    seed_complete_run(store, "r1", warriors=["w1", "w2"])
    first = compact_run(store, "r1")
    late = STAGES.leaf.address("r1", ("w3", "t"), 0).output_key(STAGES.output_prefix)
    body, n = records_to_parquet(
        run_id="r1",
        warrior_id="w3",
        troop_id="t",
        service="svc",
        groups=[("g", [{"ts": "2026-11-27T08:00:00Z", "metric": "m", "value": 1.0, "unit": None}])],
        fetched_at=datetime(2026, 11, 27, tzinfo=UTC),
    )
    store.put(late, body)  # a redrive wrote it
    assert current_files(store, "r1") == [*first.files, late]  # in no generation, read as it is
    second = compact_run(store, "r1")
    assert second.generation == 2 and second.rows == first.rows + n
    assert not any(store.list("data/run=r1/gen-00001-"))
    assert small_files(store, "r1") == []


def test_a_compacted_file_is_the_one_the_whole_frame_writer_makes_of_its_sorted_inputs(
    store: LocalDirStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Streaming row groups changes neither schema, column order, row order nor metadata."""
    import pandas as pd

    import fanout_core.output as output

    monkeypatch.setattr(output, "ROW_GROUP_ROWS", 50)  # several row groups from a small run
    seed_complete_run(store, "r1", warriors=AWKWARD)
    inputs = small_files(store, "r1")
    frames = [read_parquet_bytes(store.get(k))[list(output.COLUMNS)] for k in inputs]
    whole = pd.concat(frames, ignore_index=True).sort_values(
        ["ts", "warrior_id", "troop_id", "data_group_id"], kind="stable", ignore_index=True
    )
    expected = output.frame_to_parquet(whole, {"fanout.compacted_from": str(len(inputs))})

    [key] = compact_run(store, "r1").files

    assert store.get(key) == expected


def test_an_output_holds_at_most_target_rows_so_memory_does_not_grow_with_the_run(
    store: LocalDirStorage,
) -> None:
    total = seed_complete_run(store, "r1", warriors=AWKWARD)
    per_warrior = total // len(AWKWARD)
    result = compact_run(store, "r1", target_rows=per_warrior * 2)
    counts = [f["rows"] for f in json.loads(store.get(current_key(STAGES, "r1")))["files"]]
    assert len(result.files) == 3 and counts == [per_warrior * 2] * 3
    assert sum(rows_of(store, "r1").values()) == total
