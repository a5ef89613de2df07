"""The Lambda bundle, built with the stack's own recipe for this machine, running alone.

Each handler is imported and invoked in an isolated interpreter whose ``sys.path``
is the standard library, the bundle, and a stand-in for what Lambda's Python
runtime adds (boto3 and its own dependencies, nothing else). Its S3 is a moto
server, its Hermes the project's simulator. A dependency missing from the bundle,
or a stage that pulls pandas in at import time, fails here rather than in AWS.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from fanout_aws import config as lambda_env
from fanout_core.api_description import from_json
from fanout_core.settings import environment_to_json, parse_environment
from fanout_core.stages import STAGES, stage_for_key
from stacks import bundling
from stacks.lock import read_lock

pytestmark = pytest.mark.slow

BUCKET = "fanout-bundle-test"
REGION = "us-east-1"
TOKEN = "bundle-test-token"
HEAVY = ("pandas", "fastparquet", "numpy")

DRIVER = textwrap.dedent(
    """
    import importlib, json, sys, sysconfig
    bundle, runtime, module, events_file, out_file = sys.argv[1:6]
    sys.path[:0] = [bundle, runtime]

    class Context:
        function_name = "bundle-test"
        aws_request_id = "req"
        def get_remaining_time_in_millis(self):
            return 300_000

    mod = importlib.import_module(module)
    heavy_at_import = sorted(m for m in {heavy!r} if m in sys.modules)
    results = [mod.handler(event, Context()) for event in json.load(open(events_file))]
    allowed = (bundle, runtime, sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"])
    outside = sorted(
        name
        for name, m in list(sys.modules.items())
        if getattr(m, "__file__", None) and not m.__file__.startswith(allowed)
        and name not in ("__main__", "__mp_main__")
    )
    json.dump(
        {{
            "flags": {{"isolated": sys.flags.isolated, "no_site": sys.flags.no_site}},
            "heavy_at_import": heavy_at_import,
            "heavy_after": sorted(m for m in {heavy!r} if m in sys.modules),
            "outside": outside,
            "results": results,
        }},
        open(out_file, "w"),
    )
    """
).format(heavy=HEAVY)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> bundling.BundleReport:
    # Sources only, like the arm64 bundle built on a machine without python3.14; carrying
    # the product's description, as the stack's asset does.
    return bundling.build_bundle(
        tmp_path_factory.mktemp("bundle") / "host", platform_arch="host", bytecode=False, api=STAGES.api
    )


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bundling.runtime_site(tmp_path_factory.mktemp("runtime"))


def test_bundle_holds_the_code_and_its_dependencies_but_not_the_runtimes(
    bundle: bundling.BundleReport,
) -> None:
    root = bundle.path
    for package in ("fanout_core", "fanout_aws", "requests", "fastparquet", "pandas", "numpy", "dateutil"):
        assert (root / package).is_dir(), package
    for provided in bundling.PROVIDED_BY_RUNTIME:
        assert not (root / provided).exists(), provided
    assert not list(root.rglob("__pycache__"))
    assert not list(root.rglob("*.pyc"))
    assert not [p for p in root.rglob("tests") if p.is_dir()]
    assert not list(root.rglob("*.h"))
    assert list((root / "numpy").rglob("*.so")), "compiled extensions must survive trimming"
    assert not list(root.glob("*.dist-info/RECORD"))
    assert bundle.size_unzipped < 250 * 1024 * 1024
    assert bundle.packages["python-dateutil"].startswith("2.")


def test_bundle_carries_its_description_as_json_and_stays_under_100_mb(bundle: bundling.BundleReport) -> None:
    carried = bundle.path / bundling.bundled_api_path(STAGES.api)
    assert from_json(carried.read_bytes()).to_json() == STAGES.api.to_json()
    assert bundle.size_unzipped <= 100 * 1024 * 1024


def test_bundle_holds_exactly_the_locked_versions(bundle: bundling.BundleReport) -> None:
    assert bundle.packages == read_lock().versions


def test_bundle_recipe_targets_lambda_platform() -> None:
    command = bundling.pip_command(Path("out"), Path("req.txt"), arch="aarch64", python_version="3.14")
    assert "--only-binary=:all:" in command
    platforms = [command[i + 1] for i, arg in enumerate(command) if arg == "--platform"]
    assert "manylinux_2_17_aarch64" in platforms
    assert "manylinux_2_34_aarch64" in platforms
    assert "manylinux2014_aarch64" in platforms
    assert command[command.index("--python-version") + 1] == "3.14"
    assert command[command.index("--implementation") + 1] == "cp"
    assert "--require-hashes" in command
    assert command[command.index("-r") + 1] == "req.txt"


def test_asset_hash_is_stable_and_tracks_its_inputs() -> None:
    first = bundling.asset_hash(arch="aarch64", python_version="3.14")
    assert first == bundling.asset_hash(arch="aarch64", python_version="3.14")
    assert first != bundling.asset_hash(arch="x86_64", python_version="3.14")
    assert first != bundling.asset_hash(arch="aarch64", python_version="3.13")
    assert first != bundling.asset_hash(arch="aarch64", python_version="3.14", bytecode=True)


def test_cdk_runs_the_local_bundler_instead_of_docker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The jsii callback path: CDK calls ``try_bundle`` and stages what it wrote."""
    from aws_cdk import App, Stack
    from aws_cdk import aws_lambda as lambda_

    calls: list[dict[str, Any]] = []

    def fake_build(out_dir: str, **kwargs: Any) -> None:
        calls.append(kwargs)
        Path(out_dir, "marker.py").write_text("handler = None\n")

    monkeypatch.setattr(bundling, "build_bundle", fake_build)
    app = App(outdir=str(tmp_path / "cdk.out"))
    stack = Stack(app, "BundleProbe")
    lambda_.Function(
        stack,
        "Fn",
        runtime=lambda_.Runtime.PYTHON_3_14,
        handler="marker.handler",
        code=bundling.lambda_code(api=STAGES.api),
    )
    app.synth()
    version = bundling.LAMBDA_PYTHON_VERSION
    bytecode = bundling.bytecode_interpreter(version) is not None
    assert calls == [
        {"platform_arch": "aarch64", "python_version": version, "bytecode": bytecode, "api": STAGES.api}
    ]
    # CDK staged what the local bundler wrote (no image was pulled: there is no Docker).
    staged = list((tmp_path / "cdk.out").glob("asset.*/marker.py"))
    assert len(staged) == 1


# --- the handlers, run from the bundle alone ----------------------------------------


@dataclass
class World:
    s3: Any
    env: dict[str, str]
    universe: Any

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    from moto.server import ThreadedMotoServer

    from fanout.simulator import HermesSimulator, SimConfig

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    sim = HermesSimulator(SimConfig.from_size("tiny", token=TOKEN, awkward_ids=True))
    hermes_url = sim.start()
    try:
        creds = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
        }
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket=BUCKET)
        settings = parse_environment(
            "bundle-test",
            {
                "hermes_url": hermes_url,
                "max_attempts": 2,
                "retry_base_delay_s": 0.1,
                "retry_max_delay_s": 0.2,
            },
        )
        env = {
            "PATH": os.environ.get("PATH", ""),
            **creds,
            # boto3 in the child reaches moto through the standard endpoint variable.
            "AWS_ENDPOINT_URL": endpoint,
            lambda_env.ENV_NAME: settings.name,
            lambda_env.ENV_SETTINGS: environment_to_json(settings),
            lambda_env.ENV_BUCKET: BUCKET,
            lambda_env.ENV_TOKEN: TOKEN,
            lambda_env.ENV_API: bundling.bundled_api_path(STAGES.api),  # as the stack sets it
        }
        yield World(s3=s3, env=env, universe=sim.universe)
    finally:
        sim.stop()
        server.stop()


