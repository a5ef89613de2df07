"""Object keys: every identifier the contract allows gets one key, within S3's limits.

The promise, restated for shortened segments: an id whose encoding is at most
``SEGMENT_MAX`` bytes round-trips through its key exactly; a longer one gets a
segment of exactly ``SEGMENT_MAX + 1`` bytes ending in a digest of the id, so distinct
ids still get distinct keys, and the full id lives in the task body and the output.
"""

from __future__ import annotations

import re

import pytest
import task_keys
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from fanout_core import keys
from fanout_core.errors import BadManifest, BadTask
from fanout_core.stages import STAGES

ENCODED_SEGMENT = re.compile(r"[A-Za-z0-9_.~%-]+")
CONTRACT_PUNCTUATION = " +='%~(),:@._-"
S3_KEY_LIMIT = 1024
FILE_NAME_LIMIT = 255

# Any character of any script except '/', control characters (Cc) and lone surrogates (Cs),
# with the contract's punctuation drawn often enough to meet every awkward case.
identifier_chars = st.one_of(
    st.sampled_from(CONTRACT_PUNCTUATION),
    st.characters(exclude_categories=("Cc", "Cs"), exclude_characters="/"),
)
identifiers = st.text(alphabet=identifier_chars, min_size=1, max_size=128)
long_identifiers = st.text(alphabet=identifier_chars, min_size=100, max_size=128)
run_ids = st.from_regex(keys.RUN_ID_RE, fullmatch=True)
part_indices = st.integers(min_value=0, max_value=99_999)

AWKWARD_IDS = ["a b", "a+b", "a=b", "o'brien", "100%", "Ωμέγα", "戦士", "%2F", "a%2Fb", "~(x,y):z@h.i_j-k"]
WIDEST_ID = "\U0010fffd" * 128  # 4 UTF-8 bytes, 12 encoded bytes per character

quick = hyp_settings(deadline=None, max_examples=100)


# --- segments --------------------------------------------------------------------------------


@quick
@given(identifiers)
def test_decode_id_inverts_encode_id_for_every_identifier_that_fits(identifier: str) -> None:
    segment = keys.encode_id(identifier)
    if not keys.is_shortened(segment):
        assert keys.decode_id(segment) == identifier


@quick
@given(identifiers)
def test_segments_use_only_unreserved_characters_and_whole_escapes(identifier: str) -> None:
    segment = keys.encode_id(identifier)
    assert ENCODED_SEGMENT.fullmatch(segment), segment
    assert not set(segment) & set("/=+ ")
    # A literal "%2F" in an id must not survive as "%2F" (it would decode to "/").
    assert re.fullmatch(r"(?:[A-Za-z0-9_.~-]|%[0-9A-F]{2})+", segment), segment


@quick
@given(identifiers)
def test_a_segment_is_never_longer_than_the_shortened_length(identifier: str) -> None:
    assert len(keys.encode_id(identifier)) <= keys.SEGMENT_MAX + 1


@quick
@given(long_identifiers, long_identifiers)
def test_distinct_long_identifiers_get_distinct_segments(a: str, b: str) -> None:
    if a != b:
        assert keys.encode_id(a) != keys.encode_id(b)


def test_a_long_identifier_is_shortened_to_a_head_and_a_digest() -> None:
    segment = keys.encode_id(WIDEST_ID)
    assert len(segment) == keys.SEGMENT_MAX + 1 and keys.is_shortened(segment)
    head, _, digest = segment.rpartition("~")
    assert re.fullmatch(r"[0-9a-f]{40,}", digest) and head.startswith("%F4%8F%BF%BD")
    with pytest.raises(ValueError, match="shortened"):
        keys.decode_id(segment)


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
        (".", "."),
        ("..", ".."),
    ],
)
def test_encode_id_of_awkward_identifier(identifier: str, encoded: str) -> None:
    assert keys.encode_id(identifier) == encoded
    assert keys.decode_id(encoded) == identifier


