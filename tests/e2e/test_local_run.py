"""The local runtime end to end: exact output, injected faults, redrive."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import task_keys

from fanout.audit import compare, output_rows
from fanout.faults import FlakyStorage
from fanout.redrive import redrive
from fanout.simulator import SimConfig, Universe
from fanout.start_run import start_run
from fanout.status import run_status
from fanout_core import keys
from fanout_core.bodies import manifest_body
from fanout_core.errors import BadManifest
from fanout_core.failures import FailureRecord
from fanout_core.stages import STAGES, StageTable
from fanout_core.storage import LocalDirStorage

from .conftest import TOKEN, fast_settings


def _run(store, url, run_id="r1", manifest=None, settings=None, **kw):
    return start_run(
        store,
        settings or fast_settings(),
        run_id=run_id,
        manifest=manifest_body(manifest) if manifest is not False else None,
        hermes_url=url,
        token=TOKEN,
        **kw,
    )


def test_a_local_run_writes_exactly_the_simulators_truth(simulator, tmp_path: Path):
    config = SimConfig.from_size("tiny", token=TOKEN, awkward_ids=True)
    store = LocalDirStorage(tmp_path)
    outcome = _run(store, simulator(config))
    rows, files = output_rows(store, "r1")
    comparison = compare(rows, Universe(config).expected_rows())
    assert comparison.exact, comparison.summary()
    assert outcome.report.ok
    assert files == outcome.report.stages["data_groups"].files


def test_every_api_call_a_crawl_needs_is_made_once(simulator, tmp_path: Path):
    config = SimConfig.from_size("tiny", token=TOKEN)
    outcome = _run(LocalDirStorage(tmp_path), simulator(config))
    assert outcome.calls == Universe(config).expected_calls(100)


def test_a_chosen_list_of_warriors_crawls_only_those(simulator, tmp_path: Path):
    config = SimConfig.from_size("tiny", token=TOKEN, awkward_ids=True)
    universe = Universe(config)
    chosen = universe.warriors()[1]["warrior_id"]
    store = LocalDirStorage(tmp_path)
    _run(store, simulator(config), manifest=[chosen])
    rows, _ = output_rows(store, "r1")
    expected = [r for r in universe.expected_rows() if r[0] == chosen]
    assert compare(rows, expected).exact


def test_an_empty_data_group_leaves_a_countable_file_with_no_rows(simulator, tmp_path: Path):
    config = SimConfig.from_size("tiny", token=TOKEN, empty_group_every=1)
    store = LocalDirStorage(tmp_path)
    settings = fast_settings(stages={"data_groups": {"units_per_task": 1}})
    _run(store, simulator(config), settings=settings)
    rows, files = output_rows(store, "r1")
    assert rows == []
    assert files == config.warriors * config.troops_per_warrior * config.groups_per_troop


def test_the_bucket_directory_mirrors_the_keys_under_each_prefix(simulator, tmp_path: Path):
    config = SimConfig.from_size("tiny", token=TOKEN)
    _run(LocalDirStorage(tmp_path), simulator(config))
    top = {p.name for p in tmp_path.iterdir()}
    assert {"amazon_warriors", "troops", "data_groups", "data", "done"} <= top
    assert (tmp_path / "amazon_warriors" / "r1.json").is_file()
    assert list((tmp_path / "data" / "run=r1").glob("warrior=*/troop=*/part-*.parquet"))


def _bad_ids(universe: Universe) -> tuple[str, str, str]:
    w0, w1, w2 = (w["warrior_id"] for w in universe.warriors()[:3])
    troop = universe.troops(w1)[0]["troop_id"]
    t2 = universe.troops(w2)[1]["troop_id"]
    group = universe.data_groups(w2, t2)[0]["data_group_id"]
    return w0, troop, group


def test_injected_faults_lose_nothing_and_write_nothing_twice_and_redrive_completes(
    simulator, tmp_path: Path
):
    """The fault-injection suite: 20% 5xx, 10% 429, timeouts, duplicate events, flaky
    storage and ids that answer 404, all at once; then the cause is cleared and redrive
    finishes the run."""
    clean = SimConfig.from_size("tiny", token=TOKEN, awkward_ids=True, fault_seed=3)
    bad = _bad_ids(Universe(clean))
    faulty = SimConfig.from_size(
        "tiny",
        token=TOKEN,
        awkward_ids=True,
        fault_seed=3,
        error_rate_5xx=0.2,
        error_rate_429=0.1,
        hang_rate=0.02,
        hang_s=0.5,
        not_found_ids=frozenset(bad),
    )
    store = LocalDirStorage(tmp_path)
    flaky: list[FlakyStorage] = []

    def wrap(inner):
        flaky.append(FlakyStorage(inner, 0.05, seed=5))
        return flaky[0]

    settings = fast_settings(hermes_timeout_s=0.2, max_attempts=12)
    outcome = _run(
        store, simulator(faulty), settings=settings, duplicate_rate=0.3, seed=11, wrap_storage=wrap
    )
    rows, _ = output_rows(store, "r1")
    comparison = compare(rows, Universe(faulty).expected_rows(exclude_not_found=True))
    assert comparison.exact, comparison.summary()
    assert flaky[0].injected > 0
    assert outcome.report.duplicates > 0
    failed_ids = set()
    for key in store.list("failed/"):
        record = FailureRecord.from_bytes(store.get(key))
        assert record.status == 404
        for unit in record.units:
            failed_ids.add(unit.get("data_group_id") or unit.get("troop_id") or unit["warrior_id"])
    assert failed_ids == set(bad)

    outcome = start_run(
        store,
        fast_settings(),
        run_id="r1",
        manifest=None,
        hermes_url=simulator(clean),
        token=TOKEN,
        prepare=lambda s: redrive(s, "r1"),
    )
    assert outcome.report.ok
    assert list(store.list("failed/")) == []
    rows, _ = output_rows(store, "r1")
    comparison = compare(rows, Universe(clean).expected_rows())
    assert comparison.exact, comparison.summary()


def test_a_task_that_keeps_failing_transiently_gets_one_failure_record(simulator, tmp_path: Path):
    config = SimConfig.from_size("tiny", token=TOKEN, error_rate_5xx=1.0)
    store = LocalDirStorage(tmp_path)
    settings = fast_settings(max_attempts=3)
    outcome = _run(store, simulator(config), settings=settings)
    assert outcome.report.failures == [task_keys.manifest_key("r1")]
    record = FailureRecord.from_bytes(store.get(keys.failed_key(task_keys.manifest_key("r1"))))
    assert (record.attempts, record.transient, record.error_class) == (3, True, "TransientError")
    assert outcome.report.stages["warriors"].retries == 2


def test_a_run_started_again_fetches_nothing_it_already_finished(simulator, tmp_path: Path):
    config = SimConfig.from_size("tiny", token=TOKEN)
    url = simulator(config)
    store = LocalDirStorage(tmp_path)
    _run(store, url)
    again = _run(store, url)
    assert again.calls == 0
    assert again.report.ok


def _spawned_workers() -> list[int]:
    import os

    found = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for pid in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"spawn_main" in cmdline:
                found.append(int(pid))
    return found


def test_a_leaf_worker_process_killed_mid_task_is_replaced_and_nothing_is_lost(simulator, tmp_path: Path):
    import os
    import signal
    import threading
    import time

    from fanout.bucket import StorageSpec

    config = SimConfig.from_size("demo", token=TOKEN, awkward_ids=True, warriors=4, latency_s=0.01)
    url = simulator(config)
    store = LocalDirStorage(tmp_path)
    settings = fast_settings(stages={"data_groups": {"reserved_concurrency": 4, "units_per_task": 6}})
    outcome: list = []
    runner = threading.Thread(
        target=lambda: outcome.append(
            _run(
                store, url, settings=settings, processes=2, storage_spec=StorageSpec(bucket_dir=str(tmp_path))
            )
        )
    )
    runner.start()
    deadline = time.monotonic() + 60
    while len(list(store.list("done/data_groups/"))) < 10:
        assert time.monotonic() < deadline and runner.is_alive()
        time.sleep(0.02)
    victims = _spawned_workers()
    assert victims
    os.kill(victims[0], signal.SIGKILL)
    runner.join(timeout=120)
    assert outcome and outcome[0].report.ok
    assert outcome[0].report.stages["data_groups"].retries >= 1  # its tasks were failed over
    rows, _ = output_rows(store, "r1")
    comparison = compare(rows, Universe(config).expected_rows())
    assert comparison.exact, comparison.summary()


def _renamed_table() -> StageTable:
    """The product's stages with every prefix renamed: nothing outside the table may notice."""
    renamed = {"warriors": "seeds/", "troops": "squads/", "data_groups": "groups/"}
    stages = tuple(dataclasses.replace(s, input_prefix=renamed[s.name]) for s in STAGES)
    return StageTable(stages, api=STAGES.api, output_prefix="records/")


