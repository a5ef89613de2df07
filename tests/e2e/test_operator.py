"""What an operator sees when a run fails, through the real CLI: the reason and the fix in
the summary and in status, ``fanout failures``, exit codes that count earlier failures,
run ids that do not exist, redrive by kind, and ``fanout runs``."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fanout.simulator import SimConfig, Universe

from .conftest import TOKEN, fanout_cli

FAST = {
    "hermes_rate_limit": 100000,
    "max_attempts": 2,
    "retry_base_delay_s": 0.01,
    "retry_max_delay_s": 0.02,
    "hermes_timeout_s": 1,
    "hermes_request_deadline_s": 1,
}


def _finish(proc, timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@pytest.fixture
def settings(tmp_path: Path) -> list[str]:
    """Settings whose retries give up at once, so a server that is down fails fast."""
    path = tmp_path / "cdk.json"
    path.write_text(json.dumps({"context": {"environments": {"fast": FAST}}}))
    return ["--env", "fast", "--config", str(path)]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(tmp_path: Path, run: str, url: str, settings: list[str], *extra: str, token: str = TOKEN):
    manifest = tmp_path / f"{run}.json"
    manifest.write_text('{"warriors": "all"}')
    bucket = str(tmp_path / "bucket")
    # --no-check: these tests are about tasks that fail during a run (a token revoked, a
    # server gone mid-run), which the preflight cannot see coming; tests/e2e/test_preflight.py
    # shows the preflight stopping the same servers before anything starts.
    args = [
        "local",
        "run",
        str(manifest),
        "--hermes-url",
        url,
        "--bucket-dir",
        bucket,
        "--quiet",
        "--no-check",
    ]
    return _finish(fanout_cli(*args, *settings, *extra, env={"HERMES_TOKEN": token})), bucket


@pytest.mark.parametrize(
    ("server", "kind", "status", "hint"),
    [
        ("wrong token", "unauthorized", "401", "set HERMES_TOKEN"),
        ("wrong base path", "not_found", "404", "base path"),
        ("down", "connection_refused", "-", "start Hermes or fix --hermes-url"),
    ],
)
def test_a_failed_runs_summary_names_the_reason_and_the_fix(
    simulator, tmp_path, settings, server, kind, status, hint
):
    if server == "down":
        url = f"http://127.0.0.1:{_closed_port()}"
    else:
        url = simulator(
            SimConfig.from_size("tiny", token="the-right-token" if server == "wrong token" else TOKEN)
        )
        url += "/no/such/base" if server == "wrong base path" else ""
    (code, out, err), bucket = _start(tmp_path, "r1", url, settings)
    assert code == 1, err
    row = next(line.split() for line in out.splitlines() if kind in line.split())
    assert row == ["warriors", kind, status, "1", "0"]  # stage, kind, HTTP, tasks, units
    assert "e.g. amazon_warriors/r1.json: " in out
    assert hint in out
    redrive = f"fanout redrive r1 --bucket-dir {bucket} --hermes-url {url} --env fast --config {settings[3]}"
    assert f"1 task(s) failed in this run; fix the cause, then {redrive}" in err


def test_status_shows_the_failures_by_reason_and_the_redrive(simulator, tmp_path, settings):
    url = simulator(SimConfig.from_size("tiny", token="the-right-token"))
    (code, _out, _err), bucket = _start(tmp_path, "r1", url, settings)
    code, out, _ = _finish(fanout_cli("status", "r1", "--bucket-dir", bucket))
    assert code == 1
    assert any(line.split() == ["warriors", "unauthorized", "401", "1", "0"] for line in out.splitlines())
    assert "fanout failures r1" in out
    assert f'fanout redrive r1 --bucket-dir {bucket} --hermes-url "$HERMES_URL"' in out


def test_a_rerun_after_the_fix_still_exits_1_and_counts_the_earlier_failure_records(
    simulator, tmp_path, settings
):
    url = simulator(SimConfig.from_size("tiny", token="the-right-token"))
    (code, _, _), _bucket = _start(tmp_path, "r1", url, settings)
    assert code == 1
    (code, out, err), _bucket = _start(tmp_path, "r1", url, settings, token="the-right-token")
    assert code == 1
    assert "1 earlier failure record; fix the cause, then fanout redrive r1" in err
    assert "(1 from an earlier invocation)" in out


def test_failures_lists_every_failed_unit_and_the_redrive_command(simulator, tmp_path, settings):
    clean = SimConfig.from_size("tiny", token=TOKEN, awkward_ids=True)
    universe = Universe(clean)
    warrior = universe.warriors()[0]["warrior_id"]
    troops = [t["troop_id"] for t in universe.troops(warrior)[:2]]
    url = simulator(
        SimConfig.from_size("tiny", token=TOKEN, awkward_ids=True, not_found_ids=frozenset(troops))
    )
    (code, _, _), bucket = _start(tmp_path, "r1", url, settings)
    assert code == 1
    code, out, _ = _finish(fanout_cli("failures", "r1", "--bucket-dir", bucket, *settings))
    assert code == 1
    assert "2 failed task(s), 2 failed unit(s)" in out  # one troop per task
    for troop in troops:
        assert f"  unit {troop}  not_found  HTTP 404" in out
    config = settings[3]
    assert (
        f'fanout redrive r1 --bucket-dir {bucket} --hermes-url "$HERMES_URL" --env fast --config {config}'
        in out
    )
    code, out, _ = _finish(fanout_cli("failures", "r1", "--bucket-dir", bucket, "--json"))
    doc = json.loads(out)
    assert sorted(u["unit_id"] for f in doc["failures"] for u in f["units"]) == sorted(troops)
    code, out, _ = _finish(fanout_cli("failures", "r1", "--bucket-dir", bucket, "--error-class", "timeout"))
    assert (code, "no failure record matches" in out) == (0, True)


def test_redrive_by_kind_after_the_fix_completes_the_run(simulator, tmp_path, settings):
    url = simulator(SimConfig.from_size("tiny", token="the-right-token"))
    (code, _, _), bucket = _start(tmp_path, "r1", url, settings)
    assert code == 1
    redrive = ["redrive", "r1", "--bucket-dir", bucket, "--hermes-url", url, "--quiet", *settings]
    code, out, err = _finish(
        fanout_cli(*redrive, "--error-class", "unauthorized", env={"HERMES_TOKEN": "the-right-token"})
    )
    assert code == 0, err
    assert "1 task(s) written again" in out
    code, _, _ = _finish(fanout_cli("status", "r1", "--bucket-dir", bucket))
    assert code == 0


def test_redrive_stale_after_0_retriggers_a_failed_task_once(simulator, tmp_path, settings):
    url = simulator(SimConfig.from_size("tiny", token="the-right-token"))
    (code, _, _), bucket = _start(tmp_path, "r1", url, settings)
    assert code == 1  # the seed failed: 401
    redrive = ["redrive", "r1", "--bucket-dir", bucket, "--hermes-url", url, "--quiet", "--json", *settings]
    code, out, err = _finish(
        fanout_cli(*redrive, "--stale", "--stale-after", "0", env={"HERMES_TOKEN": "the-right-token"})
    )
    assert code == 0, err
    # Its failure record is deleted, then it is pending: it must not count as stale too.
    assert json.loads(out)["redrive"]["retriggered"] == ["amazon_warriors/r1.json"]


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        (
            ["--error-class", "timeout"],
            "nothing to redrive: no failure record matches --error-class timeout in run r1",
        ),
        (["--stage", "troops"], "nothing to redrive: no failure record matches --stage troops in run r1"),
    ],
)
def test_a_redrive_that_matches_nothing_says_so_and_exits_1(simulator, tmp_path, settings, filters, message):
    url = simulator(SimConfig.from_size("tiny", token="the-right-token"))
    (code, _, _), bucket = _start(tmp_path, "r1", url, settings)
    code, _out, err = _finish(
        fanout_cli("redrive", "r1", "--bucket-dir", bucket, "--hermes-url", url, *filters)
    )
    assert code == 1
    assert message in err


def test_redrive_with_an_unknown_kind_exits_2_listing_the_kinds(tmp_path):
    code, _out, err = _finish(
        fanout_cli(
            "redrive", "r1", "--bucket-dir", str(tmp_path), "--hermes-url", "http://x", "--error-class", "404"
        )
    )
    assert code == 2
    assert "unknown error kind '404'; kinds: not_found, unauthorized, forbidden" in err


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A bucket holding the runs alpha and beta."""
    from fanout.simulator import HermesSimulator

    tmp = tmp_path_factory.mktemp("two-runs")
    sim = HermesSimulator(SimConfig.from_size("tiny", token=TOKEN))
    try:
        url = sim.start()
        for run in ("alpha", "beta"):
            (code, _, err), bucket = _start(tmp, run, url, [])
            assert code == 0, err
        yield bucket
    finally:
        sim.stop()


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["failures"],
        ["redrive", "--hermes-url", "http://127.0.0.1:9"],
        ["compact"],
        ["cost"],
        ["report"],
    ],
)
def test_a_run_id_with_no_manifest_exits_2_naming_the_runs(two_runs, tmp_path, command):
    name, *rest = command
    code, out, err = _finish(fanout_cli(name, "ctrl", *rest, "--bucket-dir", two_runs))
    assert (code, out) == (2, "")
    assert err == "fanout: no run ctrl in this bucket; runs: alpha, beta\n"
    missing = tmp_path / "no-such-folder"
    code, _, err = _finish(fanout_cli(name, "ctrl", *rest, "--bucket-dir", str(missing)))
    assert code == 2 and "no run ctrl" in err
    assert not missing.exists()


