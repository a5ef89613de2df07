"""The CLI with ``--api FILE``: a described API checked, probed and refused through the real CLI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fanout.simulator import HermesSimulator
from fanout.simulator.truth import simulator_config
from fanout_core.api_description import ApiDescription, load

from .conftest import ROOT, fanout_cli

APIS = ROOT / "tests" / "fixtures" / "apis"


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> tuple[int, str, str]:
    proc = fanout_cli(*args, env=env)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@pytest.fixture
def described() -> Iterator[object]:
    """Start a simulator serving a description (its secret in the returned env)."""
    started: list[HermesSimulator] = []

    def start(api: ApiDescription, size: str = "tiny") -> tuple[str, dict[str, str]]:
        config = simulator_config(api, size)
        sim = HermesSimulator(config, api=api)
        started.append(sim)
        return sim.start(), {str(api.auth.env): config.token}

    yield start
    for sim in started:
        sim.stop()


def test_a_bad_description_is_one_line_and_exit_2_naming_its_field_and_line(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    text = (APIS / "two_level.yaml").read_text().replace("type: integer}", "type: decimal}")
    bad.write_text(text)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "decimal" in t)
    manifest = tmp_path / "r1.json"
    manifest.write_text('{"shops": "all"}')
    for argv in (["local", "run", str(manifest)], ["check"]):
        code, _out, err = _cli(*argv, "--api", str(bad), "--bucket-dir", str(tmp_path / "b"))
        assert code == 2, err
        assert len(err.strip().splitlines()) == 1, err
        assert "levels[0].id" in err and f"line {line}" in err and "decimal" in err, err
        assert "Traceback" not in err


def test_a_described_apis_missing_secret_names_its_variable(tmp_path: Path):
    manifest = tmp_path / "r1.json"
    manifest.write_text('{"shops": "all"}')
    code, _out, err = _cli(
        "local", "run", str(manifest), "--api", str(APIS / "two_level.yaml"),
        "--api-url", "http://127.0.0.1:9", "--bucket-dir", str(tmp_path / "b"),
        env={"SHOPS_API_KEY": ""},
    )  # fmt: skip
    assert code == 2
    assert err.strip() == "fanout: set SHOPS_API_KEY to the Shops API key"


def test_a_manifest_keyed_by_another_level_is_refused_for_the_description(tmp_path: Path):
    manifest = tmp_path / "r1.json"
    manifest.write_text('{"warriors": "all"}')
    code, _out, err = _cli(
        "local", "run", str(manifest), "--api", str(APIS / "two_level.yaml"),
        "--api-url", "http://127.0.0.1:9", "--bucket-dir", str(tmp_path / "b"),
        env={"SHOPS_API_KEY": "k"},
    )  # fmt: skip
    assert code == 2
    assert err.startswith("fanout: bad manifest:") and "shops" in err


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        (
            "two_level.yaml",
            ["name: sold_at, type: timestamp", "name: paid, type: boolean", "name: day, type: date"],
        ),
        ("five_level.yaml", ["name: started_at, type: timestamp", "name: cached, type: boolean"]),
    ],
)
def test_check_with_an_api_calls_every_level_and_prints_a_columns_block(described, fixture, expected):
    api = load(APIS / fixture)
    url, env = described(api)  # type: ignore[operator]
    code, out, err = _cli("check", "--api", str(APIS / fixture), "--api-url", url, env=env)
    assert code == 0, out + err
    for level in api.levels:
        assert f"ok   level {level.name}: " in out, out
    assert "     columns:" in out
    for column in expected:
        assert column in out, out
    assert env[str(api.auth.env)] not in out + err


def test_check_with_an_api_fails_when_the_secret_is_refused(described):
    api = load(APIS / "five_level.yaml")
    url, _env = described(api)  # type: ignore[operator]
    wrong = {str(api.auth.env): "someone:else"}
    code, out, err = _cli("check", "--api", str(APIS / "five_level.yaml"), "--api-url", url, env=wrong)
    assert code == 1
    assert "unauthorized" in out or "refused the token" in out, out
    assert "someone:else" not in out + err
