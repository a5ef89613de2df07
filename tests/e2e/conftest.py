"""End-to-end tier: the real local runtime against the bundled simulator."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fanout.simulator import HermesSimulator, SimConfig
from fanout_core.settings import EnvironmentSettings, parse_environment

TOKEN = "e2e-token"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def simulator() -> Iterator[Callable[[SimConfig], str]]:
    """Start simulators on free ports; every one is stopped at the end of the test."""
    started: list[HermesSimulator] = []

    def start(config: SimConfig) -> str:
        sim = HermesSimulator(config)
        started.append(sim)
        return sim.start()

    yield start
    for sim in started:
        sim.stop()


def fast_settings(**overrides: object) -> EnvironmentSettings:
    """Local settings with retry delays short enough for tests."""
    raw: dict[str, object] = {
        "hermes_rate_limit": 100000,
        "max_attempts": 6,
        "retry_base_delay_s": 0.02,
        "retry_max_delay_s": 0.2,
        "stages": {
            "warriors": {"reserved_concurrency": 2, "units_per_task": 2},
            "troops": {"reserved_concurrency": 4},
            "data_groups": {"reserved_concurrency": 6, "units_per_task": 3},
        },
    }
    raw.update(overrides)
    return parse_environment("e2e", raw)


def fanout_cli(*args: str, env: dict[str, str] | None = None, **kw: object) -> subprocess.Popen[str]:
    """``python -m fanout ...`` in a child process, as a user would run it."""
    full_env = {**os.environ, "HERMES_TOKEN": TOKEN, **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "fanout", *args],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,  # type: ignore[call-overload]
    )
