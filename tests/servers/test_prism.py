"""A Hermes crawl through Prism: the real CLI, the bundled simulator, and a validator that
nobody here wrote holding every request and response to docs/hermes-api.yaml.

``prism proxy --errors`` refuses a request that breaks the contract with a 422 and never
forwards it, and replaces an answer that breaks it with a 500 (problem type ``#VIOLATIONS``),
which the crawler would retry and count. So a crawl that finishes with the simulator's rows
exact, no Prism error in its log and as many requests forwarded as the simulator answered has
had every request and response validated, error answers included (the simulator injects 429s
and 5xx). The last two tests prove the proxy is not a silent pass-through.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fanout.audit import compare, output_rows
from fanout.simulator import Universe
from fanout_core.storage import LocalDirStorage

from .conftest import PRISM_CONFIG, ROOT, TOKEN, PrismProxy, start_prism
from .http_get import get

CRAWL_TIMEOUT_S = 180.0
LOG_SETTLE_S = 5.0
BEARER = {"Authorization": f"Bearer {TOKEN}"}
PRISM_ERROR = re.compile(r"✖|terminated with error|violation", re.IGNORECASE)
"""How Prism's log marks a request it refused or an answer it replaced."""


def _log_settled(proxy: PrismProxy, offset: int, forwarded: int) -> list[str]:
    """Prism's log lines from ``offset`` on, once they name ``forwarded`` forwarded requests
    (or after LOG_SETTLE_S): a log line may trail the answer it is about."""
    deadline = time.monotonic() + LOG_SETTLE_S
    while True:
        lines = proxy.log.read_bytes()[offset:].decode("utf-8", errors="replace").splitlines()
        if sum("Forwarding" in line for line in lines) >= forwarded or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_a_crawl_through_prism_writes_the_simulators_rows_and_breaks_no_rule(prism, tmp_path: Path):
    manifest = tmp_path / "via-prism.json"
    manifest.write_text(json.dumps({"warriors": "all"}))
    bucket = tmp_path / "bucket"
    offset = prism.log.stat().st_size
    before = prism.simulator.stats
    args = ["local", "run", str(manifest), "--hermes-url", prism.url, "--bucket-dir", str(bucket)]
    done = subprocess.run(
        [sys.executable, "-m", "fanout", *args, "--json", "--quiet"],
        cwd=ROOT,
        env={**os.environ, "HERMES_TOKEN": TOKEN},
        capture_output=True,
        text=True,
        timeout=CRAWL_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr
    rows, _ = output_rows(LocalDirStorage(bucket), "via-prism")
    comparison = compare(rows, Universe(PRISM_CONFIG).expected_rows())
    assert comparison.exact, comparison.summary()
    after = prism.simulator.stats
    lines = _log_settled(prism, offset, after.requests - before.requests)
    assert [line for line in lines if PRISM_ERROR.search(line)] == []
    forwarded = sum("Forwarding" in line for line in lines)
    assert forwarded == after.requests - before.requests
    assert json.loads(done.stdout)["api_calls"] <= forwarded
    assert after.injected_429 > before.injected_429
    assert after.injected_5xx > before.injected_5xx


@pytest.mark.parametrize(
    ("query", "rule"),
    [("page_size=0", "page_size must be >= 1"), ("page_size=ten", "page_size must be integer")],
)
def test_prism_refuses_a_request_that_breaks_the_contract_without_forwarding_it(prism, query, rule):
    before = prism.simulator.stats.requests
    answer = get(f"{prism.url}/v1/warriors?{query}", BEARER)
    assert answer.status == 422
    problem = answer.json()
    assert problem["type"] == "https://stoplight.io/prism/errors#UNPROCESSABLE_ENTITY"
    assert [v["message"] for v in problem["validation"]] == [f"Request query parameter {rule}"]
    assert prism.simulator.stats.requests == before


class _OffContract(http.server.BaseHTTPRequestHandler):
    """An upstream whose every page lacks next_page_token and whose warriors lack a name."""

    def do_GET(self) -> None:
        body = json.dumps({"items": [{"warrior_id": "w1"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def off_contract_upstream() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OffContract)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_prism_replaces_an_answer_that_breaks_the_contract_with_its_violations(
    off_contract_upstream, tmp_path: Path
):
    with start_prism(off_contract_upstream, tmp_path / "prism.log") as proxy:
        answer = get(f"{proxy.url}/v1/warriors", BEARER)
    assert answer.status == 500
    problem = answer.json()
    assert problem["type"] == "https://stoplight.io/prism/errors#VIOLATIONS"
    assert sorted(v["message"] for v in problem["validation"]) == [
        "Response body must have required property 'next_page_token'",
        "Response body property items.0 must have required property 'name'",
    ]