# --- addresses and keys ----------------------------------------------------------------------


@quick
@given(run_ids, identifiers, identifiers, part_indices)
def test_every_key_of_every_contract_id_fits_s3_and_the_file_system(
    run_id: str, w: str, t: str, index: int
) -> None:
    address = STAGES.named("data_groups").address(run_id, (w, t), index).redriven(99)
    derived = [
        address.key,
        address.done_key,
        address.failed_key,
        address.plan_key,
        address.output_key(STAGES.output_prefix),
        keys.archived_failure_key(address.key, "2026-12-02T101010.123Z"),
    ]
    for key in derived:
        assert len(key.encode()) < S3_KEY_LIMIT, key
        assert all(len(part.encode()) < FILE_NAME_LIMIT for part in key.split("/")), key


def test_the_widest_ids_at_every_level_stay_under_the_limits() -> None:
    address = STAGES.named("data_groups").address("R" * 64, (WIDEST_ID, WIDEST_ID + "x"), 99_999)
    key = keys.archived_failure_key(address.redriven(99).failed_key, "2026-12-02T101010.123Z")
    assert len(key.encode()) < 600
    assert address.segments[0] != address.segments[1]


@quick
@given(run_ids, identifiers, identifiers, part_indices)
def test_parse_gives_back_the_address_a_key_was_built_from(run_id: str, w: str, t: str, index: int) -> None:
    for stage, ids in ((STAGES[0], ()), (STAGES[1], (w,)), (STAGES[2], (w, t))):
        address = stage.address(run_id, ids, index)
        assert STAGES.parse(address.key) == address
        assert address.names(ids)
        assert STAGES.parse(address.redriven(3).key) == address.redriven(3)


@quick
@given(run_ids, identifiers, identifiers, part_indices)
def test_data_key_has_the_hive_folders_and_the_task_file_name(
    run_id: str, w: str, t: str, index: int
) -> None:
    data_key = task_keys.data_key_for_task(task_keys.data_groups_task_key(run_id, w, t, index))
    assert data_key == (
        f"data/run={run_id}/warrior={keys.encode_id(w)}/troop={keys.encode_id(t)}/part-{index:05d}.parquet"
    )


@pytest.mark.parametrize("identifier", AWKWARD_IDS)
def test_awkward_identifiers_round_trip_through_troops_and_data_keys(identifier: str) -> None:
    troop_key = task_keys.troops_task_key("r1", identifier, 0)
    assert troop_key == f"troops/run=r1/warrior={keys.encode_id(identifier)}/part-00000.json"
    data_key = task_keys.data_key_for_task(
        task_keys.data_groups_task_key("r1", identifier, identifier + "!", 3)
    )
    assert task_keys.parse_data_key(data_key) == ("r1", identifier, identifier + "!")


def test_an_address_names_only_the_ids_it_was_built_from() -> None:
    address = STAGES.named("data_groups").address("r1", ("w0", "t0"), 0)
    assert address.names(("w0", "t0"))
    assert not address.names(("w1", "t0"))
    assert not address.names(("w0",))


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
        STAGES.seed("a b")


def test_manifest_key_round_trips_through_parse() -> None:
    assert STAGES.seed("r-7").key == "amazon_warriors/r-7.json"
    assert STAGES.parse("amazon_warriors/r-7.json") == STAGES.seed("r-7")
    assert STAGES.parse("amazon_warriors/r-7.json").is_seed


# --- parse -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "key"),
    [
        ("seed", task_keys.manifest_key("r1")),
        ("warriors", task_keys.warriors_part_key("r1", 0)),
        ("warriors-redrive", task_keys.warriors_part_key("r1", 12, redrive=2)),
        ("troops", task_keys.troops_task_key("r1", "a b", 3)),
        ("data_groups", task_keys.data_groups_task_key("r1", "戦士", "a+b", 0)),
        ("data_groups-redrive", task_keys.data_groups_task_key("r1", "w", "t", 0, redrive=1)),
    ],
)
def test_parse_finds_the_run_of_each_stage(stage: str, key: str) -> None:
    assert STAGES.parse(key).run_id == "r1"


