"""Local faults through the real CLI: a full disk, a read-only or wrong bucket directory, a
corrupt seed object, absurd manifests and absurd numbers.

Each is one line on stderr naming the cause (never a traceback), the documented exit code
(2: usage, nothing started; 4: the bucket refused a write, the run stopped), the run
stopped promptly, nothing written outside the bucket, and a later run, once the cause is
gone, completes exactly.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fanout.audit import compare, output_rows
from fanout.simulator import SimConfig, Universe
from fanout_core.stages import STAGES
from fanout_core.storage import LocalDirStorage

from .conftest import TOKEN, fanout_cli
from .test_cli import _finish, _manifest

EXIT_USAGE, EXIT_STORAGE = 2, 4
SMALL = {"warriors": 4, "troops_per_warrior": 4, "groups_per_troop": 6, "records_per_group": 24}
NOWHERE = "http://127.0.0.1:9"


def one_line(err: str) -> str:
    """stderr's one message line: no traceback, and nothing else but, for a bad option, the
    command's own usage lines before it (issue 9 asks each subcommand to show its usage)."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    if lines and lines[0].startswith("usage: fanout "):
        lines = [line for line in lines if not line.startswith(("usage: ", " "))]
    assert len(lines) == 1, err
    return lines[0]


def local_run(manifest: Path, url: str, bucket: Path, *extra: str) -> list[str]:
    return [
        "local",
        "run",
        str(manifest),
        "--hermes-url",
        url,
        "--bucket-dir",
        str(bucket),
        "--quiet",
        *extra,
    ]


def rows_exact(bucket: Path, run_id: str, config: SimConfig) -> None:
    rows, _ = output_rows(LocalDirStorage(bucket), run_id)
    comparison = compare(rows, Universe(config).expected_rows())
    assert comparison.exact, comparison.summary()


def no_temp_files(bucket: Path) -> None:
    assert not [p for p in bucket.rglob("*") if p.name.endswith(".fanout-tmp")]


