"""The stage table made from an API description: Hermes' is today's table, any other
description gets one stage per level but the last, and every table pickles."""

from __future__ import annotations

import pickle
from pathlib import Path

from fanout_core.api_description import BUILTIN_DIR, DEFAULT_API, load
from fanout_core.compaction import sort_key
from fanout_core.fan_out import fan_out
from fanout_core.records import write_records
from fanout_core.stages import STAGES, table_for

APIS = Path(__file__).parents[1] / "fixtures" / "apis"


def test_the_bundled_json_of_the_builtin_description_is_its_yaml() -> None:
    """The Lambda bundle reads the JSON (no YAML parser there): it must say what the YAML says."""
    assert (BUILTIN_DIR / "hermes.json").read_bytes() == load(DEFAULT_API).to_json() + b"\n"


def test_the_builtin_table_is_hermes_three_stages_as_before() -> None:
    assert [(s.name, s.input_prefix, s.levels) for s in STAGES] == [
        ("warriors", "amazon_warriors/", ()),
        ("troops", "troops/", ("warrior",)),
        ("data_groups", "data_groups/", ("warrior", "troop")),
    ]
    assert [s.child.name for s in STAGES] == ["troops", "data_groups", "records"]
    assert [s.work for s in STAGES] == [fan_out, fan_out, write_records]
    assert [s.function_id for s in STAGES] == ["Warriors", "Troops", "DataGroups"]


def test_a_two_level_table_has_one_stage_that_seeds_and_writes_parquet() -> None:
    table = table_for(load(APIS / "two_level.yaml"))
    (stage,) = table
    assert table.first is stage is table.leaf
    assert (stage.name, stage.input_prefix, stage.levels, stage.child.name) == (
        "shops",
        "shops/",
        (),
        "sales",
    )
    assert stage.writes_parquet


def test_a_five_level_table_has_four_stages_whose_folders_are_the_levels_above() -> None:
    table = table_for(load(APIS / "five_level.yaml"))
    assert [s.levels for s in table] == [(), ("org",), ("org", "team"), ("org", "team", "project")]
    assert [s.writes_parquet for s in table] == [False, False, False, True]


def test_a_table_pickles_with_its_description_for_worker_processes() -> None:
    table = table_for(load(APIS / "five_level.yaml"))
    copy = pickle.loads(pickle.dumps(table))
    assert copy.names == table.names
    assert copy.api.levels == table.api.levels
    assert [s.body.level for s in copy] == [s.body.level for s in table]


def test_compaction_sorts_hermes_rows_by_time_then_each_level_s_id() -> None:
    assert sort_key(STAGES.api) == ["ts", "warrior_id", "troop_id", "data_group_id"]


def test_compaction_sorts_a_described_api_s_rows_by_its_first_timestamp_then_its_ids() -> None:
    assert sort_key(load(APIS / "five_level.yaml")) == [
        "started_at",
        "slug",
        "team_id",
        "project_key",
        "build_number",
    ]
    assert sort_key(load(APIS / "two_level.yaml")) == ["sold_at", "shop_id"]
