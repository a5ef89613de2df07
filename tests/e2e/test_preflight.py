"""``fanout check`` and the same checks before ``local run`` seeds: against the simulator and
against servers that fail on purpose (down, 401, 404, a malformed URL)."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fanout.preflight import MAX_BODY_BYTES
from fanout.simulator import HermesSimulator, SimConfig
from tests.core.raw_http import Conn, Request, raw_server

from .conftest import TOKEN, fanout_cli


@pytest.fixture
def sim() -> Iterator[HermesSimulator]:
    with HermesSimulator(SimConfig.from_size("tiny", token=TOKEN)) as server:
        yield server


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _run(*args: str, token: str = TOKEN) -> tuple[int, str, str]:
    proc = fanout_cli(*args, env={"HERMES_TOKEN": token})
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


# (name, how the URL is made from the simulator's, token, what the one line must say)
FAILING = [
    ("down", lambda url: _closed_port(), TOKEN, "connection refused"),
    ("401", lambda url: url, "not-the-token", "refused the token (401"),
    ("404", lambda url: url + "/api", TOKEN, "does not exist (404): the base path is wrong"),
    ("trailing-v1", lambda url: url + "/v1", TOKEN, "drop the trailing /v1"),
    ("dns", lambda url: "http://no-such-host.invalid", TOKEN, "cannot resolve the host"),
]


@pytest.mark.parametrize(("name", "make_url", "token", "says"), FAILING, ids=[f[0] for f in FAILING])
def test_check_fails_with_one_line_naming_the_cause_and_the_fix(sim, name, make_url, token, says):
    code, out, err = _run("check", "--hermes-url", make_url(sim.url), token=token)
    assert code == 1, out + err
    [line] = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert says in line and "fix:" in line
    assert "Traceback" not in err
    assert token not in out + err


MALFORMED = [
    ("no-scheme", lambda url: url.removeprefix("http://"), "must start with http:// or https://"),
    ("space", lambda url: url + "/a b", "whitespace"),
    ("bad-port", lambda url: "http://127.0.0.1:99999", "port"),
    ("query", lambda url: url + "?x=1", "query"),
    ("ftp", lambda url: url.replace("http://", "ftp://"), "must start with http"),
]


@pytest.mark.parametrize(("name", "make_url", "says"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_a_malformed_url_is_a_usage_error_before_any_request(sim, tmp_path: Path, name, make_url, says):
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"warriors": "all"}))
    bucket = tmp_path / "b"
    for argv in (
        ["check", "--hermes-url", make_url(sim.url)],
        ["local", "run", str(manifest), "--hermes-url", make_url(sim.url), "--bucket-dir", str(bucket)],
    ):
        code, _out, err = _run(*argv)
        assert code == 2, err
        assert says in err and "Traceback" not in err
    assert sim.stats.requests == 0
    assert not bucket.exists()


def test_check_passes_against_a_working_hermes_and_a_writable_bucket(sim, tmp_path: Path):
    bucket = tmp_path / "b"
    code, out, err = _run("check", "--hermes-url", sim.url, "--bucket-dir", str(bucket))
    assert code == 0, out + err
    assert "ok   hermes:" in out and "ok   bucket:" in out
    assert sim.stats.requests == 2  # the health probe and one listing of one warrior
    assert not any(bucket.rglob("*"))  # the probe object and its folder are gone
    assert TOKEN not in out + err


def test_check_of_a_bucket_dir_that_is_a_file_is_a_usage_error(sim, tmp_path: Path):
    afile = tmp_path / "not-a-folder"
    afile.write_text("x")
    code, _out, err = _run("check", "--hermes-url", sim.url, "--bucket-dir", str(afile))
    assert code == 2
    assert f"--bucket-dir {afile} is a file, not a directory" in err


def test_check_without_a_token_is_a_usage_error(sim):
    code, _out, err = _run("check", "--hermes-url", sim.url, token="")
    assert code == 2
    assert "HERMES_TOKEN" in err


@pytest.mark.parametrize(("name", "make_url", "token", "says"), FAILING[:3], ids=[f[0] for f in FAILING[:3]])
def test_local_run_stops_before_seeding_when_the_preflight_fails(
    sim, tmp_path: Path, name, make_url, token, says
):
    manifest = tmp_path / "early.json"
    manifest.write_text(json.dumps({"warriors": "all"}))
    bucket = tmp_path / "b"
    code, _out, err = _run(
        "local",
        "run",
        str(manifest),
        "--hermes-url",
        make_url(sim.url),
        "--bucket-dir",
        str(bucket),
        token=token,
    )
    assert code == 2, err
    assert says in err and "nothing was started" in err and "Traceback" not in err
    assert not bucket.exists() or not any(bucket.rglob("*.json"))


@pytest.mark.parametrize(
    ("faults", "says"),
    [
        ({"error_rate_5xx": 1.0}, "the run's retries may get past it"),
        ({"error_rate_429": 1.0}, "429 (rate limited)"),
        ({"hang_rate": 1.0, "hang_s": 3.0}, "sent no answer within 0.5 s"),
    ],
    ids=["5xx", "429", "hang"],
)
def test_check_names_a_server_that_answers_but_fails(faults, says):
    with HermesSimulator(SimConfig.from_size("tiny", token=TOKEN, **faults)) as flaky:
        code, out, err = _run("check", "--hermes-url", flaky.url, "--timeout", "0.5")
    assert code == 1, out + err
    [line] = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert says in line


# -- bounded requests: a server that answers, but never ends its answer ------------------


def _health_then(body_sender: Callable[[Conn], None]) -> Callable[[Request, Conn], None]:
    """A server whose every answer is a 200 whose body ``body_sender`` writes (it never ends)."""

    def handle(_request: Request, conn: Conn) -> None:
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
        body_sender(conn)

    return handle


def _endless(conn: Conn) -> None:
    chunk = b" " * 65536
    while not conn.closed.is_set():
        try:
            conn.send(chunk)
        except OSError:
            return


def test_check_ends_by_its_timeout_when_health_dribbles_its_body():
    with raw_server(_health_then(lambda conn: conn.drip(b"{" * 1000, 1.0))) as server:
        # Before the bound: still running at 45 s; communicate's 60 s catches a hang.
        code, out, err = _run("check", "--hermes-url", server.url, "--timeout", "2")
    assert code == 1, out + err
    [line] = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert "/v1/health did not finish its answer within 2 s" in line and "fix:" in line
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["check", "local run"])
def test_an_endless_health_body_is_read_no_further_than_the_cap(tmp_path: Path, command):
    with raw_server(_health_then(_endless)) as server:
        code, out, err = _run(*_argv(command, server.url, tmp_path))
    assert code == (1 if command == "check" else 2), out + err
    said = out if command == "check" else err
    assert f"answered with a body of more than {MAX_BODY_BYTES} bytes" in said
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["check", "local run"])
def test_https_to_a_plain_http_port_is_one_line_naming_the_cause(sim, tmp_path: Path, command):
    code, out, err = _run(*_argv(command, sim.url.replace("http://", "https://"), tmp_path))
    assert code == (1 if command == "check" else 2), out + err
    said = out if command == "check" else err
    assert "does not speak TLS (https:// to a plain-HTTP port" in said and "fix: use http://" in said
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) <= 2  # the finding, and local run's "nothing was started"


def _argv(command: str, url: str, tmp_path: Path) -> list[str]:
    if command == "check":
        return ["check", "--hermes-url", url]
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"warriors": "all"}))
    return ["local", "run", str(manifest), "--hermes-url", url, "--bucket-dir", str(tmp_path / "b")]


def test_a_health_body_cut_short_is_one_line_not_a_traceback():
    def short(_request: Request, conn: Conn) -> None:
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{}")
        conn.sock.close()

    with raw_server(short) as server:
        code, out, err = _run("check", "--hermes-url", server.url)
    assert code == 1, out + err
    [line] = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert "IncompleteRead" in line and "fix:" in line
    assert "Traceback" not in err
