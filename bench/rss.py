"""Peak memory of a command and every process it starts, sampled from /proc.

``ru_maxrss`` of a child reports the largest single process, but the local runtime
runs its leaf stage in worker processes: what a machine must hold is their sum.

    python -m bench.rss -- fanout demo --size full --quiet

``--split`` measures a ``local run`` (or ``demo``) in its two phases, each in a process
of its own: the crawl (the same command with ``--no-compact``), then the compaction
(``fanout compact RUN`` on the same ``--bucket-dir``). The peak of the command as a
whole is the larger of the two (the crawl's worker processes are gone before it
compacts). The 150,000-call run of docs/compaction.md (1.2 M rows):

    python -m fanout.simulator --port 8099 --warriors 150 --troops-per-warrior 20 \
        --groups-per-troop 50 --records-per-group 8 &
    echo '{"warriors": "all"}' > /tmp/big.json
    python -m bench.rss --split -- python -m fanout local run /tmp/big.json \
        --hermes-url http://127.0.0.1:8099 --bucket-dir /tmp/big-bucket --quiet
"""

from __future__ import annotations

import argparse
import itertools
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


def phases(command: list[str]) -> tuple[list[str], list[str]]:
    """The crawl and the compaction of a ``local run`` / ``demo`` command, as two commands."""
    starts = [i for i, word in enumerate(command) if word in ("local", "demo")]
    if not starts:
        raise ValueError("--split measures a `fanout local run` or `fanout demo` command")
    at = starts[0]
    options = dict(itertools.pairwise(command))
    if "--bucket-dir" not in options:
        raise ValueError("--split needs the command's --bucket-dir (it compacts the run there)")
    if "--run-id" in options:
        run_id = options["--run-id"]
    elif command[at : at + 2] == ["local", "run"] and len(command) > at + 2:
        run_id = Path(command[at + 2]).stem  # the manifest's name is the run id
    else:
        raise ValueError("--split needs --run-id in a demo command")
    crawl = [*command, "--no-compact"]
    compact = [*command[:at], "compact", run_id, "--bucket-dir", options["--bucket-dir"]]
    return crawl, compact


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--exclude", action="append", default=["fanout.simulator"], help="skip matching processes"
    )
    parser.add_argument(
        "--split", action="store_true", help="measure a local run's crawl and compaction separately"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")
    if not args.split:
        figures = measure(command, exclude=tuple(args.exclude))
        print(json.dumps(figures), file=sys.stderr)
        return int(figures["exit_code"])
    try:
        crawl_argv, compact_argv = phases(command)
    except ValueError as exc:
        parser.error(str(exc))
    crawl = measure(crawl_argv, exclude=tuple(args.exclude))
    if crawl["exit_code"]:
        print(json.dumps({"crawl": crawl}), file=sys.stderr)
        return int(crawl["exit_code"])
    compaction = measure(compact_argv, exclude=tuple(args.exclude))
    split = {
        "crawl": crawl,
        "compaction": compaction,
        "peak_rss_total_mb": max(crawl["peak_rss_total_mb"], compaction["peak_rss_total_mb"]),
    }
    print(json.dumps(split), file=sys.stderr)
    return int(compaction["exit_code"])


if __name__ == "__main__":
    raise SystemExit(main())
