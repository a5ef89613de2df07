"""The retry extension: which failures are retried, how long to wait, and the one failure
record a task leaves when it gives up."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import task_keys
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from fanout_core import keys
from fanout_core.errors import BadManifest, BadTask, PermanentError, TransientError
from fanout_core.failures import FailureRecord, failure_record_for, read_failure, write_failure
from fanout_core.retry import Attempt, Finished, GaveUp, RetryLater, RetryPolicy, attempt_task
from fanout_core.storage import LocalDirStorage

TASK_KEY = task_keys.troops_task_key("r1", "a b", 0)
FIRST_AT = "2020-01-01T08:00:00.000Z"


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- should_retry ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "attempt", "expected"),
    [
        (TransientError("503", status=503), 1, True),
        (TransientError("503", status=503), 2, True),
        (TransientError("503", status=503), 3, False),
        (TransientError("503", status=503), 4, False),
        (PermanentError("404", status=404), 1, False),
        (BadTask("garbage"), 1, False),
        (BadManifest("no"), 1, False),
        (ValueError("a bug?"), 1, True),
        (KeyError("x"), 2, True),
        (OSError("disk"), 3, False),
    ],
)
def test_should_retry(error: BaseException, attempt: int, expected: bool) -> None:
    assert RetryPolicy(max_attempts=3).should_retry(error, attempt) is expected


def test_a_single_attempt_policy_never_retries() -> None:
    assert RetryPolicy(max_attempts=1).should_retry(TransientError("x"), 1) is False


# --- delay -----------------------------------------------------------------------------------


def cap_of(policy: RetryPolicy, attempt: int) -> float:
    return min(policy.max_delay_s, policy.base_delay_s * 2 ** (attempt - 1))


@pytest.mark.parametrize("attempt", range(1, 11))
def test_delay_lies_between_half_the_cap_and_the_cap(attempt: int) -> None:
    policy = RetryPolicy(base_delay_s=60, max_delay_s=900)
    rng = random.Random(attempt)
    cap = cap_of(policy, attempt)
    delays = [policy.delay(attempt, rng) for _ in range(200)]
    assert all(cap / 2 <= d <= cap for d in delays)
    assert max(delays) - min(delays) > cap / 4  # jittered, not constant


class FixedRandom(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize(
    ("attempt", "r", "expected"),
    [(1, 0.0, 30.0), (1, 1.0, 60.0), (2, 0.0, 60.0), (3, 0.5, 180.0), (5, 1.0, 900.0), (10, 0.0, 450.0)],
)
def test_delay_ends_of_the_jitter(attempt: int, r: float, expected: float) -> None:
    policy = RetryPolicy(base_delay_s=60, max_delay_s=900)
    assert policy.delay(attempt, FixedRandom(r)) == expected


@hyp_settings(deadline=None, max_examples=60)
@given(
    base=st.floats(min_value=0.0, max_value=900),
    top=st.floats(min_value=0.0, max_value=900),
    attempt=st.integers(min_value=1, max_value=40),
    r=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_delay_bounds_for_any_policy(base: float, top: float, attempt: int, r: float) -> None:
    policy = RetryPolicy(base_delay_s=base, max_delay_s=max(base, top))
    cap = cap_of(policy, attempt)
    assert cap / 2 <= policy.delay(attempt, FixedRandom(r)) <= cap


# --- attempt_task ----------------------------------------------------------------------------

POLICY = RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.04)


def raising(error: BaseException):
    def work(attempt: Attempt) -> Any:
        raise error

    return work


def test_attempt_task_returns_finished_with_the_work_result(store: LocalDirStorage) -> None:
    seen: list[Attempt] = []
    attempt = Attempt(key=TASK_KEY, number=2, first_attempt_at=FIRST_AT)
    outcome = attempt_task(attempt, lambda a: seen.append(a) or "done", store, POLICY)
    assert outcome == Finished("done")
    assert seen == [attempt]
    assert list(store.list("")) == []


def test_a_transient_error_asks_for_the_next_attempt(store: LocalDirStorage) -> None:
    error = TransientError("503", status=503)
    attempt = Attempt(key=TASK_KEY, number=1, first_attempt_at=FIRST_AT)
    outcome = attempt_task(attempt, raising(error), store, POLICY, random.Random(1))
    assert isinstance(outcome, RetryLater)
    assert outcome.attempt == Attempt(key=TASK_KEY, number=2, first_attempt_at=FIRST_AT)
    assert outcome.error is error
    assert POLICY.base_delay_s / 2 <= outcome.delay_s <= POLICY.base_delay_s


def test_retry_later_writes_nothing(store: LocalDirStorage) -> None:
    attempt_task(Attempt(key=TASK_KEY), raising(TransientError("x")), store, POLICY)
    assert list(store.list("")) == []


def test_retry_later_delay_grows_with_the_attempt(store: LocalDirStorage) -> None:
    attempt = Attempt(key=TASK_KEY, number=2, first_attempt_at=FIRST_AT)
    outcome = attempt_task(attempt, raising(TransientError("x")), store, POLICY, FixedRandom(1.0))
    assert isinstance(outcome, RetryLater)
    assert outcome.delay_s == 0.02


@pytest.mark.parametrize(
    ("error", "number", "transient"),
    [
        pytest.param(PermanentError("gone: 404", status=404), 1, False, id="permanent-first-attempt"),
        pytest.param(BadTask("not a task"), 2, False, id="bad-task"),
        pytest.param(TransientError("busy: 503", status=503), 3, True, id="last-transient-attempt"),
        pytest.param(ValueError("bug"), 3, True, id="unknown-on-last-attempt"),
    ],
)
def test_giving_up_writes_exactly_one_failure_record(
    store: LocalDirStorage, error: BaseException, number: int, transient: bool
) -> None:
    attempt = Attempt(key=TASK_KEY, number=number, first_attempt_at=FIRST_AT)
    before = datetime.now(UTC) - timedelta(milliseconds=1)
    outcome = attempt_task(attempt, raising(error), store, POLICY)
    after = datetime.now(UTC)
    assert isinstance(outcome, GaveUp)
    assert list(store.list("")) == [keys.failed_key(TASK_KEY)]
    stored = FailureRecord.from_bytes(store.get(keys.failed_key(TASK_KEY)))
    assert stored == outcome.record
    assert stored.run_id == "r1"
    assert stored.stage == "troops"
    assert stored.task_key == TASK_KEY
    assert stored.kind == "task"
    assert stored.error_class == type(error).__name__
    assert stored.message == str(error)
    assert stored.status == getattr(error, "status", None)
    assert stored.transient is transient
    assert stored.attempts == number
    assert stored.first_attempt_at == FIRST_AT
    assert before <= parse_iso(stored.last_attempt_at) <= after
    assert stored.units == []


def test_the_failure_record_is_canonical_json(store: LocalDirStorage) -> None:
    attempt_task(Attempt(key=TASK_KEY, first_attempt_at=FIRST_AT), raising(BadTask("x")), store, POLICY)
    body = store.get(keys.failed_key(TASK_KEY))
    assert json.loads(body)["task_key"] == TASK_KEY
    assert (
        body
        == json.dumps(json.loads(body), ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
    )


class BrokenStorage(LocalDirStorage):
    def put(self, key: str, body: bytes) -> None:
        raise OSError("bucket unreachable")

    def put_if_absent(self, key: str, body: bytes) -> bool:
        raise OSError("bucket unreachable")


def test_a_failing_failure_record_write_propagates(tmp_path) -> None:
    storage = BrokenStorage(tmp_path / "broken")
    with pytest.raises(OSError, match="bucket unreachable"):
        attempt_task(Attempt(key=TASK_KEY), raising(PermanentError("404", status=404)), storage, POLICY)


def test_a_very_long_message_is_cut_to_2000_characters(store: LocalDirStorage) -> None:
    outcome = attempt_task(Attempt(key=TASK_KEY), raising(PermanentError("x" * 5000)), store, POLICY)
    assert isinstance(outcome, GaveUp)
    assert outcome.record.message == "x" * 2000


@pytest.mark.parametrize(
    ("task_key", "run_id", "stage"),
    [
        (task_keys.manifest_key("r9"), "r9", "warriors"),
        (task_keys.warriors_part_key("r9", 1), "r9", "warriors"),
        (task_keys.data_groups_task_key("r9", "w", "t", 0), "r9", "data_groups"),
        ("troops/no-run-folder/part-00000.json", None, "troops"),
        ("elsewhere/x.json", None, None),
    ],
)
def test_failure_record_names_run_and_stage_when_the_key_has_them(
    task_key: str, run_id: str | None, stage: str | None
) -> None:
    record = failure_record_for(task_key, BadTask("x"), attempts=1, first_attempt_at=FIRST_AT)
    assert (record.run_id, record.stage) == (run_id, stage)


def test_a_later_failure_record_replaces_the_earlier_one(store: LocalDirStorage) -> None:
    for attempts in (1, 2):
        write_failure(
            store, failure_record_for(TASK_KEY, BadTask("x"), attempts=attempts, first_attempt_at=FIRST_AT)
        )
    assert list(store.list("failed/")) == [keys.failed_key(TASK_KEY)]
    record = read_failure(store, TASK_KEY)
    assert record is not None and record.attempts == 2


def test_read_failure_of_a_task_without_one_is_none(store: LocalDirStorage) -> None:
    assert read_failure(store, TASK_KEY) is None


def test_attempt_next_keeps_key_and_first_attempt_time() -> None:
    assert Attempt(key="k", number=4, first_attempt_at=FIRST_AT).next() == Attempt(
        key="k", number=5, first_attempt_at=FIRST_AT
    )
