"""The API description: loaded and checked whole, each error one line naming the field and its line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from fanout_core import api_description
from fanout_core.api_description import ApiDescriptionError
from fanout_core.output import COLUMNS

FIXTURES = Path(__file__).parents[1] / "fixtures" / "apis"

MINIMAL = """\
name: tiny
levels:
  - name: parents
    prefix: parents/
    path: /parents
    id: id
  - name: children
    path: /parents/{parents}/children
rows:
  columns:
    - {name: value, type: double}
"""


def _load_text(tmp_path: Path, text: str) -> api_description.ApiDescription:
    path = tmp_path / "api.yaml"
    path.write_text(text)
    return api_description.load(path)


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ApiDescriptionError) as info:
        _load_text(tmp_path, text)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_the_builtin_description_gives_the_hermes_columns_in_order() -> None:
    assert api_description.load().column_names() == COLUMNS


def test_the_builtin_description_names_the_hermes_prefixes_and_folders() -> None:
    desc = api_description.load()
    assert [lv.prefix for lv in desc.stage_levels] == ["amazon_warriors/", "troops/", "data_groups/"]
    assert [lv.folder for lv in desc.stage_levels] == ["warrior", "troop", "data_group"]


@pytest.mark.parametrize("name", ["two_level.yaml", "five_level.yaml", None])
def test_a_description_survives_its_bundle_json_unchanged(name: str | None) -> None:
    desc = api_description.load(FIXTURES / name if name else None)
    again = api_description.from_json(desc.to_json())
    assert dataclasses.replace(again, source="") == dataclasses.replace(desc, source="")


def test_a_minimal_description_loads(tmp_path: Path) -> None:
    desc = _load_text(tmp_path, MINIMAL)
    assert desc.column_names() == ("run_id", "id", "value", "fetched_at")
    assert desc.leaf.pagination.type == "single_page"


def test_an_unknown_type_names_the_field_and_its_line(tmp_path: Path) -> None:
    message = _error(tmp_path, MINIMAL.replace("type: double", "type: float"))
    assert "line 11" in message and "rows.columns[0].type" in message and "'float'" in message


def test_a_placeholder_naming_no_level_above_is_refused(tmp_path: Path) -> None:
    message = _error(tmp_path, MINIMAL.replace("{parents}", "{kids}"))
    assert "line 8" in message and "levels[1].path" in message


def test_a_repeated_key_is_refused_with_its_line(tmp_path: Path) -> None:
    message = _error(tmp_path, MINIMAL.replace("    id: id\n", "    id: id\n    id: other\n"))
    assert "line 7" in message and "'id' is given twice" in message


def test_a_level_above_the_leaf_needs_a_prefix(tmp_path: Path) -> None:
    message = _error(tmp_path, MINIMAL.replace("    prefix: parents/\n", ""))
    assert "levels[0].prefix" in message and "is required" in message


def test_a_column_named_like_an_id_is_refused(tmp_path: Path) -> None:
    message = _error(tmp_path, MINIMAL.replace("name: value", "name: id"))
    assert "rows.columns[0].name" in message and "already a column" in message


def test_one_level_is_too_few(tmp_path: Path) -> None:
    text = "name: x\nlevels:\n  - {name: a, path: /a}\nrows: {columns: [{name: v, type: string}]}\n"
    assert "levels" in _error(tmp_path, text)


def test_a_prefix_overlapping_the_output_is_refused(tmp_path: Path) -> None:
    message = _error(tmp_path, MINIMAL.replace("prefix: parents/", "prefix: data/"))
    assert "overlaps" in message


def test_offset_pagination_needs_a_page_size(tmp_path: Path) -> None:
    text = MINIMAL.replace("levels:", "pagination: {type: offset, offset_param: offset}\nlevels:")
    assert "page_size" in _error(tmp_path, text)


def test_api_key_auth_needs_where_and_under_which_name(tmp_path: Path) -> None:
    text = MINIMAL.replace("levels:", "auth: {type: api_key, env: KEY}\nlevels:")
    assert "auth.in" in _error(tmp_path, text)


def test_a_file_that_is_not_yaml_is_one_line(tmp_path: Path) -> None:
    assert "not valid YAML" in _error(tmp_path, "name: [unclosed\n")
