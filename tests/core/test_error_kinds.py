"""Error kinds: every failure record and unit names why in plain words, old records too."""

from __future__ import annotations

import json

import pytest

from fanout_core.error_kinds import HINTS, KINDS, failure_fields, kind_of, kind_of_fields
from fanout_core.errors import (
    BadManifest,
    BadRecord,
    BadTask,
    PermanentError,
    SettingsError,
    StorageFault,
    TransientError,
)
from fanout_core.failures import FailureRecord, failure_record_for
from fanout_core.records import TooManyRecords


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (SettingsError("hermes_url is missing"), "configuration"),
        (BadRecord("'ts' is 'x'"), "bad_record"),
        (BadManifest("not JSON"), "bad_manifest"),
        (BadTask("task object does not exist"), "bad_task"),
        (TooManyRecords("past 100 records"), "too_large"),
        (TransientError("connection failed", kind="connection_refused"), "connection_refused"),
        (PermanentError("x", status=200), "bad_response"),
        (TransientError("x", status=200), "bad_response"),
        (TimeoutError("deadline"), "timeout"),
        (OSError(28, "No space left on device"), "storage"),
        (StorageFault("the bucket directory is read-only"), "storage"),
        (KeyError("bug"), "internal_error"),
        (TransientError("x", kind="no such kind", status=503), "server_error"),
    ],
)
def test_an_error_has_its_kind(error: BaseException, kind: str) -> None:
    assert kind_of(error) == kind


@pytest.mark.parametrize(
    ("error_class", "status", "kind"),
    [
        ("PermanentError", 401, "unauthorized"),
        ("PermanentError", 404, "not_found"),
        ("TransientError", 429, "rate_limited"),
        ("TransientError", 502, "server_error"),
        ("BadRecord", 200, "bad_record"),
        ("TooManyRecords", None, "too_large"),
        ("SettingsError", None, "configuration"),
        ("ValueError", None, "internal_error"),
    ],
)
def test_a_kind_follows_from_the_fields_of_a_record_written_before_kinds(
    error_class: str, status: int | None, kind: str
) -> None:
    assert kind_of_fields(error_class, status) == kind


def test_every_hint_is_for_a_known_kind() -> None:
    assert set(HINTS) <= set(KINDS)


def test_a_failure_record_carries_the_kind_of_its_error() -> None:
    record = failure_record_for(
        "troops/run=r1/warrior=w0/part-00000.json",
        PermanentError("https://h/v1/warriors/w0/troops: 401", status=401),
        attempts=1,
        first_attempt_at="2026-12-02T00:00:00.000Z",
    )
    assert record.error_kind == "unauthorized"
    assert json.loads(record.to_bytes())["error_kind"] == "unauthorized"


def test_an_old_record_without_kinds_reads_with_kinds_for_it_and_its_units() -> None:
    old = {
        "run_id": "r1",
        "stage": "data_groups",
        "task_key": "data_groups/run=r1/warrior=w0/troop=t0/part-00000.json",
        "kind": "units",
        "error_class": "PermanentError",
        "message": "404",
        "status": 404,
        "transient": False,
        "attempts": 1,
        "first_attempt_at": "2026-12-02T00:00:00.000Z",
        "last_attempt_at": "2026-12-02T00:00:01.000Z",
        "units": [{"data_group_id": "g0", "error_class": "BadRecord", "message": "'ts'", "status": 200}],
        "a_field_from_a_newer_writer": 1,
    }
    record = FailureRecord.from_bytes(json.dumps(old).encode())
    assert record.error_kind == "not_found"
    assert record.units[0]["error_kind"] == "bad_record"


def test_a_unit_failure_holds_class_kind_message_and_status() -> None:
    fields = failure_fields(PermanentError("gone", status=404))
    assert fields == {
        "error_class": "PermanentError",
        "error_kind": "not_found",
        "message": "gone",
        "status": 404,
    }
