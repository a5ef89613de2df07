"""The deployed-wiring tier: each environment's template synthesized once per session
(``infra.conftest.synthesize``, bundling skipped), then emulated on moto
(``tests/cloud/emulation.py``) with the real handlers and the simulator as Hermes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from infra.conftest import (  # type: ignore[import-not-found]
    DESCRIBED_ENVIRONMENTS,
    cdk_json_context,
    synthesize,
)

from .wiring import Wiring, read_wiring

_CACHE: dict[str, tuple[dict[str, Any], Wiring]] = {}
TWO_LEVEL_API = "tests/fixtures/apis/two_level.yaml"
FORGETFUL = "dev-forgetful"
"""dev with ``remember_limit: false``: its stack grants no ``limits/*``."""
CLOUD_ENVIRONMENTS: dict[str, dict[str, Any]] = {
    **DESCRIBED_ENVIRONMENTS,
    FORGETFUL: {**cdk_json_context()["environments"]["dev"], "remember_limit": False},
}
"""Environments (name -> raw settings) of a description other than Hermes', and variants of
Hermes' own."""


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``template("dev")``: (template JSON, its ``Wiring``), synthesized on first use."""

    def get(env: str) -> tuple[dict[str, Any], Wiring]:
        if env not in _CACHE:
            context = None
            if env in CLOUD_ENVIRONMENTS:  # a test description's environment
                environments = {**cdk_json_context()["environments"], env: CLOUD_ENVIRONMENTS[env]}
                context = {"environments": environments}
            synth = synthesize(env, Path(tmp_path_factory.mktemp(f"cloud-{env}")), context=context)
            _CACHE[env] = (synth.doc, read_wiring(synth.doc))
        return _CACHE[env]

    return get


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from moto import mock_aws

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield
