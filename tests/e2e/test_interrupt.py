"""Ctrl-C: the run stops within a second or two, its workers with it, no traceback, a resume
command that works. SIGINT goes to the whole process group, as a terminal sends it."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
from pathlib import Path

from fanout.audit import compare, output_rows
from fanout.simulator import SimConfig, Universe
from fanout_core.storage import LocalDirStorage

from .conftest import TOKEN, fanout_cli
from .test_cli import _children, _wait_for


def _interrupt(proc: subprocess.Popen[str], bucket: Path, done: int) -> tuple[str, list[int]]:
    """Ctrl-C once ``done`` leaf tasks have finished; stderr and the workers it had."""
    store = LocalDirStorage(bucket)
    _wait_for(lambda: len(list(store.list("done/data_groups/"))) >= done, timeout=120)
    workers = _children(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)
    _out, err = proc.communicate(timeout=10)  # stopped within seconds, not after the run
    return err, workers


def _resume_command(err: str) -> list[str]:
    lines = err.splitlines()
    [at] = [i for i, line in enumerate(lines) if line.endswith("To resume, run:")]
    argv = shlex.split(lines[at + 1])
    assert argv[0] == "fanout"
    return argv[1:]


def _gone(pids: list[int]) -> bool:
    return not any(Path(f"/proc/{pid}").exists() for pid in pids)


def test_ctrl_c_stops_local_run_and_the_command_it_prints_finishes_the_run(simulator, tmp_path: Path):
    config = SimConfig.from_size("demo", token=TOKEN, latency_s=0.004)
    url = simulator(config)
    bucket = tmp_path / "b"
    manifest = tmp_path / "ctrlc.json"
    manifest.write_text(json.dumps({"warriors": "all"}))
    argv = [
        "local",
        "run",
        str(manifest),
        "--hermes-url",
        url,
        "--bucket-dir",
        str(bucket),
        "--processes",
        "2",
    ]
    argv += ["--data-groups-concurrency", "4", "--no-compact"]
    proc = fanout_cli(*argv, start_new_session=True)
    err, workers = _interrupt(proc, bucket, done=5)

    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert workers and len(workers) >= 2
    _wait_for(lambda: _gone(workers), timeout=5)
    again = _resume_command(err)
    assert again == argv
    assert len(list(LocalDirStorage(bucket).list("done/data_groups/"))) < 100  # it was mid-run

    rerun = fanout_cli(*again, "--quiet")
    _out, err2 = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err2
    rows, _files = output_rows(LocalDirStorage(bucket), "ctrlc")
    assert compare(rows, Universe(config).expected_rows()).exact


def test_ctrl_c_stops_demo_and_its_resume_command_names_the_run(tmp_path: Path):
    bucket = tmp_path / "b"
    proc = fanout_cli(
        "demo", "--size", "demo", "--bucket-dir", str(bucket), "--processes", "2", start_new_session=True
    )
    err, workers = _interrupt(proc, bucket, done=3)

    assert proc.returncode == 130, err
    assert "Traceback" not in err
    _wait_for(lambda: _gone(workers), timeout=5)
    again = _resume_command(err)
    assert again[:2] == ["demo", "--size"] and "--run-id" in again

    rerun = fanout_cli(*again, "--quiet")
    out, err2 = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err2  # demo exits 0 only when rows equal the simulator's truth
    assert "rows expected" in out and "MISMATCH" not in out
