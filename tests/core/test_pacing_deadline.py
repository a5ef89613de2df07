"""Every pacing wait is bounded by the task's deadline: a pacer whose next slot lies past
what the task may still wait raises ``PacerBeyondDeadline`` at once, taking no slot, and
the task is given back to be retried (a transient error), never slept through or lost."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest

from fanout.shared_pacing import SharedBudget
from fanout_core.adaptive_rate import NEXT
from fanout_core.error_kinds import kind_of, kind_of_fields
from fanout_core.errors import PacerBeyondDeadline, is_transient
from fanout_core.hermes import PACER_RESERVE_S, HermesClient
from fanout_core.pacing import AdaptivePacer, NoPacer, Pacer
from fanout_core.retry import Attempt, RetryLater, RetryPolicy, attempt_task
from fanout_core.storage import LocalDirStorage

from .fake_time import FakeTime

UNUSED_URL = "http://127.0.0.1:9"
"""No call gets this far: the pacer refuses first."""


def test_a_static_pacer_refuses_a_wait_past_max_wait_without_taking_a_token() -> None:
    t = FakeTime()
    pacer = Pacer(1.0, burst=1.0, clock=t.clock, sleep=t.sleep)
    pacer.acquire()  # the bucket's one token
    with pytest.raises(PacerBeyondDeadline):
        pacer.acquire(max_wait=0.5)
    assert t.slept == []
    assert pacer.acquire() == pytest.approx(1.0)  # the next token was left for this call


def test_a_static_pacer_waits_a_wait_within_max_wait() -> None:
    t = FakeTime()
    pacer = Pacer(1.0, burst=1.0, clock=t.clock, sleep=t.sleep)
    pacer.acquire()
    assert pacer.acquire(max_wait=2.0) == pytest.approx(1.0)


def test_an_adaptive_pacer_refuses_a_slot_past_max_wait_without_taking_it() -> None:
    t = FakeTime()
    pacer = AdaptivePacer(1.0, burst=1.0, clock=t.clock, sleep=t.sleep)
    pacer.acquire()
    slot = pacer.state[NEXT]
    with pytest.raises(PacerBeyondDeadline):
        pacer.acquire(max_wait=0.5)
    assert t.slept == [] and pacer.state[NEXT] == slot


def test_an_adaptive_pacer_waits_a_slot_within_max_wait() -> None:
    t = FakeTime()
    pacer = AdaptivePacer(1.0, burst=1.0, clock=t.clock, sleep=t.sleep)
    pacer.acquire()
    assert pacer.acquire(max_wait=2.0) == pytest.approx(1.0)


def test_a_shared_pacer_refuses_a_slot_past_max_wait_without_taking_it() -> None:
    pacer = SharedBudget(0.01, 1.0).pacer()  # a slot every 100 s
    pacer.acquire()
    slot = pacer.state[NEXT]
    with pytest.raises(PacerBeyondDeadline):
        pacer.acquire(max_wait=5.0)  # raised at once, nothing slept
    assert pacer.state[NEXT] == slot


def test_a_call_that_may_go_now_goes_whatever_the_time_left() -> None:
    t = FakeTime()
    assert Pacer(10.0, clock=t.clock, sleep=t.sleep).acquire(max_wait=-0.5) == 0.0
    assert AdaptivePacer(10.0, clock=t.clock, sleep=t.sleep).acquire(max_wait=-0.5) == 0.0
    assert NoPacer().acquire(max_wait=-0.5) == 0.0


class RecordingPacer:
    """A pacer that records the ``max_wait`` it is given and refuses every slot."""

    def __init__(self) -> None:
        self.max_waits: list[float] = []

    def acquire(self, max_wait: float = math.inf) -> float:
        self.max_waits.append(max_wait)
        raise PacerBeyondDeadline("slot past the deadline", kind="paced_past_deadline")

    def on_throttled(self, retry_after: float | None) -> None:
        pass

    def on_success(self) -> None:
        pass


def test_the_client_lets_the_pacer_wait_the_time_left_less_what_the_call_needs() -> None:
    t = FakeTime(100.0)
    pacer = RecordingPacer()
    client = HermesClient(UNUSED_URL, "tok", pacer=pacer, clock=t.clock, sleep=t.sleep)
    client.set_deadline(130.0)
    with pytest.raises(PacerBeyondDeadline):
        list(client.list("warriors", ()))
    assert pacer.max_waits == [30.0 - PACER_RESERVE_S]


def test_without_a_deadline_the_pacer_may_wait_as_long_as_it_takes() -> None:
    pacer = RecordingPacer()
    client = HermesClient(UNUSED_URL, "tok", pacer=pacer)
    with pytest.raises(PacerBeyondDeadline):
        list(client.list("warriors", ()))
    assert pacer.max_waits == [math.inf]


def test_a_slot_past_the_deadline_is_not_retried_inside_the_task(caplog: pytest.LogCaptureFixture) -> None:
    t = FakeTime(100.0)
    pacer = RecordingPacer()
    client = HermesClient(
        UNUSED_URL, "secret-token", pacer=pacer, clock=t.clock, sleep=t.sleep, max_retries=5
    )
    client.set_deadline(130.0)
    with caplog.at_level(logging.WARNING, logger="fanout"), pytest.raises(PacerBeyondDeadline):
        list(client.list("warriors", ()))
    assert len(pacer.max_waits) == 1 and t.slept == []
    (line,) = [r for r in caplog.records if getattr(r, "outcome", None) == "paced_past_deadline"]
    assert "secret-token" not in line.getMessage() + str(line.__dict__)


def test_a_slot_past_the_deadline_is_a_transient_error_of_its_own_kind() -> None:
    error = PacerBeyondDeadline("x", kind="paced_past_deadline")
    assert is_transient(error)
    assert kind_of(error) == "paced_past_deadline"
    assert kind_of_fields("PacerBeyondDeadline", None) == "paced_past_deadline"


def test_a_task_whose_slot_lies_past_its_deadline_is_retried_not_lost(tmp_path: Path) -> None:
    t = FakeTime(100.0)
    pacer = AdaptivePacer(0.01, burst=1.0, clock=t.clock, sleep=t.sleep)  # a slot every 100 s
    pacer.acquire()  # another task took the one slot
    client = HermesClient(UNUSED_URL, "tok", pacer=pacer, clock=t.clock, sleep=t.sleep)
    client.set_deadline(t.now + 60.0)  # the stage's timeout
    storage = LocalDirStorage(tmp_path)
    key = "amazon_warriors/run=r1/part-00000.json"

    outcome = attempt_task(
        Attempt(key=key), lambda _: list(client.list("warriors", ())), storage, RetryPolicy()
    )

    assert isinstance(outcome, RetryLater) and outcome.attempt.number == 2
    assert isinstance(outcome.error, PacerBeyondDeadline)
    assert list(storage.list("failed/")) == []
    assert t.slept == []  # it did not sleep towards the slot