@pytest.mark.parametrize(
    ("key", "error", "fragment"),
    [
        ("data/run=r1/warrior=w/troop=t/part-00000.parquet", BadTask, "no stage"),
        ("somewhere/run=r1/x.json", BadTask, "no stage"),
        ("troops/r1/warrior=w/part-00000.json", BadTask, "no run="),
        ("troops/run=bad id/warrior=w/part-00000.json", BadManifest, "run id"),
        ("data_groups/run=/warrior=w/troop=t/part-00000.json", BadManifest, "run id"),
        ("troops/run=r1/part-00000.json", BadTask, "warrior="),
        ("troops/r1.json", BadTask, "not a task key of stage troops"),
        ("troops/run=r1/warrior=w/custom.json", BadTask, "part-NNNNN"),
        ("troops/run=r1/warrior=w/part-00000~redrive-0.json", BadTask, "part-NNNNN"),
        ("troops/run=r1/troop=w/part-00000.json", BadTask, "warrior= folder"),
        ("troops/run=r1/warrior=a b/part-00000.json", BadTask, "not an encoded identifier"),
        ("troops/run=r1/warrior=%2fx/part-00000.json", BadTask, "not an encoded identifier"),
        ("troops/run=r1/warrior=%41/part-00000.json", BadTask, "canonical"),
        ("troops/run=r1/warrior=%FF/part-00000.json", BadTask, "UTF-8"),
        ("troops/run=r1/warrior=/part-00000.json", BadTask, "not an encoded identifier"),
        ("troops/run=r1/warrior=" + "a" * 200 + "/part-00000.json", BadTask, "not an encoded"),
        ("amazon_warriors/r1.txt", BadTask, "no stage"),
        ("amazon_warriors/bad id.json", BadManifest, "run id"),
    ],
)
def test_parse_rejects_what_is_no_task(key: str, error: type[Exception], fragment: str) -> None:
    with pytest.raises(error, match=fragment):
        STAGES.parse(key)


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
        ("troops/run=r/warrior=w/part-00003~redrive-4.json", 0, "troops/run=r/warrior=w/part-00003.json"),
    ],
)
def test_redrive_key(task_key: str, redrive: int, expected: str) -> None:
    assert task_keys.redrive_key(task_key, redrive) == expected


def test_redrive_key_of_a_data_groups_task_keeps_its_data_key_parseable() -> None:
    redriven = task_keys.redrive_key(task_keys.data_groups_task_key("r1", "a b", "c+d", 0), 1)
    data_key = task_keys.data_key_for_task(redriven)
    assert data_key.endswith("/part-00000~redrive-1.parquet")
    assert task_keys.parse_data_key(data_key) == ("r1", "a b", "c+d")


def test_a_seed_has_no_output_key() -> None:
    with pytest.raises(BadTask):
        STAGES.seed("r1").output_key(STAGES.output_prefix)


@pytest.mark.parametrize(
    "task_key", [task_keys.troops_task_key("r1", "a b", 0), task_keys.manifest_key("r1")]
)
def test_done_and_failed_markers_give_back_their_task_key(task_key: str) -> None:
    address = STAGES.parse(task_key)
    assert address.done_key == keys.done_key(task_key) == "done/" + task_key
    assert address.failed_key == keys.failed_key(task_key) == "failed/" + task_key
    assert address.plan_key == "plans/" + task_key
    for marker in (address.done_key, address.failed_key, address.plan_key):
        assert keys.task_key_of_marker(marker) == task_key


def test_task_key_of_marker_rejects_other_keys() -> None:
    with pytest.raises(ValueError, match="neither"):
        keys.task_key_of_marker("troops/run=r1/warrior=w/part-00000.json")