def test_runs_lists_the_runs_of_a_folder_newest_first(simulator, tmp_path, settings):
    url = simulator(SimConfig.from_size("tiny", token=TOKEN))
    for run in ("zulu", "alpha"):
        (code, _, err), bucket = _start(tmp_path, run, url, settings)
        assert code == 0, err
    old = time.time() - 3600
    os.utime(Path(bucket) / "amazon_warriors" / "zulu.json", (old, old))
    broken = simulator(SimConfig.from_size("tiny", token="another"))
    (code, _, _), bucket = _start(tmp_path, "mike", broken, settings)
    assert code == 1
    code, out, _ = _finish(fanout_cli("runs", "--bucket-dir", bucket, "--json"))
    assert code == 0
    runs = json.loads(out)["runs"]
    rows = len(list(Universe(SimConfig.from_size("tiny")).expected_rows()))
    assert [r["run_id"] for r in runs] == ["mike", "alpha", "zulu"]
    assert [(r["complete"], r["failed"], r["rows"]) for r in runs] == [
        (True, 1, 0),
        (True, 0, rows),
        (True, 0, rows),
    ]
    code, out, _ = _finish(fanout_cli("runs", "--bucket-dir", bucket))
    assert [line.split()[0] for line in out.splitlines()[2:]] == ["mike", "alpha", "zulu"]


