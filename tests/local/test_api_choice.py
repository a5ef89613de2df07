"""Which description a run used: recorded for a described API, checked by every later command."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from fanout.api_choice import (
    auth_parts,
    base_url_for,
    check_recorded_api,
    load_api,
    record_api,
    record_key,
    secret_for,
    table_of,
)
from fanout.api_probe import columns_block, guess_type
from fanout_core.api_description import builtin, load
from fanout_core.errors import SettingsError
from fanout_core.stages import STAGES
from fanout_core.storage import LocalDirStorage

APIS = Path(__file__).resolve().parents[1] / "fixtures" / "apis"


def test_a_hermes_run_records_nothing(tmp_path: Path):
    store = LocalDirStorage(tmp_path)
    record_api(store, STAGES, "r1")
    assert list(store.list("")) == []


def test_a_described_run_is_refused_by_another_description(tmp_path: Path):
    store = LocalDirStorage(tmp_path)
    two = table_of(load(APIS / "two_level.yaml"))
    record_api(store, two, "r1")
    check_recorded_api(store, two, "r1")  # its own: accepted
    edited = table_of(dataclasses.replace(load(APIS / "two_level.yaml"), health="/elsewhere"))
    with pytest.raises(SettingsError, match="crawled with the API description 'shops'"):
        check_recorded_api(store, edited, "r1")


def test_a_described_run_sharing_hermes_prefixes_is_refused_without_api(tmp_path: Path):
    renamed = dataclasses.replace(builtin(), name="hermes-copy")
    store = LocalDirStorage(tmp_path)
    record_api(store, table_of(renamed), "r1")
    assert record_key(STAGES, "r1") in set(store.list(""))
    with pytest.raises(SettingsError, match="drop --api"):
        check_recorded_api(store, STAGES, "r1")


def test_the_builtin_description_read_from_its_file_is_the_products_table():
    assert table_of(load_api(str(Path(builtin().source)))) is STAGES


def test_a_missing_secret_names_the_descriptions_variable():
    with pytest.raises(SettingsError, match=r"^set BUILDS_CREDENTIALS to the Builds user:password$"):
        secret_for(load(APIS / "five_level.yaml"), {})
    with pytest.raises(SettingsError, match=r"^set HERMES_TOKEN to the Hermes bearer token$"):
        secret_for(builtin(), {})


def test_a_described_api_without_base_url_needs_api_url():
    with pytest.raises(SettingsError, match="give --api-url"):
        base_url_for(load(APIS / "two_level.yaml"), None, "http://settings")
    assert base_url_for(builtin(), None, "http://settings") == "http://settings"


def test_a_query_key_goes_in_the_query_and_basic_auth_is_packed():
    assert auth_parts(load(APIS / "two_level.yaml"), "k1") == ({}, {"api_key": "k1"})
    headers, params = auth_parts(load(APIS / "five_level.yaml"), "u:p")
    assert headers == {"Authorization": "Basic dTpw"} and params == {}


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("2024-01-02T03:04:05Z", "timestamp"),
        ("2024-01-02T03:04:05.123+02:00", "timestamp"),
        ("2024-01-02", "date"),
        (3, "int64"),
        (2.5, "double"),
        (True, "boolean"),
        ({"a": 1}, "json"),
        ([1], "json"),
        ("x", "string"),
        (None, None),
    ],
)
def test_a_json_value_guesses_its_column_type(value, kind):
    assert guess_type(value) == kind


def test_the_columns_block_marks_null_and_absent_fields():
    block = columns_block([{"id": 1, "Note": None, "amount": 1}, {"id": 2, "amount": 2.5}])
    assert block == [
        "columns:",
        "  - {name: id, type: int64}",
        '  - {name: note, type: string, source: "Note", nullable: true, required: false}',
        "  - {name: amount, type: double}",
    ]


def test_hermes_read_with_another_base_url_is_still_the_products_table():
    assert table_of(dataclasses.replace(builtin(), base_url="https://elsewhere", source="x.yaml")) is STAGES


def test_hermes_with_a_renamed_prefix_is_a_table_of_its_own():
    level = dataclasses.replace(builtin().levels[0], prefix="w/")
    renamed = dataclasses.replace(builtin(), levels=(level, *builtin().levels[1:]))
    assert table_of(renamed).first.input_prefix == "w/"


def test_a_described_runs_settings_leave_out_hermes_stages_but_refuse_unknown_ones():
    from fanout.settings_files import parse_for

    raw = {"stages": {"warriors": {"reserved_concurrency": 3}, "builds": {"reserved_concurrency": 7}}}
    names = ("orgs", "teams", "projects", "builds")
    settings = parse_for("x", raw, names)
    assert set(settings.stages) == set(names) and settings.stage("builds").reserved_concurrency == 7
    with pytest.raises(SettingsError, match="unknown stage"):
        parse_for("x", {"stages": {"bilds": {}}}, names)
