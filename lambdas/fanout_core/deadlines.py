"""A task's deadline: the time its runtime gives it, less a margin to record the outcome.

On Lambda the time given is what the invocation has left; locally it is the stage's
``timeout_s``, the very setting that becomes the function's timeout. Both runtimes hand
the result to the Hermes client (``HermesClient.set_deadline``), which ends every call by
it and starts none after it, so a server that drips its answers cannot hold a task past
the time its runtime allows, and the runtime always has the margin left to write the
retry or the failure record.
"""

from __future__ import annotations

import time

OUTCOME_MARGIN_S = 10.0
"""Time kept back, at most, to write a retry message or a failure record."""
OUTCOME_SHARE = 0.1
"""With little time given, the margin is this share of it instead."""


def outcome_margin(time_given_s: float) -> float:
    """Seconds kept back from ``time_given_s`` for the outcome: 10 s, or a tenth if less."""
    return min(OUTCOME_MARGIN_S, OUTCOME_SHARE * max(time_given_s, 0.0))


def task_deadline(time_given_s: float, *, now: float | None = None) -> float:
    """The monotonic time by which a task's work must end, given ``time_given_s`` in all."""
    start = time.monotonic() if now is None else now
    return start + max(time_given_s, 0.0) - outcome_margin(time_given_s)
