"""The Hermes client over real HTTP: the bundled simulator, and tiny scripted servers for the
replies the simulator cannot be made to give. Sleeps are recorded, never slept."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from fanout.simulator import HermesSimulator, SimConfig
from fanout_core.error_kinds import kind_of
from fanout_core.errors import BadRecord, PermanentError, TransientError
from fanout_core.hermes import MAX_RETRY_AFTER_S, CallStats, HermesClient, parse_retry_after

TOKEN = "sim-token"

# --- servers and clients ---------------------------------------------------------------------


@pytest.fixture
def simulator() -> Iterator[Callable[..., HermesSimulator]]:
    """Start a simulator with the given SimConfig fields; every one is stopped afterwards."""
    started: list[HermesSimulator] = []

    def start(**config: Any) -> HermesSimulator:
        sim = HermesSimulator(SimConfig(**config))
        sim.start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


Reply = tuple[int, dict[str, str], bytes]


class ScriptedHermes:
    """A tiny HTTP server answering every GET with ``reply(path)``; it records the raw paths.

    ``Content-Length`` is added unless the reply's headers set it; a header value of ``""``
    leaves it out (the body then ends when the connection closes).
    """

    def __init__(self, reply: Callable[[str], Reply]):
        self.reply = reply
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.paths.append(self.path)
                status, headers, body = outer.reply(self.path)
                self.send_response(status)
                headers = {"Content-Type": "application/json", "Content-Length": str(len(body)), **headers}
                for name, value in headers.items():
                    if value != "":
                        self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.daemon = True
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[Callable[[Callable[[str], Reply]], ScriptedHermes]]:
    servers: list[ScriptedHermes] = []

    def start(reply: Callable[[str], Reply]) -> ScriptedHermes:
        servers.append(ScriptedHermes(reply))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def page(items: list[dict[str, Any]], token: str | None = None) -> bytes:
    return json.dumps({"items": items, "next_page_token": token}).encode()


def always(status: int, body: bytes, **headers: str) -> Callable[[str], Reply]:
    return lambda _path: (status, headers, body)


class Recorder:
    """A session whose responses are logged (status, Retry-After) and a fake sleep."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.responses: list[tuple[int, str | None]] = []
        self.session = requests.Session()
        self.session.hooks["response"].append(self._log)

    def _log(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.responses.append((response.status_code, response.headers.get("Retry-After")))

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def client(self, url: str, **options: Any) -> HermesClient:
        options.setdefault("sleep", self.sleep)
        return HermesClient(url, options.pop("token", TOKEN), session=self.session, **options)


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


# --- pagination ------------------------------------------------------------------------------

SEVEN_OF_EACH = dict(warriors=7, troops_per_warrior=7, groups_per_troop=7, records_per_group=7)


def _level(client: HermesClient, sim: HermesSimulator, level: str) -> tuple[list[Any], list[Any]]:
    u = sim.universe
    w = u.warriors()[-1]["warrior_id"]
    t = u.troops(w)[-1]["troop_id"]
    g = u.data_groups(w, t)[-1]["data_group_id"]
    if level == "warriors":
        return list(client.list("warriors", ())), u.warriors()
    if level == "troops":
        return list(client.list("troops", (w,))), u.troops(w)
    if level == "data_groups":
        return list(client.list("data_groups", (w, t))), u.data_groups(w, t)
    return list(client.list("records", (w, t, g))), u.records(w, t, g)


LEVELS = ["warriors", "troops", "data_groups", "records"]


@pytest.mark.parametrize("level", LEVELS)
def test_every_page_of_a_list_is_fetched_in_order(simulator, rec: Recorder, level: str) -> None:
    sim = simulator(**SEVEN_OF_EACH)
    client = rec.client(sim.url, page_size=3)
    got, expected = _level(client, sim, level)
    assert len(expected) == 7
    assert got == expected
    assert client.stats.calls == 3  # 3 + 3 + 1


@pytest.mark.parametrize("level", LEVELS)
def test_a_list_that_fills_its_last_page_exactly_ends_on_the_null_token(
    simulator, rec: Recorder, level: str
) -> None:
    sim = simulator(warriors=6, troops_per_warrior=6, groups_per_troop=6, records_per_group=6)
    client = rec.client(sim.url, page_size=3)
    got, expected = _level(client, sim, level)
    assert got == expected
    assert client.stats.calls == 2


def test_an_empty_list_costs_one_call(simulator, rec: Recorder) -> None:
    sim = simulator(warriors=1, troops_per_warrior=1, groups_per_troop=1, records_per_group=0)
    client = rec.client(sim.url, page_size=3)
    [(w, t, g)] = list(sim.universe.iter_group_paths())
    assert list(client.list("records", (w, t, g))) == []
    assert client.stats.calls == 1


def test_page_tokens_are_sent_query_encoded(scripted, rec: Recorder) -> None:
    token = "hp1+a/b=c d&e?f"

    def reply(path: str) -> Reply:
        if "page_token=" in path:
            return 200, {}, page([{"warrior_id": "w2", "name": "n"}])
        return 200, {}, page([{"warrior_id": "w1", "name": "n"}], token)

    server = scripted(reply)
    got = list(rec.client(server.url, page_size=1).list("warriors", ()))
    assert [w["warrior_id"] for w in got] == ["w1", "w2"]
    assert server.paths[1] == "/v1/warriors?page_size=1&page_token=hp1%2Ba%2Fb%3Dc+d%26e%3Ff"


# --- identifiers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("segments", "path"),
    [
        (("warriors", "a b", "troops"), "/v1/warriors/a%20b/troops"),
        (("warriors", "a+b", "troops"), "/v1/warriors/a%2Bb/troops"),
        (("warriors", "a=b", "troops"), "/v1/warriors/a%3Db/troops"),
        (("warriors", "o'brien", "troops"), "/v1/warriors/o%27brien/troops"),
        (("warriors", "100%", "troops"), "/v1/warriors/100%25/troops"),
        (("warriors", "%2F", "troops"), "/v1/warriors/%252F/troops"),
        (("warriors", "戦士", "troops"), "/v1/warriors/%E6%88%A6%E5%A3%AB/troops"),
        (("warriors", "(x),y:z@q~", "troops"), "/v1/warriors/%28x%29%2Cy%3Az%40q~/troops"),
    ],
)
def test_url_for_percent_encodes_each_identifier_as_one_segment(segments: tuple[str, ...], path: str) -> None:
    assert HermesClient("http://h:1/", TOKEN).url_for("troops", (segments[1],)) == "http://h:1" + path