def test_runs_lists_the_runs_of_an_s3_bucket(simulator, tmp_path, settings):
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
        ).create_bucket(Bucket="fanout-runs")
        creds = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}
        s3 = ["--bucket", "fanout-runs", "--s3-endpoint-url", endpoint]
        url = simulator(SimConfig.from_size("tiny", token=TOKEN))
        (tmp_path / "s3run.json").write_text('{"warriors": "all"}')
        code, _, err = _finish(
            fanout_cli(
                "local", "run", str(tmp_path / "s3run.json"), "--hermes-url", url, "--quiet", *s3, env=creds
            )
        )
        assert code == 0, err
        code, out, err = _finish(fanout_cli("runs", *s3, "--json", env=creds))
        assert code == 0, err
        (run,) = json.loads(out)["runs"]
        assert (run["run_id"], run["complete"], run["failed"]) == ("s3run", True, 0)
        assert run["rows"] == len(list(Universe(SimConfig.from_size("tiny")).expected_rows()))
        code, _, err = _finish(fanout_cli("status", "nope", *s3, env=creds))
        # (a line before it may say which environment the bucket's tags name, or that they name none)
        assert code == 2 and err.splitlines()[-1] == "fanout: no run nope in this bucket; runs: s3run", err
    finally:
        server.stop()
