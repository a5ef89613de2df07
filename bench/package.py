"""How big is the Lambda bundle, and how long does each handler take to import cold?

Builds the bundle with the stack's own recipe (``stacks.bundling.build_bundle``):
the arm64 / Python 3.14 bundle that would be uploaded, for its sizes against
Lambda's 250 MB unzipped limit, and the same recipe for this machine's platform and
Python, because only that one can be imported here. Each handler module is then
imported in a fresh isolated interpreter (stdlib + bundle + a boto3-only stand-in
for the runtime, no bytecode written, as on Lambda's read-only /var/task), several
times, and the median is reported. The data_groups row also shows the first Parquet
write's extra import (pandas + fastparquet), which the handler defers until then.

    python bench/package.py            # table
    python bench/package.py --json     # machine-readable
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "lambdas")]

from fanout_core.stages import STAGES  # noqa: E402
from stacks.bundling import (  # noqa: E402
    LAMBDA_PYTHON_VERSION,
    build_bundle,
    compile_bytecode,
    isolated_python,
    iter_sizes,
    runtime_site,
)

MB = 1_000_000
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024
"""Lambda's limit for the function plus its layers, unzipped (262,144,000 bytes)."""
TARGET_UNZIPPED = 100 * MB
TARGET_IMPORT_S = {"warriors": 0.3, "troops": 0.3, "data_groups": 1.2}
LAZY_PARQUET_MODULE = "fanout_core.output"
HEAVY = ("pandas", "fastparquet", "numpy", "boto3", "botocore")

PROBE = textwrap.dedent(
    """
    import importlib, json, sys, time
    bundle, runtime, module, extra = sys.argv[1:5]
    sys.path[:0] = [bundle, runtime]
    t0 = time.perf_counter()
    importlib.import_module(module)
    t1 = time.perf_counter()
    loaded = sorted(m for m in {heavy!r} if m in sys.modules)
    t2 = time.perf_counter()
    if extra:
        importlib.import_module(extra)
    t3 = time.perf_counter()
    print(json.dumps({{"import_s": t1 - t0, "extra_s": t3 - t2, "loaded_at_import": loaded}}))
    """
).format(heavy=HEAVY)


