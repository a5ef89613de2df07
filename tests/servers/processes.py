"""Start, wait for and stop the Node servers the tests run (json-server, Prism).

Why its own module: both servers are third-party programs in a child process, so the same
rules hold for each: installed by ``make setup`` (``npm ci`` into ``node_modules/``) or the
test fails loudly, a free port chosen by the server itself (no race between picking and
binding), a bounded wait for the line that says it listens, and the whole process group
killed at the end, even when the test failed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NODE_BIN = ROOT / "node_modules" / ".bin"
READY_TIMEOUT_S = 30.0
"""A cold Prism parses the contract and listens within about 2 s here; 30 s is slack for a
loaded CI machine, and a bound so that a server that never comes up fails the test."""
STOP_TIMEOUT_S = 10.0


def node_tool(name: str) -> Path:
    """The installed ``node_modules/.bin/<name>``; a test fails (not skips) without it, since
    ``make test`` installs it and a missing server would silently drop a whole contract check."""
    if shutil.which("node") is None:
        pytest.fail("node is not on PATH: the json-server and Prism tests need Node.js 20", pytrace=False)
    path = NODE_BIN / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make setup` (it runs `npm ci`)", pytrace=False)
    return path


@dataclass
class NodeServer:
    """A server started by :func:`run_server`: its base URL and the log it writes."""

    url: str
    log: Path
    process: subprocess.Popen[bytes]

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@contextlib.contextmanager
def run_server(
    argv: Sequence[str | Path],
    log: Path,
    ready: re.Pattern[str],
    env: dict[str, str] | None = None,
    timeout_s: float = READY_TIMEOUT_S,
) -> Iterator[NodeServer]:
    """Run ``argv`` in a new process group, its output to ``log``, until ``ready`` (whose
    group 1 is the base URL) appears in the log; kill the group on the way out."""
    full_env = {**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0", **(env or {})}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(a) for a in argv],
            cwd=ROOT,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = _wait_ready(process, log, ready, timeout_s)
        yield NodeServer(url, log, process)
    finally:
        _stop(process)


def _wait_ready(process: subprocess.Popen[bytes], log: Path, ready: re.Pattern[str], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        found = ready.search(log.read_text(encoding="utf-8", errors="replace"))
        if found:
            return found.group(1)
        if process.poll() is not None:
            pytest.fail(f"{process.args} exited {process.returncode} before listening:\n{_tail(log)}")
        if time.monotonic() > deadline:
            pytest.fail(f"{process.args} did not listen within {timeout_s:.0f} s:\n{_tail(log)}")
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the group, then SIGKILL what is left after a bounded wait."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(STOP_TIMEOUT_S)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
