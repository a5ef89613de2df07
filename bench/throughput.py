"""Throughput: fanout's local runtime beside a plain crawler and dlt, same data, same run.

``python -m bench.throughput [--size tiny|demo|full] [--peers fanout,plain,dlt] [--json]``

Each peer crawls a fresh simulator (its own process, small latency, no rate limit) that
serves the same deterministic universe, in a process of its own, one after another, so
CPU seconds and peak RSS are that crawler's alone. Then its output is read back and
compared with the simulator's truth: a fast crawler that loses rows is not fast.

Figures per peer: wall time of the crawl (start to last file on disk, without interpreter
start-up), its ratio to fanout's, API calls made (the crawler's own count; dlt's is counted
at the transport, where the plain crawler's and a threads-only fanout's counts agree with
it), calls/s, CPU seconds per 1,000 calls (the crawler's process and its worker
processes, not the simulator), peak RSS summed over the crawler's process tree, files and
rows written, whether the rows equal the truth, and the simulator's own CPU seconds
during that peer's crawl (it shares the 2 cores).

The dlt peer needs dlt, which is not in the dev requirements: install
requirements-bench.txt into a venv and pass its interpreter with ``--dlt-python``
(default: this interpreter if it can import dlt).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import random
import resource
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import TOKEN, PeerRun, machine, print_table, run_peer_process
from fanout.leaf_workers import default_processes
from fanout.simulator import SIZES, SimConfig, Universe, run_in_subprocess

PEERS = {
    "fanout": "bench.throughput",
    "plain": "bench.plain_crawler",
    "plain-pyarrow": "bench.plain_crawler",
    "dlt": "bench.dlt_crawler",
}
NEEDS_BENCH_VENV = {"dlt": "dlt", "plain-pyarrow": "pyarrow"}
"""Peers that need a package from requirements-bench.txt (run with --dlt-python)."""
RUN_ID = "bench"
PAGE_SIZE = 100


# -- the fanout peer (runs in its own process through bench.common) --------------------------


def fanout_settings(concurrency: int | None = None) -> tuple[Any, dict[str, int]]:
    """The ``local`` environment with a rate limit pacing never reaches, and its stage caps.

    ``concurrency`` (a total) scales every stage's reserved concurrency in proportion.
    """
    from fanout.settings_files import find_settings

    settings = find_settings("local")
    settings = dataclasses.replace(settings, hermes_rate_limit=max(settings.hermes_rate_limit, 100_000.0))
    caps = {name: s.reserved_concurrency for name, s in settings.stages.items()}
    if concurrency:
        total = sum(caps.values())
        caps = {name: max(1, round(c * concurrency / total)) for name, c in caps.items()}
    return settings, caps


def run_peer(spec: dict[str, Any]) -> dict[str, Any]:
    """fanout's local runtime through ``start_run``, on a fresh LocalDirStorage."""
    from fanout.bucket import StorageSpec
    from fanout.start_run import start_run
    from fanout_core.bodies import manifest_body
    from fanout_core.storage import LocalDirStorage

    settings, caps = fanout_settings(spec.get("concurrency_override"))
    outcome = start_run(
        LocalDirStorage(spec["out_dir"]),
        settings,
        run_id=spec["run_id"],
        manifest=manifest_body(None),
        hermes_url=spec["url"],
        token=spec["token"],
        concurrency=caps,
        processes=spec["processes"],
        storage_spec=StorageSpec(bucket_dir=spec["out_dir"]),
    )
    report = outcome.report
    return {
        "calls": outcome.calls,
        "throttled": outcome.throttled,
        "files": sum(c.files for c in report.stages.values()),
        "rows": sum(c.records for c in report.stages.values()),
        "ok": report.ok,
        "task_retries": sum(c.retries for c in report.stages.values()),
        "stage_concurrency": caps,
        "processes": spec["processes"],
        "runtime_elapsed_s": report.elapsed_s,
    }


# -- checking the output against the truth ------------------------------------------------


AUDIT_COLUMNS = ["warrior_id", "troop_id", "service", "data_group_id", "ts", "metric", "value", "unit"]
SAMPLE_FILES = 400


def output_files(peer: str, out_dir: Path) -> list[Path]:
    """The Parquet files holding a peer's records."""
    if peer == "dlt":
        from bench.dlt_crawler import record_files

        return record_files(out_dir)
    return sorted((out_dir / "data" / f"run={RUN_ID}").rglob("*.parquet"))