def test_awkward_ids_reach_the_server_as_single_segments(scripted, rec: Recorder) -> None:
    server = scripted(always(200, page([])))
    list(rec.client(server.url).list("records", ("a b", "a+b", "100%")))
    assert server.paths == ["/v1/warriors/a%20b/troops/a%2Bb/data_groups/100%25/data?page_size=100"]


@pytest.fixture
def awkward(simulator) -> HermesSimulator:
    # 8 warriors, 6 troops and 7 groups: every awkward id template of the simulator.
    return simulator(
        awkward_ids=True, warriors=8, troops_per_warrior=6, groups_per_troop=7, records_per_group=3
    )


def test_awkward_warrior_ids_reach_their_troops(awkward: HermesSimulator, rec: Recorder) -> None:
    client = rec.client(awkward.url)
    for warrior in awkward.universe.warriors():
        assert list(client.list("troops", (warrior["warrior_id"],))) == awkward.universe.troops(
            warrior["warrior_id"]
        )


def test_awkward_troop_ids_reach_their_data_groups(awkward: HermesSimulator, rec: Recorder) -> None:
    client = rec.client(awkward.url)
    w = awkward.universe.warriors()[0]["warrior_id"]
    for troop in awkward.universe.troops(w):
        t = troop["troop_id"]
        assert list(client.list("data_groups", (w, t))) == awkward.universe.data_groups(w, t)


def test_awkward_data_group_ids_reach_their_records(awkward: HermesSimulator, rec: Recorder) -> None:
    client = rec.client(awkward.url)
    w = awkward.universe.warriors()[4]["warrior_id"]  # "(sir) lancelot, 4"
    t = awkward.universe.troops(w)[0]["troop_id"]  # "it's 4 %2F 0"
    for group in awkward.universe.data_groups(w, t):
        g = group["data_group_id"]
        assert list(client.list("records", (w, t, g))) == awkward.universe.records(w, t, g)


