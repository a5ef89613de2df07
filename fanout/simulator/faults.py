"""Fault dice: the reproducible draws that decide injected 429s, 5xx, garbage and hangs.

Why its own module: with a ``fault_seed`` the same requests meet the same faults in the
same order, which is what makes a fault test repeatable.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

# 200 bodies that are not JSON: a truncated page and an HTML error page from a "proxy".
_GARBAGE = (b'{"items":[{"warrior_id":"w-00', b"<html><body>502 upstream hiccup</body></html>")


@dataclass(frozen=True)
class _Draw:
    fault: float
    hang: float
    pick: float


class _FaultDice:
    """A reproducible stream of draws: three per authenticated API request, in arrival order."""

    def __init__(self, fault_seed: int | None) -> None:
        self._rng = random.Random(fault_seed)
        self._lock = threading.Lock()

    def roll(self) -> _Draw:
        with self._lock:
            r = self._rng.random
            return _Draw(r(), r(), r())
