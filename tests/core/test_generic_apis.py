"""The core runs any described API: a 2-level one (one stage that reads the seed and writes
Parquet) and a 5-level one, through ``run_task`` on a local bucket with an API made of dicts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fanout_core.api_description import load
from fanout_core.bodies import dumps, manifest_body
from fanout_core.errors import PermanentError, TransientError
from fanout_core.failures import FailureRecord
from fanout_core.pipeline import TaskContext, run_task
from fanout_core.settings import parse_environment
from fanout_core.stages import StageTable, table_for
from fanout_core.storage import LocalDirStorage

APIS = Path(__file__).parents[1] / "fixtures" / "apis"
RUN = "r1"
FETCHED_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class FakeApi:
    """The core's ``list(level, ids)`` protocol over a dict ``(level, ids) -> items``; an id
    in ``not_found`` answers a permanent 404, like the real client."""

    def __init__(
        self, items: dict[tuple[str, tuple[str, ...]], list[Any]], not_found: frozenset[str] = frozenset()
    ):
        self.items = items
        self.not_found = not_found
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    def list(self, level_name: str, ids: tuple[str, ...]) -> Iterator[dict[str, Any]]:
        self.calls.append((level_name, ids))
        if set(ids) & self.not_found:
            raise PermanentError(f"{level_name} {ids!r}: 404", status=404)
        yield from (dict(i) if isinstance(i, dict) else i for i in self.items.get((level_name, ids), []))


def context(store: LocalDirStorage, table: StageTable, api: FakeApi) -> TaskContext:
    raw = {"hermes_url": "http://127.0.0.1:9", "stages": {n: {"units_per_task": 2} for n in table.names}}
    settings = parse_environment("test", raw, table.names)
    return TaskContext(storage=store, client=api, settings=settings, table=table, clock=lambda: FETCHED_AT)


def seed(store: LocalDirStorage, table: StageTable, ids: list[Any] | None) -> str:
    key = table.seed(RUN).key
    store.put(key, manifest_body(ids, table.api))
    return key


def tasks(store: LocalDirStorage, prefix: str) -> dict[str, dict[str, Any]]:
    return {k: json.loads(store.get(k)) for k in store.list(prefix) if k.endswith(".json")}


# --- two levels: shops -> sales --------------------------------------------------------------


@pytest.fixture
def shops() -> StageTable:
    return table_for(load(APIS / "two_level.yaml"))


SHOPS = [{"id": 3, "region": "eu", "name": "c"}, {"id": 1, "region": "us"}, {"id": 2, "region": "eu"}]


def test_a_two_level_seed_lists_its_units_and_writes_parts_of_its_own_stage(store, shops) -> None:
    api = FakeApi({("shops", ()): SHOPS})
    run_task(seed(store, shops, None), context(store, shops, api))
    assert tasks(store, "shops/run=r1/") == {
        "shops/run=r1/part-00000.json": {
            "run_id": RUN,
            "shops": [{"region": "us", "shop_id": "1"}, {"region": "eu", "shop_id": "2"}],
        },
        "shops/run=r1/part-00001.json": {"run_id": RUN, "shops": [{"region": "eu", "shop_id": "3"}]},
    }


def test_a_two_level_manifest_of_integer_ids_reads_the_carried_fields_from_the_listing(store, shops) -> None:
    """A named unit of a level that keeps fields is listed to read them; a name the API does
    not list fails as not found, and the others go on."""
    api = FakeApi({("shops", ()): SHOPS})
    key = seed(store, shops, [2, 9])
    result = run_task(key, context(store, shops, api))
    assert tasks(store, "shops/run=r1/") == {
        "shops/run=r1/part-00000.json": {"run_id": RUN, "shops": [{"region": "eu", "shop_id": "2"}]}
    }
    assert [(u["shop_id"], u["error_kind"]) for u in result.failed_units] == [("9", "not_found")]
    record = FailureRecord.from_bytes(store.get(f"failed/{key}"))
    assert record.units[0]["shop_id"] == "9"


def test_a_two_level_stage_is_the_leaf_it_lists_rows_under_each_unit(store, shops) -> None:
    """The one stage lists the leaf level (sales) under each of its units; a unit whose list
    fails for good is a failed unit naming its id and carried field, with no file."""
    api = FakeApi({("shops", ()): SHOPS[1:2]}, not_found=frozenset({"1"}))
    ctx = context(store, shops, api)
    run_task(seed(store, shops, None), ctx)
    (part,) = tasks(store, "shops/run=r1/")
    result = run_task(part, ctx)
    assert api.calls == [("shops", ()), ("sales", ("1",))]
    assert [(u["shop_id"], u["region"], u["status"]) for u in result.failed_units] == [("1", "us", 404)]
    assert list(store.list("data/")) == []


def test_an_integer_id_given_as_a_string_is_a_broken_listing(store, shops) -> None:
    api = FakeApi({("shops", ()): [{"id": "1", "region": "us"}]})
    with pytest.raises(TransientError, match="no integer 'id'"):
        run_task(seed(store, shops, None), context(store, shops, api))


def test_an_item_without_its_carried_field_is_a_broken_listing(store, shops) -> None:
    api = FakeApi({("shops", ()): [{"id": 1}]})
    with pytest.raises(TransientError, match="no valid 'region'"):
        run_task(seed(store, shops, None), context(store, shops, api))


# --- five levels: orgs -> teams -> projects -> builds -> steps ---------------------------------


@pytest.fixture
def builds() -> StageTable:
    return table_for(load(APIS / "five_level.yaml"))


FIVE = {
    ("orgs", ()): [{"slug": "acme"}],
    ("teams", ("acme",)): [{"id": 7, "name": "Core"}],
    ("projects", ("acme", "7")): [{"key": "P 1", "title": "Proj"}],
    ("builds", ("acme", "7", "P 1")): [{"number": 12, "branch": "main"}, {"number": 3, "branch": "dev"}],
}


def drive(store: LocalDirStorage, ctx: TaskContext, key: str) -> None:
    """Run a task and every task it creates, depth first, until none is left."""
    pending = [key]
    while pending:
        run_task(pending.pop(), ctx)
        pending = [
            k
            for stage in ctx.table
            for k in store.list(stage.run_prefix(RUN))
            if k.endswith(".json") and not store.exists(f"done/{k}")
        ]


def test_five_levels_fan_out_with_each_level_s_folder_ids_and_carried_fields(store, builds) -> None:
    api = FakeApi(FIVE, not_found=frozenset({"12", "3"}))  # the leaf's lists: no rows to write
    drive(store, context(store, builds, api), seed(store, builds, None))
    assert tasks(store, "orgs/run=r1/") == {"orgs/run=r1/part-00000.json": {"orgs": ["acme"], "run_id": RUN}}
    assert tasks(store, "teams/") == {
        "teams/run=r1/org=acme/part-00000.json": {
            "run_id": RUN,
            "slug": "acme",
            "teams": [{"team_id": "7", "team_name": "Core"}],
        }
    }
    assert tasks(store, "projects/") == {
        "projects/run=r1/org=acme/team=7/part-00000.json": {
            "run_id": RUN,
            "slug": "acme",
            "team_id": "7",
            "team_name": "Core",
            "projects": [{"project_key": "P 1", "title": "Proj"}],
        }
    }
    # The project's kept title stays with the project; the team's carried name goes down.
    assert tasks(store, "builds/") == {
        "builds/run=r1/org=acme/team=7/project=P%201/part-00000.json": {
            "run_id": RUN,
            "slug": "acme",
            "team_id": "7",
            "team_name": "Core",
            "project_key": "P 1",
            "builds": [{"branch": "main", "build_number": "12"}, {"branch": "dev", "build_number": "3"}],
        }
    }
    key = "builds/run=r1/org=acme/team=7/project=P%201/part-00000.json"
    record = FailureRecord.from_bytes(store.get(f"failed/{key}"))
    assert sorted((u["build_number"], u["branch"], u["team_name"]) for u in record.units) == [
        ("12", "main", "Core"),
        ("3", "dev", "Core"),
    ]
    assert api.calls[-2:] == [
        ("steps", ("acme", "7", "P 1", "12")),
        ("steps", ("acme", "7", "P 1", "3")),
    ]


def test_a_five_level_body_reads_back_to_the_bytes_it_was_written_as(store, builds) -> None:
    api = FakeApi(FIVE, not_found=frozenset({"12", "3"}))
    drive(store, context(store, builds, api), seed(store, builds, None))
    for stage in builds:
        for key in store.list(stage.run_prefix(RUN)):
            raw = store.get(key)
            assert stage.body.from_bytes(raw).to_bytes() == raw == dumps(json.loads(raw))
