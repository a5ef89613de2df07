"""The simulator serves any described API, and its truth is what it serves.

Each walk is a plain `requests` crawler (described_walk.py) that follows the description's
pagination, auth and items paths; it must read back exactly the truth's rows.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests

from fanout.simulator import (
    HermesSimulator,
    SimConfig,
    Universe,
    add_serve_arguments,
    config_from_args,
    run_in_subprocess,
    serve_from_args,
)
from fanout.simulator.described import DescribedUniverse
from fanout.simulator.truth import (
    DEV_BASIC_SECRET,
    DEV_SECRET,
    compare_rows,
    expected_rows,
    is_hermes,
    row_columns,
    rows_from_frame,
    simulator_config,
    universe_for,
)
from fanout_core.api_description import Auth, Pagination, Total, builtin, load

from .conftest import AUTH, ROOT, data_path, seg
from .described_walk import Walker, credentials

TWO = load(ROOT / "tests/fixtures/apis/two_level.yaml")
FIVE = load(ROOT / "tests/fixtures/apis/five_level.yaml")
HERMES_FILE = ROOT / "lambdas/fanout_core/apis/hermes.yaml"


@pytest.fixture
def serve_api() -> Iterator[Any]:
    started: list[HermesSimulator] = []

    def _serve(api: Any, config: SimConfig) -> HermesSimulator:
        sim = HermesSimulator(config, api=api)
        sim.start()
        started.append(sim)
        return sim

    yield _serve
    for sim in started:
        sim.stop()


def _walk(serve_api: Any, api: Any, config: SimConfig, **kw: Any) -> tuple[list[tuple[Any, ...]], Walker]:
    sim = serve_api(api, config)
    walker = Walker(api, sim.url, config.token)
    return walker.crawl(**kw), walker


def _paginated(api: Any, pagination: Pagination) -> Any:
    return dataclasses.replace(
        api, levels=tuple(dataclasses.replace(lv, pagination=pagination) for lv in api.levels)
    )


# ---- the two test descriptions, walked ---------------------------------------------------------


@pytest.mark.parametrize("api", [TWO, FIVE], ids=["two_level", "five_level"])
def test_a_walk_of_the_served_tree_reads_exactly_the_truths_rows(serve_api: Any, api: Any) -> None:
    config = simulator_config(api, "tiny")
    rows, walker = _walk(serve_api, api, config)
    assert rows == list(expected_rows(api, config)) and rows
    assert walker.calls == universe_for(api, config).expected_calls()


@pytest.mark.parametrize("api", [TWO, FIVE], ids=["two_level", "five_level"])
def test_awkward_ids_are_served_and_read_back_as_the_truth_has_them(serve_api: Any, api: Any) -> None:
    config = simulator_config(api, "tiny", awkward_ids=True)
    rows, _ = _walk(serve_api, api, config)
    assert rows == list(expected_rows(api, config))
    ids = {r[0] for r in rows} | {r[3] for r in rows if api is FIVE}
    assert any(not i.isascii() or " " in i for i in ids) if api is FIVE else "9007199254740993" in ids


def test_dot_and_long_string_ids_are_served_when_encoded(serve_api: Any) -> None:
    for flags in ({"dot_ids": True}, {"long_ids": True}):
        config = simulator_config(FIVE, "tiny", **flags)
        rows, _ = _walk(serve_api, FIVE, config)
        assert rows == list(expected_rows(FIVE, config))
        assert {".", ".."} <= {r[0] for r in rows} if "dot_ids" in flags else len(rows[0][0]) == 128


def test_every_column_type_nulls_and_absent_fields_and_kept_extras_occur_in_the_demo_tree() -> None:
    rows = list(expected_rows(TWO, simulator_config(TWO, "demo")))
    cols = row_columns(TWO)
    by = {name: [r[i] for r in rows] for i, name in enumerate(cols)}
    assert {type(v) for v in by["sale_id"]} == {int} and max(by["sale_id"]) > 2**53
    assert {type(v) for v in by["amount"]} == {float} and {type(v) for v in by["paid"]} == {bool}
    assert None in by["note"] and None in by["meta"] and None in by["extra"]
    assert any(v is not None for v in by["extra"])
    assert len({m for m in by["meta"] if m is not None}) > 3


def test_a_five_level_demo_tree_stays_a_few_hundred_calls() -> None:
    assert 100 < universe_for(FIVE, simulator_config(FIVE, "demo")).expected_calls() < 500


def test_the_truth_of_a_manifest_holds_only_its_first_level_ids(serve_api: Any) -> None:
    config = simulator_config(FIVE, "tiny")
    chosen = ["org-01"]
    rows, _ = _walk(serve_api, FIVE, config, first_ids=chosen)
    assert rows == list(expected_rows(FIVE, config, first_ids=chosen))
    assert {r[0] for r in rows} == {"org-01"}


# ---- every pagination style --------------------------------------------------------------------

STYLES = {
    "cursor": Pagination(
        type="cursor", page_size=4, page_size_param="n", cursor_path=("meta", "next"), cursor_param="after"
    ),
    "next_url": Pagination(
        type="next_url", page_size=4, page_size_param="n", next_url_path=("links", "next")
    ),
    "link_header": Pagination(type="link_header", page_size=4, page_size_param="per_page"),
    "offset": Pagination(type="offset", page_size=4, page_size_param="limit", offset_param="skip"),
    "offset_total": Pagination(
        type="offset",
        page_size=4,
        page_size_param="limit",
        offset_param="skip",
        total=Total(header="X-Total"),
    ),
    "page_number": Pagination(type="page_number", page_size=4, page_size_param="size", page_param="page"),
    "page_number_0": Pagination(
        type="page_number", page_size=4, page_size_param="size", page_param="p", first_page=0
    ),
    "single_page": Pagination(type="single_page"),
}


@pytest.mark.parametrize("style", sorted(STYLES))
def test_each_pagination_style_walks_to_exactly_the_truth(serve_api: Any, style: str) -> None:
    api = _paginated(TWO, STYLES[style])
    config = simulator_config(api, "tiny")
    rows, walker = _walk(serve_api, api, config)
    assert rows == list(expected_rows(api, config))
    if style != "offset_total":  # the walker does not stop on the total
        assert walker.calls == universe_for(api, config).expected_calls()


def test_a_next_url_is_absolute_then_relative_and_never_carries_a_query_key(serve_api: Any) -> None:
    api = _paginated(TWO, STYLES["next_url"])
    config = simulator_config(api, None, level_sizes=(13, 1))
    sim = serve_api(api, config)
    url, params = f"{sim.url}/shops", {"n": 4, "api_key": config.token}
    first = requests.get(url, params=params, timeout=5).json()["links"]["next"]
    second = requests.get(first, params={"api_key": config.token}, timeout=5).json()["links"]["next"]
    assert first.startswith(sim.url + "/shops?") and second.startswith("/shops?")
    assert config.token not in first + second and "n=4" in second


def test_an_offset_list_reports_its_total_where_the_description_says(serve_api: Any) -> None:
    api = _paginated(TWO, dataclasses.replace(STYLES["offset"], total=Total(path=("meta", "count"))))
    config = simulator_config(api, None, level_sizes=(9, 1))
    sim = serve_api(api, config)
    body = requests.get(f"{sim.url}/shops", params={"limit": 4, "api_key": config.token}, timeout=5).json()
    assert body["meta"]["count"] == 9 and len(body["data"]) == 4


def test_a_tampered_cursor_is_refused_with_400(serve_api: Any) -> None:
    api = _paginated(TWO, STYLES["cursor"])
    sim = serve_api(api, simulator_config(api, "tiny"))
    r = requests.get(f"{sim.url}/shops", params={"after": "hp1+AAAA", "api_key": DEV_SECRET}, timeout=5)
    assert r.status_code == 400 and r.json()["error"] == "bad_request"


# ---- auth, health, fixed query, 404 ------------------------------------------------------------

AUTHS = {
    "bearer": Auth("bearer", "X_TOKEN"),
    "api_key_header": Auth("api_key", "X_TOKEN", "header", "X-Api-Key"),
    "api_key_query": Auth("api_key", "X_TOKEN", "query", "key"),
    "basic": Auth("basic", "X_TOKEN"),
}


@pytest.mark.parametrize("kind", sorted(AUTHS))
def test_a_call_without_the_secret_is_refused_with_401_and_with_it_served(serve_api: Any, kind: str) -> None:
    api = dataclasses.replace(TWO, auth=AUTHS[kind])
    config = simulator_config(api, "tiny", token="u:s3cret" if kind == "basic" else "s3cret")
    sim = serve_api(api, config)
    headers, params = credentials(api, config.token)
    wrong_headers, wrong_params = credentials(api, "u:wrong" if kind == "basic" else "wrong")
    url = f"{sim.url}/shops"
    assert requests.get(url, timeout=5).status_code == 401
    assert requests.get(url, headers=wrong_headers, params=wrong_params, timeout=5).status_code == 401
    assert requests.get(url, headers=headers, params=params, timeout=5).status_code == 200
    assert requests.get(f"{sim.url}/health", timeout=5).json() == {"status": "ok"}


def test_an_api_without_auth_serves_anyone(serve_api: Any) -> None:
    api = dataclasses.replace(TWO, auth=Auth())
    sim = serve_api(api, simulator_config(api, "tiny"))
    assert requests.get(f"{sim.url}/shops", timeout=5).status_code == 200


def test_the_secret_comes_from_the_descriptions_variable_else_a_dev_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SHOPS_API_KEY", raising=False)
    monkeypatch.delenv("BUILDS_CREDENTIALS", raising=False)
    assert simulator_config(TWO).token == DEV_SECRET
    assert simulator_config(FIVE).token == DEV_BASIC_SECRET
    monkeypatch.setenv("SHOPS_API_KEY", "from-env")
    assert simulator_config(TWO).token == "from-env"


def test_a_query_key_is_masked_in_the_recorded_requests(serve_api: Any) -> None:
    config = simulator_config(TWO, "tiny", token="very-secret-key")
    sim = serve_api(TWO, config)
    requests.get(f"{sim.url}/shops", params={"api_key": config.token, "limit": 25}, timeout=5)
    (line,) = sim.stats.recent_requests
    assert "very-secret-key" not in line and "api_key=***" in line


def test_a_call_missing_a_fixed_query_parameter_is_refused_with_400(serve_api: Any) -> None:
    config = simulator_config(FIVE, "tiny")
    sim = serve_api(FIVE, config)
    org = universe_for(FIVE, config)
    assert isinstance(org, DescribedUniverse)
    url = f"{sim.url}/api/orgs/org-00/teams/102/projects/project-00-00-00/builds"
    auth = {"Authorization": "Basic " + base64.b64encode(config.token.encode()).decode()}
    assert requests.get(url, headers=auth, timeout=5).status_code == 400
    assert requests.get(url, headers=auth, params={"state": "running"}, timeout=5).status_code == 400
    assert requests.get(url, headers=auth, params={"state": "finished"}, timeout=5).status_code == 200


def test_unknown_routes_and_ids_answer_404(serve_api: Any) -> None:
    config = simulator_config(TWO, "tiny")
    sim = serve_api(TWO, config)
    key = {"api_key": config.token}
    assert requests.get(f"{sim.url}/shops/999999/sales", params=key, timeout=5).status_code == 404
    assert requests.get(f"{sim.url}/nowhere", params=key, timeout=5).status_code == 404


def test_a_not_found_unit_answers_404_and_the_truth_leaves_it_out(serve_api: Any) -> None:
    config = simulator_config(FIVE, "tiny", not_found_ids=frozenset({"project-00-01-00"}))
    universe = universe_for(FIVE, config)
    assert isinstance(universe, DescribedUniverse)
    assert universe.expected_failures() == {("org-00", "103", "project-00-01-00"): "not_found"}
    rows = list(expected_rows(FIVE, config))
    assert rows and all(r[3] != "project-00-01-00" for r in rows)
    sim = serve_api(FIVE, config)
    walker = Walker(FIVE, sim.url, config.token)
    with pytest.raises(requests.HTTPError, match="404"):
        walker.list(FIVE.levels[3], {"orgs": "org-00", "teams": "103", "projects": "project-00-01-00"})


def test_injected_faults_apply_to_a_described_api(serve_api: Any) -> None:
    config = simulator_config(TWO, "tiny", refuse_share=0.5)
    sim = serve_api(TWO, config)
    codes = [
        requests.get(f"{sim.url}/shops", params={"api_key": config.token}, timeout=5).status_code
        for _ in range(4)
    ]
    assert codes == [200, 429, 200, 429] and sim.stats.refused_share == 2
    assert requests.get(f"{sim.url}/health", timeout=5).status_code == 200


def test_hermes_only_hostile_modes_are_refused_for_a_described_api() -> None:
    with pytest.raises(ValueError, match="duplicate_ids is simulated for Hermes' description only"):
        DescribedUniverse(TWO, SimConfig(duplicate_ids=True))


def test_the_same_seed_gives_the_same_tree_and_another_seed_another() -> None:
    rows = list(expected_rows(FIVE, simulator_config(FIVE, "tiny")))
    assert rows == list(expected_rows(FIVE, simulator_config(FIVE, "tiny")))
    assert rows != list(expected_rows(FIVE, simulator_config(FIVE, "tiny", seed=8)))


# ---- Hermes unchanged --------------------------------------------------------------------------


def test_hermes_description_is_served_as_todays_hermes_byte_for_byte(serve_api: Any) -> None:
    api = load(HERMES_FILE)
    assert is_hermes(api) and is_hermes(dataclasses.replace(api, base_url="http://elsewhere:1"))
    config = SimConfig.from_size("tiny", awkward_ids=True)
    described, plain = serve_api(api, config), serve_api(None, config)
    assert isinstance(plain.universe, Universe)
    w, t, g = next(plain.universe.iter_group_paths())
    for path in ("/v1/warriors", f"/v1/warriors/{seg(w)}/troops", data_path(w, t, g), "/v1/health"):
        a = requests.get(described.url + path, headers=AUTH, params={"page_size": 2}, timeout=5)
        b = requests.get(plain.url + path, headers=AUTH, params={"page_size": 2}, timeout=5)
        assert (a.status_code, a.content) == (b.status_code, b.content)


def test_hermes_truth_in_the_generic_form_is_todays_rows_normalized() -> None:
    config = SimConfig.from_size("tiny")
    rows = list(expected_rows(builtin(), config))
    assert row_columns(builtin()) == (
        "warrior_id",
        "troop_id",
        "service",
        "data_group_id",
        "ts",
        "metric",
        "value",
        "unit",
    )
    assert len(rows) == len(list(universe_for(None, config).expected_rows())) and isinstance(rows[0][4], int)


# ---- comparing a run's rows with the truth -----------------------------------------------------


def test_rows_read_back_from_a_typed_frame_compare_exact_with_the_truth() -> None:
    config = simulator_config(TWO, "tiny")
    truth = list(expected_rows(TWO, config))
    cols = row_columns(TWO)
    frame = pd.DataFrame(truth, columns=list(cols))
    frame["sold_at"] = pd.to_datetime(frame["sold_at"], unit="us", utc=True)
    frame["day"] = pd.to_datetime(frame["day"]).dt.date
    frame["shop_id"] = frame["shop_id"].astype(str)
    frame.insert(0, "run_id", "r1")
    frame["fetched_at"] = pd.Timestamp("2026-12-01", tz="UTC")
    found = rows_from_frame(TWO, frame)
    assert compare_rows(found, truth).exact
    assert not compare_rows(found[1:], truth).exact


# ---- the serve command and the subprocess ------------------------------------------------------


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(argv)


def test_serve_with_api_scales_the_preset_to_the_descriptions_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUILDS_CREDENTIALS", "ci:pw")
    args = _parse(["--api", str(ROOT / "tests/fixtures/apis/five_level.yaml"), "--size", "demo"])
    config = config_from_args(args, FIVE)
    assert config.level_sizes == (3, 3, 3, 4, 12) and config.token == "ci:pw"
    args = _parse(["--level-sizes", "2,3", "--token", "t"])
    assert config_from_args(args, TWO).level_sizes == (2, 3)


def test_serve_with_api_refuses_hermes_counts_and_sizes_of_another_depth() -> None:
    with pytest.raises(ValueError, match="--warriors counts Hermes' levels"):
        config_from_args(_parse(["--warriors", "3"]), TWO)
    with pytest.raises(ValueError, match="level_sizes names 3 levels; this API has 2"):
        config_from_args(_parse(["--level-sizes", "1,2,3"]), TWO)


def test_a_described_api_served_from_a_subprocess_walks_to_the_truth(tmp_path: Path) -> None:
    config = simulator_config(TWO, "tiny")
    with run_in_subprocess(config, api=TWO) as url:
        rows = Walker(TWO, url, config.token).crawl()
    assert rows == list(expected_rows(TWO, config))


# ---- hostile modes on a described API ----------------------------------------------------------


@pytest.mark.parametrize("api", [TWO, FIVE], ids=["two_level", "five_level"])
def test_bad_records_break_the_first_leaf_lists_and_the_truth_fails_exactly_those(
    serve_api: Any, api: Any
) -> None:
    config = simulator_config(api, "tiny", bad_records=True)
    universe = universe_for(api, config)
    assert isinstance(universe, DescribedUniverse)
    failures = universe.expected_failures()
    kinds = {why.split(":")[1] for why in failures.values()}
    assert kinds == {"missing_field", "wrong_type", "nan_value", "huge_int"} | (
        {"unnamed_field"} if api is FIVE else set()
    )
    sim = serve_api(api, config)
    walker = Walker(api, sim.url, config.token)
    rows = walker.crawl(skip_failing=True)
    assert rows == list(expected_rows(api, config))
    assert set(walker.failed) == set(failures)


def test_a_lower_case_timestamp_is_served_and_kept_by_the_truth(serve_api: Any) -> None:
    config = simulator_config(FIVE, "tiny", bad_records=True)
    universe = universe_for(FIVE, config)
    assert isinstance(universe, DescribedUniverse)
    (ids,) = [ids for ids, kind in universe.bad_record_lists().items() if kind == "lowercase_ts"]
    sim = serve_api(FIVE, config)
    walker = Walker(FIVE, sim.url, config.token)
    items = walker.list(FIVE.leaf, dict(zip([lv.name for lv in FIVE.stage_levels], ids, strict=True)))
    assert "t" in items[0]["started_at"] and not any(c.isupper() for c in items[0]["started_at"])
    assert walker.row(items[0]) in {r[6:] for r in expected_rows(FIVE, config)}


@pytest.mark.parametrize("mode", ["repeat", "cycle"])
def test_a_looping_list_never_ends_and_the_truth_fails_that_unit(serve_api: Any, mode: str) -> None:
    config = simulator_config(FIVE, "tiny", cursor_loop=mode)
    universe = universe_for(FIVE, config)
    assert isinstance(universe, DescribedUniverse)
    (looped,) = [ids for ids, why in universe.expected_failures().items() if why == "cursor_loop"]
    sim = serve_api(FIVE, config)
    walker = Walker(FIVE, sim.url, config.token)
    with pytest.raises(AssertionError):  # the walker refuses a next URL it followed before
        walker.list(FIVE.leaf, dict(zip([lv.name for lv in FIVE.stage_levels], looped, strict=True)))
    rows = walker.crawl(skip_failing=True)
    assert rows == list(expected_rows(FIVE, config)) and walker.failed == [looped]


def test_a_loop_on_a_list_without_tokens_is_refused() -> None:
    with pytest.raises(
        ValueError, match="cursor_loop needs a cursor, next_url, link_header list; sales is offset"
    ):
        DescribedUniverse(TWO, simulator_config(TWO, "tiny", cursor_loop="repeat"))


def test_fanout_hermes_serve_api_serves_the_description_and_says_so() -> None:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'lambdas'}", "SHOPS_API_KEY": "k3y"}
    argv = [sys.executable, "-m", "fanout", "hermes", "serve", "--port", "0", "--size", "tiny"]
    argv += ["--api", str(ROOT / "tests/fixtures/apis/two_level.yaml")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.fullmatch(
            r"shops simulator listening on (\S+) \(6 x 6 items per list, ~7 calls .*\)\n", line
        )
        assert match, line
        url = match.group(1)
        assert requests.get(f"{url}/shops", params={"api_key": "k3y"}, timeout=5).status_code == 200
        assert requests.get(f"{url}/shops", params={"api_key": DEV_SECRET}, timeout=5).status_code == 401
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_serve_with_an_unreadable_description_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "api.yaml"
    bad.write_text("name: x\nlevels: []\nrows: {columns: []}\n")
    assert serve_from_args(_parse(["--port", "0", "--api", str(bad)])) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hermes simulator: ") and "levels" in err


def test_a_hermes_shaped_description_that_is_not_hermes_is_served_by_the_generic_engine(
    serve_api: Any,
) -> None:
    api = dataclasses.replace(builtin(), name="lookalike")
    assert not is_hermes(api)
    config = simulator_config(api, "tiny", awkward_ids=True)
    rows, walker = _walk(serve_api, api, config)
    assert (
        rows == list(expected_rows(api, config))
        and walker.calls == universe_for(api, config).expected_calls()
    )


def test_nested_items_and_columns_are_nested_objects_and_listing_fields_are_names(serve_api: Any) -> None:
    shops = dataclasses.replace(
        TWO.levels[0],
        items=("result", "rows"),
        id_field="shop.id",
        carry=(dataclasses.replace(TWO.levels[0].carry[0], source="geo.region"),),
    )
    api = dataclasses.replace(
        TWO, levels=(shops, dataclasses.replace(TWO.levels[1], items=("result", "rows")))
    )
    config = simulator_config(api, "tiny")
    sim = serve_api(api, config)
    body = requests.get(f"{sim.url}/shops", params={"api_key": config.token, "limit": 2}, timeout=5).json()
    first = body["result"]["rows"][0]
    assert isinstance(first["shop.id"], int) and isinstance(first["geo.region"], str)
    shop = str(first["shop.id"])
    sales = requests.get(
        f"{sim.url}/shops/{shop}/sales", params={"api_key": config.token, "limit": 25}, timeout=5
    )
    assert all(isinstance(row["customer"]["name"], str) for row in sales.json()["result"]["rows"])
    assert Walker(api, sim.url, config.token).crawl() == list(expected_rows(api, config))


@pytest.mark.parametrize("size", ["0", "abc", "1" * 5000, "100000"])
def test_a_page_size_out_of_range_or_no_number_is_refused_with_400(serve_api: Any, size: str) -> None:
    config = simulator_config(TWO, "tiny")
    sim = serve_api(TWO, config)
    r = requests.get(f"{sim.url}/shops", params={"api_key": config.token, "limit": size}, timeout=5)
    assert r.status_code == 400 and "limit must be an integer" in r.json()["message"]
