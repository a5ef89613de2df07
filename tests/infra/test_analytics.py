"""The Glue table, the Athena workgroup and the query policy, checked against what the
pipeline and compaction really write."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import duckdb
import fastparquet
import pytest

from fanout_core.compaction import compact_run, symlink_key
from fanout_core.output import COLUMNS, GLUE_TYPES, read_parquet_bytes, records_to_parquet
from fanout_core.stages import STAGES
from fanout_core.storage import LocalDirStorage
from stacks.constructs.analytics import (
    PARQUET_SERDE,
    PARTITION,
    SYMLINK_INPUT_FORMAT,
    glue_name,
    location_of,
)
from tests.infra.conftest import Synth, render

AWKWARD = ["Ωmega warrior", "a+b=c 'd'", "100% sure", "東京/大阪", "..", "emoji 🚀", "plain"]
RUN_IDS = ["2026-11-27", "20261127", "r.1_a-B", "demo-20261127T120000"]


def _table(synth: Synth) -> dict[str, Any]:
    (table,) = synth.resources("AWS::Glue::Table").values()
    return dict(table["Properties"]["TableInput"])


def _hive_type(column: Any) -> str:
    """The Hive type an engine gives a Parquet column, from its physical and converted type."""
    physical = fastparquet.parquet_thrift.Type._VALUES_TO_NAMES[column.type]
    converted = (
        None
        if column.converted_type is None
        else fastparquet.parquet_thrift.ConvertedType._VALUES_TO_NAMES[column.converted_type]
    )
    if (physical, converted) == ("BYTE_ARRAY", "UTF8"):
        return "string"
    if (physical, converted) == ("INT64", "TIMESTAMP_MICROS"):
        assert column.logicalType.TIMESTAMP.isAdjustedToUTC  # a UTC instant: Athena's timestamp
        return "timestamp"
    return {("DOUBLE", None): "double", ("INT64", None): "bigint"}[(physical, converted)]


DUCKDB_TO_HIVE = {"VARCHAR": "string", "TIMESTAMP WITH TIME ZONE": "timestamp", "DOUBLE": "double"}


def _written_file(tmp_path: Path) -> tuple[LocalDirStorage, bytes]:
    store = LocalDirStorage(tmp_path / "bucket")
    seed = STAGES.seed("2026-11-27")
    store.put(seed.key, b'{"warriors": "all"}')
    store.put(seed.done_key, b"{}")
    for i, warrior in enumerate(AWKWARD):
        body, _ = records_to_parquet(
            run_id="2026-11-27",
            warrior_id=warrior,
            troop_id=f"troop {warrior}",
            service="svc",
            groups=[
                (f"g {warrior}", [{"ts": "2026-11-27T08:00:00Z", "metric": "m", "value": i, "unit": None}])
            ],
            fetched_at=datetime(2026, 11, 27, tzinfo=UTC),
        )
        key = STAGES.leaf.address("2026-11-27", (warrior, f"troop {warrior}"), 0).output_key(
            STAGES.output_prefix
        )
        store.put(key, body)
    return store, store.get(next(iter(store.list("data/"))))


def test_the_table_schema_equals_the_written_parquet_schema(synth: Synth, tmp_path: Path) -> None:
    store, small = _written_file(tmp_path)
    compacted = store.get(compact_run(store, "2026-11-27").files[0])
    table = _table(synth)
    declared = [(c["Name"], c["Type"]) for c in table["StorageDescriptor"]["Columns"]]
    assert declared == [(c, GLUE_TYPES[c]) for c in COLUMNS]
    for body in (small, compacted):  # a task's file and a compacted one
        schema = fastparquet.ParquetFile(io.BytesIO(body)).schema
        written = [(c.name, _hive_type(c)) for c in schema.schema_elements[1:]]
        assert written == declared
        path = tmp_path / "probe.parquet"
        path.write_bytes(body)
        described = duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall()
        assert [(name, DUCKDB_TO_HIVE[kind]) for name, kind, *_ in described] == declared
    partition_names = [p["Name"] for p in table["PartitionKeys"]]
    assert partition_names == [PARTITION] and PARTITION not in COLUMNS


def test_the_table_reads_parquet_through_symlink_manifests(synth: Synth) -> None:
    sd = _table(synth)["StorageDescriptor"]
    assert sd["InputFormat"] == SYMLINK_INPUT_FORMAT
    assert sd["SerdeInfo"]["SerializationLibrary"] == PARQUET_SERDE
    assert render(sd["Location"]).endswith(f"/{STAGES.query_prefix}")


def test_partition_projection_needs_no_crawler_and_no_partitions(synth: Synth) -> None:
    params = _table(synth)["Parameters"]
    assert params["projection.enabled"] == "true"
    assert params[f"projection.{PARTITION}.type"] == "injected"
    assert not synth.resources("AWS::Glue::Crawler")
    assert not synth.resources("AWS::Glue::Partition")


@pytest.mark.parametrize("run_id", RUN_IDS)
def test_projection_round_trips_awkward_ids_exactly(synth: Synth, tmp_path: Path, run_id: str) -> None:
    """Athena substitutes the run into the template, reads the manifest there, then the files it lists.
    Done here by hand against a local bucket: every id comes back exact, from the columns."""
    store = LocalDirStorage(tmp_path / "bucket")
    seed = STAGES.seed(run_id)
    store.put(seed.key, b'{"warriors": "all"}')
    store.put(seed.done_key, b"{}")
    for warrior in AWKWARD:
        body, _ = records_to_parquet(
            run_id=run_id,
            warrior_id=warrior,
            troop_id=warrior[::-1],
            service="s",
            groups=[
                (warrior + " g", [{"ts": "2026-11-27T08:00:00Z", "metric": "m", "value": 1.0, "unit": "%"}])
            ],
            fetched_at=datetime(2026, 11, 27, tzinfo=UTC),
        )
        store.put(STAGES.leaf.address(run_id, (warrior, warrior[::-1]), 0).output_key("data/"), body)
    compact_run(store, run_id, uri_base="s3://the-bucket/")

    template = render(_table(synth)["Parameters"]["storage.location.template"])
    _bucket, _, key_template = template.removeprefix("s3://").partition("/")
    location = location_of(key_template, run_id)
    assert location == STAGES.query_run_prefix(run_id)  # the template is the prefix compaction writes
    manifest = store.get(location + "current.txt").decode()
    assert manifest == store.get(symlink_key(STAGES, run_id)).decode()
    rows = []
    for uri in manifest.splitlines():
        key = uri.removeprefix("s3://the-bucket/")
        rows.extend(read_parquet_bytes(store.get(key)).to_dict("records"))
    assert sorted(r["warrior_id"] for r in rows) == sorted(AWKWARD)
    assert sorted(r["troop_id"] for r in rows) == sorted(w[::-1] for w in AWKWARD)
    assert sorted(r["data_group_id"] for r in rows) == sorted(w + " g" for w in AWKWARD)
    assert {r["run_id"] for r in rows} == {run_id}


def test_ids_in_paths_would_not_round_trip_in_hive_which_is_why_they_are_columns() -> None:
    """Hive unescapes a path per byte (%CE%A9 -> two Latin-1 characters), so a non-Latin id
    read from a warrior= folder comes back garbled; the table never reads ids from paths."""
    from fanout_core.keys import encode_id

    segment = encode_id("Ωmega")
    per_byte = "".join(chr(b) for b in unquote_to_bytes(segment))
    assert per_byte != "Ωmega"


def test_workgroup_enforces_encrypted_results_in_an_expiring_bucket(synth: Synth) -> None:
    (wg,) = synth.resources("AWS::Athena::WorkGroup").values()
    config = wg["Properties"]["WorkGroupConfiguration"]
    assert config["EnforceWorkGroupConfiguration"] is True
    assert config["ResultConfiguration"]["EncryptionConfiguration"]["EncryptionOption"] == "SSE_S3"
    assert wg["Properties"]["Name"] == glue_name(synth.env)
    results_bucket = config["ResultConfiguration"]["OutputLocation"]["Fn::Join"][1][1]["Ref"]
    bucket = synth.doc["Resources"][results_bucket]["Properties"]
    assert (
        bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"][
            "SSEAlgorithm"
        ]
        == "AES256"
    )
    expiry = [r for r in bucket["LifecycleConfiguration"]["Rules"] if "ExpirationInDays" in r]
    assert expiry and all(r["Status"] == "Enabled" for r in expiry)
    assert bucket["LoggingConfiguration"]["LogFilePrefix"]
    assert bucket["PublicAccessBlockConfiguration"]["BlockPublicPolicy"] is True


def test_the_query_policy_is_least_privilege(synth: Synth) -> None:
    policies = {k: v for k, v in synth.resources("AWS::IAM::ManagedPolicy").items() if "QueryPolicy" in k}
    (policy,) = policies.values()
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    actions = sorted(
        a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    )
    assert not any(a.endswith("*") for a in actions)
    assert not any(a.startswith(("s3:Delete", "glue:Create", "glue:Update", "glue:Delete")) for a in actions)
    s3_objects = [
        render(r)
        for s in statements
        if s["Sid"] == "ReadCompactedRuns"
        for r in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])
    ]
    assert sorted(r.split("/", 1)[1] for r in s3_objects) == sorted(
        [f"{STAGES.query_prefix}*", f"{STAGES.output_prefix}*"]
    )
    # Compacted files live in the output folder; the compaction's bookkeeping is not the table's.
    assert all(STAGES.compacted_prefix not in r for r in s3_objects)
    for s in statements:
        resources = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
        assert "*" not in resources
    assert [a for a in actions if a.startswith("athena:")] == sorted(
        f"athena:{a}"
        for a in (
            "GetQueryExecution",
            "GetQueryResults",
            "GetWorkGroup",
            "StartQueryExecution",
            "StopQueryExecution",
        )
    )
    (athena,) = [s for s in statements if s["Sid"] == "RunQueriesInTheWorkgroup"]
    assert ":workgroup/" in json.dumps(athena["Resource"])
