"""Input from outside, through the real CLI: a price that is no price, and a JSON document
that repeats a key (a manifest, a settings file, a prices file), are refused with one line
naming the key and exit 2, before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fanout_core.bodies import manifest_body
from fanout_core.stages import STAGES

from .conftest import fanout_cli

RUN = "hygiene"


def _cli(*args: str) -> tuple[int, str, str]:
    proc = fanout_cli(*args)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def _bucket_with_a_run(tmp_path: Path) -> Path:
    """A bucket folder holding the run's manifest: enough for ``cost`` to reach its prices."""
    bucket = tmp_path / "bucket"
    seed = bucket / STAGES.seed(RUN).key
    seed.parent.mkdir(parents=True)
    seed.write_bytes(manifest_body(None))
    return bucket


BAD_PRICES = [
    ("string", '"0.005"'),
    ("null", "null"),
    ("boolean", "true"),
    ("list", "[0.005]"),
    ("nan-string", '"NaN"'),
    ("infinity-string", '"Infinity"'),
    ("nan-literal", "NaN"),
    ("overflow", "1e308"),
    ("negative", "-0.005"),
]


@pytest.mark.parametrize(("name", "value"), BAD_PRICES, ids=[b[0] for b in BAD_PRICES])
def test_a_price_that_is_no_finite_non_negative_number_is_exit_2_naming_the_key(
    tmp_path: Path, name: str, value: str
):
    bucket = _bucket_with_a_run(tmp_path)
    prices = tmp_path / "prices.json"
    prices.write_text(f'{{"lambda_request": 0.0000002, "s3_put_per_1000": {value}}}')
    code, out, err = _cli("cost", RUN, "--bucket-dir", str(bucket), "--prices", str(prices))
    assert code == 2, err
    assert out == "" and "Traceback" not in err
    [line] = err.strip().splitlines()
    assert "s3_put_per_1000" in line


def test_a_prices_file_repeating_a_key_is_refused_naming_it(tmp_path: Path):
    bucket = _bucket_with_a_run(tmp_path)
    prices = tmp_path / "prices.json"
    prices.write_text('{"lambda_request": 0.0000002, "lambda_request": 0.1}')
    code, _out, err = _cli("cost", RUN, "--bucket-dir", str(bucket), "--prices", str(prices))
    assert code == 2, err
    [line] = err.strip().splitlines()
    assert "'lambda_request' is given twice" in line


def test_a_manifest_repeating_a_key_is_refused_naming_it_and_nothing_is_seeded(tmp_path: Path):
    manifest = tmp_path / f"{RUN}.json"
    manifest.write_text('{"warriors": "all", "warriors": ["w0"]}')
    bucket = tmp_path / "bucket"
    code, _out, err = _cli(
        "local", "run", str(manifest), "--hermes-url", "http://127.0.0.1:9", "--bucket-dir", str(bucket)
    )
    assert code == 2, err
    [line] = err.strip().splitlines()
    assert "bad manifest" in line and "'warriors' is given twice" in line
    assert not bucket.exists()


def test_a_settings_file_repeating_a_key_is_refused_naming_it(tmp_path: Path):
    config = tmp_path / "settings.json"
    config.write_text(json.dumps({"environments": {"local": {}}})[:-2] + ', "local": {}}}')
    bucket = _bucket_with_a_run(tmp_path)
    code, _out, err = _cli("status", RUN, "--bucket-dir", str(bucket), "--config", str(config))
    assert code == 2, err
    [line] = err.strip().splitlines()
    assert "'local' is given twice" in line and "Traceback" not in err