# --- rate limiting ---------------------------------------------------------------------------


def test_injected_429s_are_retried_after_exactly_their_retry_after(simulator, rec: Recorder) -> None:
    sim = simulator(warriors=6, error_rate_429=0.5, fault_seed=1)
    client = rec.client(sim.url, page_size=2, max_retries=8)
    assert list(client.list("warriors", ())) == sim.universe.warriors()
    asked = [float(ra) for status, ra in rec.responses if status == 429 and ra is not None]
    assert asked, "the fault seed should inject at least one 429"
    assert rec.sleeps == asked
    assert client.stats.throttled == len(asked) == sim.stats.injected_429


@pytest.mark.parametrize(
    ("retry_after_format", "low", "high"), [("seconds", 1.0, 1.0), ("http-date", 0.0, 2.0)]
)
def test_rate_limit_429_retry_after_is_honoured_then_succeeds(
    simulator, rec: Recorder, retry_after_format: str, low: float, high: float
) -> None:
    # 5 requests/s, bucket of 1: back-to-back requests get 429 with Retry-After ~1 s. The fake
    # sleep lets 0.25 s pass (enough to refill one token) and records what was asked for.
    sim = simulator(warriors=4, rate_limit=5, rate_burst=1, retry_after_format=retry_after_format)

    def sleep(seconds: float) -> None:
        rec.sleeps.append(seconds)
        time.sleep(0.25)

    client = rec.client(sim.url, page_size=1, sleep=sleep)
    assert list(client.list("warriors", ())) == sim.universe.warriors()
    assert sim.stats.rate_limited >= 1
    assert len(rec.sleeps) == sim.stats.rate_limited == client.stats.throttled
    assert all(low <= s <= high and s > 0 for s in rec.sleeps), rec.sleeps


class RecordingPacer:
    def __init__(self) -> None:
        self.events: list[tuple[str, float | None]] = []

    def acquire(self, max_wait: float = math.inf) -> float:
        self.events.append(("acquire", None))
        return 0.0

    def on_throttled(self, retry_after: float | None) -> None:
        self.events.append(("throttled", retry_after))

    def on_success(self) -> None:
        self.events.append(("success", None))


def test_a_429_tells_the_pacer_its_retry_after(scripted, rec: Recorder) -> None:
    replies = iter([(429, {"Retry-After": "3"}, b"{}"), (200, {}, page([]))])
    server = scripted(lambda _path: next(replies))
    pacer = RecordingPacer()
    assert list(rec.client(server.url, pacer=pacer).list("warriors", ())) == []
    assert pacer.events == [("acquire", None), ("throttled", 3.0), ("acquire", None), ("success", None)]
    assert rec.sleeps == [3.0]


def test_a_429_without_retry_after_backs_off_instead(scripted, rec: Recorder) -> None:
    replies = iter([(429, {}, b"{}"), (200, {}, page([]))])
    server = scripted(lambda _path: next(replies))
    client = rec.client(server.url, backoff_base_s=0.5, backoff_cap_s=4.0)
    assert list(client.list("warriors", ())) == []
    [slept] = rec.sleeps
    assert 0.0 <= slept <= 0.5


# --- transient and permanent failures ----------------------------------------------------------


def test_5xx_is_retried_then_succeeds(simulator, rec: Recorder) -> None:
    sim = simulator(warriors=6, error_rate_5xx=0.5, fault_seed=1)
    client = rec.client(sim.url, page_size=2, max_retries=8, backoff_base_s=0.1, backoff_cap_s=2.0)
    assert list(client.list("warriors", ())) == sim.universe.warriors()
    failures = [status for status, _ in rec.responses if status >= 500]
    assert failures, "the fault seed should inject at least one 5xx"
    assert client.stats.retries == client.stats.transient_errors == len(failures) == sim.stats.injected_5xx
    assert len(rec.sleeps) == len(failures)
    assert all(0.0 <= s <= 2.0 for s in rec.sleeps)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_each_5xx_status_is_transient(scripted, rec: Recorder, status: int) -> None:
    server = scripted(always(status, b'{"error": "unavailable", "message": "later"}'))
    with pytest.raises(TransientError) as info:
        list(rec.client(server.url, max_retries=0).list("warriors", ()))
    assert info.value.status == status


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_each_permanent_status_is_not_retried(scripted, rec: Recorder, status: int) -> None:
    server = scripted(always(status, b'{"error": "no", "message": "never"}'))
    client = rec.client(server.url)
    with pytest.raises(PermanentError) as info:
        list(client.list("warriors", ()))
    assert info.value.status == status
    assert client.stats.calls == 1 and rec.sleeps == []


