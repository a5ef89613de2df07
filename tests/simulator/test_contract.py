"""The simulator serves exactly docs/hermes-api.yaml: its routes, its fields, its error shapes.

The contract file is what users of the project read; the simulator is what the crawler is
tested against. If they drift apart, a crawler that passes every test can still break on
the real Hermes, so this checks one against the other over real HTTP.
"""

from __future__ import annotations

import math
import re
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from fanout.simulator import HermesSimulator, SimConfig, Universe

from .conftest import AUTH, seg

yaml = pytest.importorskip("yaml")

CONTRACT_PATH = Path(__file__).resolve().parents[2] / "docs" / "hermes-api.yaml"
CONTRACT: dict[str, Any] = yaml.safe_load(CONTRACT_PATH.read_text(encoding="utf-8"))
PATHS: dict[str, Any] = CONTRACT["paths"]

# Small, with awkward ids and varied/empty groups so every field and shape shows up.
CONFIG = SimConfig(
    warriors=3,
    troops_per_warrior=2,
    groups_per_troop=3,
    records_per_group=4,
    vary_records=True,
    empty_group_every=4,
    awkward_ids=True,
)

_RFC3339 = re.compile(
    r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)",
)


def resolve(node: Any) -> Any:
    """Follow a local "$ref" (one level at a time, as often as needed)."""
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        node = CONTRACT
        for part in ref[2:].split("/"):
            node = node[part]
    return node


def check(schema: Any, value: Any, where: str = "$") -> None:
    """Assert ``value`` keeps to an OpenAPI 3.0 schema (the subset the contract uses).

    Objects must hold every required property and no property the schema does not list:
    the simulator must send exactly the contract's fields.
    """
    schema = resolve(schema)
    if value is None:
        assert schema.get("nullable", False), f"{where}: null where the contract says not nullable"
        return
    kind = schema.get("type")
    if kind == "object":
        assert isinstance(value, dict), f"{where}: not an object: {value!r}"
        props = schema.get("properties", {})
        missing = set(schema.get("required", ())) - set(value)
        extra = set(value) - set(props)
        assert not missing, f"{where}: missing required {sorted(missing)}"
        assert not extra, f"{where}: properties not in the contract {sorted(extra)}"
        for name, item in value.items():
            check(props[name], item, f"{where}.{name}")
    elif kind == "array":
        assert isinstance(value, list), f"{where}: not an array"
        for i, item in enumerate(value):
            check(schema["items"], item, f"{where}[{i}]")
    elif kind == "string":
        assert isinstance(value, str), f"{where}: not a string: {value!r}"
        assert schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", math.inf), where
        if "pattern" in schema:
            assert re.search(schema["pattern"], value), f"{where}: {value!r} breaks {schema['pattern']}"
        if schema.get("format") == "date-time":
            assert _RFC3339.fullmatch(value), f"{where}: {value!r} is not RFC 3339"
    elif kind == "number":
        assert isinstance(value, int | float) and not isinstance(value, bool), f"{where}: {value!r}"
        assert math.isfinite(value), f"{where}: not finite"
    elif kind == "integer":
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}: {value!r}"
    else:
        raise AssertionError(f"{where}: schema type {kind!r} is not handled by this check")
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"


def response_schema(template: str, status: int) -> Any:
    response = resolve(PATHS[template]["get"]["responses"][str(status)])
    return response["content"]["application/json"]["schema"]


def fill(template: str, ids: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: seg(ids[m.group(1)]), template)


@pytest.fixture
def sim(serve: Any) -> HermesSimulator:
    return serve(CONFIG)


def real_ids(universe: Universe) -> dict[str, str]:
    w, t, g = next(p for p in universe.iter_group_paths() if universe.records(*p))
    return {"warrior_id": w, "troop_id": t, "data_group_id": g}


# ---- the contract file itself ----------------------------------------------------------------


def test_the_contract_is_openapi_3_with_the_four_lists_and_health() -> None:
    assert CONTRACT["openapi"].startswith("3.0")
    assert set(PATHS) == {
        "/v1/health",
        "/v1/warriors",
        "/v1/warriors/{warrior_id}/troops",
        "/v1/warriors/{warrior_id}/troops/{troop_id}/data_groups",
        "/v1/warriors/{warrior_id}/troops/{troop_id}/data_groups/{data_group_id}/data",
    }
    for template, item in PATHS.items():
        if template == "/v1/health":
            continue
        statuses = set(item["get"]["responses"])
        assert {"200", "400", "401", "403", "429", "500", "502", "503", "504"} <= statuses
        if "{" in template:
            assert "404" in item["get"]["responses"]


def test_every_simulator_id_keeps_to_the_id_schema() -> None:
    u = Universe(CONFIG)
    for path in u.iter_group_paths():
        for ident in path:
            check({"$ref": "#/components/schemas/Id"}, ident)


# ---- every contract route is served, and only those ----------------------------------------


