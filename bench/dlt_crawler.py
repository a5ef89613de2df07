"""Peer (b): dlt's ``rest_api`` source, the library a data engineer would reach for instead.

The four levels are declared as parent/child resources: each child's path binds the
parent's id with a ``resolve`` parameter and carries the ancestors' ids down with
``include_from_parent``; pages follow the JSON cursor ``next_page_token`` sent back as the
``page_token`` query parameter; bearer auth; items under ``items``. The children are
parallelized and the extract pool gets the same total concurrency as fanout's stages
combined. Only the records table is loaded (as fanout loads only records), as Parquet, to
a ``filesystem`` destination in a local folder.

dlt is a bench-only dependency (requirements-bench.txt); this module imports it lazily so
the rest of bench/ works without it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

RECORD_ID_COLUMNS = {
    # What include_from_parent names the ancestors' fields on a record: "_<parent>_<field>"
    # at every level (dlt's snake_case normalisation keeps the double underscores).
    "warrior_id": "_data_groups__troops__warriors_warrior_id",
    "troop_id": "_data_groups__troops_troop_id",
    "service": "_data_groups__troops_service",
    "data_group_id": "_data_groups_data_group_id",
}


def source_config(base_url: str, token: str, *, page_size: int = 100) -> dict[str, Any]:
    """The declarative rest_api config for Hermes' four nested lists."""

    def parent(resource: str, field: str) -> dict[str, Any]:
        return {"type": "resolve", "resource": resource, "field": field}

    return {
        "client": {
            "base_url": base_url.rstrip("/") + "/v1/",
            "auth": {"type": "bearer", "token": token},
            "paginator": {
                "type": "cursor",
                "cursor_path": "next_page_token",
                "cursor_param": "page_token",
            },
        },
        "resource_defaults": {
            "write_disposition": "append",
            "parallelized": True,
            "endpoint": {"data_selector": "items", "params": {"page_size": page_size}},
        },
        "resources": [
            {"name": "warriors", "endpoint": {"path": "warriors"}},
            {
                "name": "troops",
                "endpoint": {
                    "path": "warriors/{warrior_id}/troops",
                    "params": {"warrior_id": parent("warriors", "warrior_id")},
                },
                "include_from_parent": ["warrior_id"],
            },
            {
                "name": "data_groups",
                "endpoint": {
                    "path": "warriors/{warrior_id}/troops/{troop_id}/data_groups",
                    "params": {
                        "warrior_id": parent("troops", "_warriors_warrior_id"),
                        "troop_id": parent("troops", "troop_id"),
                    },
                },
                "include_from_parent": ["_warriors_warrior_id", "troop_id", "service"],
            },
            {
                "name": "records",
                "endpoint": {
                    "path": ("warriors/{warrior_id}/troops/{troop_id}/data_groups/{data_group_id}/data"),
                    "params": {
                        "warrior_id": parent("data_groups", "_troops__warriors_warrior_id"),
                        "troop_id": parent("data_groups", "_troops_troop_id"),
                        "data_group_id": parent("data_groups", "data_group_id"),
                    },
                },
                "include_from_parent": [
                    "_troops__warriors_warrior_id",
                    "_troops_troop_id",
                    "_troops_service",
                    "data_group_id",
                ],
            },
        ],
    }


def configure(concurrency: int, work_dir: Path) -> None:
    """dlt reads its settings from the environment: set them before it is imported."""
    os.environ["EXTRACT__WORKERS"] = str(concurrency)
    os.environ["EXTRACT__MAX_PARALLEL_ITEMS"] = str(concurrency)
    os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    os.environ["RUNTIME__LOG_LEVEL"] = "WARNING"
    os.environ["DLT_DATA_DIR"] = str(work_dir / "dlt-data")
    os.environ["DESTINATION__FILESYSTEM__BUCKET_URL"] = (work_dir / "bucket").as_uri()


def run_peer(spec: dict[str, Any]) -> dict[str, Any]:
    """The peer entry point (see bench.common): one pipeline run, Parquet on local disk."""
    out = Path(spec["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    configure(int(spec["concurrency"]), out)

    import dlt
    from dlt.sources.rest_api import rest_api_source

    source = rest_api_source(source_config(spec["url"], spec["token"]), name="hermes")
    pipeline = dlt.pipeline(
        pipeline_name="hermes_bench",
        pipelines_dir=str(out / "pipelines"),
        destination="filesystem",
        dataset_name="hermes",
    )
    info = pipeline.run(source.with_resources("records"), loader_file_format="parquet")
    info.raise_on_failed_jobs()
    files = record_files(out)
    rows = pipeline.last_trace.last_normalize_info.row_counts.get("records", 0)
    return {"calls": None, "files": len(files), "rows": rows, "ok": True}


def record_files(out_dir: str | Path) -> list[Path]:
    """The Parquet files of the records table under a run's destination folder."""
    return sorted((Path(out_dir) / "bucket" / "hermes" / "records").glob("*.parquet"))


def records_columns() -> tuple[str, ...]:
    """The columns rows are compared on, in fanout.audit's order."""
    return (
        RECORD_ID_COLUMNS["warrior_id"],
        RECORD_ID_COLUMNS["troop_id"],
        RECORD_ID_COLUMNS["service"],
        RECORD_ID_COLUMNS["data_group_id"],
        "ts",
        "metric",
        "value",
        "unit",
    )
