"""Object keys: every identifier the contract allows survives the trip into a key and back."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from fanout_core import keys
from fanout_core.errors import BadManifest, BadTask

ENCODED_SEGMENT = re.compile(r"[A-Za-z0-9_.~%-]+")
CONTRACT_PUNCTUATION = " +='%~(),:@._-"

# Any character of any script except '/', control characters (Cc) and lone surrogates (Cs),
# with the contract's punctuation drawn often enough to meet every awkward case.
identifier_chars = st.one_of(
    st.sampled_from(CONTRACT_PUNCTUATION),
    st.characters(exclude_categories=("Cc", "Cs"), exclude_characters="/"),
)
identifiers = st.text(alphabet=identifier_chars, min_size=1, max_size=128)
run_ids = st.from_regex(keys.RUN_ID_RE, fullmatch=True)
part_indices = st.integers(min_value=0, max_value=99_999)

AWKWARD_IDS = ["a b", "a+b", "a=b", "o'brien", "100%", "Ωμέγα", "戦士", "%2F", "a%2Fb", "~(x,y):z@h.i_j-k"]

quick = hyp_settings(deadline=None, max_examples=100)


# --- encode_id / decode_id -------------------------------------------------------------------


@quick
@given(identifiers)
def test_decode_id_inverts_encode_id_for_any_identifier(identifier: str) -> None:
    assert keys.decode_id(keys.encode_id(identifier)) == identifier


@quick
@given(identifiers)
def test_encoded_identifier_uses_only_unreserved_characters_and_percent(identifier: str) -> None:
    encoded = keys.encode_id(identifier)
    assert ENCODED_SEGMENT.fullmatch(encoded), encoded
    assert not set(encoded) & set("/=+ ")


@quick
@given(identifiers)
def test_every_percent_in_an_encoded_identifier_starts_an_escape(identifier: str) -> None:
    # A literal "%2F" in an id must not survive as "%2F" (it would decode to "/").
    encoded = keys.encode_id(identifier)
    assert re.fullmatch(r"(?:[A-Za-z0-9_.~-]|%[0-9A-F]{2})+", encoded), encoded


@quick
@given(run_ids, identifiers, identifiers, part_indices)
def test_data_key_of_a_data_groups_task_gives_back_its_ids(run_id: str, w: str, t: str, index: int) -> None:
    task_key = keys.data_groups_task_key(run_id, w, t, index)
    data_key = keys.data_key_for_task(task_key)
    assert keys.parse_data_key(data_key) == keys.DataPath(run_id=run_id, warrior_id=w, troop_id=t)


@quick
@given(run_ids, identifiers, identifiers, part_indices)
def test_data_key_has_the_hive_folders_and_the_task_file_name(
    run_id: str, w: str, t: str, index: int
) -> None:
    data_key = keys.data_key_for_task(keys.data_groups_task_key(run_id, w, t, index))
    assert data_key == (
        f"data/run={run_id}/warrior={keys.encode_id(w)}/troop={keys.encode_id(t)}/part-{index:05d}.parquet"
    )


@pytest.mark.parametrize(
    ("identifier", "encoded"),
    [
        ("a b", "a%20b"),
        ("a+b", "a%2Bb"),
        ("a=b", "a%3Db"),
        ("o'brien", "o%27brien"),
        ("100%", "100%25"),
        ("Ωμέγα", "%CE%A9%CE%BC%CE%AD%CE%B3%CE%B1"),
        ("戦士", "%E6%88%A6%E5%A3%AB"),
        ("%2F", "%252F"),
        ("plain-id_1.2~3", "plain-id_1.2~3"),
    ],
)
def test_encode_id_of_awkward_identifier(identifier: str, encoded: str) -> None:
    assert keys.encode_id(identifier) == encoded
    assert keys.decode_id(encoded) == identifier


@pytest.mark.parametrize("identifier", AWKWARD_IDS)
def test_awkward_identifiers_round_trip_through_troops_and_data_keys(identifier: str) -> None:
    troop_key = keys.troops_task_key("r1", identifier, 0)
    assert troop_key == f"troops/run=r1/warrior={keys.encode_id(identifier)}/part-00000.json"
    data_key = keys.data_key_for_task(keys.data_groups_task_key("r1", identifier, identifier + "!", 3))
    assert keys.parse_data_key(data_key) == keys.DataPath("r1", identifier, identifier + "!")


# --- run ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize("run_id", ["r1", "2026-11-27", "run_2026.11.27", "A" * 64, "x", "a-b_c.d"])
def test_check_run_id_accepts(run_id: str) -> None:
    assert keys.check_run_id(run_id) == run_id


@pytest.mark.parametrize(
    "run_id", ["", "A" * 65, "a b", "a/b", "a+b", "a=b", "r%1", "run:1", "Ωμέγα", "r1\n", "r1.json/x"]
)
def test_check_run_id_rejects_with_bad_manifest(run_id: str) -> None:
    with pytest.raises(BadManifest, match="run id"):
        keys.check_run_id(run_id)


def test_manifest_key_of_a_bad_run_id_is_rejected() -> None:
    with pytest.raises(BadManifest):
        keys.manifest_key("a b")


def test_manifest_key_round_trips_through_run_id_of_manifest() -> None:
    assert keys.manifest_key("r-7") == "amazon_warriors/r-7.json"
    assert keys.run_id_of_manifest(keys.manifest_key("r-7")) == "r-7"


@pytest.mark.parametrize(
    "key",
    [
        "amazon_warriors/run=r1/part-00000.json",  # a part, not a seed
        "amazon_warriors/r1.txt",
        "troops/r1.json",
        "amazon_warriors/bad id.json",
    ],
)
def test_run_id_of_manifest_rejects_what_is_not_a_seed_manifest(key: str) -> None:
    with pytest.raises(BadManifest):
        keys.run_id_of_manifest(key)


# --- run_id_of_task_key ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "key"),
    [
        ("seed", keys.manifest_key("r1")),
        ("warriors", keys.warriors_part_key("r1", 0)),
        ("warriors-redrive", keys.warriors_part_key("r1", 12, redrive=2)),
        ("troops", keys.troops_task_key("r1", "a b", 3)),
        ("data_groups", keys.data_groups_task_key("r1", "戦士", "a+b", 0)),
        ("data_groups-redrive", keys.data_groups_task_key("r1", "w", "t", 0, redrive=1)),
    ],
)
def test_run_id_of_task_key_for_each_stage(stage: str, key: str) -> None:
    assert keys.run_id_of_task_key(key) == "r1"


@pytest.mark.parametrize(
    ("key", "error", "fragment"),
    [
        ("data/run=r1/warrior=w/troop=t/part-00000.parquet", BadTask, "no stage"),
        ("somewhere/run=r1/x.json", BadTask, "no stage"),
        ("troops/r1/warrior=w/part-00000.json", BadTask, "no run="),
        ("troops/run=bad id/warrior=w/part-00000.json", BadManifest, "run id"),
        ("data_groups/run=/warrior=w/troop=t/part-00000.json", BadManifest, "run id"),
    ],
)
def test_run_id_of_task_key_rejects(key: str, error: type[Exception], fragment: str) -> None:
    with pytest.raises(error, match=fragment):
        keys.run_id_of_task_key(key)


# --- redrive, markers, data keys ------------------------------------------------------------


@pytest.mark.parametrize(
    ("task_key", "redrive", "expected"),
    [
        ("troops/run=r/warrior=w/part-00003.json", 1, "troops/run=r/warrior=w/part-00003~redrive-1.json"),
        (
            "troops/run=r/warrior=w/part-00003~redrive-1.json",
            2,
            "troops/run=r/warrior=w/part-00003~redrive-2.json",
        ),
        ("amazon_warriors/run=r/part-00000.json", 1, "amazon_warriors/run=r/part-00000~redrive-1.json"),
        ("troops/run=r/warrior=w/custom.json", 1, "troops/run=r/warrior=w/custom~redrive-1.json"),
        ("troops/run=r/warrior=w/part-00003~redrive-4.json", 0, "troops/run=r/warrior=w/part-00003.json"),
    ],
)
def test_redrive_key(task_key: str, redrive: int, expected: str) -> None:
    assert keys.redrive_key(task_key, redrive) == expected


def test_redrive_key_of_a_data_groups_task_keeps_its_data_key_parseable() -> None:
    redriven = keys.redrive_key(keys.data_groups_task_key("r1", "a b", "c+d", 0), 1)
    data_key = keys.data_key_for_task(redriven)
    assert data_key.endswith("/part-00000~redrive-1.parquet")
    assert keys.parse_data_key(data_key) == keys.DataPath("r1", "a b", "c+d")


@pytest.mark.parametrize("task_key", [keys.troops_task_key("r1", "w", 0), keys.manifest_key("r1"), "x.json"])
def test_data_key_for_task_rejects_keys_of_other_stages(task_key: str) -> None:
    with pytest.raises(BadTask):
        keys.data_key_for_task(task_key)


@pytest.mark.parametrize(
    "key",
    [
        "data/run=r1/warrior=w/part-00000.parquet",
        "data/run=r1/troop=t/warrior=w/part-00000.parquet",
        "output/run=r1/warrior=w/troop=t/part-00000.parquet",
    ],
)
def test_parse_data_key_rejects_keys_that_are_not_data_keys(key: str) -> None:
    with pytest.raises(ValueError):
        keys.parse_data_key(key)


@pytest.mark.parametrize("task_key", [keys.troops_task_key("r1", "a b", 0), keys.manifest_key("r1")])
def test_done_and_failed_markers_give_back_their_task_key(task_key: str) -> None:
    assert keys.done_key(task_key) == "done/" + task_key
    assert keys.failed_key(task_key) == "failed/" + task_key
    assert keys.task_key_of_marker(keys.done_key(task_key)) == task_key
    assert keys.task_key_of_marker(keys.failed_key(task_key)) == task_key


def test_task_key_of_marker_rejects_other_keys() -> None:
    with pytest.raises(ValueError, match="neither"):
        keys.task_key_of_marker("troops/run=r1/warrior=w/part-00000.json")
