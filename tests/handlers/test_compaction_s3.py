"""Compaction and its readers on S3 (real boto3 on moto): a compactor racing another adopts
its generation, a reader racing a compaction reads the new files, and the compacted files
and the Athena manifest name the run's output folder."""

from __future__ import annotations

from typing import Any

import boto3

from fanout.runs import list_runs
from fanout_aws.s3_storage import S3Storage
from fanout_core.compaction import compact_run, read_current, small_files, symlink_key
from fanout_core.stages import STAGES
from tests.core.test_compaction import AWKWARD, rows_of, seed_complete_run
from tests.core.test_compaction_races import Interleaved

from .conftest import BUCKET, REGION


def _s3(aws: None) -> S3Storage:
    client: Any = boto3.client("s3", region_name=REGION)
    client.create_bucket(Bucket=BUCKET)
    return S3Storage(BUCKET, client=client)


def _reading_a_small_file(verb: str, key: str) -> bool:
    return verb == "get" and key.startswith(STAGES.output_prefix) and "/warrior=" in key


def test_on_s3_a_compactor_whose_inputs_another_deleted_adopts_its_generation(aws: None) -> None:
    store = _s3(aws)
    seed_complete_run(store, "r1", warriors=AWKWARD[:3])
    truth = rows_of(store, "r1")
    uri = f"s3://{BUCKET}/"
    racing = Interleaved(store, _reading_a_small_file, lambda: compact_run(store, "r1", uri_base=uri))

    result = compact_run(racing, "r1", uri_base=uri)

    current = read_current(store, "r1")
    assert racing.fired and current is not None and current["generation"] == 1
    assert result.state == "current" and result.files == [f["key"] for f in current["files"]]
    assert rows_of(store, "r1") == truth and small_files(store, "r1") == []
    assert sorted(store.list(STAGES.output_run_prefix("r1"))) == result.files
    manifest = store.get(symlink_key(STAGES, "r1")).decode().split()
    assert manifest == [f"{uri}{k}" for k in result.files]


def test_on_s3_runs_reads_a_run_whose_files_a_compaction_replaced_under_it(aws: None) -> None:
    store = _s3(aws)
    truth = seed_complete_run(store, "r1", warriors=AWKWARD[:3])
    reader = Interleaved(store, _reading_a_small_file, lambda: compact_run(store, "r1"))

    [summary] = list_runs(reader)

    assert reader.fired and summary.rows == truth