def file_rows(peer: str, path: Path) -> list[Any]:
    """One file's rows as (warrior, troop, service, group, ts, metric, value, unit), normalised."""
    import fastparquet

    from fanout.audit import normalize

    if peer == "dlt":
        from bench.dlt_crawler import records_columns

        cols = list(records_columns())
    else:
        cols = AUDIT_COLUMNS
    frame = fastparquet.ParquetFile(str(path)).to_pandas(columns=cols)
    return [normalize(r) for r in frame[cols].itertuples(index=False, name=None)]


def footer_rows(path: Path) -> int:
    """Rows in a Parquet file from its footer alone (~0.15 ms; ParquetFile() costs ~4 ms)."""
    from fastparquet.cencoding import from_buffer

    with open(path, "rb") as f:
        f.seek(-8, os.SEEK_END)
        size = struct.unpack("<i", f.read(4))[0]
        f.seek(-8 - size, os.SEEK_END)
        return int(from_buffer(f.read(size), "FileMetaData").num_rows)


def verify(peer: str, out_dir: Path, config: SimConfig, expected_rows: int, mode: str) -> dict[str, Any]:
    """Compare a peer's output with the universe.

    ``full``: every row, through fanout.audit.compare. ``sample``: the row count of every
    file from its footer, plus every row of a random sample of files compared with the
    universe's rows of the same data groups. ``count``: footers only.
    """
    from fanout.audit import compare, output_rows
    from fanout_core.storage import LocalDirStorage

    started = time.perf_counter()
    files = output_files(peer, out_dir)
    if mode == "auto":
        mode = "full" if len(files) <= 5000 else "sample"
    result: dict[str, Any] = {"mode": mode, "files_found": len(files)}
    if mode == "full":
        if peer == "dlt":
            found = [row for path in files for row in file_rows(peer, path)]
        else:
            found, _ = output_rows(LocalDirStorage(out_dir), RUN_ID)
        comparison = compare(found, Universe(config).expected_rows())
        result.update(rows_found=comparison.found, rows_exact=comparison.exact, summary=comparison.summary())
    else:
        counted = sum(footer_rows(p) for p in files)
        result.update(rows_found=counted, rows_exact=counted == expected_rows)
        summary = f"{counted} rows in {len(files)} files (footers), {expected_rows} expected"
        if mode == "sample":
            picked = random.Random(0).sample(files, min(SAMPLE_FILES, len(files)))
            found = [row for path in picked for row in file_rows(peer, path)]
            groups = {row[:4] for row in found}
            want = [r for r in Universe(config).expected_rows() if tuple(r[:4]) in groups]
            comparison = compare(found, want)
            result["rows_exact"] = result["rows_exact"] and comparison.exact
            summary += f"; sample of {len(picked)} files: {comparison.summary()}"
        result["summary"] = summary
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


# -- the benchmark ------------------------------------------------------------------------


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def dlt_interpreter(given: str | None) -> str | None:
    """The Python that runs the dlt peer: --dlt-python, $BENCH_DLT_PYTHON, or this one if it has dlt."""
    if given:
        return given
    if os.environ.get("BENCH_DLT_PYTHON"):
        return os.environ["BENCH_DLT_PYTHON"]
    return sys.executable if importlib.util.find_spec("dlt") is not None else None


def sim_config(size: str, warriors: int | None, latency_ms: float) -> SimConfig:
    overrides: dict[str, Any] = {"token": TOKEN, "latency_s": latency_ms / 1000.0}
    if warriors is not None:
        overrides["warriors"] = warriors
    return SimConfig.from_size(size, **overrides)


def run_one(
    name: str,
    config: SimConfig,
    work: Path,
    concurrency: int,
    concurrency_override: int | None,
    python: str | None,
    processes: int = 1,
) -> tuple[PeerRun, float, float]:
    """One peer against a fresh simulator; returns its figures, the simulator's CPU and the load."""
    out_dir = work / name
    spec = {
        "url": "",
        "token": TOKEN,
        "out_dir": str(out_dir),
        "concurrency": concurrency,
        "concurrency_override": concurrency_override,
        "processes": processes,
        "run_id": RUN_ID,
        "writer": "pyarrow" if name == "plain-pyarrow" else "fastparquet",
    }
    load_before = os.getloadavg()[0]
    before = _children_cpu()
    with run_in_subprocess(config) as url:
        spec["url"] = url
        run = run_peer_process(name, PEERS[name], spec, python=python)
    # The simulator has been reaped now: the children's CPU grew by the peer's and its own.
    sim_cpu = _children_cpu() - before - run.process.cpu_s
    return run, sim_cpu, load_before


