"""DuckDB over a full run's output, before and after compaction: ``count(*)`` and a ``ts`` range.

Crawls ``fanout demo --size full --no-compact`` into a temporary folder (or takes an
existing, not yet compacted run with ``--bucket-dir DIR --run-id RUN``: that folder is
compacted in place), times each query ``--repeat`` times over the small files, compacts
the run with ``fanout compact``'s own code, and times the same queries over the files the
run's ``current.json`` names; then once over a plain glob of the run's output folder
(``data/run=<run>/**/*.parquet``, where the compacted files live), which must give the
same results. Target: >= 5x faster, identical results, <= 10 files.

    python -m bench.query [--json] [--bucket-dir DIR --run-id RUN]

The run id is read as text everywhere: the queries use the ``run_id`` column and
``hive_partitioning = false``. (Left to infer a ``run=2026-11-27`` folder, DuckDB makes
it a DATE and ``run=20261127`` a BIGINT; ``hive_types = {'run': 'VARCHAR'}`` keeps it text.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, load_average

RUN_ID = "2026-11-27"
TS_FROM, TS_TO = "2026-11-27 09:00:00+00", "2026-11-27 10:00:00+00"


def queries(files: list[str]) -> dict[str, str]:
    source = f"read_parquet({files!r}, hive_partitioning = false)"
    return {
        "count(*)": f"SELECT count(*) FROM {source}",
        "ts range": (
            f"SELECT count(*), round(sum(value), 3), count(DISTINCT warrior_id) FROM {source} "
            f"WHERE ts >= TIMESTAMPTZ '{TS_FROM}' AND ts < TIMESTAMPTZ '{TS_TO}'"
        ),
    }


def time_queries(files: list[str], repeat: int) -> dict[str, dict[str, Any]]:
    import duckdb

    out: dict[str, dict[str, Any]] = {}
    for name, sql in queries(files).items():
        timings, result = [], None
        for _ in range(repeat):
            con = duckdb.connect()  # a fresh connection each time: no cached metadata
            started = time.perf_counter()
            result = con.sql(sql).fetchall()
            timings.append(time.perf_counter() - started)
            con.close()
        out[name] = {"median_s": statistics.median(timings), "min_s": min(timings), "result": result}
    return out


def run_type_demo(root: Path, files: list[str]) -> dict[str, str]:
    """What DuckDB makes of the run id: inferred from the folder, forced to text, from the column."""
    import duckdb

    one = files[0]
    inferred = duckdb.sql(f"SELECT typeof(run) FROM read_parquet('{one}', hive_partitioning = true) LIMIT 1")
    text = duckdb.sql(
        f"SELECT typeof(run) FROM read_parquet('{one}', hive_partitioning = true, "
        "hive_types = {'run': 'VARCHAR'}) LIMIT 1"
    )
    column = duckdb.sql(f"SELECT typeof(any_value(run_id)), any_value(run_id) FROM read_parquet('{one}')")
    (col_type, col_value) = column.fetchall()[0]
    return {
        "run= folder, inferred": str(inferred.fetchall()[0][0]),
        "run= folder, hive_types VARCHAR": str(text.fetchall()[0][0]),
        "run_id column": f"{col_type} {col_value!r}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bucket-dir", help="an existing bucket folder whose run is not compacted yet")
    parser.add_argument("--run-id", default=RUN_ID)
    parser.add_argument("--size", default="full", choices=["tiny", "demo", "full"])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from fanout_core.compaction import compact_run, current_files, read_current
    from fanout_core.stages import STAGES
    from fanout_core.storage import LocalDirStorage

    tmp = None
    if args.bucket_dir:
        root = Path(args.bucket_dir).resolve()
    else:
        tmp = tempfile.TemporaryDirectory(prefix="fanout-query-")
        root = Path(tmp.name)
        subprocess.run(
            [
                *(sys.executable, "-m", "fanout", "demo", "--size", args.size, "--run-id", args.run_id),
                *("--bucket-dir", str(root), "--no-compact", "--quiet", "--json"),
            ],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    storage = LocalDirStorage(root)
    if read_current(storage, args.run_id) is not None:
        parser.error(f"run {args.run_id} in {root} is compacted already: nothing to compare with")
    load_before = load_average()
    before_files = [str(root / k) for k in current_files(storage, args.run_id)]
    bytes_before = sum(Path(f).stat().st_size for f in before_files)
    before = time_queries(before_files, args.repeat)
    started = time.perf_counter()
    result = compact_run(storage, args.run_id, uri_base=root.as_uri() + "/")
    compact_s = time.perf_counter() - started
    after_files = [str(root / k) for k in current_files(storage, args.run_id)]
    after = time_queries(after_files, args.repeat)
    # What a user types first: a plain glob over the run's output folder, no current.json.
    glob = time_queries([str(root / STAGES.output_run_prefix(args.run_id)) + "/**/*.parquet"], 1)
    figures: dict[str, Any] = {
        "run_id": args.run_id,
        "rows": result.rows,
        "files_before": len(before_files),
        "files_after": len(after_files),
        "bytes_before": bytes_before,
        "bytes_after": sum(Path(f).stat().st_size for f in after_files),
        "compaction_s": round(compact_s, 2),
        "queries": {
            name: {
                "before_s": round(before[name]["median_s"], 4),
                "after_s": round(after[name]["median_s"], 4),
                "speedup": round(before[name]["median_s"] / after[name]["median_s"], 1),
                "identical": before[name]["result"] == after[name]["result"],
                "glob_identical": glob[name]["result"] == after[name]["result"],
                "result": after[name]["result"],
            }
            for name in before
        },
        "run_id_types": run_type_demo(root, after_files),
        "load_average": [load_before, load_average()],
    }
    figures["targets_met"] = figures["files_after"] <= 10 and all(
        q["speedup"] >= 5 and q["identical"] and q["glob_identical"] for q in figures["queries"].values()
    )
    if args.json:
        print(json.dumps(figures, indent=2, default=str))
    else:
        print(f"DuckDB over run {args.run_id}: {figures['rows']} rows, median of {args.repeat} runs")
        print(f"  {'':<16} {'before':>10}   {'after':>10}")
        print(f"  files            {figures['files_before']:>10}   {figures['files_after']:>10}")
        print(f"  bytes            {figures['bytes_before']:>10}   {figures['bytes_after']:>10}")
        print(f"  compaction       {figures['compaction_s']:>8} s")
        for name, q in figures["queries"].items():
            print(
                f"  {name:<16} {q['before_s']:>8.4f} s   {q['after_s']:>8.4f} s   "
                f"{q['speedup']:>6.1f}x  identical={q['identical']}  glob={q['glob_identical']}  "
                f"{q['result']}"
            )
        for what, kind in figures["run_id_types"].items():
            print(f"  {what:<34} {kind}")
        print(f"  load average     {figures['load_average']}")
        print(f"  targets (>=5x, identical, glob identical, <=10 files) met: {figures['targets_met']}")
    if tmp is not None:
        tmp.cleanup()
    return 0 if figures["targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
