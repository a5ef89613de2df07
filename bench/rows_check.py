"""CPU time to check 100,000 Hermes records, the leaf check every page of records goes through.

``python bench/rows_check.py [LAMBDAS_DIR]`` (default: this tree's ``lambdas``). Given the
``lambdas`` folder of a tree from before API descriptions (``fanout_core.hermes_pages``'
hand-written ``_check_records``), it measures that check instead, so the two compare on one
machine. CPU time of the best of 15 runs, each on a fresh copy of the records (the check
normalises timestamps in place).
"""

from __future__ import annotations

import copy
import sys
import time
import timeit
from pathlib import Path
from typing import Any


def records() -> list[dict[str, Any]]:
    return [
        {
            "ts": f"2026-11-{1 + i % 28:02d}T08:00:{i % 60:02d}.123Z",
            "metric": f"m{i % 7}",
            "value": i * 0.5 if i % 3 else i,
            "unit": None if i % 5 == 0 else "ms",
        }
        for i in range(100_000)
    ]


def main() -> None:
    lambdas = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parents[1] / "lambdas"
    sys.path.insert(0, str(lambdas.resolve()))
    if (lambdas / "fanout_core" / "hermes_pages.py").exists():
        from fanout_core.hermes_pages import _check_records  # type: ignore[import-not-found]

        name = "hand-written _check_records"

        def run(items: list[Any]) -> None:
            _check_records(items, "u", 1, repr)
    else:
        from fanout_core.api_description import builtin
        from fanout_core.rows import RowChecker

        checker = RowChecker(builtin().rows)
        name = "RowChecker(builtin().rows)"

        def run(items: list[Any]) -> None:
            checker.check(items, "u", 1, repr)

    pages = iter([copy.deepcopy(records()) for _ in range(15)])
    best = min(timeit.repeat(lambda: run(next(pages)), number=1, repeat=15, timer=time.process_time))
    print(f"{name}: {best * 1000:.1f} ms CPU per 100,000 records")


if __name__ == "__main__":
    main()