def run_from_bundle(
    bundle: bundling.BundleReport,
    runtime: Path,
    world: World,
    stage_name: str,
    keys: list[str],
    tmp: Path,
) -> dict[str, Any]:
    from fanout_aws.s3_event import s3_event_for

    (stage,) = [s for s in STAGES if s.name == stage_name]
    driver = tmp / "driver.py"
    driver.write_text(DRIVER)
    events = tmp / f"{stage_name}-events.json"
    events.write_text(json.dumps([s3_event_for(BUCKET, keys)]))
    out = tmp / f"{stage_name}-out.json"
    done = subprocess.run(
        bundling.isolated_python(
            driver, str(bundle.path), str(runtime), stage.handler.rsplit(".", 1)[0], str(events), str(out)
        ),
        env={**world.env, lambda_env.ENV_STAGE: stage_name},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def test_each_handler_imports_and_processes_a_task_from_the_bundle_alone(
    bundle: bundling.BundleReport, runtime: Path, world: World, tmp_path: Path
) -> None:
    from fastparquet import ParquetFile

    run_id = "bundle-run"
    manifest = f"amazon_warriors/{run_id}.json"
    world.s3.put_object(Bucket=BUCKET, Key=manifest, Body=json.dumps({"warriors": "all"}).encode())

    seen: set[str] = set()
    pending = [manifest]
    ran: dict[str, list[dict[str, Any]]] = {}
    while pending:
        stage = stage_for_key(pending[0])
        assert stage is not None
        batch = [k for k in pending if stage_for_key(k) == stage]
        seen.update(batch)
        outcome = run_from_bundle(bundle, runtime, world, stage.name, batch, tmp_path)
        ran.setdefault(stage.name, []).append(outcome)
        pending = [k for s in STAGES for k in world.keys(s.input_prefix) if k not in seen]

    assert set(ran) == {s.name for s in STAGES}
    for stage in STAGES:
        for outcome in ran[stage.name]:
            assert outcome["flags"] == {"isolated": 1, "no_site": 1}
            assert outcome["outside"] == [], "imported from outside bundle/runtime/stdlib"
            assert outcome["results"] == [None]
            # Stages that write no Parquet must not carry its import cost.
            if not stage.writes_parquet:
                assert outcome["heavy_at_import"] == []
                assert outcome["heavy_after"] == []
            else:
                assert outcome["heavy_at_import"] == []  # deferred to the first write
                assert set(outcome["heavy_after"]) >= {"pandas", "fastparquet"}

    assert world.keys("failed/") == []
    tasks = [k for s in STAGES for k in world.keys(s.input_prefix)]
    assert sorted(world.keys("done/")) == sorted(f"done/{k}" for k in tasks)

    rows = 0
    for key in world.keys("data/"):
        local = tmp_path / "parquet" / key
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(world.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        rows += len(ParquetFile(str(local)).to_pandas())
    assert rows == sum(1 for _ in world.universe.expected_rows())
    assert rows > 0