def test_an_unexpected_status_is_permanent(scripted, rec: Recorder) -> None:
    server = scripted(always(418, b"{}"))
    with pytest.raises(PermanentError, match="unexpected status 418"):
        list(rec.client(server.url).list("warriors", ()))


@pytest.mark.parametrize("level", ["troops", "data_groups", "records"])
def test_404_is_permanent_after_exactly_one_call(simulator, rec: Recorder, level: str) -> None:
    sim = simulator(not_found_ids={"w-0001", "t-0002-01", "g-0002-00-002"})
    client = rec.client(sim.url)
    with pytest.raises(PermanentError) as info:
        if level == "troops":
            list(client.list("troops", ("w-0001",)))
        elif level == "data_groups":
            list(client.list("data_groups", ("w-0002", "t-0002-01")))
        else:
            list(client.list("records", ("w-0002", "t-0002-00", "g-0002-00-002")))
    assert info.value.status == 404
    assert client.stats.calls == 1
    assert client.stats.retries == 0 and rec.sleeps == []


def test_an_unknown_id_is_404(simulator, rec: Recorder) -> None:
    sim = simulator()
    client = rec.client(sim.url)
    with pytest.raises(PermanentError) as info:
        list(client.list("troops", ("no such warrior",)))
    assert info.value.status == 404 and client.stats.calls == 1


def test_a_wrong_token_is_permanent_401(simulator, rec: Recorder) -> None:
    sim = simulator()
    client = rec.client(sim.url, token="not-the-token")
    with pytest.raises(PermanentError) as info:
        list(client.list("warriors", ()))
    assert info.value.status == 401
    assert client.stats.calls == 1 and rec.sleeps == []


def test_a_garbage_200_body_is_transient(simulator, rec: Recorder) -> None:
    sim = simulator(garbage_rate=1.0, fault_seed=1)
    client = rec.client(sim.url, max_retries=0)
    with pytest.raises(TransientError) as info:
        list(client.list("warriors", ()))
    assert info.value.status == 200
    assert sim.stats.garbage == 1


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"items":[{"warrior_id":"w-00', id="truncated"),
        pytest.param(b"<html><body>502 upstream hiccup</body></html>", id="html"),
        pytest.param(b"", id="empty"),
        pytest.param(b'{"items": [], "next_page_token": "\xff"}', id="not-utf8"),
    ],
)
def test_a_200_that_is_not_json_is_transient(scripted, rec: Recorder, body: bytes) -> None:
    server = scripted(always(200, body))
    with pytest.raises(TransientError, match="not JSON") as info:
        list(rec.client(server.url, max_retries=0).list("warriors", ()))
    assert info.value.status == 200


def test_a_hanging_server_times_out_as_transient(simulator, rec: Recorder) -> None:
    sim = simulator(hang_rate=1.0, hang_s=2)
    client = rec.client(sim.url, read_timeout=0.2, max_retries=0)
    with pytest.raises(TransientError, match="timeout"):
        list(client.list("warriors", ()))
    assert sim.stats.hangs == 1


def test_a_refused_connection_is_transient(rec: Recorder) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    server.server_close()  # nothing listens there any more
    with pytest.raises(TransientError, match="connection failed"):
        list(rec.client(url, max_retries=0).list("warriors", ()))


def test_when_retries_run_out_the_last_transient_error_propagates(simulator, rec: Recorder) -> None:
    sim = simulator(error_rate_5xx=1.0, fault_seed=1)
    client = rec.client(sim.url, max_retries=3)
    with pytest.raises(TransientError) as info:
        list(client.list("warriors", ()))
    assert client.stats.retries == 3
    assert client.stats.calls == 4 == len(rec.responses)
    assert len(rec.sleeps) == 3
    last_status = rec.responses[-1][0]
    assert info.value.status == last_status
    assert f": {last_status}" in str(info.value)


