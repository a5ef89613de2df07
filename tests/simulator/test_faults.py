"""Rate limiting and injected faults: 429 with Retry-After, 5xx, garbage, hangs, latency."""

from __future__ import annotations

import dataclasses
import time
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
import requests

from fanout.simulator import (
    HermesSimulator,
    SimConfig,
)

from .conftest import AUTH

# ---- rate limit and faults -------------------------------------------------------------------


def test_rate_limit_answers_429_with_integer_retry_after_then_recovers(
    serve: Any, session: requests.Session
) -> None:
    sim = serve(SimConfig(rate_limit=5, rate_burst=2))
    statuses = [session.get(f"{sim.url}/v1/warriors", timeout=5) for _ in range(6)]
    limited = [r for r in statuses if r.status_code == 429]
    assert limited, [r.status_code for r in statuses]
    retry_after = limited[0].headers["Retry-After"]
    assert retry_after.isdigit() and int(retry_after) >= 0
    assert limited[0].json()["error"] == "rate_limited"
    time.sleep(max(int(retry_after), 0.25))
    assert session.get(f"{sim.url}/v1/warriors", timeout=5).status_code == 200
    assert sim.stats.rate_limited == len(limited)
    assert sim.stats.injected_429 == 0


def test_rate_limit_is_per_token(serve: Any) -> None:
    sim = serve(SimConfig(rate_limit=1, rate_burst=1))
    ok = requests.get(f"{sim.url}/v1/warriors", headers=AUTH, timeout=5)
    limited = requests.get(f"{sim.url}/v1/warriors", headers=AUTH, timeout=5)
    wrong = requests.get(f"{sim.url}/v1/warriors", headers={"Authorization": "Bearer x"}, timeout=5)
    assert (ok.status_code, limited.status_code, wrong.status_code) == (200, 429, 401)


def test_rate_limit_retry_after_can_be_an_http_date(serve: Any, session: requests.Session) -> None:
    sim = serve(SimConfig(rate_limit=1, rate_burst=1, retry_after_format="http-date"))
    session.get(f"{sim.url}/v1/warriors", timeout=5)
    r = session.get(f"{sim.url}/v1/warriors", timeout=5)
    assert r.status_code == 429
    when = parsedate_to_datetime(r.headers["Retry-After"])
    assert 0 <= when.timestamp() - time.time() <= 3


def _statuses(sim: HermesSimulator, n: int) -> list[tuple[int, bool]]:
    """(status, body is JSON) for n sequential requests on one connection."""
    out = []
    with requests.Session() as s:
        s.headers.update(AUTH)
        for _ in range(n):
            r = s.get(f"{sim.url}/v1/warriors", timeout=5)
            try:
                r.json()
                is_json = True
            except ValueError:
                is_json = False
            out.append((r.status_code, is_json))
    return out


@pytest.mark.parametrize(
    ("field", "is_fault"),
    [
        ("error_rate_5xx", lambda st, ok: st in (500, 502, 503, 504)),
        ("error_rate_429", lambda st, ok: st == 429),
        ("garbage_rate", lambda st, ok: st == 200 and not ok),
    ],
)
def test_injected_fault_share_matches_rate_and_repeats_with_fault_seed(
    serve: Any, field: str, is_fault: Any
) -> None:
    overrides: dict[str, Any] = {field: 0.3}
    config = dataclasses.replace(SimConfig(fault_seed=11), **overrides)
    first = _statuses(serve(config), 100)
    second = _statuses(serve(config), 100)
    assert first == second
    share = sum(is_fault(st, ok) for st, ok in first) / len(first)
    assert 0.2 <= share <= 0.4, share
    non_faults = [(st, ok) for st, ok in first if not is_fault(st, ok)]
    assert set(non_faults) == {(200, True)}


def test_injected_429_retry_after_is_0_or_1(serve: Any, session: requests.Session) -> None:
    sim = serve(SimConfig(error_rate_429=1.0, fault_seed=3))
    values = {session.get(f"{sim.url}/v1/warriors", timeout=5).headers["Retry-After"]
              for _ in range(30)}  # fmt: skip
    assert values == {"0", "1"}
    assert sim.stats.injected_429 == 30 and sim.stats.rate_limited == 0


