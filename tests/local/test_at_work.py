"""A local leaf stage's places: a task waiting to retry gives its place up, and takes one
again before a task not yet started; never more tasks at work than places."""

from __future__ import annotations

import threading

import pytest

from fanout.at_work import AtWork

WAIT_S = 5.0
"""A bound on every wait of these tests (they never sleep on time: events order them)."""


class HeldSleep:
    """A retry's sleep that lasts until the test ends it."""

    def __init__(self) -> None:
        self.asleep = threading.Event()
        self.wake = threading.Event()

    def __call__(self, seconds: float) -> None:
        self.asleep.set()
        assert self.wake.wait(WAIT_S)


def start(target: object) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)  # type: ignore[arg-type]
    thread.start()
    return thread


def test_a_task_waiting_to_retry_gives_its_place_to_another() -> None:
    sleep = HeldSleep()
    places = AtWork(1, sleep=sleep)
    second_at_work = threading.Event()

    def first() -> None:
        with places.working():
            places.sleep(1.0)

    def second() -> None:
        with places.working():
            second_at_work.set()

    a = start(first)
    assert sleep.asleep.wait(WAIT_S)
    b = start(second)
    assert second_at_work.wait(WAIT_S)  # while the first still sleeps
    sleep.wake.set()
    a.join(WAIT_S)
    b.join(WAIT_S)
    assert not a.is_alive() and not b.is_alive()


def test_a_task_done_sleeping_takes_a_place_before_a_task_not_yet_started() -> None:
    sleep = HeldSleep()
    places = AtWork(1, sleep=sleep)
    order: list[str] = []
    holder_in, holder_out = threading.Event(), threading.Event()

    def sleeper() -> None:
        with places.working():
            places.sleep(1.0)
            order.append("resumed")

    def holder() -> None:
        with places.working():
            holder_in.set()
            assert holder_out.wait(WAIT_S)

    def newcomer() -> None:
        with places.working():
            order.append("new")

    threads = [start(sleeper)]
    assert sleep.asleep.wait(WAIT_S)
    threads.append(start(holder))  # takes the place the sleeper gave up
    assert holder_in.wait(WAIT_S)
    sleep.wake.set()  # the sleeper now waits for the place...
    threads.append(start(newcomer))  # ...and so does a task not yet started
    for _ in range(int(WAIT_S / 0.001)):  # both wait on the place (the Conditions' waiters)
        waiting = len(places._resume_cond._waiters) + len(places._start_cond._waiters)  # type: ignore[attr-defined]
        if places._resuming == 1 and waiting == 2:
            break
        threading.Event().wait(0.001)
    holder_out.set()
    for t in threads:
        t.join(WAIT_S)
    assert order == ["resumed", "new"]


def test_never_more_tasks_at_work_than_places() -> None:
    places = AtWork(2, sleep=lambda s: threading.Event().wait(0.001))
    lock, at_work, peak = threading.Lock(), [0], [0]

    def task() -> None:
        for _ in range(20):
            with places.working():
                for _ in range(2):
                    with lock:
                        at_work[0] += 1
                        peak[0] = max(peak[0], at_work[0])
                    with lock:
                        at_work[0] -= 1
                    places.sleep(1.0)  # the place given up, then taken again

    threads = [start(task) for _ in range(8)]
    for t in threads:
        t.join(WAIT_S * 4)
    assert peak[0] <= 2 and at_work[0] == 0


def test_a_sleep_outside_a_task_holds_no_place_and_gives_none() -> None:
    places = AtWork(1, sleep=lambda s: None)
    places.sleep(1.0)
    assert places._free == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize("places", [0, -1])
def test_fewer_than_one_place_is_refused(places: int) -> None:
    with pytest.raises(ValueError, match="places"):
        AtWork(places)


def test_a_freed_place_wakes_one_waiter_not_every_thread() -> None:
    """8 threads per place wait on few places: a place given back wakes one of them (the
    rest stay parked), so the waiting costs no CPU per task."""
    places = AtWork(1, sleep=lambda s: None)
    release = threading.Event()
    woken = [0]
    real_wait = places._start_cond.wait

    def counting_wait(timeout: float | None = None) -> bool:
        result = real_wait(timeout)
        woken[0] += 1
        return result

    places._start_cond.wait = counting_wait  # type: ignore[method-assign]

    def holder() -> None:
        with places.working():
            assert release.wait(WAIT_S)

    def waiter() -> None:
        with places.working():
            pass

    first = start(holder)
    for _ in range(int(WAIT_S / 0.001)):
        if places._free == 0:
            break
        threading.Event().wait(0.001)
    waiters = [start(waiter) for _ in range(20)]
    for _ in range(int(WAIT_S / 0.001)):
        if len(places._start_cond._waiters) == 20:  # type: ignore[attr-defined]
            break
        threading.Event().wait(0.001)
    release.set()
    for t in [first, *waiters]:
        t.join(WAIT_S)
    assert not any(t.is_alive() for t in [first, *waiters])
    assert woken[0] == 20  # each waiter woken once, when its turn came (notify_all: 20+19+...)