def test_a_table_with_renamed_prefixes_crawls_exactly_through_the_same_code(simulator, tmp_path: Path):
    config = SimConfig.from_size("tiny", token=TOKEN, awkward_ids=True)
    store = LocalDirStorage(tmp_path)
    table = _renamed_table()
    outcome = _run(store, simulator(config), table=table)
    assert outcome.ok
    rows, files = output_rows(store, "r1", table)
    assert compare(rows, Universe(config).expected_rows()).exact
    assert files == outcome.report.stages["data_groups"].files > 0
    top = {key.split("/", 1)[0] + "/" for key in store.list("")}
    assert top == {"seeds/", "squads/", "groups/", "records/", "done/", "plans/"}
    assert run_status(store, "r1", table=table).complete
    assert not run_status(store, "r1").seeded  # the product's table sees no run here


def test_a_table_with_renamed_prefixes_crawls_exactly_in_worker_processes_and_every_reader_follows_it(
    simulator, tmp_path: Path
):
    """The run's table reaches the leaf worker processes (they used to rebuild the product's
    and refuse every task); status, failures, redrive, audit and compaction given the table
    read the renamed bucket right."""
    from fanout.bucket import StorageSpec
    from fanout.failure_report import read_failures

    clean = SimConfig.from_size("tiny", token=TOKEN, awkward_ids=True)
    bad = _bad_ids(Universe(clean))
    failing = SimConfig.from_size("tiny", token=TOKEN, awkward_ids=True, not_found_ids=frozenset(bad))
    store = LocalDirStorage(tmp_path)
    table = _renamed_table()
    spec = StorageSpec(bucket_dir=str(tmp_path))
    outcome = _run(store, simulator(failing), table=table, processes=2, storage_spec=spec)
    leaf = outcome.report.stages["data_groups"]
    assert leaf.finished > 0 and leaf.files > 0  # the workers ran the leaf tasks
    rows, _ = output_rows(store, "r1", table)
    assert compare(rows, Universe(failing).expected_rows(exclude_not_found=True)).exact
    status = run_status(store, "r1", table=table)
    assert status.seeded and status.complete and len(status.failed_keys) == 3  # one per bad id
    records = read_failures(store, "r1", table=table)
    assert {r.task_key for r in records} == set(outcome.failure_records)
    assert all(table.for_key(r.task_key) is not None for r in records)  # renamed-prefix keys
    assert {r.status for r in records} == {404}

    outcome = _run(
        store,
        simulator(clean),
        manifest=False,
        table=table,
        processes=2,
        storage_spec=spec,
        prepare=lambda s: redrive(s, "r1", table=table),
        compact=True,
    )
    assert outcome.report.ok and outcome.compaction is not None
    assert run_status(store, "r1", table=table).complete
    assert read_failures(store, "r1", table=table) == []
    rows, files = output_rows(store, "r1", table)  # the compacted generation now
    assert compare(rows, Universe(clean).expected_rows()).exact
    assert files == len(outcome.compaction.files) > 0
    top = {key.split("/", 1)[0] + "/" for key in store.list("")}
    assert {"seeds/", "squads/", "groups/"} <= top
    assert not top & {"amazon_warriors/", "troops/", "data_groups/", "data/"}


