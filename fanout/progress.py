"""What a run shows a person: live per-stage progress while it runs, a summary table after."""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, TextIO

from fanout.local_runtime import RunReport
from fanout_core.hermes import CallStats
from fanout_core.stages import STAGES, StageTable

if TYPE_CHECKING:
    from fanout.start_run import RunOutcome


class ProgressPrinter:
    """Live per-stage progress on a stream: one rewritten line on a terminal, else a line every 2 s."""

    def __init__(self, stream: TextIO, stats: dict[str, CallStats], table: StageTable = STAGES):
        self.stream = stream
        self.stats = stats
        self.table = table
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self._report: RunReport | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._t0 = time.monotonic()

    def update(self, report: RunReport) -> None:
        self._report = report

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._thread.start()

    def stop(self, report: RunReport) -> None:
        self._report = report
        self._stop.set()
        self._thread.join(timeout=2)
        self._emit(final=True)

    def _loop(self) -> None:
        interval = 0.25 if self.tty else 2.0
        while not self._stop.wait(interval):
            self._emit()

    def line(self) -> str:
        report = self._report
        elapsed = time.monotonic() - self._t0
        calls = sum(s.calls for s in self.stats.values())
        throttled = sum(s.throttled for s in self.stats.values())
        parts = []
        for stage in self.table:
            c = report.stages[stage.name] if report else None
            if c is None:
                parts.append(f"{stage.name} -")
                continue
            done = c.finished + c.skipped
            parts.append(
                f"{stage.name} {done} done {c.in_flight} running {c.queued} queued {c.failed} failed"
            )
        rate = calls / elapsed if elapsed > 0 else 0.0
        return f"[{elapsed:6.1f}s] " + " | ".join(parts) + f" | {calls} calls ({rate:.0f}/s) 429s {throttled}"

    def _emit(self, final: bool = False) -> None:
        text = self.line()
        if self.tty:
            self.stream.write("\r\x1b[2K" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def summary_rows(outcome: RunOutcome, where: str) -> list[tuple[str, str]]:
    report = outcome.report
    elapsed = report.elapsed_s
    rows: list[tuple[str, str]] = []
    for name, c in report.stages.items():
        s = outcome.stats[name]
        rows.append(
            (
                f"stage {name}",
                f"{c.finished} tasks finished, {c.skipped} duplicates skipped, {c.retries} retried, "
                f"{c.failed} failed, {c.unit_failures} units failed; {s.calls} calls, {s.throttled} 429s",
            )
        )
    files = sum(c.files for c in report.stages.values())
    records = sum(c.records for c in report.stages.values())
    retries = sum(c.retries for c in report.stages.values()) + outcome.client_retries
    rows += [
        ("run", outcome.run_id),
        ("API calls", str(outcome.calls)),
        ("429s seen", str(outcome.throttled)),
        ("retries", f"{retries} ({outcome.client_retries} by the client, the rest by the runtime)"),
        ("failures", _failures(outcome)),
        (
            "duplicate ids",
            f"{sum(c.duplicates for c in report.stages.values())} repeated in listings, collapsed",
        ),
        ("elapsed", f"{elapsed:.1f} s"),
        ("calls/s", f"{outcome.calls / elapsed:.0f}" if elapsed > 0 else "-"),
        ("files written", str(files)),
        ("rows written", str(records)),
        ("output", where),
    ]
    if outcome.resumed:
        rows.insert(-1, ("resumed", f"{outcome.resumed} unfinished task(s) picked up from a previous run"))
    return rows


def print_table(rows: list[tuple[str, str]], stream: TextIO = sys.stdout) -> None:
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        stream.write(f"  {k.ljust(width)}  {v}\n")
    stream.flush()


def _failures(outcome: RunOutcome) -> str:
    text = f"{len(outcome.failure_records)} task(s) with a failure record"
    earlier = len(outcome.earlier_failures)
    if earlier:
        text += f" ({earlier} from an earlier invocation)"
    return text
