"""Every command's ``--json`` keeps to the shape docs/json-output.md documents, key for key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fanout.simulator import HermesSimulator, SimConfig, Universe

from .conftest import TOKEN, fanout_cli
from .doc_blocks import schemas, violations

SCHEMAS = schemas()


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, Any, str]:
    proc = fanout_cli(*args, env=env)
    out, err = proc.communicate(timeout=180)
    return proc.returncode, json.loads(out), err


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One bucket with a clean run and one whose troop 404s (then redriven against a clean server)."""
    tmp = tmp_path_factory.mktemp("json")
    clean_config = SimConfig.from_size("tiny", token=TOKEN, awkward_ids=True)
    universe = Universe(clean_config)
    troop = universe.troops(universe.warriors()[0]["warrior_id"])[0]["troop_id"]
    broken = HermesSimulator(
        SimConfig.from_size("tiny", token=TOKEN, awkward_ids=True, not_found_ids=frozenset({troop}))
    )
    clean = HermesSimulator(clean_config)
    docs: dict[str, Any] = {}
    try:
        broken_url, clean_url = broken.start(), clean.start()
        bucket = str(tmp / "bucket")
        where = ["--bucket-dir", bucket]
        for name in ("okrun", "badrun"):
            (tmp / f"{name}.json").write_text('{"warriors": "all"}')
        url = {"okrun": clean_url, "badrun": broken_url}
        for name in ("okrun", "badrun"):
            code, docs[f"run_{name}"], err = _run(
                "local",
                "run",
                str(tmp / f"{name}.json"),
                "--hermes-url",
                url[name],
                *where,
                "--quiet",
                "--json",
                "--no-check",  # badrun's server fails on purpose; the run must record it
            )
            assert code == (0 if name == "okrun" else 1), err
        docs["status"] = _run("status", "badrun", *where, "--json")[1]
        docs["failures"] = _run("failures", "badrun", *where, "--json")[1]
        docs["runs"] = _run("runs", *where, "--json")[1]
        docs["cost"] = _run("cost", "okrun", *where, "--json")[1]
        docs["compact"] = _run("compact", "okrun", *where, "--json")[1]
        code, docs["redrive_local"], err = _run(
            "redrive", "badrun", *where, "--hermes-url", clean_url, "--quiet", "--json"
        )
        assert code == 0, err
        code, docs["demo"], err = _run(
            "demo", "--size", "tiny", "--bucket-dir", str(tmp / "demo"), "--quiet", "--json"
        )
        assert code == 0, err
        yield docs
    finally:
        broken.stop()
        clean.stop()


@pytest.mark.parametrize(
    ("doc", "schema"),
    [
        ("run_okrun", "run_summary"),
        ("run_badrun", "run_summary"),
        ("status", "status"),
        ("failures", "failures"),
        ("runs", "runs"),
        ("cost", "cost"),
        ("compact", "compact"),
        ("redrive_local", "redrive_local"),
        ("demo", "demo_summary"),
    ],
)
def test_a_commands_json_keeps_to_its_documented_shape(runs: dict[str, Any], doc: str, schema: str) -> None:
    assert violations(runs[doc], SCHEMAS[schema], SCHEMAS) == []


def test_json_lists_failures_with_their_fields(runs: dict[str, Any]) -> None:
    """Not only the shape: the failing run's documents carry the 404 unit and its group."""
    (group,) = runs["run_badrun"]["failures"]
    assert (group["stage"], group["error_kind"], group["status"], group["units"]) == (
        "troops",
        "not_found",
        404,
        1,
    )
    assert runs["status"]["failed_tasks"] == [runs["failures"]["failures"][0]["task_key"]]
    assert runs["failures"]["failures"][0]["units"][0]["error_kind"] == "not_found"
    assert runs["redrive_local"]["redrive"]["created"] and runs["redrive_local"]["ok"] is True


def test_redrive_against_a_bucket_keeps_to_its_documented_shape(simulator, tmp_path: Path) -> None:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        s3 = ["--bucket", "fanout-json", "--s3-endpoint-url", f"http://{host}:{port}"]
        creds = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}
        import boto3

        boto3.client(
            "s3",
            endpoint_url=f"http://{host}:{port}",
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
        ).create_bucket(Bucket="fanout-json")
        url = simulator(SimConfig.from_size("tiny", token="another-token"))
        (tmp_path / "s3run.json").write_text('{"warriors": "all"}')
        proc = fanout_cli(
            "local",
            "run",
            str(tmp_path / "s3run.json"),
            "--hermes-url",
            url,
            "--quiet",
            "--no-check",
            *s3,
            env=creds,
        )
        proc.communicate(timeout=120)
        assert proc.returncode == 1
        code, doc, err = _run("redrive", "s3run", *s3, "--json", env=creds)
        assert code == 0, err
        assert violations(doc, SCHEMAS["redrive_bucket"], SCHEMAS) == []
        assert doc["retriggered"] == ["amazon_warriors/s3run.json"]
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"run_id": "r", "bucket": "b", "runs": [], "extra": 1}, "undocumented key 'extra'"),
        ({"run_id": "r", "runs": []}, "missing key 'bucket'"),
        (
            {
                "bucket": "b",
                "runs": [
                    {
                        "run_id": "r",
                        "started": None,
                        "complete": True,
                        "tasks": "3",
                        "finished": 0,
                        "failed": 0,
                        "pending": 0,
                        "rows": 0,
                    }
                ],
            },
            "'3' is not integer",
        ),
    ],
)
def test_the_shape_check_catches_what_breaks_the_contract(value: dict[str, Any], problem: str) -> None:
    shape = SCHEMAS["runs"]
    assert any(problem in v for v in violations(value, shape, SCHEMAS))


def test_every_documented_shape_is_checked_by_a_test() -> None:
    """A shape added to docs/json-output.md that no command's output is checked against checks nothing."""
    checked = {"run_summary", "status", "failures", "runs", "cost", "compact", "redrive_local"}
    checked |= {"demo_summary", "redrive_bucket"}
    checked |= {"status_queues", "redrive_dead_letters"}  # checked in test_queue_commands.py
    checked |= {"plan"}  # checked in test_plan_command.py
    here = Path(__file__).parent
    files = (Path(__file__).name, "test_queue_commands.py", "test_plan_command.py")
    source = "".join((here / name).read_text() for name in files)
    assert all(f'"{name}"' in source for name in checked)
    referenced = {ref[1:] for name in checked for ref in _refs(SCHEMAS[name])}
    assert set(SCHEMAS) == checked | referenced


def _refs(shape: Any) -> Iterator[str]:
    if isinstance(shape, str) and shape.startswith("$"):
        yield shape
        yield from _refs(SCHEMAS[shape[1:]])
    elif isinstance(shape, dict | list):
        for inner in shape.values() if isinstance(shape, dict) else shape:
            yield from _refs(inner)
