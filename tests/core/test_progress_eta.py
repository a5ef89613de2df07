"""The live display's ETA (fanout/progress.py), with and without ``local run --plan``'s
estimate of the calls (issue 23): on a fake clock, so rates are exact."""

from __future__ import annotations

import io

from fanout.local_runtime import RunReport, StageCounts
from fanout.progress import ProgressPrinter
from fanout_core.hermes import CallStats
from fanout_core.stages import STAGES

from .fake_time import FakeTime


def _printer(estimated_calls: float | None, clock: FakeTime) -> tuple[ProgressPrinter, dict[str, CallStats]]:
    stats = {stage.name: CallStats() for stage in STAGES}
    printer = ProgressPrinter(
        io.StringIO(), stats, STAGES, rate_limit=50.0, estimated_calls=estimated_calls, clock=clock.clock
    )
    return printer, stats


def _report(troops_running: int, leaf_done: int, leaf_queued: int) -> RunReport:
    return RunReport(
        stages={
            "warriors": StageCounts(finished=1),
            "troops": StageCounts(finished=2, in_flight=troops_running),
            "data_groups": StageCounts(finished=leaf_done, queued=leaf_queued),
        }
    )


def _eta(printer: ProgressPrinter) -> str:
    return printer.line().rpartition(" ETA ")[2]


def _ten_seconds_at_20_calls_a_second(printer: ProgressPrinter, stats: dict[str, CallStats], clock: FakeTime):
    """Samples at t=0 (no call) and t=10 (200 calls, 50 leaf tasks done): 20 calls/s, 5 tasks/s."""
    printer.update(_report(troops_running=3, leaf_done=0, leaf_queued=10))
    printer.line()
    clock.sleep(10)
    stats["data_groups"].add(calls=200)
    printer.update(_report(troops_running=3, leaf_done=50, leaf_queued=10))


def test_without_an_estimate_there_is_no_eta_before_any_task_is_known() -> None:
    clock = FakeTime()
    printer, _stats = _printer(None, clock)
    assert _eta(printer) == "-"


def test_with_an_estimate_the_eta_is_there_from_the_first_second_at_r() -> None:
    clock = FakeTime()
    printer, _stats = _printer(1000, clock)
    assert _eta(printer) == "~0:20"  # 1,000 calls at R = 50/s


def test_without_an_estimate_the_eta_counts_only_the_tasks_discovered_so_far() -> None:
    clock = FakeTime()
    printer, stats = _printer(None, clock)
    _ten_seconds_at_20_calls_a_second(printer, stats, clock)
    assert _eta(printer) == "0:02+"  # 10 leaf tasks known and left, at 5/s; more to come


def test_with_an_estimate_the_eta_is_the_calls_left_of_it_at_the_recent_pace() -> None:
    clock = FakeTime()
    printer, stats = _printer(1000, clock)
    _ten_seconds_at_20_calls_a_second(printer, stats, clock)
    assert _eta(printer) == "~0:40"  # 800 calls left at 20/s


def test_once_every_task_is_known_the_eta_is_the_tasks_left_not_the_estimate() -> None:
    clock = FakeTime()
    printer, stats = _printer(1000, clock)
    _ten_seconds_at_20_calls_a_second(printer, stats, clock)
    printer.update(_report(troops_running=0, leaf_done=50, leaf_queued=10))
    assert _eta(printer) == "0:02"


def test_a_run_past_its_estimate_falls_back_to_the_tasks_discovered() -> None:
    clock = FakeTime()
    printer, stats = _printer(150, clock)
    _ten_seconds_at_20_calls_a_second(printer, stats, clock)
    assert _eta(printer) == "0:02+"
