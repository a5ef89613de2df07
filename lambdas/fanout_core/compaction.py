"""Compaction: once a run is complete, rewrite its many small Parquet files into a few large ones.

Exactly once, through the storage interface alone (the same code on a directory and
on S3), in steps that each leave the bucket valid, so a kill at any point resumes:

1. **Plan** (``compacted/run=<run>/gen=<g>/plan.json``, create-only). Generation ``g``
   is one past the current one (1 for a run never compacted). Its inputs are the run's
   small files under ``data/run=<run>/`` plus the current generation's files, sorted by
   key and packed into outputs of about ``target_bytes`` (whole warriors together; a
   warrior larger than the target alone is cut between its files). A second compactor
   that loses the create adopts the winner's plan, so two never disagree.
2. **Write** each output ``compacted/run=<run>/gen=<g>/part-NNNNN.parquet``, create-only,
   rows sorted by (ts, warrior, troop, data group), so a time-range filter skips most
   row groups by their statistics. An object appears whole or not at all, so an output
   that exists is complete and is not written again.
3. **Verify**: the rows in the outputs' footers equal the rows the plan's inputs hold.
4. **Commit**: write ``compacted/run=<run>/current.json`` naming generation ``g`` and
   its files. This one object is the switch: before it readers read the old files,
   after it the new ones; never both.
5. **Publish** the Athena symlink manifest ``athena/run=<run>/current.txt`` (the Glue
   table's partition location): one URI per current file, replaced whole.
6. **Delete** the plan's inputs (small files and the previous generation's files), only
   now that the new generation is complete and current.

A reader picks the current generation with ``current_files``: the files ``current.json``
names if it exists, else every ``.parquet`` under ``data/run=<run>/`` (a run not yet
compacted). A small file that appears after a compaction (a redrive) is in no generation:
``current_files`` adds the small files the current generation's plan did not consume, and
the next compaction takes them into a new generation (only then does Athena see them).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from fanout_core import keys
from fanout_core.bodies import dumps
from fanout_core.failures import now_iso
from fanout_core.stages import STAGES, TASK_SUFFIX, StageTable
from fanout_core.storage import NoSuchKey, Storage

TARGET_BYTES = 128 * 1024 * 1024
"""Input bytes packed into one compacted file (compaction shrinks them a little)."""
CURRENT = "current.json"
SYMLINK = "current.txt"
PLAN = "plan.json"
PARQUET = ".parquet"
SORT_KEY = ["ts", "warrior_id", "troop_id", "data_group_id"]


class NotComplete(Exception):
    """The run still has pending tasks (or no seed): compacting now could miss rows."""


class CompactionError(Exception):
    """The outputs do not hold the rows the plan's inputs hold; nothing was committed."""


@dataclass
class CompactionResult:
    run_id: str
    generation: int
    state: str
    """``compacted`` (this call committed ``generation``), ``current`` (already compacted,
    nothing new), or ``empty`` (a complete run with no output files)."""
    inputs: int = 0
    files: list[str] = field(default_factory=list)
    rows: int = 0
    written: int = 0
    """Outputs this call wrote (the rest an earlier, interrupted call had written)."""
    deleted: int = 0


def generation_prefix(table: StageTable, run_id: str, generation: int) -> str:
    return f"{table.compacted_run_prefix(run_id)}gen={generation}/"


def current_key(table: StageTable, run_id: str) -> str:
    return table.compacted_run_prefix(run_id) + CURRENT


def symlink_key(table: StageTable, run_id: str) -> str:
    return table.query_run_prefix(run_id) + SYMLINK


def read_current(storage: Storage, run_id: str, table: StageTable = STAGES) -> dict[str, Any] | None:
    """The run's commit record (generation, files, rows), or None if it was never compacted."""
    key = current_key(table, run_id)
    if not storage.exists(key):
        return None
    try:
        doc: dict[str, Any] = json.loads(storage.get(key))
    except NoSuchKey:  # pragma: no cover - deleted between the two calls
        return None
    return doc


def small_files(storage: Storage, run_id: str, table: StageTable = STAGES) -> list[str]:
    """The run's Parquet files as the leaf stage wrote them, under ``data/run=<run>/``."""
    return [k for k in storage.list(table.output_run_prefix(run_id)) if k.endswith(PARQUET)]