def test_hang_makes_the_client_time_out(serve: Any, session: requests.Session) -> None:
    sim = serve(SimConfig(hang_rate=1.0, hang_s=3.0))
    with pytest.raises(requests.Timeout):
        session.get(f"{sim.url}/v1/warriors", timeout=0.3)
    t0 = time.monotonic()
    sim.stop()
    assert time.monotonic() - t0 < 2
    assert sim.stats.hangs == 1


def test_latency_jitter_adds_a_draw_within_its_range(serve: Any, session: requests.Session) -> None:
    sim = serve(SimConfig(latency_s=0.05, latency_jitter_s=0.1))
    spent = []
    for _ in range(4):
        t0 = time.monotonic()
        session.get(f"{sim.url}/v1/warriors", timeout=5).raise_for_status()
        spent.append(time.monotonic() - t0)
    assert min(spent) >= 0.05
    assert len({round(s, 3) for s in spent}) > 1  # not one fixed delay


def test_a_negative_latency_jitter_is_refused() -> None:
    with pytest.raises(ValueError, match="latency_jitter_s"):
        SimConfig(latency_jitter_s=-0.01)


def test_latency_delays_every_request(serve: Any, session: requests.Session) -> None:
    sim = serve(SimConfig(latency_s=0.15))
    t0 = time.monotonic()
    session.get(f"{sim.url}/v1/warriors", timeout=5).raise_for_status()
    assert time.monotonic() - t0 >= 0.15


# ---- a share refused whatever the rate, and an outage -------------------------------------------


def test_refuse_share_answers_exactly_that_share_429_with_retry_after_one(
    serve: Any, session: requests.Session
) -> None:
    sim = serve(SimConfig(refuse_share=0.2))
    answers = [session.get(f"{sim.url}/v1/warriors", timeout=5) for _ in range(20)]
    refused = [i for i, r in enumerate(answers, 1) if r.status_code == 429]
    assert refused == [5, 10, 15, 20]  # every 5th call, however fast they come
    assert {answers[i - 1].headers["Retry-After"] for i in refused} == {"1"}
    assert sim.stats.refused_share == 4 and sim.stats.rate_limited == 0


def test_refuse_share_counts_only_calls_the_rate_limit_let_through(
    serve: Any, session: requests.Session
) -> None:
    sim = serve(SimConfig(refuse_share=0.5, rate_limit=1, rate_burst=2))
    statuses = [session.get(f"{sim.url}/v1/warriors", timeout=5).status_code for _ in range(3)]
    assert statuses == [200, 429, 429]  # the 2nd is the share's, the 3rd the limit's
    assert (sim.stats.refused_share, sim.stats.rate_limited) == (1, 1)


def test_an_outage_answers_429_with_retry_after_one_to_every_call(
    serve: Any, session: requests.Session
) -> None:
    sim = serve(SimConfig(outage_at_s=0.0, outage_s=3600.0))
    answers = [session.get(f"{sim.url}/v1/warriors", timeout=5) for _ in range(5)]
    assert [(r.status_code, r.headers["Retry-After"]) for r in answers] == [(429, "1")] * 5
    assert session.get(f"{sim.url}/v1/health", timeout=5).status_code == 200
    assert sim.stats.outage == 5


def test_before_its_outage_the_server_answers(serve: Any, session: requests.Session) -> None:
    sim = serve(SimConfig(outage_at_s=3600.0))
    assert session.get(f"{sim.url}/v1/warriors", timeout=5).status_code == 200
    assert sim.stats.outage == 0


@pytest.mark.parametrize(
    "field", [{"refuse_share": 1.5}, {"refuse_share": -0.1}, {"outage_at_s": -1.0}, {"outage_s": 0.0}]
)
def test_refusal_settings_out_of_range_are_refused(field: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SimConfig(**field)