# --- the deadline ----------------------------------------------------------------------------


@pytest.fixture
def retry_after_5(scripted) -> ScriptedHermes:
    return scripted(always(429, b'{"error": "rate_limited", "message": "slow down"}', **{"Retry-After": "5"}))


def test_a_retry_after_past_the_deadline_gives_up_at_once(
    retry_after_5: ScriptedHermes, rec: Recorder
) -> None:
    client = rec.client(retry_after_5.url, max_retries=4)
    client.set_deadline(time.monotonic() + 0.5)
    with pytest.raises(TransientError) as info:
        list(client.list("warriors", ()))
    assert info.value.status == 429 and info.value.retry_after == 5.0
    assert rec.sleeps == []
    assert client.stats.calls == 1


def test_without_a_deadline_the_same_retry_after_is_slept(
    retry_after_5: ScriptedHermes, rec: Recorder
) -> None:
    client = rec.client(retry_after_5.url, max_retries=1)
    with pytest.raises(TransientError):
        list(client.list("warriors", ()))
    assert rec.sleeps == [5.0]
    assert client.stats.calls == 2


def test_a_far_deadline_lets_the_retry_after_be_slept(retry_after_5: ScriptedHermes, rec: Recorder) -> None:
    client = rec.client(retry_after_5.url, max_retries=1)
    client.set_deadline(time.monotonic() + 600)
    with pytest.raises(TransientError):
        list(client.list("warriors", ()))
    assert rec.sleeps == [5.0]


def test_the_deadline_belongs_to_the_thread_that_set_it(retry_after_5: ScriptedHermes, rec: Recorder) -> None:
    client = rec.client(retry_after_5.url, max_retries=1)
    setter = threading.Thread(target=client.set_deadline, args=(time.monotonic() + 0.5,))
    setter.start()
    setter.join()
    with pytest.raises(TransientError):
        list(client.list("warriors", ()))
    assert rec.sleeps == [5.0]


# --- Retry-After parsing ---------------------------------------------------------------------

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("3", 3.0),
        (" 7 ", 7.0),
        ("-5", 0.0),
        ("300", 300.0),
        ("99999", MAX_RETRY_AFTER_S),
        (formatdate(NOW + 30, usegmt=True), 30.0),
        (formatdate(NOW + 86_400, usegmt=True), MAX_RETRY_AFTER_S),
        (formatdate(NOW - 30, usegmt=True), 0.0),
        (formatdate(NOW, usegmt=True), 0.0),
        ("soon", None),
        ("", None),
        ("   ", None),
        ("nan", None),
        ("Wed, 99 Foo 2026 99:99:99 GMT", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


@pytest.fixture
def local_time_not_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run with the process's local time zone five hours behind UTC (a POSIX TZ string)."""
    monkeypatch.setenv("TZ", "EST+05")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(NOW + 30)), id="imf-fixdate"),
        pytest.param(time.strftime("%A, %d-%b-%y %H:%M:%S GMT", time.gmtime(NOW + 30)), id="rfc850"),
        pytest.param(time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(NOW + 30)), id="asctime"),
    ],
)
def test_every_http_date_format_is_read_as_utc(local_time_not_utc: None, value: str) -> None:
    # RFC 9110 section 5.6.7: all three formats are GMT, whatever the server's or client's zone.
    assert parse_retry_after(value, now=NOW) == 30.0


# --- pages that break the contract ------------------------------------------------------------


def test_a_page_with_more_items_than_page_size_is_permanent(scripted, rec: Recorder) -> None:
    items = [{"warrior_id": f"w{i}", "name": "n"} for i in range(4)]
    server = scripted(always(200, page(items)))
    client = rec.client(server.url, page_size=3)
    with pytest.raises(PermanentError, match="page_size"):
        list(client.list("warriors", ()))
    assert client.stats.calls == 1


