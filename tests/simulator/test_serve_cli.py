"""The serve options, `python -m fanout.simulator` and run_in_subprocess."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
from typing import Any

import pytest
import requests

from fanout.simulator import (
    SimConfig,
    Universe,
    add_serve_arguments,
    config_from_args,
    run_in_subprocess,
    serve_from_args,
)

from .conftest import ROOT

# ---- CLI hooks and subprocess ----------------------------------------------------------------


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(argv)


def test_config_from_args_applies_the_preset_then_the_flags(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HERMES_TOKEN", raising=False)
    args = _parse(
        [
            *("--size", "demo", "--warriors", "3", "--latency-ms", "20", "--awkward-ids"),
            *("--not-found", "a b", "--not-found", "c+d", "--page-size", "50"),
        ]
    )
    config = config_from_args(args)
    assert (config.warriors, config.troops_per_warrior) == (3, 10)
    assert config.latency_s == pytest.approx(0.02)
    assert config.awkward_ids and config.default_page_size == 50
    assert config.not_found_ids == frozenset({"a b", "c+d"})
    assert config.token == "sim-token"
    assert (args.host, args.port) == ("127.0.0.1", 8080)


def test_the_refusal_modes_are_serve_options() -> None:
    args = _parse(["--refuse-share", "0.2", "--outage-at", "5", "--outage-s", "30"])
    config = config_from_args(args)
    assert (config.refuse_share, config.outage_at_s, config.outage_s) == (0.2, 5.0, 30.0)
    assert SimConfig.from_json(config.to_json()) == config  # run_in_subprocess passes them on


@pytest.mark.parametrize("argv", [["--refuse-share", "1.5"], ["--outage-s", "0"], ["--outage-at", "-1"]])
def test_a_refusal_option_out_of_range_is_a_usage_error(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        _parse(argv)


def test_token_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERMES_TOKEN", "from-env")
    assert config_from_args(_parse([])).token == "from-env"
    assert config_from_args(_parse(["--token", "flag"])).token == "flag"


def test_serve_prints_its_url_and_stops_on_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fanout.simulator", "--size", "tiny", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.fullmatch(
            r"hermes simulator listening on (http://127\.0\.0\.1:\d+) "
            r"\(3 warriors, ~\d+ calls for a full crawl\)\n",
            line,
        )
        assert match, line
        assert requests.get(f"{match.group(1)}/v1/health", timeout=5).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_run_in_subprocess_serves_the_config() -> None:
    config = SimConfig(warriors=2, token="other")
    with run_in_subprocess(config) as url:
        r = requests.get(f"{url}/v1/warriors", headers={"Authorization": "Bearer other"})
        assert r.json()["items"] == Universe(config).warriors()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/v1/health", timeout=2)


def test_serve_reports_a_taken_port(serve: Any, capsys: pytest.CaptureFixture[str]) -> None:
    sim = serve(SimConfig())
    port = int(sim.url.rsplit(":", 1)[1])
    assert serve_from_args(_parse(["--port", str(port)])) == 1
    assert "cannot listen" in capsys.readouterr().err


def test_serve_reports_an_invalid_config(capsys: pytest.CaptureFixture[str]) -> None:
    # Each share is in [0, 1] (argparse checks that); together they exceed 1.
    assert serve_from_args(_parse(["--port", "0", "--error-rate-5xx", "0.6", "--error-rate-429", "0.6"])) == 2
    assert "error_rate_429 + error_rate_5xx" in capsys.readouterr().err


def test_latency_jitter_is_taken_in_milliseconds() -> None:
    config = config_from_args(_parse(["--latency-ms", "30", "--latency-jitter-ms", "50"]))
    assert config.latency_s == pytest.approx(0.03)
    assert config.latency_jitter_s == pytest.approx(0.05)
