"""Session-scoped servers that nobody here wrote: json-server (fed a generated db.json) and
Prism (validating every request and response against docs/hermes-api.yaml, in front of the
bundled simulator). Each starts once per test process and is stopped at its end."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fanout.simulator import HermesSimulator, SimConfig

from .json_db import Db, generate_db
from .processes import ROOT, NodeServer, node_tool, run_server

CONTRACT = ROOT / "docs" / "hermes-api.yaml"
TOKEN = "sim-token"
BASIC_USER = "fanout"
BASIC_PASSWORD = "c0rrect:h0rse-bättery\\staple"
"""Holds a colon (only the first one separates user from password), a non-ASCII letter and
a backslash: what a client must encode and a log must mask."""
API_KEY = "k3y+/=&x~"
"""ASCII (it may travel in a header) that needs percent-encoding in a query string."""

PRISM_CONFIG = SimConfig.from_size(
    "tiny",
    token=TOKEN,
    awkward_ids=True,
    long_ids=True,
    error_rate_5xx=0.1,
    error_rate_429=0.1,
    fault_seed=4,
)
"""Hostile ids and injected 429s and 5xx, so that the error answers meet Prism too. Not
``dot_ids``: Prism (like every WHATWG URL parser) reads %2E and %2E%2E as dot segments and
removes them before routing, where the contract (and the simulator) keep them as ids."""

_JSON_SERVER_READY = re.compile(r"json-server listening on (http://\S+)")
_PRISM_READY = re.compile(r"Prism is listening on (http://\S+)")


@dataclass(frozen=True)
class JsonServer:
    """A running json-server: its base URL and the db it serves (also at ``db_path``)."""

    url: str
    db: Db
    db_path: Path
    log: Path


@dataclass(frozen=True)
class PrismProxy:
    """A running ``prism proxy --errors``: its URL, its log, and the simulator behind it."""

    url: str
    log: Path
    simulator: HermesSimulator


def write_db(db: Db, path: Path) -> Path:
    path.write_text(json.dumps(db, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


@contextlib.contextmanager
def start_json_server(
    db_path: Path,
    log: Path,
    basic: str | None = None,
    api_key: str | None = None,
    short: str | None = None,
) -> Iterator[NodeServer]:
    """json-server serving ``db_path`` read-only (see json_server.js); ``basic`` is
    ``user:password``. The credentials travel in the environment, not on the command line.
    ``short`` is a list path (``/posts/3/comments``) served one item short of its total."""
    node_tool("json-server")
    env = {
        "JSON_SERVER_BASIC": basic or "",
        "JSON_SERVER_API_KEY": api_key or "",
        "JSON_SERVER_SHORT": short or "",
    }
    script = Path(__file__).with_name("json_server.js")
    with run_server(["node", script, db_path], log, _JSON_SERVER_READY, env=env) as server:
        yield server


@contextlib.contextmanager
def start_prism(upstream: str, log: Path, contract: Path = CONTRACT) -> Iterator[NodeServer]:
    """``prism proxy <contract> <upstream> --errors`` on a free port of 127.0.0.1: a request
    that breaks the contract is answered 422 and never forwarded; a response that breaks it
    is replaced by a 500 whose problem type ends in ``#VIOLATIONS``."""
    prism = node_tool("prism")
    argv = [prism, "proxy", contract, upstream, "--errors", "--host", "127.0.0.1", "--port", "0"]
    with run_server(argv, log, _PRISM_READY) as server:
        yield server


@pytest.fixture(scope="session")
def json_db() -> Db:
    return generate_db()


@pytest.fixture(scope="session")
def json_db_path(json_db: Db, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_db(json_db, tmp_path_factory.mktemp("json-server") / "db.json")


@pytest.fixture(scope="session")
def json_server(json_db: Db, json_db_path: Path) -> Iterator[JsonServer]:
    """json-server with no auth."""
    log = json_db_path.with_name("json-server.log")
    with start_json_server(json_db_path, log) as server:
        yield JsonServer(server.url, json_db, json_db_path, log)


@pytest.fixture(scope="session")
def json_server_auth(json_db: Db, json_db_path: Path) -> Iterator[JsonServer]:
    """The same db behind auth: ``BASIC_USER:BASIC_PASSWORD`` or ``API_KEY`` (query
    ``api_key`` or header ``X-API-Key``); anything else is a 401."""
    log = json_db_path.with_name("json-server-auth.log")
    with start_json_server(json_db_path, log, f"{BASIC_USER}:{BASIC_PASSWORD}", API_KEY) as server:
        yield JsonServer(server.url, json_db, json_db_path, log)


@pytest.fixture(scope="session")
def prism(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrismProxy]:
    """Prism validating ``docs/hermes-api.yaml`` in front of the simulator (``PRISM_CONFIG``)."""
    simulator = HermesSimulator(PRISM_CONFIG)
    upstream = simulator.start()
    try:
        with start_prism(upstream, tmp_path_factory.mktemp("prism") / "prism.log") as server:
            yield PrismProxy(server.url, server.log, simulator)
    finally:
        simulator.stop()
