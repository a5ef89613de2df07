"""The Hermes client's bounds as environment settings: defaults, and bad values refused by name."""

from __future__ import annotations

from typing import Any

import pytest

from fanout_core import hermes
from fanout_core.errors import SettingsError
from fanout_core.settings import environment_from_json, environment_to_json, parse_environment


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        pytest.param({"hermes_max_pages": 0}, "hermes_max_pages must be between 1", id="pages-0"),
        pytest.param({"hermes_max_pages": 10_000_001}, "hermes_max_pages must be between", id="pages-huge"),
        pytest.param({"hermes_max_pages": 10.0}, "hermes_max_pages must be an integer", id="pages-float"),
        pytest.param({"hermes_max_pages": "10"}, "hermes_max_pages must be an integer", id="pages-string"),
        pytest.param({"hermes_max_pages": True}, "hermes_max_pages must be an integer", id="pages-bool"),
        pytest.param(
            {"hermes_max_items_per_list": 0}, "hermes_max_items_per_list must be between", id="items-0"
        ),
        pytest.param(
            {"hermes_max_items_per_list": 2.5},
            "hermes_max_items_per_list must be an integer",
            id="items-float",
        ),
        pytest.param(
            {"hermes_request_deadline_s": 0}, "hermes_request_deadline_s must be between", id="deadline-0"
        ),
        pytest.param(
            {"hermes_request_deadline_s": 901}, "hermes_request_deadline_s must be between", id="deadline-901"
        ),
        pytest.param(
            {"hermes_request_deadline_s": float("nan")},
            "hermes_request_deadline_s must be a number",
            id="nan",
        ),
        pytest.param(
            {"hermes_request_deadline_s": "60"},
            "hermes_request_deadline_s must be a number",
            id="deadline-string",
        ),
    ],
)
def test_a_bad_hermes_bound_is_refused_by_name(raw: dict[str, Any], fragment: str) -> None:
    with pytest.raises(SettingsError) as info:
        parse_environment("dev", raw)
    assert fragment in str(info.value)
    assert str(info.value).startswith("environments.dev.")


def test_the_defaults_are_the_clients() -> None:
    env = parse_environment("dev", {})
    assert env.hermes_max_pages == hermes.DEFAULT_MAX_PAGES == 10_000
    assert env.hermes_max_items_per_list == hermes.DEFAULT_MAX_ITEMS_PER_LIST == 1_000_000
    assert env.hermes_request_deadline_s == hermes.DEFAULT_REQUEST_DEADLINE_S == 60.0


def test_the_bounds_are_read_and_round_trip() -> None:
    raw = {"hermes_max_pages": 50, "hermes_max_items_per_list": 5000, "hermes_request_deadline_s": 12}
    env = parse_environment("dev", raw)
    assert (env.hermes_max_pages, env.hermes_max_items_per_list, env.hermes_request_deadline_s) == (
        50,
        5000,
        12.0,
    )
    assert environment_from_json("dev", environment_to_json(env)) == env


def test_a_client_built_from_the_settings_takes_them() -> None:
    env = parse_environment("dev", {"hermes_max_pages": 7, "hermes_request_deadline_s": 3})
    client = hermes.HermesClient(
        env.hermes_url,
        "tok",
        max_pages=env.hermes_max_pages,
        max_items_per_list=env.hermes_max_items_per_list,
        request_deadline_s=env.hermes_request_deadline_s,
    )
    assert (client.max_pages, client.request_deadline_s) == (7, 3.0)
