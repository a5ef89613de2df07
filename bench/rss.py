"""Peak memory of a command and every process it starts, sampled from /proc.

``ru_maxrss`` of a child reports the largest single process, but the local runtime
runs its leaf stage in worker processes: what a machine must hold is their sum.

    python -m bench.rss -- fanout demo --size full --quiet
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench.common import _rss_kb, _tree


def measure(argv: list[str], interval: float = 0.2, exclude: tuple[str, ...] = ()) -> dict[str, float]:
    """Run ``argv``; sample the RSS of its process tree (minus processes whose command line
    contains one of ``exclude``, e.g. the simulator) until it exits."""
    started = time.monotonic()
    proc = subprocess.Popen(argv)
    peak_total = peak_single = 0
    samples = []
    while proc.poll() is None:
        total = 0
        for pid in _tree(proc.pid):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if any(e in cmd for e in exclude):
                continue
            rss = _rss_kb(pid)
            total += rss
            peak_single = max(peak_single, rss)
        peak_total = max(peak_total, total)
        samples.append(total)
        time.sleep(interval)
    return {
        "exit_code": proc.returncode,
        "elapsed_s": round(time.monotonic() - started, 2),
        "peak_rss_total_mb": round(peak_total / 1024, 1),
        "peak_rss_single_mb": round(peak_single / 1024, 1),
        "rss_at_half_time_mb": round(samples[len(samples) // 2] / 1024, 1) if samples else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--exclude", action="append", default=["fanout.simulator"], help="skip matching processes"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")
    figures = measure(command, exclude=tuple(args.exclude))
    print(json.dumps(figures), file=sys.stderr)
    return int(figures["exit_code"])


if __name__ == "__main__":
    raise SystemExit(main())