def run(args: argparse.Namespace) -> dict[str, Any]:
    config = sim_config(args.size, args.warriors, args.latency_ms)
    universe = Universe(config)
    expected_calls = universe.expected_calls(PAGE_SIZE)
    expected_rows = sum(1 for _ in universe.expected_rows())
    _settings, caps = fanout_settings(args.concurrency)
    concurrency = sum(caps.values())
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = set(peers) - set(PEERS)
    if unknown:
        raise SystemExit(f"unknown peer(s): {', '.join(sorted(unknown))}; choose from {', '.join(PEERS)}")
    verify_mode = args.verify
    processes = args.processes or default_processes()
    log = sys.stderr
    log.write(
        f"throughput: {config.warriors} warriors x {config.troops_per_warrior} troops x "
        f"{config.groups_per_troop} groups x {config.records_per_group} records = {expected_calls:,} "
        f"calls, {expected_rows:,} rows; concurrency {concurrency} {caps}; fanout processes "
        f"{processes}; latency {args.latency_ms} ms\n"
    )
    results: list[dict[str, Any]] = []
    work = Path(tempfile.mkdtemp(prefix="fanout-bench-"))
    try:
        for name in peers:
            python = None
            if name in NEEDS_BENCH_VENV:
                python = dlt_interpreter(args.dlt_python)
                if python is None:
                    why = f"{NEEDS_BENCH_VENV[name]} is not installed"
                    log.write(f"  {name}: skipped ({why}; see requirements-bench.txt)\n")
                    results.append({"peer": name, "skipped": why})
                    continue
            log.write(f"  {name}: crawling (load {os.getloadavg()[0]:.2f}) ...\n")
            peer, sim_cpu, load_before = run_one(
                name, config, work, concurrency, args.concurrency, python, processes=processes
            )
            report = peer.report
            load_after = os.getloadavg()[0]
            log.write(f"  {name}: {report['wall_s']:.1f} s; checking the output ({verify_mode}) ...\n")
            check = verify(name, work / name, config, expected_rows, verify_mode)
            # fanout's leaf workers are processes of their own, which the transport counter
            # (patched into the peer's main process) does not see: prefer the peer's count.
            calls = report["calls"] if report.get("calls") is not None else report["http_requests"]
            results.append(
                {
                    "peer": name,
                    "wall_s": round(report["wall_s"], 2),
                    "calls": calls,
                    "calls_reported": report.get("calls"),
                    "http_requests_main_process": report["http_requests"],
                    "calls_per_s": round(calls / report["wall_s"], 1),
                    "cpu_s": round(report["cpu_s"], 2),
                    "cpu_s_per_1k_calls": round(1000 * report["cpu_s"] / calls, 3) if calls else None,
                    "process_cpu_s": round(peer.process.cpu_s, 2),
                    "process_wall_s": round(peer.process.wall_s, 2),
                    # Summed over the peer's process tree (fanout's worker processes); not
                    # wait4's ru_maxrss, which on Linux also counts the parent's RSS at fork.
                    "peak_rss_mb": round(report["peak_rss_mb_tree"], 1),
                    "peak_rss_mb_main": round(report["peak_rss_mb_in_process"], 1),
                    "files": report["files"],
                    "rows": report["rows"],
                    "rows_exact": bool(check["rows_exact"]) and report["rows"] == expected_rows,
                    "verify": check,
                    "sim_cpu_s": round(sim_cpu, 2),
                    "load_1m_before": round(load_before, 2),
                    "load_1m_after": round(load_after, 2),
                    "details": {
                        k: v
                        for k, v in report.items()
                        if k
                        not in (
                            "wall_s",
                            "cpu_s",
                            "http_requests",
                            "files",
                            "rows",
                            "calls",
                            "peak_rss_mb_in_process",
                            "peak_rss_mb_tree",
                        )
                    },
                }
            )
            log.write(f"  {name}: {check['summary']} ({check['seconds']} s)\n")
            shutil.rmtree(work / name, ignore_errors=True)
    finally:
        if args.keep:
            log.write(f"  output kept in {work}\n")
        else:
            shutil.rmtree(work, ignore_errors=True)
    by_name = {r["peer"]: r for r in results if "wall_s" in r}
    base = by_name.get("fanout")
    for r in results:
        if "wall_s" in r:
            r["x_fanout"] = round(r["wall_s"] / base["wall_s"], 2) if base else None
    return {
        "benchmark": "throughput",
        "machine": machine(),
        "simulator": {
            "size": args.size,
            "warriors": config.warriors,
            "troops_per_warrior": config.troops_per_warrior,
            "groups_per_troop": config.groups_per_troop,
            "records_per_group": config.records_per_group,
            "latency_ms": args.latency_ms,
            "rate_limit": None,
        },
        "expected": {"calls": expected_calls, "rows": expected_rows},
        "concurrency": {"total": concurrency, "fanout_stages": caps, "fanout_processes": processes},
        "peers": results,
        "targets": targets(by_name),
    }


