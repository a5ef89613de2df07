"""Status and redrive over a hand-made bucket: counting, lost tasks, re-triggering."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import task_keys
from task_bodies import data_group, data_groups_task, troop, troops_task

from fanout.redrive import redrive
from fanout.status import run_status, stale_after_s
from fanout_core import keys
from fanout_core.bodies import manifest_body
from fanout_core.errors import PermanentError, TransientError
from fanout_core.failures import FailureRecord, failure_record_for, write_failure
from fanout_core.settings import parse_environment
from fanout_core.stages import STAGES
from fanout_core.storage import LocalDirStorage

RUN = "r1"


@pytest.fixture
def store(tmp_path: Path) -> LocalDirStorage:
    return LocalDirStorage(tmp_path)


def _troops_task(store: LocalDirStorage, index: int = 0) -> str:
    key = task_keys.troops_task_key(RUN, "w 1", index)
    store.put(key, troops_task(RUN, "w 1", (troop("t+1", "auth"), troop("t=2", "billing"))).to_bytes())
    return key


def _groups_task(store: LocalDirStorage) -> str:
    key = task_keys.data_groups_task_key(RUN, "w 1", "t+1", 0)
    groups = (data_group("g1", "one"), data_group("g'2", "two"), data_group("g3", "three"))
    store.put(key, data_groups_task(RUN, "w 1", "t+1", "auth", groups).to_bytes())
    return key


def _units_failure(store: LocalDirStorage, key: str, units: list[dict]) -> None:
    record = failure_record_for(key, PermanentError("404", status=404), attempts=1, first_attempt_at="t")
    record.kind = "units"
    record.units = units
    write_failure(store, record)
    store.put(keys.done_key(key), b"{}")


def _age(store: LocalDirStorage, key: str, seconds: float) -> None:
    path = store.root / key
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_status_counts_written_finished_failed_and_pending_per_stage(store) -> None:
    store.put(task_keys.manifest_key(RUN), manifest_body(None))
    store.put(keys.done_key(task_keys.manifest_key(RUN)), b"{}")
    done, failed, pending = _troops_task(store, 0), _troops_task(store, 1), _troops_task(store, 2)
    store.put(keys.done_key(done), b"{}")
    write_failure(store, failure_record_for(failed, TransientError("x"), attempts=6, first_attempt_at="t"))
    status = run_status(store, RUN)
    by_stage = {s.stage: s for s in status.stages}
    assert (by_stage["warriors"].written, by_stage["warriors"].finished) == (1, 1)
    troops = by_stage["troops"]
    assert (troops.written, troops.finished, troops.failed, troops.pending) == (3, 1, 1, [pending])
    assert not status.complete


def test_a_run_is_complete_only_when_every_task_finished_or_failed(store) -> None:
    store.put(task_keys.manifest_key(RUN), manifest_body(None))
    store.put(keys.done_key(task_keys.manifest_key(RUN)), b"{}")
    key = _troops_task(store)
    assert not run_status(store, RUN).complete
    store.put(keys.done_key(key), b"{}")
    assert run_status(store, RUN).complete


def test_a_pending_task_older_than_the_threshold_is_stale_and_a_young_one_is_not(store) -> None:
    old, young = _troops_task(store, 0), _troops_task(store, 1)
    _age(store, old, 3600)
    status = run_status(store, RUN, stale_after=lambda _stage: 600)
    assert status.stale == [old]
    assert young not in status.stale


def test_the_default_stale_threshold_covers_event_age_retries_and_runs() -> None:
    settings = parse_environment(
        "x",
        {
            "max_attempts": 3,
            "retry_base_delay_s": 60,
            "retry_max_delay_s": 900,
            "stages": {"troops": {"max_event_age_s": 3600, "timeout_s": 300}},
        },
    )
    # event age + backoffs before tries 2 and 3 (60 + 120) + three runs of the timeout
    assert stale_after_s(settings, "troops") == 3600 + 60 + 120 + 3 * 300


def test_redrive_of_a_whole_task_failure_archives_it_and_writes_the_task_again(store) -> None:
    key = _troops_task(store)
    body = store.get(key)
    _age(store, key, 100)
    before = store.last_modified(key)
    write_failure(store, failure_record_for(key, TransientError("503"), attempts=6, first_attempt_at="t"))
    result = redrive(store, RUN)
    assert result.retriggered == [key]
    assert not store.exists(keys.failed_key(key))
    assert store.get(key) == body
    assert store.last_modified(key) > before  # written again: S3 would send a new event
    archived = list(store.list("archive/failed/"))
    assert len(archived) == 1
    assert FailureRecord.from_bytes(store.get(archived[0])).task_key == key


def test_redrive_of_unit_failures_creates_a_sibling_task_of_just_those_units(store) -> None:
    key = _groups_task(store)
    _units_failure(store, key, [{"data_group_id": "g'2", "name": "two", "error_class": "PermanentError"}])
    result = redrive(store, RUN)
    sibling = task_keys.redrive_key(key, 1)
    assert result.created == [sibling]
    task = STAGES.leaf.body.from_bytes(store.get(sibling))
    assert [g.id for g in task.units] == ["g'2"]
    assert task_keys.data_key_for_task(sibling) != task_keys.data_key_for_task(key)


def test_a_redrive_interrupted_before_removing_the_record_writes_nothing_twice(store) -> None:
    key = _troops_task(store)
    _units_failure(store, key, [{"warrior_id": "w 1", "troop_id": "t=2", "service": "billing"}])
    record = store.get(keys.failed_key(key))
    first = redrive(store, RUN)
    store.put(keys.failed_key(key), record)  # as if the process died before deleting it
    sibling_body = store.get(first.created[0])
    second = redrive(store, RUN)
    assert second.created == first.created
    assert store.get(first.created[0]) == sibling_body
    assert len([k for k in store.list("troops/") if "~redrive-" in k]) == 1


def test_redrive_can_be_narrowed_to_a_stage_and_an_error_class(store) -> None:
    troops = _troops_task(store)
    groups = _groups_task(store)
    write_failure(store, failure_record_for(troops, TransientError("503"), attempts=6, first_attempt_at="t"))
    write_failure(store, failure_record_for(groups, PermanentError("404"), attempts=1, first_attempt_at="t"))
    assert redrive(store, RUN, stage="data_groups").retriggered == [groups]
    assert store.exists(keys.failed_key(troops))
    assert redrive(store, RUN, error_class="PermanentError").retriggered == []
    assert redrive(store, RUN, error_class="TransientError").retriggered == [troops]


def test_redrive_stale_retriggers_only_tasks_past_the_threshold(store) -> None:
    old, young = _troops_task(store, 0), _troops_task(store, 1)
    _age(store, old, 3600)
    result = redrive(store, RUN, stale=True, stale_after=lambda _stage: 600)
    assert result.retriggered == [old]
    assert young not in result.retriggered
    assert run_status(store, RUN, stale_after=lambda _stage: 600).stale == []


def test_redrive_on_a_bucket_rewrites_the_task_object_so_s3_sends_its_event(monkeypatch) -> None:
    import boto3
    from moto import mock_aws

    from fanout_aws.s3_storage import S3Storage

    for name, value in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="fanout-redrive")
        store = S3Storage("fanout-redrive", client=client)
        key = task_keys.troops_task_key(RUN, "w 1", 0)
        store.put(key, troops_task(RUN, "w 1", (troop("t", "s"),)).to_bytes())
        written = client.head_object(Bucket="fanout-redrive", Key=key)["LastModified"]
        write_failure(store, failure_record_for(key, TransientError("x"), attempts=6, first_attempt_at="t"))
        time.sleep(1.1)  # S3's LastModified has one-second resolution
        assert redrive(store, RUN).retriggered == [key]
        assert client.head_object(Bucket="fanout-redrive", Key=key)["LastModified"] > written
        assert not store.exists(keys.failed_key(key))


class _RunsOnWrite(LocalDirStorage):
    """A bucket whose task writes start the task at once, as S3's event does: the re-run
    fails straight away and writes its own record."""

    def put(self, key: str, body: bytes) -> None:
        super().put(key, body)
        if key.startswith("troops/"):
            write_failure(
                self, failure_record_for(key, PermanentError("again"), attempts=1, first_attempt_at="t2")
            )


def test_redrive_never_deletes_the_record_its_own_re_run_wrote(tmp_path: Path) -> None:
    store = _RunsOnWrite(tmp_path)
    key = task_keys.troops_task_key(RUN, "w 1", 0)
    LocalDirStorage(tmp_path).put(key, troops_task(RUN, "w 1", (troop("t", "s"),)).to_bytes())
    write_failure(store, failure_record_for(key, TransientError("first"), attempts=6, first_attempt_at="t"))
    assert redrive(store, RUN).retriggered == [key]
    record = FailureRecord.from_bytes(store.get(keys.failed_key(key)))
    assert record.message == "again"