def current_files(storage: Storage, run_id: str, table: StageTable = STAGES) -> list[str]:
    """The files a reader should read for ``run_id``: the current generation's, plus any small
    file it did not consume (written later, by a redrive); with no generation, the small files."""
    current = read_current(storage, run_id, table)
    if current is None:
        return small_files(storage, run_id, table)
    plan = _read_plan(storage, table, run_id, int(current["generation"]))
    consumed = {i["key"] for o in plan["outputs"] for i in o["inputs"]} if plan else set()
    late = [k for k in small_files(storage, run_id, table) if k not in consumed]
    return [str(f["key"]) for f in current["files"]] + late


def pending_tasks(storage: Storage, run_id: str, table: StageTable = STAGES) -> list[str]:
    """Tasks of the run with neither a done marker nor a failure record (the seed included)."""
    seed = table.seed(run_id)
    if not storage.exists(seed.key):
        return [seed.key]
    pending: list[str] = []
    for stage in table:
        prefix = stage.run_prefix(run_id)
        tasks = [k for k in storage.list(prefix) if k.endswith(TASK_SUFFIX)]
        if stage is table.first:
            tasks.insert(0, seed.key)
        settled = {keys.task_key_of_marker(m) for m in storage.list(keys.done_key(prefix))}
        settled |= {keys.task_key_of_marker(m) for m in storage.list(keys.failed_key(prefix))}
        for marker in (seed.done_key, seed.failed_key) if stage is table.first else ():
            if storage.exists(marker):
                settled.add(seed.key)
        pending.extend(k for k in tasks if k not in settled)
    return pending


def compact_run(
    storage: Storage,
    run_id: str,
    *,
    table: StageTable = STAGES,
    target_bytes: int = TARGET_BYTES,
    uri_base: str = "",
    require_complete: bool = True,
    on_step: Callable[[str], None] | None = None,
) -> CompactionResult:
    """Compact ``run_id`` (or finish an interrupted compaction); safe to call any number of times.

    ``uri_base`` turns a key into the URI the Athena manifest lists (``s3://bucket/``);
    without one no manifest is published. ``on_step`` is called with a step's name
    before each write or delete (progress, and the tests' kill points).
    """
    keys.check_run_id(run_id)
    step = on_step or (lambda _name: None)
    if require_complete:
        pending = pending_tasks(storage, run_id, table)
        if pending:
            raise NotComplete(
                f"run {run_id!r} is not complete: {len(pending)} task(s) pending, e.g. {pending[0]!r}"
            )
    current = read_current(storage, run_id, table)
    generation = int(current["generation"]) if current else 0
    if current is not None:
        # Finish the committed generation's clean-up first (a kill may have stopped it).
        plan = _read_plan(storage, table, run_id, generation)
        _publish(storage, table, run_id, current, uri_base, step)
        deleted = _delete_inputs(storage, table, plan, current, step) if plan else 0
        done = CompactionResult(
            run_id,
            generation,
            "current",
            files=[f["key"] for f in current["files"]],
            rows=int(current["rows"]),
            deleted=deleted,
        )
        if not small_files(storage, run_id, table):
            return done
    plan = _read_plan(storage, table, run_id, generation + 1) or _make_plan(
        storage, table, run_id, generation + 1, current, target_bytes, step
    )
    if not plan["outputs"]:
        return CompactionResult(run_id, generation, "empty")
    written = 0
    for output in plan["outputs"]:
        if storage.exists(output["key"]):
            continue
        step("write")
        if storage.put_if_absent(output["key"], _rewrite(storage, [i["key"] for i in output["inputs"]])):
            written += 1
    files = _verify(storage, plan)
    step("commit")
    committed = {
        "run_id": run_id,
        "generation": plan["generation"],
        "files": files,
        "rows": sum(f["rows"] for f in files),
        "inputs": sum(len(o["inputs"]) for o in plan["outputs"]),
        "committed_at": now_iso(),
    }
    storage.put(current_key(table, run_id), dumps(committed))
    _publish(storage, table, run_id, committed, uri_base, step)
    deleted = _delete_inputs(storage, table, plan, committed, step)
    return CompactionResult(
        run_id,
        plan["generation"],
        "compacted",
        inputs=committed["inputs"],
        files=[f["key"] for f in files],
        rows=committed["rows"],
        written=written,
        deleted=deleted,
    )


def _read_plan(storage: Storage, table: StageTable, run_id: str, generation: int) -> dict[str, Any] | None:
    key = generation_prefix(table, run_id, generation) + PLAN
    if generation < 1 or not storage.exists(key):
        return None
    plan: dict[str, Any] = json.loads(storage.get(key))
    return plan