def _file_size_limit(limit: int):  # type: ignore[no-untyped-def]
    def preexec() -> None:  # runs in the child before exec: the CLI and its workers inherit it
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def test_a_disk_that_takes_no_more_stops_the_run_with_one_line_and_a_rerun_completes(
    simulator, tmp_path: Path
):
    """RLIMIT_FSIZE of 4 KiB: the kernel refuses every larger write (EFBIG), as a full disk
    refuses every write (ENOSPC); both are the same StorageFault to the runtime."""
    config = SimConfig.from_size("demo", token=TOKEN, **SMALL)
    url = simulator(config)
    bucket = tmp_path / "bucket"
    manifest = _manifest(tmp_path, "full.json", {"warriors": "all"})
    started = time.monotonic()
    proc = fanout_cli(*local_run(manifest, url, bucket), preexec_fn=_file_size_limit(4096))
    code, _out, err = _finish(proc, timeout=60)
    took = time.monotonic() - started
    assert code == EXIT_STORAGE, err
    line = one_line(err)
    assert line.startswith("fanout: stopped: cannot write ")
    assert "File too large (EFBIG)" in line and str(bucket) in line
    assert "run the same command again to resume" in line
    assert took < 20, took
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bucket", "full.json"]  # nothing outside it
    no_temp_files(bucket)

    code, _out, err = _finish(fanout_cli(*local_run(manifest, url, bucket)), timeout=120)
    assert code == 0, err
    rows_exact(bucket, "full", config)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """``path`` made read-only for this user: no write bits, or for root (whom modes do not
    stop) the immutable attribute, which stops root too."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True)
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(0o755)


def test_a_read_only_bucket_directory_stops_the_run_and_status_still_reads_it(simulator, tmp_path: Path):
    config = SimConfig.from_size("tiny", token=TOKEN)
    url = simulator(config)
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    manifest = _manifest(tmp_path, "ro.json", {"warriors": "all"})
    with read_only(bucket):
        code, _out, err = _finish(fanout_cli(*local_run(manifest, url, bucket)), timeout=60)
        assert code == EXIT_USAGE, err  # the preflight finds it before anything is seeded
        assert f"FAIL bucket: cannot write the bucket {bucket}" in err and "nothing was started" in err
        code, _out, err = _finish(fanout_cli(*local_run(manifest, url, bucket, "--no-check")), timeout=60)
        assert code == EXIT_STORAGE, err
        line = one_line(err)
        assert f"cannot write {STAGES.seed('ro').key} in the bucket directory {bucket}" in line
        assert "(EPERM)" in line or "(EACCES)" in line
        code, out, err = _finish(fanout_cli("status", "ro", "--bucket-dir", str(bucket)), timeout=60)
        assert code == EXIT_USAGE and "no run ro in this bucket" in one_line(err), (out, err)
    assert list(bucket.iterdir()) == []
    code, _out, err = _finish(fanout_cli(*local_run(manifest, url, bucket)), timeout=120)
    assert code == 0, err
    rows_exact(bucket, "ro", config)


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["local", "run", "{manifest}", "--hermes-url", NOWHERE, "--quiet"], id="local-run"),
        pytest.param(["status", "afile"], id="status"),
        pytest.param(["redrive", "afile", "--hermes-url", NOWHERE, "--quiet"], id="redrive"),
    ],
)
def test_a_bucket_directory_that_is_a_file_is_a_usage_error(tmp_path: Path, command: list[str]):
    bucket = tmp_path / "bucket"
    bucket.write_bytes(b"not a directory")
    manifest = _manifest(tmp_path, "afile.json", {"warriors": "all"})
    args = [a.replace("{manifest}", str(manifest)) for a in command]
    code, _out, err = _finish(fanout_cli(*args, "--bucket-dir", str(bucket)), timeout=60)
    assert code == EXIT_USAGE
    assert one_line(err) == f"fanout: --bucket-dir {bucket} is a file, not a directory"
    assert bucket.read_bytes() == b"not a directory"


@pytest.mark.parametrize(
    ("seed", "said"),
    [
        pytest.param(b"\xff\xfe{", "not UTF-8", id="not-utf8"),
        pytest.param(b'{"warriors": [', "not valid JSON", id="not-json"),
        pytest.param(b'{"warriors": 3}', "must be a list", id="not-a-manifest"),
    ],
)
def test_a_corrupt_seed_object_is_named_and_a_run_after_removing_it_completes(
    simulator, tmp_path: Path, seed: bytes, said: str
):
    config = SimConfig.from_size("tiny", token=TOKEN)
    url = simulator(config)
    bucket = tmp_path / "bucket"
    key = STAGES.seed("seeded").key
    (bucket / key).parent.mkdir(parents=True)
    (bucket / key).write_bytes(seed)
    manifest = _manifest(tmp_path, "seeded.json", {"warriors": "all"})
    code, _out, err = _finish(fanout_cli(*local_run(manifest, url, bucket)), timeout=60)
    assert code == EXIT_USAGE
    line = one_line(err)
    assert f"already has an object at {key} that is no manifest" in line and said in line
    assert (bucket / key).read_bytes() == seed  # left as it was, for its owner to look at
    (bucket / key).unlink()
    code, _out, err = _finish(fanout_cli(*local_run(manifest, url, bucket)), timeout=120)
    assert code == 0, err
    rows_exact(bucket, "seeded", config)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        pytest.param("[" * 100_000 + "]" * 100_000, "nests arrays or objects too deeply", id="deep-array"),
        pytest.param(
            '{"warriors": ' + "[" * 100_000 + "]" * 100_000 + "}",
            "nests arrays or objects too deeply",
            id="deep-value",
        ),
        pytest.param(
            json.dumps({"warriors": "all", "x" * 10_000_000: 1}), "manifest is 10,000,026 bytes", id="10-mb"
        ),
        pytest.param(
            json.dumps({"warriors": "all", "y" * 900_000: 1}), "unknown field(s) 'yyyyy", id="900-kb-name"
        ),
    ],
)
def test_an_absurd_manifest_is_one_short_line_and_starts_nothing(tmp_path: Path, body: str, said: str):
    manifest = tmp_path / "absurd.json"
    manifest.write_text(body)
    bucket = tmp_path / "bucket"
    code, _out, err = _finish(fanout_cli(*local_run(manifest, NOWHERE, bucket)), timeout=60)
    assert code == EXIT_USAGE
    line = one_line(err)
    assert line.startswith("fanout: bad manifest: ") and said in line
    assert len(line) <= 300
    assert not bucket.exists()


MANIFEST = "{manifest}"
LOCAL = ["local", "run", MANIFEST, "--hermes-url", NOWHERE, "--quiet"]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        pytest.param(
            [*LOCAL, "--troops-concurrency", "0"], "argument --troops-concurrency: must be at least 1"
        ),
        pytest.param(
            [*LOCAL, "--data-groups-concurrency", "-5"], "argument --data-groups-concurrency: must be"
        ),
        pytest.param(
            [*LOCAL, "--warriors-concurrency", "1000000000"],
            "argument --warriors-concurrency: must be at most 1000",
        ),
        pytest.param([*LOCAL, "--processes", "100000"], "argument --processes: must be at most 64"),
        pytest.param([*LOCAL, "--duplicate-rate", "-5"], "argument --duplicate-rate: must be from 0 to 1"),
        pytest.param(["demo", "--rate-limit", "0"], "argument --rate-limit: must be above 0"),
        pytest.param(["demo", "--rate-limit", "-5"], "argument --rate-limit: must be above 0"),
        pytest.param(["demo", "--rate-limit", "inf"], "argument --rate-limit: 'inf' is not a finite number"),
        pytest.param(
            ["hermes", "serve", "--port", "99999"], "argument --port: must be a port from 0 to 65535"
        ),
        pytest.param(["hermes", "serve", "--port", "-1"], "argument --port: must be a port from 0 to 65535"),
        pytest.param(["hermes", "serve", "--rate-limit", "0"], "argument --rate-limit: must be above 0"),
        pytest.param(["hermes", "serve", "--rate-limit", "-5"], "argument --rate-limit: must be above 0"),
        pytest.param(
            ["hermes", "serve", "--rate-limit", "nan"], "argument --rate-limit: 'nan' is not a finite number"
        ),
    ],
)
def test_an_absurd_number_is_a_usage_error_in_one_line(tmp_path: Path, args: list[str], said: str):
    manifest = _manifest(tmp_path, "n.json", {"warriors": "all"})
    bucket = tmp_path / "bucket"
    argv = [a.replace(MANIFEST, str(manifest)) for a in args]
    if argv[0] != "hermes":
        argv += ["--bucket-dir", str(bucket)]
    code, _out, err = _finish(fanout_cli(*argv), timeout=60)
    assert code == EXIT_USAGE
    assert said in one_line(err)
    assert not bucket.exists()


def test_status_of_a_run_that_does_not_exist_creates_no_bucket_directory(tmp_path: Path):
    bucket = tmp_path / "nothing" / "here"
    code, _out, err = _finish(fanout_cli("status", "ghost", "--bucket-dir", str(bucket)), timeout=60)
    assert code == EXIT_USAGE and "no run ghost in this bucket" in one_line(err), err
    assert "Traceback" not in err
    assert not (tmp_path / "nothing").exists()