def test_a_content_length_over_max_page_bytes_is_permanent(scripted, rec: Recorder) -> None:
    body = page([{"warrior_id": "w", "name": "x" * 2000}])
    server = scripted(always(200, body))
    client = rec.client(server.url, max_page_bytes=1000)
    with pytest.raises(PermanentError, match="1000-byte cap"):
        list(client.list("warriors", ()))
    assert client.stats.calls == 1


def test_a_body_without_content_length_over_max_page_bytes_is_permanent(scripted, rec: Recorder) -> None:
    body = page([{"warrior_id": "w", "name": "x" * 2000}])
    server = scripted(always(200, body, **{"Content-Length": ""}))
    with pytest.raises(PermanentError, match="1000-byte cap"):
        list(rec.client(server.url, max_page_bytes=1000).list("warriors", ()))


def test_a_page_at_max_page_bytes_is_read(scripted, rec: Recorder) -> None:
    body = page([{"warrior_id": "w", "name": "n"}])
    server = scripted(always(200, body))
    assert list(rec.client(server.url, max_page_bytes=len(body)).list("warriors", ())) == [
        {"warrior_id": "w", "name": "n"}
    ]


LIST_CALLS: dict[str, Callable[[HermesClient], Iterator[dict[str, Any]]]] = {
    "warrior": lambda c: c.list("warriors", ()),
    "troop": lambda c: c.list("troops", ("w",)),
    "data_group": lambda c: c.list("data_groups", ("w", "t")),
    "record": lambda c: c.list("records", ("w", "t", "g")),
}
GOOD_ITEMS: dict[str, dict[str, Any]] = {
    "warrior": {"warrior_id": "w", "name": "n"},
    "troop": {"troop_id": "t", "service": "s"},
    "data_group": {"data_group_id": "g", "name": "n"},
    "record": {"ts": "2026-11-27T08:00:00Z", "metric": "m", "value": 1.5, "unit": "ms"},
}


@pytest.mark.parametrize("kind", list(GOOD_ITEMS))
def test_a_valid_item_of_each_kind_is_returned(scripted, rec: Recorder, kind: str) -> None:
    server = scripted(always(200, page([GOOD_ITEMS[kind]])))
    assert list(LIST_CALLS[kind](rec.client(server.url))) == [GOOD_ITEMS[kind]]


@pytest.mark.parametrize(
    ("kind", "change"),
    [
        ("warrior", {"warrior_id": None}),
        ("warrior", {"name": None}),
        ("troop", {"service": None}),
        ("troop", {"troop_id": 7}),
        ("data_group", {"data_group_id": None}),
        ("data_group", {"name": ["n"]}),
    ],
)
def test_an_item_missing_or_breaking_a_field_is_transient(
    scripted, rec: Recorder, kind: str, change: dict[str, Any]
) -> None:
    item = dict(GOOD_ITEMS[kind])
    drop = change.pop("drop", None)
    for name, value in change.items():
        if value is None and drop is None:
            item.pop(name)
        else:
            item[name] = value
    if drop:
        item.pop(drop)
    server = scripted(always(200, page([item])))
    with pytest.raises(TransientError) as info:
        list(LIST_CALLS[kind](rec.client(server.url, max_retries=0)))
    assert info.value.status == 200


@pytest.mark.parametrize(
    "change",
    [
        {"ts": None},
        {"metric": None},
        {"value": None, "drop": "value"},
        {"value": "1.5"},
        {"value": True},
        {"unit": 5},
    ],
)
def test_a_record_missing_or_breaking_a_field_is_permanent(
    scripted, rec: Recorder, change: dict[str, Any]
) -> None:
    # A record the contract does not allow fails its data group (test_hermes_records.py has the rest).
    item = dict(GOOD_ITEMS["record"])
    drop = change.pop("drop", None)
    for name, value in change.items():
        if value is None and drop is None:
            item.pop(name)
        else:
            item[name] = value
    if drop:
        item.pop(drop)
    server = scripted(always(200, page([item])))
    client = rec.client(server.url)
    with pytest.raises(BadRecord) as info:
        list(LIST_CALLS["record"](client))
    assert info.value.status == 200 and client.stats.calls == 1


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[]", id="not-an-object"),
        pytest.param(b'{"next_page_token": null}', id="no-items"),
        pytest.param(b'{"items": {}, "next_page_token": null}', id="items-not-a-list"),
        pytest.param(b'{"items": []}', id="no-token"),
        pytest.param(b'{"items": [], "next_page_token": ""}', id="empty-token"),
        pytest.param(b'{"items": [], "next_page_token": 3}', id="number-token"),
        pytest.param(b'{"items": ["w"], "next_page_token": null}', id="item-not-an-object"),
    ],
)
def test_a_malformed_page_is_transient(scripted, rec: Recorder, body: bytes) -> None:
    server = scripted(always(200, body))
    with pytest.raises(TransientError):
        list(rec.client(server.url, max_retries=0).list("warriors", ()))


