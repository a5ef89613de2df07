"""Described APIs crawled through the real CLI against the simulator serving them, rows exact."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fanout.audit import output_rows
from fanout.simulator import HermesSimulator
from fanout.simulator.config import SimConfig
from fanout.simulator.truth import compare_rows, expected_rows, simulator_config
from fanout_core.api_description import DEFAULT_API, ApiDescription, load
from fanout_core.stages import table_for
from fanout_core.storage import LocalDirStorage

from .conftest import ROOT, fanout_cli

APIS = ROOT / "tests" / "fixtures" / "apis"


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> tuple[int, str, str]:
    proc = fanout_cli(*args, env=env)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@pytest.fixture
def served() -> Iterator[object]:
    """Start a simulator serving a description; returns its URL, config and the secret's env."""
    started: list[HermesSimulator] = []

    def start(api: ApiDescription, size: str = "tiny") -> tuple[str, SimConfig, dict[str, str]]:
        config = simulator_config(api, size)
        sim = HermesSimulator(config, api=api)
        started.append(sim)
        return sim.start(), config, {str(api.auth.env): config.token}

    yield start
    for sim in started:
        sim.stop()


def _crawl(
    api_file: Path, url: str, env: dict[str, str], bucket: Path, first: str, *extra: str
) -> tuple[int, str]:
    manifest = bucket.parent / "r1.json"
    manifest.write_text(f'{{"{first}": "all"}}')
    code, out, err = _cli(
        "local", "run", str(manifest), "--api", str(api_file), "--api-url", url,
        "--processes", "2", "--bucket-dir", str(bucket), "--quiet", *extra,
        env=env,
    )  # fmt: skip
    return code, out + err


def _exact(api: ApiDescription, config: SimConfig, bucket: Path) -> None:
    found, _files = output_rows(LocalDirStorage(bucket), "r1", table_for(api))
    comparison = compare_rows(found, expected_rows(api, config))
    assert comparison.exact, comparison.summary()
    assert comparison.found > 0


@pytest.mark.parametrize("fixture", ["two_level.yaml", "five_level.yaml"])
def test_a_described_api_crawls_exactly_with_two_processes(served, tmp_path: Path, fixture: str):
    api = load(APIS / fixture)
    url, config, env = served(api)  # type: ignore[operator]
    code, said = _crawl(APIS / fixture, url, env, tmp_path / "bucket", api.levels[0].name)
    assert code == 0, said
    assert config.token not in said
    _exact(api, config, tmp_path / "bucket")


def _renamed(tmp_path: Path, suffix: str = "") -> Path:
    """Hermes' description with every prefix renamed (``suffix``: and its health path)."""
    text = DEFAULT_API.read_text()
    for prefix in ("amazon_warriors/", "troops/", "data_groups/"):
        assert f"prefix: {prefix}" in text
        text = text.replace(f"prefix: {prefix}", f"prefix: renamed-{prefix}")
    if suffix:
        text = text.replace("health: /v1/health", f"health: /v1/health{suffix}")
    path = tmp_path / f"renamed{suffix.replace('/', '-')}.yaml"
    path.write_text(text)
    return path


def test_hermes_with_every_prefix_renamed_crawls_exactly(served, tmp_path: Path):
    renamed = _renamed(tmp_path)
    api = load(renamed)
    url, config, env = served(api)  # type: ignore[operator]
    code, said = _crawl(renamed, url, env, tmp_path / "bucket", api.levels[0].name)
    assert code == 0, said
    assert {p.name for p in (tmp_path / "bucket").iterdir()} >= {
        "renamed-amazon_warriors",
        "renamed-troops",
        "renamed-data_groups",
    }
    _exact(api, config, tmp_path / "bucket")


def test_a_described_run_is_read_with_its_description_and_refused_with_another(served, tmp_path: Path):
    renamed = _renamed(tmp_path)
    url, _config, env = served(load(renamed))  # type: ignore[operator]
    bucket = tmp_path / "bucket"
    code, said = _crawl(renamed, url, env, bucket, "warriors")
    assert code == 0, said
    code, out, err = _cli("status", "r1", "--api", str(renamed), "--bucket-dir", str(bucket))
    assert code == 0, out + err
    code, out, err = _cli("status", "r1", "--bucket-dir", str(bucket))  # Hermes' prefixes: no such run
    assert code == 2 and "no run r1" in err, out + err
    edited = _renamed(tmp_path, "/other")
    for command in ("status", "failures", "compact", "redrive"):
        code, out, err = (
            _cli(command, "r1", "--api", str(edited), "--bucket-dir", str(bucket), "--api-url", url)
            if command == "redrive"
            else _cli(command, "r1", "--api", str(edited), "--bucket-dir", str(bucket))
        )
        assert code == 2, (command, out, err)
        assert err.strip() == (
            f"fanout: run r1 was crawled with the API description 'hermes', not 'hermes' ({edited}); "
            "give --api the description the run used"
        ), command


def test_demo_with_an_api_crawls_its_simulator_and_checks_the_rows(tmp_path: Path):
    code, out, err = _cli(
        "demo", "--api", str(APIS / "five_level.yaml"), "--size", "tiny", "--quiet",
        "--bucket-dir", str(tmp_path / "bucket"), "--run-id", "d1", "--json",
        env={"BUILDS_CREDENTIALS": ""},
    )  # fmt: skip
    assert code == 0, out + err
    assert '"rows_match": true' in out
