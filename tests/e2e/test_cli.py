"""The ``fanout`` command as a user runs it: exit codes, kill and resume, S3 endpoints."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from fanout.audit import compare, output_rows
from fanout.settings_files import find_settings
from fanout.simulator import SimConfig, Universe
from fanout_core.storage import LocalDirStorage

from .conftest import TOKEN, fanout_cli

FAST_RETRIES = ["--env", "local"]


def _finish(proc, timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _manifest(tmp_path: Path, name: str, body: object | str) -> Path:
    path = tmp_path / name
    path.write_text(body if isinstance(body, str) else json.dumps(body))
    return path


@pytest.mark.parametrize(
    ("name", "body", "message"),
    [
        ("run1.json", "{not json", "not valid JSON"),
        ("run1.json", {"warriors": []}, "empty list"),
        ("run1.json", {"warriors": "some"}, '"all"'),
        ("run1.json", {"warriors": ["a/b"]}, "'/'"),
        ("run1.json", {"warriors": ["a"], "extra": 1}, "unknown field"),
        ("bad run!.json", {"warriors": "all"}, "run id"),
    ],
)
def test_a_bad_manifest_exits_2_and_writes_nothing(tmp_path: Path, name, body, message):
    bucket = tmp_path / "bucket"
    path = _manifest(tmp_path, name, body)
    code, _out, err = _finish(
        fanout_cli(
            "local", "run", str(path), "--hermes-url", "http://127.0.0.1:9", "--bucket-dir", str(bucket)
        )
    )
    assert code == 2
    assert message in err
    assert not bucket.exists() or not any(bucket.rglob("*.json"))


def test_a_clean_run_exits_0_and_status_says_complete(simulator, tmp_path: Path):
    url = simulator(SimConfig.from_size("tiny", token=TOKEN, awkward_ids=True))
    bucket = str(tmp_path / "b")
    path = _manifest(tmp_path, "clean.json", {"warriors": "all"})
    code, out, err = _finish(
        fanout_cli("local", "run", str(path), "--hermes-url", url, "--bucket-dir", bucket, "--json")
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["api_calls"] == Universe(SimConfig.from_size("tiny")).expected_calls(100)
    code, out, _ = _finish(fanout_cli("status", "clean", "--bucket-dir", bucket, "--json"))
    assert code == 0
    status = json.loads(out)
    assert status["complete"] is True
    assert all(s["pending"] == 0 and s["failed"] == 0 for s in status["stages"].values())


def test_a_run_with_failure_records_exits_1_and_status_exits_1(simulator, tmp_path: Path):
    config = SimConfig.from_size("tiny", token=TOKEN)
    missing = Universe(config).warriors()[0]["warrior_id"]
    url = simulator(SimConfig.from_size("tiny", token=TOKEN, not_found_ids=frozenset({missing})))
    bucket = str(tmp_path / "b")
    path = _manifest(tmp_path, "partial.json", {"warriors": "all"})
    code, _, err = _finish(
        fanout_cli("local", "run", str(path), "--hermes-url", url, "--bucket-dir", bucket, "--quiet")
    )
    assert code == 1, err
    code, out, _ = _finish(fanout_cli("status", "partial", "--bucket-dir", bucket, "--json"))
    assert code == 1
    assert json.loads(out)["stages"]["warriors"]["failed"] == 1


def test_status_of_a_run_with_no_manifest_exits_2(tmp_path: Path):
    code, _out, err = _finish(fanout_cli("status", "nothing", "--bucket-dir", str(tmp_path)))
    assert code == 2
    assert "no run nothing in this bucket" in err


def test_a_missing_token_is_a_usage_error(tmp_path: Path):
    path = _manifest(tmp_path, "t.json", {"warriors": "all"})
    code, _, err = _finish(
        fanout_cli("local", "run", str(path), "--hermes-url", "http://127.0.0.1:9", env={"HERMES_TOKEN": ""})
    )
    assert code == 2
    assert "HERMES_TOKEN" in err


def _children(pid: int) -> list[int]:
    """Processes the runtime started (its leaf-stage workers)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_a_run_killed_with_sigkill_twice_resumes_with_no_row_missing_or_doubled(simulator, tmp_path: Path):
    """Workers killed mid-task, under injected faults and duplicate events: the run
    started again with the same manifest and bucket completes exactly."""
    config = SimConfig.from_size(
        "demo", token=TOKEN, awkward_ids=True, warriors=6, latency_s=0.008, error_rate_5xx=0.05, fault_seed=9
    )
    url = simulator(config)
    bucket = tmp_path / "b"
    path = _manifest(tmp_path, "killed.json", {"warriors": "all"})
    args = ["local", "run", str(path), "--hermes-url", url, "--bucket-dir", str(bucket), "--quiet", "--json"]
    args += ["--data-groups-concurrency", "4", "--processes", "2"]
    chaos = ["--duplicate-rate", "0.2", "--storage-fault-rate", "0.02", "--fault-seed", "4"]
    store = LocalDirStorage(bucket)
    settings = find_settings("local")
    per_task = settings.stage("data_groups").units_per_task
    tasks = config.warriors * config.troops_per_warrior * -(-config.groups_per_troop // per_task)
    for threshold in (tasks // 5, tasks // 2):
        proc = fanout_cli(*args, *chaos)
        _wait_for(lambda t=threshold: len(list(store.list("done/data_groups/"))) >= t)
        workers = _children(proc.pid)
        assert workers  # the leaf stage runs in worker processes: they must not outlive the kill
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        _wait_for(lambda w=workers: not any(Path(f"/proc/{pid}").exists() for pid in w), timeout=10)
    code, out, _ = _finish(fanout_cli("status", "killed", "--bucket-dir", str(bucket)))
    assert code == 3  # not complete after the kills
    code, out, err = _finish(fanout_cli(*args, *chaos))
    # On failure, say which task gave up and why (seen once in CI, not reproduced since).
    assert code == 0, (err, [store.get(k).decode() for k in store.list("failed/")])
    summary = json.loads(out)
    assert summary["api_calls"] < Universe(config).expected_calls(100)  # finished work not fetched again
    rows, _ = output_rows(store, "killed")
    comparison = compare(rows, Universe(config).expected_rows())
    assert comparison.exact, comparison.summary()


def test_the_runtime_works_over_an_s3_endpoint(simulator, tmp_path: Path):
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        creds = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
        )
        s3.create_bucket(Bucket="fanout-e2e")
        config = SimConfig.from_size("tiny", token=TOKEN, awkward_ids=True)
        url = simulator(config)
        path = _manifest(tmp_path, "s3run.json", {"warriors": "all"})
        s3_args = ["--bucket", "fanout-e2e", "--s3-endpoint-url", endpoint]
        code, _, err = _finish(
            fanout_cli("local", "run", str(path), "--hermes-url", url, "--quiet", *s3_args, env=creds)
        )
        assert code == 0, err
        code, out, err = _finish(fanout_cli("status", "s3run", *s3_args, "--json", env=creds))
        assert code == 0, err
        assert json.loads(out)["complete"] is True
        from fanout_aws.s3_storage import S3Storage

        rows, _ = output_rows(S3Storage("fanout-e2e", client=s3), "s3run")
        assert compare(rows, Universe(config).expected_rows()).exact
    finally:
        server.stop()


def test_redrive_after_the_cause_is_fixed_completes_the_run(simulator, tmp_path: Path):
    clean = SimConfig.from_size("tiny", token=TOKEN, awkward_ids=True)
    universe = Universe(clean)
    w = universe.warriors()[1]["warrior_id"]
    t = universe.troops(w)[0]["troop_id"]
    broken = simulator(
        SimConfig.from_size("tiny", token=TOKEN, awkward_ids=True, not_found_ids=frozenset({t}))
    )
    bucket = str(tmp_path / "b")
    path = _manifest(tmp_path, "fixme.json", {"warriors": "all"})
    code, _, _ = _finish(
        fanout_cli("local", "run", str(path), "--hermes-url", broken, "--bucket-dir", bucket, "--quiet")
    )
    assert code == 1
    fixed = simulator(clean)
    code, out, err = _finish(
        fanout_cli("redrive", "fixme", "--bucket-dir", bucket, "--hermes-url", fixed, "--quiet", "--json")
    )
    assert code == 0, err
    assert len(json.loads(out)["redrive"]["created"]) == 1
    code, _out, _ = _finish(fanout_cli("status", "fixme", "--bucket-dir", bucket, "--json"))
    assert code == 0
    rows, _ = output_rows(LocalDirStorage(bucket), "fixme")
    assert compare(rows, universe.expected_rows()).exact
    assert list(LocalDirStorage(bucket).list("archive/failed/"))  # the old record was kept, archived