def test_a_table_that_cannot_pickle_is_refused_for_worker_processes_before_anything_runs(tmp_path: Path):
    from fanout.bucket import StorageSpec
    from fanout_core.errors import SettingsError
    from fanout_core.fan_out import fan_out

    first, *rest = _renamed_table()
    unpicklable = dataclasses.replace(first, work=lambda task, ctx, result: fan_out(task, ctx, result))
    table = StageTable((unpicklable, *rest), api=STAGES.api, output_prefix="records/")
    store = LocalDirStorage(tmp_path)
    spec = StorageSpec(bucket_dir=str(tmp_path))
    with pytest.raises(SettingsError, match="cannot go to worker processes") as info:
        _run(store, "http://127.0.0.1:9", table=table, processes=2, storage_spec=spec)
    assert "\n" not in str(info.value)
    assert list(store.list("")) == []


def test_a_renamed_tables_task_that_gives_up_is_recorded_under_its_own_stage_and_run(
    simulator, tmp_path: Path
):
    config = SimConfig.from_size("tiny", token=TOKEN, error_rate_5xx=1.0)
    store = LocalDirStorage(tmp_path)
    table = _renamed_table()
    outcome = _run(store, simulator(config), settings=fast_settings(max_attempts=2), table=table)
    seed = table.seed("r1")
    assert outcome.report.failures == [seed.key]
    record = FailureRecord.from_bytes(store.get(seed.failed_key))
    assert (record.stage, record.run_id, record.attempts) == ("warriors", "r1", 2)