def probe(probe_file: Path, bundle: Path, runtime: Path, module: str, extra: str = "") -> dict[str, Any]:
    done = subprocess.run(
        isolated_python(probe_file, str(bundle), str(runtime), module, extra),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"importing {module} from the bundle failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _imports(probe_file: Path, bundle: Path, runtime: Path, repeat: int) -> dict[str, Any]:
    """Each handler's cold import, ``repeat`` times, the handlers taken in turn.

    The bundle was written moments before: its writeback is flushed and one import per
    handler is discarded first, and the handlers alternate, so whatever settles during
    the first seconds after a build falls on none of them (5 imports of one handler in a
    row, then the next, once measured the same module 35 % slower first than third)."""
    stages = [
        (stage, stage.handler.rsplit(".", 1)[0], LAZY_PARQUET_MODULE if stage.writes_parquet else "")
        for stage in STAGES
    ]
    os.sync()
    for _stage, module, extra in stages:
        probe(probe_file, bundle, runtime, module, extra)
    runs: dict[str, list[dict[str, Any]]] = {stage.name: [] for stage, _m, _e in stages}
    for _ in range(repeat):
        for stage, module, extra in stages:
            runs[stage.name].append(probe(probe_file, bundle, runtime, module, extra))
    rows = {}
    for stage, module, extra in stages:
        done = runs[stage.name]
        import_s = statistics.median(r["import_s"] for r in done)
        rows[stage.name] = {
            "module": module,
            "import_s": round(import_s, 3),
            "import_min_s": round(min(r["import_s"] for r in done), 3),
            "first_parquet_extra_s": round(statistics.median(r["extra_s"] for r in done), 3)
            if extra
            else None,
            "loaded_at_import": done[0]["loaded_at_import"],
            "target_s": TARGET_IMPORT_S.get(stage.name),
            "ok": import_s <= TARGET_IMPORT_S.get(stage.name, float("inf")),
        }
    return rows


def measure(work: Path, repeat: int) -> dict[str, Any]:
    arm = build_bundle(work / "arm64", platform_arch="aarch64", measure_zip=True)
    host = build_bundle(work / "host", platform_arch="host", measure_zip=True, bytecode=False)
    # The same host bundle with .pyc files: what a build with python3.14 on PATH ships.
    host_pyc = work / "host-pyc"
    shutil.copytree(host.path, host_pyc)
    compile_bytecode(host_pyc, sys.executable)
    pyc_bytes = _tree_bytes(host_pyc) - host.size_unzipped
    runtime = runtime_site(work / "runtime")
    probe_file = work / "probe.py"
    probe_file.write_text(PROBE)
    return {
        "lambda_bundle": {
            **arm.as_dict(),
            "limit_unzipped": LAMBDA_UNZIPPED_LIMIT,
            "target_unzipped": TARGET_UNZIPPED,
            "ok": arm.size_unzipped <= TARGET_UNZIPPED,
            "pyc_bytes_if_compiled": pyc_bytes,
            "largest": dict(list(iter_sizes(arm.path))[:6]),
        },
        "host_bundle": host.as_dict(),
        "cold_imports": _imports(probe_file, host.path, runtime, repeat),
        "cold_imports_with_pyc": _imports(probe_file, host_pyc, runtime, repeat),
        "repeat": repeat,
    }


def print_table(result: dict[str, Any]) -> None:
    arm, host = result["lambda_bundle"], result["host_bundle"]
    print(f"Lambda bundle (manylinux {arm['arch']}, cp{arm['python_version']}), {arm['files']} files")
    print(
        f"  unzipped  {arm['size_unzipped'] / MB:7.1f} MB   target <= {TARGET_UNZIPPED / MB:.0f} MB, "
        f"limit {LAMBDA_UNZIPPED_LIMIT / MB:.0f} MB   {'OK' if arm['ok'] else 'OVER TARGET'}"
    )
    print(f"  zipped    {arm['size_zipped'] / MB:7.1f} MB")
    print(f"  trimmed   {arm['trimmed'] / MB:7.1f} MB (tests, caches, headers, stubs, dist-info)")
    print("  largest   " + ", ".join(f"{k} {v / MB:.1f}" for k, v in arm["largest"].items()))
    print(
        f"Host bundle ({host['arch']}, cp{host['python_version']}, for import timing): "
        f"{host['size_unzipped'] / MB:.1f} MB unzipped, {host['size_zipped'] / MB:.1f} MB zipped"
    )
    pyc = "with .pyc" if arm["bytecode"] else "sources only (no python3.14 here to compile them)"
    print(f"  bytecode  {pyc}; compiling adds ~{arm['pyc_bytes_if_compiled'] / MB:.0f} MB")
    for title, key in (
        ("no .pyc (as bundled on this machine)", "cold_imports"),
        ("with .pyc (as bundled where python3.14 is on PATH)", "cold_imports_with_pyc"),
    ):
        print()
        print(f"Cold import, isolated interpreter, {title}, median of {result['repeat']}:")
        print(f"  {'stage':<12} {'import s':>9} {'target':>7}  {'first Parquet +s':>16}  loaded at import")
        for name, row in result[key].items():
            extra = f"{row['first_parquet_extra_s']:.3f}" if row["first_parquet_extra_s"] is not None else "-"
            flag = "OK" if row["ok"] else "SLOW"
            loaded = ", ".join(row["loaded_at_import"]) or "-"
            timing = f"{row['import_s']:9.3f} {row['target_s']:7.1f}  {extra:>16}"
            print(f"  {name:<12} {timing}  {loaded:<16}  {flag}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--repeat", type=int, default=5, help="imports per handler (median)")
    parser.add_argument("--keep", type=Path, help="build in this (empty) directory and keep it")
    args = parser.parse_args(argv)
    if args.keep:
        result = measure(args.keep, args.repeat)
    else:
        with tempfile.TemporaryDirectory(prefix="fanout-bundle-") as tmp:
            result = measure(Path(tmp), args.repeat)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print_table(result)
    ok = result["lambda_bundle"]["ok"] and all(r["ok"] for r in result["cold_imports"].values())
    assert result["lambda_bundle"]["python_version"] == LAMBDA_PYTHON_VERSION
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