@pytest.mark.parametrize("ident", ["a/b", "x" * 129, ""])
def test_an_identifier_that_breaks_the_contract_is_permanent(scripted, rec: Recorder, ident: str) -> None:
    server = scripted(always(200, page([{"warrior_id": ident, "name": "n"}])))
    with pytest.raises(PermanentError, match="breaks the contract"):
        list(rec.client(server.url).list("warriors", ()))


# --- small things ----------------------------------------------------------------------------


def test_the_bearer_token_is_sent(scripted, rec: Recorder) -> None:
    seen: list[str | None] = []
    server = scripted(always(200, page([])))
    client = rec.client(server.url)
    client.session.hooks["response"].append(
        lambda r, *a, **k: seen.append(r.request.headers.get("Authorization"))
    )
    list(client.list("warriors", ()))
    assert seen == [f"Bearer {TOKEN}"] and server.paths == ["/v1/warriors?page_size=100"]


@pytest.mark.parametrize("page_size", [0, 1001])
def test_a_page_size_outside_1_to_1000_is_refused(page_size: int) -> None:
    with pytest.raises(ValueError, match="page_size"):
        HermesClient("http://h", TOKEN, page_size=page_size)


def test_call_stats_snapshot_adds_up() -> None:
    stats = CallStats()
    stats.add(calls=2, retries=1)
    stats.add(calls=1, paced_s=0.5)
    assert stats.snapshot() == {
        "calls": 3,
        "throttled": 0,
        "transient_errors": 0,
        "retries": 1,
        "paced_s": 0.5,
    }


# --- error kinds: what the operator reads ---------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, "unauthorized"),
        (403, "forbidden"),
        (404, "not_found"),
        (429, "rate_limited"),
        (500, "server_error"),
        (503, "server_error"),
        (418, "bad_status"),
    ],
)
def test_each_answered_status_has_its_plain_kind(scripted, rec: Recorder, status: int, kind: str) -> None:
    server = scripted(always(status, b'{"error": "no", "message": "never"}'))
    with pytest.raises((PermanentError, TransientError)) as info:
        list(rec.client(server.url, max_retries=0).list("warriors", ()))
    assert kind_of(info.value) == kind


def test_a_closed_port_is_connection_refused(rec: Recorder) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TransientError) as info:
        list(rec.client(f"http://127.0.0.1:{port}", max_retries=0).list("warriors", ()))
    assert kind_of(info.value) == "connection_refused"


def test_a_host_that_does_not_resolve_is_unreachable(rec: Recorder) -> None:
    with pytest.raises(TransientError) as info:
        list(rec.client("http://no-such-host.invalid", max_retries=0).list("warriors", ()))
    assert kind_of(info.value) == "unreachable"


def test_a_garbage_200_body_is_a_bad_response(simulator, rec: Recorder) -> None:
    sim = simulator(garbage_rate=1.0, fault_seed=1)
    with pytest.raises(TransientError) as info:
        list(rec.client(sim.url, max_retries=0).list("warriors", ()))
    assert kind_of(info.value) == "bad_response"


def test_a_server_too_slow_for_the_deadline_is_a_timeout(scripted, rec: Recorder) -> None:
    def slow(_path: str) -> Reply:
        time.sleep(1.0)
        return 200, {}, b'{"items": [], "next_page_token": null}'

    server = scripted(slow)
    with pytest.raises(TransientError) as info:
        list(rec.client(server.url, max_retries=0, request_deadline_s=0.2).list("warriors", ()))
    assert kind_of(info.value) == "timeout"