def targets(by_name: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's throughput and memory targets, judged on this run's figures."""
    out: list[dict[str, Any]] = []
    fanout = by_name.get("fanout")
    if fanout is None:
        return out
    if "dlt" in by_name:
        out.append(
            {
                "target": "fanout wall <= dlt wall",
                "value": f"{fanout['wall_s']:.1f} s vs {by_name['dlt']['wall_s']:.1f} s",
                "met": fanout["wall_s"] <= by_name["dlt"]["wall_s"],
            }
        )
    if "plain" in by_name:
        out.append(
            {
                "target": "fanout wall <= 0.5 x plain wall",
                "value": f"{fanout['wall_s']:.1f} s vs 0.5 x {by_name['plain']['wall_s']:.1f} s",
                "met": fanout["wall_s"] <= 0.5 * by_name["plain"]["wall_s"],
            }
        )
    if "plain-pyarrow" in by_name:
        out.append(
            {
                "target": "(extra) fanout wall <= 0.5 x plain-pyarrow wall",
                "value": f"{fanout['wall_s']:.1f} s vs 0.5 x {by_name['plain-pyarrow']['wall_s']:.1f} s",
                "met": fanout["wall_s"] <= 0.5 * by_name["plain-pyarrow"]["wall_s"],
            }
        )
    out.append(
        {
            "target": "fanout peak RSS <= 400 MB",
            "value": f"{fanout['peak_rss_mb']:.0f} MB",
            "met": fanout["peak_rss_mb"] <= 400,
        }
    )
    out.append(
        {
            "target": "every peer's rows equal the truth",
            "value": ", ".join(f"{n}: {'exact' if r['rows_exact'] else 'WRONG'}" for n, r in by_name.items()),
            "met": all(r["rows_exact"] for r in by_name.values()),
        }
    )
    return out


def print_report(result: dict[str, Any]) -> None:
    m, e = result["machine"], result["expected"]
    print(
        f"throughput: {e['calls']:,} calls, {e['rows']:,} rows expected; concurrency "
        f"{result['concurrency']['total']}, fanout processes {result['concurrency']['fanout_processes']}; "
        f"{m['cpus']} cores, load {m['load_1m']} at the end"
    )
    headers = [
        "peer",
        "wall s",
        "x fanout",
        "calls",
        "calls/s",
        "CPU s/1k calls",
        "peak RSS MB",
        "files",
        "rows",
        "rows exact",
        "sim CPU s",
        "load before",
    ]
    rows = []
    for r in result["peers"]:
        if "skipped" in r:
            rows.append([r["peer"], *["-"] * (len(headers) - 2), f"skipped: {r['skipped']}"])
            continue
        rows.append(
            [
                r["peer"],
                r["wall_s"],
                r["x_fanout"],
                r["calls"],
                r["calls_per_s"],
                r["cpu_s_per_1k_calls"],
                r["peak_rss_mb"],
                r["files"],
                r["rows"],
                r["rows_exact"],
                r["sim_cpu_s"],
                r["load_1m_before"],
            ]
        )
    print_table(headers, rows, digits=2)
    if result["targets"]:
        print()
        print_table(
            ["target", "this run", "met"],
            [[t["target"], t["value"], t["met"]] for t in result["targets"]],
        )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=SIZES, default="full", help="simulator preset (default full)")
    p.add_argument("--warriors", type=int, default=None, help="override the preset's warriors (scale)")
    p.add_argument(
        "--peers",
        default="fanout,plain,dlt",
        help="comma-separated, run in this order; also plain-pyarrow (the plain crawler writing with "
        "pyarrow, from the bench venv)",
    )
    p.add_argument("--concurrency", type=int, default=None, help="total concurrency (default: fanout's)")
    p.add_argument(
        "--processes",
        type=int,
        default=None,
        help="fanout's worker processes for the Parquet stage (default: one per core, as the CLI; "
        "1: threads only)",
    )
    p.add_argument("--latency-ms", type=float, default=0.5, help="simulator latency per request")
    p.add_argument(
        "--verify",
        choices=("auto", "full", "sample", "count"),
        default="auto",
        help="every row (full), footer counts + a sample of files (sample), footer counts (count); "
        "auto: full up to 5,000 files, else sample",
    )
    p.add_argument(
        "--dlt-python",
        default=None,
        help="interpreter with requirements-bench.txt installed, for the dlt and plain-pyarrow peers",
    )
    p.add_argument("--keep", action="store_true", help="keep the output folders")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
    ran = [r for r in result["peers"] if "wall_s" in r]
    return 0 if ran and all(r["rows_exact"] for r in ran) else 1


if __name__ == "__main__":
    raise SystemExit(main())
