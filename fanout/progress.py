"""What a run shows a person: live per-stage progress while it runs, a summary table after."""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from fanout.local_runtime import RunReport
from fanout_core.api_client import CallStats
from fanout_core.stages import STAGES, StageTable

if TYPE_CHECKING:
    from fanout.start_run import RunOutcome


class ProgressPrinter:
    """Live progress of a run on a stream.

    On a terminal, a Rich display redrawn in place four times a second: one bar per stage
    (tasks done of those seen so far, so the total grows as listings discover tasks), and a
    line with calls/s, 429s, failures and the run's ETA, fitted to the terminal's width.
    Whatever else is written to stderr meanwhile is printed above it, not through it.
    Elsewhere (a pipe, a log file), one plain line every 2 s.

    ``estimated_calls`` (``local run --plan``'s forecast) gives an ETA from the first second,
    shown with "~", while listings still add tasks; once every task is known, or the run
    outgrows the estimate, the ETA is the leaf stage's tasks left at its recent pace.
    """

    def __init__(
        self,
        stream: TextIO,
        stats: dict[str, CallStats],
        table: StageTable = STAGES,
        *,
        rate_limit: float | None = None,
        estimated_calls: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.stream = stream
        self.stats = stats
        self.table = table
        self.rate_limit = rate_limit
        self.estimated_calls = estimated_calls
        self._clock = clock
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self._report: RunReport | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._t0 = clock()
        self._calls: deque[tuple[float, int]] = deque(maxlen=64)
        self._leaf: deque[tuple[float, int]] = deque(maxlen=64)
        self._live: Any = None

    def update(self, report: RunReport) -> None:
        self._report = report

    def start(self) -> None:
        self._t0 = self._clock()
        if self.tty:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(
                console=Console(file=self.stream),
                get_renderable=self.renderable,
                refresh_per_second=4,
                redirect_stderr=self.stream is sys.__stderr__,
                redirect_stdout=False,
            )
            self._live.start()
        else:
            self._thread.start()

    def stop(self, report: RunReport) -> None:
        self._report = report
        if self._live is not None:
            self._live.refresh()
            self._live.stop()
            return
        self._stop.set()
        self._thread.join(timeout=2)
        self._emit()

    def _loop(self) -> None:
        while not self._stop.wait(2.0):
            self._emit()

    # -- what is shown ----------------------------------------------------------------
    def _figures(self) -> dict[str, Any]:
        """Calls, their recent rate, 429s, failures and the ETA, measured now."""
        now = self._clock()
        report = self._report
        calls = sum(s.calls for s in self.stats.values())
        leaf = report.stages.get(self.table.leaf.name) if report else None
        self._calls.append((now, calls))
        self._leaf.append((now, (leaf.finished + leaf.skipped + leaf.failed) if leaf else 0))
        failures = sum(c.failed + c.unit_failures for c in report.stages.values()) if report else 0
        upstream_busy = bool(report) and any(
            c.in_flight or c.queued or c.delayed
            for name, c in report.stages.items()  # type: ignore[union-attr]
            if name != self.table.leaf.name
        )
        eta = None
        estimate = self.estimated_calls
        # The plan counts the tasks not yet listed; once all are known, the tasks left are exact.
        estimated = estimate is not None and (upstream_busy or report is None) and calls < estimate
        if estimate is not None and estimated:
            pace = _rate(self._calls) or self.rate_limit or 0.0
            eta = (estimate - calls) / pace if pace > 0 else None
        elif leaf is not None and leaf.known:
            left = leaf.known - self._leaf[-1][1]
            rate = _rate(self._leaf)
            eta = 0.0 if left == 0 else (left / rate if rate > 0 else None)
        return {
            "elapsed": now - self._t0,
            "calls": calls,
            "rate": _rate(self._calls),
            "throttled": sum(s.throttled for s in self.stats.values()),
            "failures": failures,
            "eta": eta,
            "eta_text": _eta(eta, upstream_busy and not estimated, estimated),
        }

    def renderable(self) -> Any:
        """The display: a bar per stage, then the run's line."""
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        f = self._figures()
        report = self._report
        grid = Table.grid(padding=(0, 1), expand=True)
        grid.add_column(no_wrap=True, min_width=11)
        grid.add_column(ratio=1, min_width=10)
        grid.add_column(no_wrap=True, justify="right")
        grid.add_column(no_wrap=True, overflow="ellipsis", max_width=24)
        for stage in self.table:
            c = report.stages[stage.name] if report else None
            done = (c.finished + c.skipped) if c else 0
            known = c.known if c else 0
            extra = []
            if c and c.failed:
                extra.append(f"[red]{c.failed} failed[/]")
            if c and (c.in_flight or c.queued or c.delayed):
                extra.append(f"{c.in_flight} running")
            grid.add_row(
                stage.name,
                ProgressBar(total=max(known, 1), completed=done + (c.failed if c else 0)),
                f"{done}/{known}",
                Text.from_markup(" ".join(extra)),
            )
        line = (
            f"{_clock(f['elapsed'])}  {f['calls']:,} calls  {f['rate']:.0f}/s"
            + (f" of R {self.rate_limit:g}" if self.rate_limit else "")
            + f"  429s {f['throttled']}  failures {f['failures']}  ETA {f['eta_text']}"
        )
        outer = Table.grid(expand=True)
        outer.add_column(no_wrap=True, overflow="ellipsis")
        outer.add_row(grid)
        outer.add_row(Text(line, no_wrap=True, overflow="ellipsis"))
        return outer

    def line(self) -> str:
        """The plain one-line form, for a stream that is not a terminal."""
        f = self._figures()
        report = self._report
        parts = []
        for stage in self.table:
            c = report.stages[stage.name] if report else None
            if c is None:
                parts.append(f"{stage.name} -")
                continue
            failed = f" ({c.failed} failed)" if c.failed else ""
            parts.append(f"{stage.name} {c.finished + c.skipped}/{c.known}{failed}")
        return (
            f"[{f['elapsed']:6.1f}s] "
            + " | ".join(parts)
            + f" | {f['calls']} calls ({f['rate']:.0f}/s) 429s {f['throttled']}"
            + f" failures {f['failures']} ETA {f['eta_text']}"
        )

    def _emit(self) -> None:
        self.stream.write(self.line() + "\n")
        self.stream.flush()


def _rate(samples: deque[tuple[float, int]], window_s: float = 10.0) -> float:
    """Per second over the last ``window_s`` of (time, count) samples."""
    if len(samples) < 2:
        return 0.0
    t1, n1 = samples[-1]
    t0, n0 = next(((t, n) for t, n in samples if t >= t1 - window_s), samples[0])
    return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def _eta(seconds: float | None, growing: bool, estimated: bool = False) -> str:
    """The run's time left: "~" from the plan's estimate of calls; else from the leaf stage's
    recent pace, "+" while listings still add tasks."""
    if seconds is None:
        return "-"
    return ("~" if estimated else "") + _clock(seconds) + ("+" if growing else "")


STAGE_COLUMNS = ("done", "failed", "units", "retried", "dups", "calls", "429s")
"""The per-stage summary's columns: tasks finished, tasks failed, units failed, task
retries, duplicate events skipped, Hermes calls, 429s. Narrow, so 80 columns hold it."""


def stage_lines(outcome: RunOutcome) -> list[str]:
    """The per-stage part of the summary, as a table (one row per stage)."""
    width = max(len("stage"), *(len(name) for name in outcome.report.stages))
    lines = ["stage".ljust(width) + "".join(f"{c:>9}" for c in STAGE_COLUMNS)]
    for name, c in outcome.report.stages.items():
        s = outcome.stats[name]
        values = (c.finished, c.failed, c.unit_failures, c.retries, c.skipped, s.calls, s.throttled)
        lines.append(name.ljust(width) + "".join(f"{v:>9,}" for v in values))
    return lines


def summary_rows(outcome: RunOutcome, where: str) -> list[tuple[str, str]]:
    report = outcome.report
    elapsed = report.elapsed_s
    rows: list[tuple[str, str]] = []
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
    if outcome.limit is not None:
        rows.insert(3, ("rate limit", outcome.limit.line()))
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
