"""The deployed-wiring tier: each environment's template synthesized once per session
(``infra.conftest.synthesize``, bundling skipped; ``dev-shared`` is ``dev`` with pacing
``shared``, from a context override as ``tests/infra/test_budget_table.py`` builds it),
then emulated on moto
(``tests/cloud/emulation.py``) with the real handlers and the simulator as Hermes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from infra.conftest import synthesize  # type: ignore[import-not-found]

from stacks import cdk_json_context

from .wiring import Wiring, read_wiring

_CACHE: dict[str, tuple[dict[str, Any], Wiring]] = {}
SHARED = "dev-shared"
"""``dev`` with ``pacing: shared``: the stack builds its budget table."""


def _context(env: str) -> dict[str, Any] | None:
    if env != SHARED:
        return None
    environments = json.loads(json.dumps(cdk_json_context()["environments"]))
    environments[SHARED] = {
        **environments["dev"],
        "pacing": "shared",
        "token_secret_name": f"fanout/{SHARED}/hermes-token",
    }
    return {"environments": environments}


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``template("dev")``: (template JSON, its ``Wiring``), synthesized on first use."""

    def get(env: str) -> tuple[dict[str, Any], Wiring]:
        if env not in _CACHE:
            synth = synthesize(env, Path(tmp_path_factory.mktemp(f"cloud-{env}")), context=_context(env))
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