@pytest.mark.parametrize("template", sorted(PATHS))
def test_every_contract_path_answers_200_with_a_page_of_the_contract(
    sim: HermesSimulator, template: str
) -> None:
    url = sim.url + fill(template, real_ids(sim.universe))
    headers = {} if template == "/v1/health" else AUTH
    r = requests.get(url, headers=headers, timeout=5)
    assert r.status_code == 200, (url, r.text)
    assert r.headers["Content-Type"].startswith("application/json")
    check(response_schema(template, 200), r.json())


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/v1",
        "/v1/",
        "/v2/warriors",
        "/v1/warrior",
        "/v1/troops",
        "/v1/warriors/{warrior_id}",
        "/v1/warriors/{warrior_id}/",
        "/v1/warriors/{warrior_id}/troops/{troop_id}",
        "/v1/warriors/{warrior_id}/troops/{troop_id}/data_groups/{data_group_id}",
        "/v1/warriors/{warrior_id}/troops/{troop_id}/data_groups/{data_group_id}/data/more",
        "/v1/warriors/{warrior_id}/data_groups",
        "/v1/health/more",
    ],
)
def test_routes_outside_the_contract_are_404_with_an_error_body(sim: HermesSimulator, path: str) -> None:
    r = requests.get(sim.url + fill(path, real_ids(sim.universe)), headers=AUTH, timeout=5)
    assert r.status_code == 404
    check({"$ref": "#/components/schemas/Error"}, r.json())


def test_a_whole_crawl_returns_only_fields_and_types_of_the_contract(sim: HermesSimulator) -> None:
    """Every page of every list, one item per page so every next_page_token is seen too."""
    templates = sorted((t for t in PATHS if t != "/v1/health"), key=len)
    todo: list[tuple[int, dict[str, str]]] = [(0, {})]
    pages = 0
    with requests.Session() as s:
        s.headers.update(AUTH)
        while todo:
            level, ids = todo.pop()
            template = templates[level]
            params: dict[str, Any] = {"page_size": 1}
            while True:
                r = s.get(sim.url + fill(template, ids), params=params, timeout=5)
                assert r.status_code == 200
                body = r.json()
                check(response_schema(template, 200), body, template)
                pages += 1
                if level < 3:
                    key = ("warrior_id", "troop_id", "data_group_id")[level]
                    todo += [(level + 1, {**ids, key: item[key]}) for item in body["items"]]
                if body["next_page_token"] is None:
                    break
                params["page_token"] = body["next_page_token"]
    assert pages == sim.universe.expected_calls(page_size=1)


def test_records_show_null_value_and_null_unit() -> None:
    u = Universe(SimConfig(warriors=4, records_per_group=50))
    records = [r for p in u.iter_group_paths() for r in u.records(*p)]
    assert any(r["value"] is None for r in records) and any(r["unit"] is None for r in records)
    for r in records:
        check({"$ref": "#/components/schemas/Record"}, r)


# ---- errors ----------------------------------------------------------------------------------


def _error(r: requests.Response, template: str) -> None:
    assert str(r.status_code) in PATHS[template]["get"]["responses"], r.status_code
    check(response_schema(template, r.status_code), r.json())


def test_401_without_a_token_or_with_a_wrong_one(sim: HermesSimulator) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}):
        r = requests.get(f"{sim.url}/v1/warriors", headers=headers, timeout=5)
        assert r.status_code == 401
        _error(r, "/v1/warriors")
        assert r.headers["WWW-Authenticate"].lower().startswith("bearer")


def test_400_for_a_bad_page_size_or_token(sim: HermesSimulator) -> None:
    for params in ({"page_size": 0}, {"page_size": 1001}, {"page_token": "nonsense"}):
        r = requests.get(f"{sim.url}/v1/warriors", headers=AUTH, params=params, timeout=5)
        assert r.status_code == 400
        _error(r, "/v1/warriors")


def test_404_for_an_unknown_id_at_every_level(sim: HermesSimulator) -> None:
    ids = real_ids(sim.universe)
    for template in PATHS:
        for name in re.findall(r"\{(\w+)\}", template):
            r = requests.get(sim.url + fill(template, {**ids, name: "no such id"}), headers=AUTH, timeout=5)
            assert r.status_code == 404, (template, name)
            _error(r, template)


@pytest.mark.parametrize("fmt", ["seconds", "http-date"])
def test_429_carries_retry_after_in_a_contract_form(serve: Any, fmt: str) -> None:
    sim = serve(SimConfig(rate_limit=1, rate_burst=1, retry_after_format=fmt))
    with requests.Session() as s:
        s.headers.update(AUTH)
        statuses = [s.get(f"{sim.url}/v1/warriors", timeout=5) for _ in range(3)]
    limited = [r for r in statuses if r.status_code == 429]
    assert limited
    for r in limited:
        _error(r, "/v1/warriors")
        value = r.headers["Retry-After"]
        if fmt == "seconds":
            assert value.isdigit()
        else:
            assert parsedate_to_datetime(value).tzinfo is not None


def test_injected_5xx_and_429_are_statuses_of_the_contract(serve: Any) -> None:
    sim = serve(SimConfig(error_rate_5xx=0.8, error_rate_429=0.2, fault_seed=5))
    seen = set()
    with requests.Session() as s:
        s.headers.update(AUTH)
        for _ in range(60):
            r = s.get(f"{sim.url}/v1/warriors", timeout=5)
            _error(r, "/v1/warriors")
            seen.add(r.status_code)
    assert seen == {429, 500, 502, 503, 504}