def test_a_different_manifest_for_an_existing_run_is_refused_and_nothing_runs(simulator, tmp_path: Path):
    config = SimConfig.from_size("tiny", token=TOKEN)
    store = LocalDirStorage(tmp_path)
    url = simulator(config)
    first = Universe(config).warriors()[0]["warrior_id"]
    _run(store, url, manifest=[first])
    before = {key: store.get(key) for key in store.list("")}
    with pytest.raises(BadManifest, match="already has a different manifest"):
        _run(store, url, manifest=None)  # {"warriors": "all"}
    assert {key: store.get(key) for key in store.list("")} == before


def test_a_leaf_workers_calls_are_counted_while_its_task_runs(simulator, tmp_path: Path):
    """The progress line (and a bench's samples) follow the calls as they are made: a
    worker reports its counts each second, not only when its task ends."""
    import io
    import time

    from fanout.bucket import StorageSpec

    config = SimConfig.from_size(
        "tiny",
        token=TOKEN,
        warriors=1,
        troops_per_warrior=1,
        groups_per_troop=1,
        records_per_group=4000,
        vary_records=False,
        latency_s=0.15,
    )
    listing_calls = 3  # warriors, troops, data groups: made in the runtime's own process
    leaf_calls = Universe(config).expected_calls(100) - listing_calls
    assert leaf_calls == 40  # 4,000 records in pages of 100: a 6 s task at 0.15 s a page
    url = simulator(config)
    store = LocalDirStorage(tmp_path)
    seen: list[tuple[int, int]] = []  # (calls on the progress line, leaf tasks done then)

    class Tap(io.StringIO):
        def write(self, text: str) -> int:
            for line in text.splitlines():
                if " calls (" in line:
                    calls = int(line.split(" calls (")[0].rsplit(" ", 1)[-1])
                    seen.append((calls, len(list(store.list("done/data_groups/")))))
            return len(text)

    started = time.monotonic()
    spec = StorageSpec(bucket_dir=str(tmp_path))
    outcome = _run(store, url, processes=2, progress=Tap(), storage_spec=spec)
    assert outcome.report.ok
    assert time.monotonic() - started > leaf_calls * 0.15  # two progress lines or more in the task
    assert any(done == 0 and calls > listing_calls + 5 for calls, done in seen), seen
