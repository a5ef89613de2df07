"""Task bodies: the manifest and each stage's task parse what the contract describes, reject
everything else with a message that says what is wrong, and serialise canonically."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from task_bodies import data_group, data_groups_task, troop, troops_task, warriors_part

from fanout_core.bodies import TaskBody, TaskFormat, chunks, dumps, manifest_body, parse_manifest
from fanout_core.errors import BadManifest, BadTask
from fanout_core.stages import STAGES

WARRIORS, TROOPS, DATA_GROUPS = (STAGES.named(n).body for n in ("warriors", "troops", "data_groups"))

AWKWARD = ("a b", "a+b", "a=b", "o'brien", "100%", "Ωμέγα", "戦士")


# --- the seed manifest -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "warriors"),
    [
        (b'{"warriors": ["w-1"]}', ("w-1",)),
        (b'{"warriors": ["w-2", "w-1"]}', ("w-2", "w-1")),
        (json.dumps({"warriors": list(AWKWARD)}).encode(), AWKWARD),
        (json.dumps({"warriors": list(AWKWARD)}, ensure_ascii=False).encode(), AWKWARD),
        (json.dumps({"warriors": ["x" * 128]}).encode(), ("x" * 128,)),
    ],
)
def test_parse_manifest_accepts_a_list_of_ids(body: bytes, warriors: tuple[str, ...]) -> None:
    assert parse_manifest(body).ids == warriors


def test_parse_manifest_accepts_all() -> None:
    assert parse_manifest(b'{"warriors": "all"}').ids is None


@pytest.mark.parametrize("warriors", [None, ["w-1"], list(AWKWARD)])
def test_manifest_body_round_trips_through_parse_manifest(warriors: list[str] | None) -> None:
    expected = None if warriors is None else tuple(warriors)
    assert parse_manifest(manifest_body(warriors)).ids == expected


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        pytest.param(b'{"warriors": ["w-1"', "not valid JSON", id="not-json"),
        pytest.param(b"", "not valid JSON", id="empty-body"),
        pytest.param(b'{"warriors": ["\xff\xfe"]}', "not UTF-8", id="not-utf8"),
        pytest.param(b'["w-1"]', "must be a JSON object, got list", id="top-level-list"),
        pytest.param(b'"all"', "must be a JSON object, got str", id="top-level-string"),
        pytest.param(b"{}", "lacks field(s) warriors", id="missing-warriors"),
        pytest.param(b'{"warriors": "all", "run": 1}', "unknown field(s) 'run'", id="extra-field"),
        pytest.param(b'{"Warriors": "all"}', "unknown field(s) 'Warriors'", id="misspelt-field"),
        pytest.param(b'{"warriors": []}', "empty list", id="empty-list"),
        pytest.param(b'{"warriors": [7]}', "warriors[0] must be a string, got int", id="int-id"),
        pytest.param(
            b'{"warriors": ["w", null]}', "warriors[1] must be a string, got NoneType", id="null-id"
        ),
        pytest.param(b'{"warriors": [["w"]]}', "must be a string, got list", id="list-id"),
        pytest.param(b'{"warriors": [""]}', "must be 1 to 128 characters, got 0", id="empty-id"),
        pytest.param(
            json.dumps({"warriors": ["x" * 129]}).encode(),
            "must be 1 to 128 characters, got 129",
            id="129-chars",
        ),
        pytest.param(b'{"warriors": ["a/b"]}', "'/'", id="slash"),
        pytest.param(b'{"warriors": ["a\\nb"]}', "control character", id="newline"),
        pytest.param(b'{"warriors": ["a\\u0000b"]}', "control character", id="nul"),
        pytest.param(b'{"warriors": ["a\\u007fb"]}', "control character", id="del"),
        pytest.param(b'{"warriors": ["a\\u0085b"]}', "control character", id="c1-next-line"),
        pytest.param(b'{"warriors": ["a\\ud800b"]}', "surrogate", id="lone-surrogate"),
        pytest.param(b'{"warriors": ["a", "b", "a"]}', "names warrior 'a' twice", id="duplicate"),
        pytest.param(b'{"warriors": "ALL"}', 'the string "all"', id="ALL"),
        pytest.param(b'{"warriors": "everyone"}', 'the string "all"', id="other-string"),
        pytest.param(b'{"warriors": null}', 'the string "all"', id="null"),
        pytest.param(b'{"warriors": {"w-1": true}}', 'the string "all"', id="object"),
    ],
)
def test_parse_manifest_rejects(body: bytes, fragment: str) -> None:
    with pytest.raises(BadManifest) as info:
        parse_manifest(body)
    assert fragment in str(info.value)


# --- stage task bodies -----------------------------------------------------------------------

TASKS = [
    pytest.param(warriors_part("r1", ("w-1", "w-2")), id="warriors-part"),
    pytest.param(warriors_part("r1", AWKWARD), id="warriors-part-awkward"),
    pytest.param(troops_task("r1", "w-1", (troop("t-1", "auth"), troop("t-2", "billing"))), id="troops"),
    pytest.param(
        troops_task("r1", "o'brien", tuple(troop(t, "svc " + t) for t in AWKWARD)), id="troops-awkward"
    ),
    pytest.param(
        data_groups_task("r1", "w", "t", "auth", (data_group("g-1", "metrics 1"),)), id="data-groups"
    ),
    pytest.param(
        data_groups_task("r1", "Ωμέγα", "a+b", "söz", tuple(data_group(g, g[::-1]) for g in AWKWARD)),
        id="data-groups-awkward",
    ),
]


@pytest.mark.parametrize("task", TASKS)
def test_task_body_round_trips(task: TaskBody) -> None:
    assert task.format.from_bytes(task.to_bytes()) == task


@pytest.mark.parametrize("task", TASKS)
def test_task_body_is_canonical_json(task: TaskBody) -> None:
    body = task.to_bytes()
    assert body == dumps(json.loads(body))


def test_task_body_keeps_identifiers_unescaped() -> None:
    body = warriors_part("r1", ("a+b", "戦士")).to_bytes()
    assert body == '{"run_id":"r1","warriors":["a+b","戦士"]}'.encode()


GOOD_DOCS: dict[TaskFormat, dict[str, object]] = {
    WARRIORS: {"run_id": "r1", "warriors": ["w"]},
    TROOPS: {"run_id": "r1", "warrior_id": "w", "troops": [{"troop_id": "t", "service": "s"}]},
    DATA_GROUPS: {
        "run_id": "r1",
        "warrior_id": "w",
        "troop_id": "t",
        "service": "s",
        "data_groups": [{"data_group_id": "g", "name": "n"}],
    },
}
LIST_FIELD = {WARRIORS: "warriors", TROOPS: "troops", DATA_GROUPS: "data_groups"}
TASK_TYPES = [WARRIORS, TROOPS, DATA_GROUPS]


@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_good_docs_of_the_garbage_table_do_parse(task_type: TaskFormat) -> None:
    # The rejection tables below each break exactly one thing of these documents.
    assert task_type.from_bytes(dumps(GOOD_DOCS[task_type])).to_bytes() == dumps(GOOD_DOCS[task_type])


@pytest.mark.parametrize("task_type", TASK_TYPES)
@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        pytest.param(b"", "not valid JSON", id="empty"),
        pytest.param(b"\x00\x01garbage", "not valid JSON", id="binary"),
        pytest.param(b"\xff", "not UTF-8", id="not-utf8"),
        pytest.param(b"[]", "must be a JSON object", id="list"),
        pytest.param(b"null", "must be a JSON object", id="null"),
        pytest.param(b"{}", "lacks field(s)", id="empty-object"),
    ],
)
def test_task_body_rejects_garbage(task_type: TaskFormat, body: bytes, fragment: str) -> None:
    with pytest.raises(BadTask, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        task_type.from_bytes(body)


def _broken(task_type: TaskFormat, change: str) -> bytes:
    doc = json.loads(dumps(GOOD_DOCS[task_type]))
    field = LIST_FIELD[task_type]
    if change == "extra-field":
        doc["extra"] = 1
    elif change == "missing-run-id":
        del doc["run_id"]
    elif change == "run-id-not-string":
        doc["run_id"] = 5
    elif change == "empty-list":
        doc[field] = []
    elif change == "list-is-string":
        doc[field] = "w"
    elif change == "unit-id-has-slash":
        if task_type is WARRIORS:
            doc[field] = ["a/b"]
        else:
            id_field = "troop_id" if task_type is TROOPS else "data_group_id"
            doc[field][0][id_field] = "a/b"
    elif change == "unit-id-missing":
        if task_type is WARRIORS:
            doc[field] = [None]
        else:
            id_field = "troop_id" if task_type is TROOPS else "data_group_id"
            del doc[field][0][id_field]
    return dumps(doc)


@pytest.mark.parametrize("task_type", TASK_TYPES)
@pytest.mark.parametrize(
    "change",
    [
        "extra-field",
        "missing-run-id",
        "run-id-not-string",
        "empty-list",
        "list-is-string",
        "unit-id-has-slash",
        "unit-id-missing",
    ],
)
def test_task_body_rejects_a_broken_field(task_type: TaskFormat, change: str) -> None:
    with pytest.raises(BadTask):
        task_type.from_bytes(_broken(task_type, change))


@pytest.mark.parametrize(
    ("task_type", "change", "fragment"),
    [
        (TROOPS, {"troops": ["t"]}, "troops[0] must be an object"),
        (TROOPS, {"troops": [{"troop_id": "t", "service": 1}]}, "troops[0] must be an object"),
        (DATA_GROUPS, {"service": None}, "service must be a string"),
        (DATA_GROUPS, {"data_groups": [{"data_group_id": "g"}]}, "data_groups[0] must be an object"),
        (DATA_GROUPS, {"warrior_id": "x" * 129}, "warrior_id must be 1 to 128"),
    ],
)
def test_task_body_rejects_with_message(
    task_type: TaskFormat, change: dict[str, object], fragment: str
) -> None:
    with pytest.raises(BadTask) as info:
        task_type.from_bytes(dumps({**GOOD_DOCS[task_type], **change}))
    assert fragment in str(info.value)


# --- canonical dumps -------------------------------------------------------------------------

json_leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8))
json_values = st.one_of(
    json_leaves,
    st.lists(json_leaves, max_size=3),
    st.dictionaries(st.text(max_size=6), json_leaves, max_size=4),
)


def _shuffled(value: object, rng: random.Random) -> object:
    """The same JSON value with every object's keys in another insertion order."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rng) for v in value]
    return value


@hyp_settings(deadline=None, max_examples=40)
@given(st.dictionaries(st.text(max_size=6), json_values, max_size=6), st.randoms(use_true_random=False))
def test_dumps_gives_the_same_bytes_for_any_key_order(doc: dict[str, object], rng: random.Random) -> None:
    assert dumps(_shuffled(doc, rng)) == dumps(doc)  # type: ignore[arg-type]


def test_dumps_is_compact_sorted_and_utf8() -> None:
    assert dumps({"b": 1, "a": ["Ω", None]}) == '{"a":["Ω",null],"b":1}'.encode()


@pytest.mark.parametrize(
    ("items", "size", "expected"),
    [
        ([1, 2, 3, 4, 5], 2, [[1, 2], [3, 4], [5]]),
        ([1, 2], 2, [[1, 2]]),
        ([1], 10, [[1]]),
        ([], 3, []),
    ],
)
def test_chunks(items: list[int], size: int, expected: list[list[int]]) -> None:
    assert chunks(items, size) == expected