def _make_plan(
    storage: Storage,
    table: StageTable,
    run_id: str,
    generation: int,
    current: dict[str, Any] | None,
    target_bytes: int,
    step: Callable[[str], None],
) -> dict[str, Any]:
    from fanout_core.output import row_count

    inputs: list[tuple[str, str, int, int]] = []  # (group, key, bytes, rows)
    for key in [*(f["key"] for f in (current or {}).get("files", [])), *small_files(storage, run_id, table)]:
        body = storage.get(key)
        inputs.append((_warrior_folder(table, run_id, key), key, len(body), row_count(body)))
    outputs: list[list[tuple[str, int, int]]] = []
    size = 0
    for _group, members in _by_group(inputs):
        group_bytes = sum(m[1] for m in members)
        if outputs and size + group_bytes <= target_bytes:
            outputs[-1].extend(members)
            size += group_bytes
            continue
        outputs.append([])
        size = 0
        for member in members:  # a group past the target alone is cut between its files
            if outputs[-1] and size + member[1] > target_bytes:
                outputs.append([])
                size = 0
            outputs[-1].append(member)
            size += member[1]
    prefix = generation_prefix(table, run_id, generation)
    plan = {
        "run_id": run_id,
        "generation": generation,
        "target_bytes": target_bytes,
        "outputs": [
            {
                "key": f"{prefix}{keys.part_name(i)}{PARQUET}",
                "inputs": [{"key": k, "bytes": b, "rows": r} for k, b, r in members],
            }
            for i, members in enumerate(outputs)
        ],
    }
    step("plan")
    if not storage.put_if_absent(prefix + PLAN, dumps(plan)):
        adopted = _read_plan(storage, table, run_id, generation)  # a concurrent compactor planned first
        assert adopted is not None
        return adopted
    return plan


def _warrior_folder(table: StageTable, run_id: str, key: str) -> str:
    """What packs together: a small file's warrior folder; a compacted file is its own group."""
    prefix = table.output_run_prefix(run_id)
    if key.startswith(prefix):
        return key[len(prefix) :].split("/", 1)[0]
    return key


def _by_group(inputs: Iterable[tuple[str, str, int, int]]) -> list[tuple[str, list[tuple[str, int, int]]]]:
    groups: dict[str, list[tuple[str, int, int]]] = {}
    for group, key, size, rows in inputs:
        groups.setdefault(group, []).append((key, size, rows))
    return list(groups.items())


def _rewrite(storage: Storage, input_keys: list[str]) -> bytes:
    import pandas as pd

    from fanout_core.output import COLUMNS, frame_to_parquet, read_parquet_bytes

    frames = [read_parquet_bytes(storage.get(k)) for k in input_keys]
    frame = pd.concat([f[list(COLUMNS)] for f in frames], ignore_index=True)
    frame = frame.sort_values(SORT_KEY, kind="stable", ignore_index=True)
    return frame_to_parquet(frame, {"fanout.compacted_from": str(len(input_keys))})


def _verify(storage: Storage, plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Each output's rows, read back from its footer, against the rows of its inputs."""
    from fanout_core.output import row_count

    files = []
    for output in plan["outputs"]:
        rows = row_count(storage.get(output["key"]))
        expected = sum(int(i["rows"]) for i in output["inputs"])
        if rows != expected:
            raise CompactionError(
                f"{output['key']} holds {rows} rows, its inputs {expected}; generation not committed"
            )
        files.append({"key": output["key"], "rows": rows})
    return files


def _publish(
    storage: Storage,
    table: StageTable,
    run_id: str,
    current: dict[str, Any],
    uri_base: str,
    step: Callable[[str], None],
) -> None:
    if not uri_base:
        return
    body = "".join(f"{uri_base}{f['key']}\n" for f in current["files"]).encode()
    key = symlink_key(table, run_id)
    try:
        if storage.get(key) == body:
            return
    except NoSuchKey:
        pass
    step("publish")
    storage.put(key, body)


def _delete_inputs(
    storage: Storage,
    table: StageTable,
    plan: dict[str, Any],
    current: dict[str, Any],
    step: Callable[[str], None],
) -> int:
    run_id = current["run_id"]
    keep = {f["key"] for f in current["files"]}
    present = {*small_files(storage, run_id, table), *storage.list(table.compacted_run_prefix(run_id))}
    deleted = 0
    for output in plan["outputs"]:
        for item in output["inputs"]:
            if item["key"] not in keep and item["key"] in present:
                step("delete")
                storage.delete(item["key"])
                deleted += 1
    return deleted
