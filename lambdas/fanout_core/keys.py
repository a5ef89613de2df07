"""Deterministic object keys that round-trip every identifier exactly.

Identifiers may hold spaces, ``+``, ``=``, ``'``, ``%`` and any script. Each one is
percent-encoded as UTF-8 with only ``A-Z a-z 0-9 _ . - ~`` left bare, so a key
segment never holds ``/``, ``=``, ``+`` or a space, and ``decode_id`` gives back the
exact identifier. The Hive-style ``name=value`` folders keep Athena/Glue partitioning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from fanout_core.errors import BadManifest, BadTask
from fanout_core.stages import (
    ARCHIVE_PREFIX,
    DATA_PREFIX,
    DONE_PREFIX,
    FAILED_PREFIX,
    MANIFEST_PREFIX,
    STAGES,
    Stage,
    stage_for_key,
)

RUN_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_PART_RE = re.compile(r"part-(\d{5,})(?:~redrive-(\d+))?\.json")


def encode_id(identifier: str) -> str:
    return quote(identifier, safe="")


def decode_id(segment: str) -> str:
    return unquote(segment, errors="strict")


def check_run_id(run_id: str) -> str:
    if not RUN_ID_RE.fullmatch(run_id):
        raise BadManifest(
            f"run id {run_id!r} must be 1 to 64 characters of A-Z a-z 0-9 . _ - "
            "(it is the manifest's file name without .json)"
        )
    return run_id


def manifest_key(run_id: str) -> str:
    return f"{MANIFEST_PREFIX}{check_run_id(run_id)}.json"


def run_id_of_manifest(key: str) -> str:
    """The run id of a seed manifest key ``amazon_warriors/<run>.json``."""
    if not key.startswith(MANIFEST_PREFIX) or not key.endswith(".json"):
        raise BadManifest(f"{key!r} is not a manifest key ({MANIFEST_PREFIX}<run_id>.json)")
    name = key[len(MANIFEST_PREFIX) : -len(".json")]
    if "/" in name:
        raise BadManifest(f"{key!r} is not a seed manifest key ({MANIFEST_PREFIX}<run_id>.json)")
    return check_run_id(name)


def is_seed_manifest(key: str) -> bool:
    return key.startswith(MANIFEST_PREFIX) and "/" not in key[len(MANIFEST_PREFIX) :]


def part_name(index: int, redrive: int = 0) -> str:
    return f"part-{index:05d}" + (f"~redrive-{redrive}" if redrive else "")


def warriors_part_key(run_id: str, index: int, redrive: int = 0) -> str:
    return f"{MANIFEST_PREFIX}run={check_run_id(run_id)}/{part_name(index, redrive)}.json"


def troops_task_key(run_id: str, warrior_id: str, index: int, redrive: int = 0) -> str:
    return f"troops/run={run_id}/warrior={encode_id(warrior_id)}/{part_name(index, redrive)}.json"


def data_groups_task_key(run_id: str, warrior_id: str, troop_id: str, index: int, redrive: int = 0) -> str:
    return (
        f"data_groups/run={run_id}/warrior={encode_id(warrior_id)}/"
        f"troop={encode_id(troop_id)}/{part_name(index, redrive)}.json"
    )


def data_key_for_task(task_key: str) -> str:
    """The Parquet key a data-groups task writes: same folders, under ``data/``."""
    stage = stage_for_key(task_key)
    if stage is None or stage.name != "data_groups":
        raise BadTask(f"{task_key!r} is not a data_groups task key")
    return DATA_PREFIX + task_key[len(stage.input_prefix) : -len(".json")] + ".parquet"


def done_key(task_key: str) -> str:
    return DONE_PREFIX + task_key


def failed_key(task_key: str) -> str:
    return FAILED_PREFIX + task_key


def archived_failure_key(task_key: str, stamp: str) -> str:
    return f"{ARCHIVE_PREFIX}{FAILED_PREFIX}{task_key}@{stamp}"


def task_key_of_marker(marker_key: str) -> str:
    for prefix in (DONE_PREFIX, FAILED_PREFIX):
        if marker_key.startswith(prefix):
            return marker_key[len(prefix) :]
    raise ValueError(f"{marker_key!r} is neither a done marker nor a failure record")


def run_id_of_task_key(key: str) -> str:
    """The run a task key belongs to, for any stage's task (seed manifests included)."""
    if is_seed_manifest(key):
        return run_id_of_manifest(key)
    stage = stage_for_key(key)
    if stage is None:
        raise BadTask(f"{key!r} is under no stage's prefix")
    rest = key[len(stage.input_prefix) :]
    first = rest.split("/", 1)[0]
    if not first.startswith("run="):
        raise BadTask(f"{key!r} has no run=<id> folder")
    return check_run_id(first[len("run=") :])


def run_prefix(stage: Stage, run_id: str) -> str:
    """Listing prefix for one run's tasks of one stage (the seed is matched separately)."""
    return f"{stage.input_prefix}run={run_id}/"


def redrive_key(task_key: str, redrive: int) -> str:
    """A sibling key for a task re-created with only its failed units."""
    folder, _, name = task_key.rpartition("/")
    match = _PART_RE.fullmatch(name)
    if match is None:
        stem = name[: -len(".json")] if name.endswith(".json") else name
        return f"{folder}/{stem}~redrive-{redrive}.json"
    return f"{folder}/{part_name(int(match.group(1)), redrive)}.json"


@dataclass(frozen=True)
class DataPath:
    """The identifiers a ``data/`` key carries in its Hive-style folders."""

    run_id: str
    warrior_id: str
    troop_id: str


def parse_data_key(key: str) -> DataPath:
    parts = key.split("/")
    if len(parts) != 5 or parts[0] + "/" != DATA_PREFIX:
        raise ValueError(f"{key!r} is not data/run=/warrior=/troop=/<file>")
    values = []
    for part, name in zip(parts[1:4], ("run", "warrior", "troop"), strict=True):
        if not part.startswith(name + "="):
            raise ValueError(f"{key!r}: expected a {name}= folder, got {part!r}")
        values.append(decode_id(part[len(name) + 1 :]))
    return DataPath(*values)


__all__ = ["STAGES", "decode_id", "encode_id"]
