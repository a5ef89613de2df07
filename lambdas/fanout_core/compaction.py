"""Compaction: once a run is complete, rewrite its many small Parquet files into a few large ones.

Exactly once, through the storage interface alone (the same code on a directory and
on S3), in steps that each leave the bucket valid, so a kill at any point resumes:

1. **Plan** (``compacted/run=<run>/gen=<g>/plan.json``, create-only). Generation ``g``
   is one past the current one (1 for a run never compacted). Its inputs are the current
   generation's files plus the run's small files under ``data/run=<run>/`` that the
   current generation did not already consume, sorted by key and packed into outputs of
   about ``target_bytes`` and at most ``target_rows`` rows (whole top-level folders
   together, one per unit of the first level; a folder larger than that alone is cut
   between its files). A second compactor that
   loses the create adopts the winner's plan, so two never disagree.
2. **Write** each output ``data/run=<run>/gen-<g>-part-NNNNN.parquet`` (next to the
   id folders, so the run's output stays where a user looks for it), create-only, rows
   sorted by ``sort_key`` (the rows' first timestamp, then the ids level by level), so a
   time-range filter skips most row groups by their statistics. Inputs are read one at
   a time into compact columns and written a row group at a time: memory is bounded by
   the output, not by the run.
   An object appears whole or not at all, so an output that exists is not written again.
3. **Verify**: the rows in the outputs' footers equal the rows the plan's inputs hold.
4. **Commit**: write ``compacted/run=<run>/current.json`` naming generation ``g`` and
   its files. This one object is the switch for an exact reader: before it, the old
   files; after it, the new ones; never both.
5. **Publish** the Athena symlink manifest ``athena/run=<run>/current.txt`` (the Glue
   table's partition location): one URI per current file, replaced whole.
6. **Delete** the plan's inputs (small files and the previous generation's files), only
   now that the new generation is complete and current. Until this step ends, a plain
   glob over ``data/run=<run>/`` sees the old and the new files (the documented window).

Concurrent compactors (two overlapping ``local run``s, a manual ``fanout compact``): the
loser of the plan adopts it; outputs are create-only; a compactor that finds an input or
output gone (the other committed and deleted it) looks again and adopts the committed
generation; one that finds a generation at least as new already committed does not
overwrite it.

A reader picks the current generation with ``current_files``: the files ``current.json``
names if it exists, else the small files under ``data/run=<run>/`` (a run not yet
compacted). A small file that appears after a compaction (a redrive) is in no generation:
``current_files`` adds the small files the current generation's plan did not consume, and
the next compaction takes them into a new generation (only then does Athena see them).
A reader that then reads those files runs through ``consistent_read``, which starts over
when a concurrent commit deleted a file between the listing and the read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fanout_core import keys
from fanout_core.api_description import ApiDescription
from fanout_core.bodies import dumps
from fanout_core.errors import StorageFault
from fanout_core.failures import now_iso
from fanout_core.stages import STAGES, TASK_SUFFIX, StageTable
from fanout_core.storage import NoSuchKey, Storage

T = TypeVar("T")

TARGET_BYTES = 128 * 1024 * 1024
"""Input bytes packed into one compacted file (compaction shrinks them a little)."""
TARGET_ROWS = 1_048_576
"""Rows packed into one compacted file at most (eight full row groups of
``output.ROW_GROUP_ROWS``): a compaction holds ~120 bytes a row of its output, so this
bounds its memory (~130 MB above the interpreter's) whatever the size of the run."""
CURRENT = "current.json"
SYMLINK = "current.txt"
PLAN = "plan.json"
PARQUET = ".parquet"
GENERATION_FILE = "gen-"
"""A compacted file's name starts so, directly under ``data/run=<run>/``: no ``=`` in it,
so a Hive-style reader adds no column for it, and no id folder is named so."""
ATTEMPTS = 5
"""How many times a compactor or a reader starts over when a concurrent compaction
deleted what it was reading (each start over follows a commit, so a few suffice)."""


def sort_key(api: ApiDescription) -> list[str]:
    """The order of a compacted file's rows: the rows' first timestamp or date column (if
    any), then the id of each level down to the unit."""
    times = [c.name for c in api.rows.columns if c.type in ("timestamp", "date")][:1]
    return [*times, *(str(lv.id_name) for lv in api.stage_levels)]


class NotComplete(Exception):
    """The run still has pending tasks (or no seed): compacting now could miss rows."""


class CompactionError(Exception):
    """The outputs do not hold the rows the plan's inputs hold; nothing was committed."""


class ReadRaced(StorageFault):
    """Concurrent compactions kept deleting the files a reader (or a compactor) was reading,
    ``ATTEMPTS`` times in a row: nothing is lost, the same command again reads the new files."""


@dataclass
class CompactionResult:
    run_id: str
    generation: int
    state: str
    """``compacted`` (this call committed ``generation``), ``current`` (already compacted,
    nothing new, or a concurrent compactor committed it), or ``empty`` (a complete run with
    no output files)."""
    inputs: int = 0
    files: list[str] = field(default_factory=list)
    rows: int = 0
    written: int = 0
    """Outputs this call wrote (the rest an earlier, interrupted call had written)."""
    deleted: int = 0


def generation_prefix(table: StageTable, run_id: str, generation: int) -> str:
    """The generation's bookkeeping folder (its plan), outside ``data/``."""
    return f"{table.compacted_run_prefix(run_id)}gen={generation}/"


def output_key(table: StageTable, run_id: str, generation: int, index: int) -> str:
    """A compacted file of generation ``generation``, in the run's output folder."""
    return (
        f"{table.output_run_prefix(run_id)}{GENERATION_FILE}{generation:05d}-{keys.part_name(index)}{PARQUET}"
    )


def current_key(table: StageTable, run_id: str) -> str:
    return table.compacted_run_prefix(run_id) + CURRENT


def symlink_key(table: StageTable, run_id: str) -> str:
    return table.query_run_prefix(run_id) + SYMLINK


def _get_json(storage: Storage, key: str) -> dict[str, Any] | None:
    try:
        doc: dict[str, Any] = json.loads(storage.get(key))
    except NoSuchKey:
        return None
    return doc


def read_current(storage: Storage, run_id: str, table: StageTable = STAGES) -> dict[str, Any] | None:
    """The run's commit record (generation, files, rows), or None if it was never compacted."""
    return _get_json(storage, current_key(table, run_id))


def _is_generation_file(table: StageTable, run_id: str, key: str) -> bool:
    rest = key[len(table.output_run_prefix(run_id)) :]
    return "/" not in rest and rest.startswith(GENERATION_FILE)


def small_files(storage: Storage, run_id: str, table: StageTable = STAGES) -> list[str]:
    """The run's Parquet files as the leaf stage wrote them, in the id folders under
    ``data/run=<run>/`` (not the compacted files beside them)."""
    return [k for k in output_files(storage, run_id, table) if not _is_generation_file(table, run_id, k)]


def output_files(storage: Storage, run_id: str, table: StageTable = STAGES) -> list[str]:
    """Every Parquet file in the run's output folder: what a glob over ``data/run=<run>/``
    reads (exactly the run's rows, except while a compaction deletes what it replaced)."""
    return [k for k in storage.list(table.output_run_prefix(run_id)) if k.endswith(PARQUET)]


def _consumed(plan: dict[str, Any] | None) -> set[str]:
    return {i["key"] for o in plan["outputs"] for i in o["inputs"]} if plan else set()


def current_files(storage: Storage, run_id: str, table: StageTable = STAGES) -> list[str]:
    """The files a reader should read for ``run_id``: the current generation's, plus any small
    file it did not consume (written later, by a redrive); with no generation, the small files."""
    current = read_current(storage, run_id, table)
    if current is None:
        return small_files(storage, run_id, table)
    consumed = _consumed(_read_plan(storage, table, run_id, int(current["generation"])))
    late = [k for k in small_files(storage, run_id, table) if k not in consumed]
    return [str(f["key"]) for f in current["files"]] + late


def consistent_read(read: Callable[[], T], run_id: str, attempts: int = ATTEMPTS) -> T:
    """``read()`` (which resolves ``current_files`` and reads them), started over when a file
    it listed is gone: a concurrent compaction committed and deleted it between the two.
    Bounded: past ``attempts`` it raises ``ReadRaced`` (one line, no traceback for a user)."""
    for _ in range(attempts):
        try:
            return read()
        except NoSuchKey:
            continue
    raise ReadRaced(
        f"run {run_id!r}: concurrent compactions replaced its files under {attempts} reads in a row"
    )


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
    target_rows: int = TARGET_ROWS,
    uri_base: str = "",
    require_complete: bool = True,
    on_step: Callable[[str], None] | None = None,
) -> CompactionResult:
    """Compact ``run_id`` (or finish an interrupted compaction); safe to call any number of
    times, and by several processes at once.

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
    for _ in range(ATTEMPTS):
        try:
            return _compact_once(storage, run_id, table, target_bytes, target_rows, uri_base, step)
        except NoSuchKey:
            # An input or output vanished: a concurrent compactor committed a generation and
            # deleted what it replaced. Look again: the next pass adopts what it committed.
            continue
    raise ReadRaced(
        f"run {run_id!r}: its files vanished under {ATTEMPTS} compactions in a row "
        "(concurrent compactions, or a file removed by hand)"
    )


def _compact_once(
    storage: Storage,
    run_id: str,
    table: StageTable,
    target_bytes: int,
    target_rows: int,
    uri_base: str,
    step: Callable[[str], None],
) -> CompactionResult:
    current = read_current(storage, run_id, table)
    generation = int(current["generation"]) if current else 0
    consumed: set[str] = set()
    if current is not None:
        # Finish the committed generation's clean-up first (a kill may have stopped it).
        plan = _read_plan(storage, table, run_id, generation)
        consumed = _consumed(plan)
        _publish(storage, table, run_id, current, uri_base, step)
        deleted = _delete_inputs(storage, table, plan, current, step) if plan else 0
        late = [k for k in small_files(storage, run_id, table) if k not in consumed]
        elsewhere = [f for f in current["files"] if not _is_generation_file(table, run_id, f["key"])]
        if not late and not elsewhere:
            return _adopted(current, deleted)
        # New small files (a redrive), or a generation an older version wrote outside the
        # output folder (``compacted/run=<run>/gen=<g>/``): the next generation takes them in.
    plan = _read_plan(storage, table, run_id, generation + 1) or _make_plan(
        storage, table, run_id, generation + 1, current, consumed, target_bytes, target_rows, step
    )
    if not plan["outputs"]:
        return CompactionResult(run_id, generation, "empty")
    written = 0
    for output in plan["outputs"]:
        if storage.exists(output["key"]):
            continue
        body = _rewrite(storage, output["inputs"], table.api)
        newer = _superseded(storage, table, run_id, plan, step)
        if newer is not None:
            return newer
        step("write")
        if storage.put_if_absent(output["key"], body):
            written += 1
        del body
    files = _verify(storage, plan)
    newer = _superseded(storage, table, run_id, plan, step)
    if newer is not None:
        return newer
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


def _superseded(
    storage: Storage, table: StageTable, run_id: str, plan: dict[str, Any], step: Callable[[str], None]
) -> CompactionResult | None:
    """The committed generation if a concurrent compactor committed ``plan``'s or a newer one.

    A late compactor never commits an older generation over a newer one (that would hide
    the newer one's rows), and removes any output of its plan that it wrote after a newer
    generation had consumed and deleted it (a stray a glob over ``data/`` would read)."""
    latest = read_current(storage, run_id, table)
    if latest is None or int(latest["generation"]) < int(plan["generation"]):
        return None
    deleted = 0
    if int(latest["generation"]) > int(plan["generation"]):
        keep = {f["key"] for f in latest["files"]}
        for output in plan["outputs"]:
            if output["key"] not in keep and storage.exists(output["key"]):
                step("delete")
                storage.delete(output["key"])
                deleted += 1
    return _adopted(latest, deleted)


def _adopted(current: dict[str, Any], deleted: int) -> CompactionResult:
    return CompactionResult(
        current["run_id"],
        int(current["generation"]),
        "current",
        files=[f["key"] for f in current["files"]],
        rows=int(current["rows"]),
        deleted=deleted,
    )


def _read_plan(storage: Storage, table: StageTable, run_id: str, generation: int) -> dict[str, Any] | None:
    if generation < 1:
        return None
    return _get_json(storage, generation_prefix(table, run_id, generation) + PLAN)


def _make_plan(
    storage: Storage,
    table: StageTable,
    run_id: str,
    generation: int,
    current: dict[str, Any] | None,
    consumed: set[str],
    target_bytes: int,
    target_rows: int,
    step: Callable[[str], None],
) -> dict[str, Any]:
    from fanout_core.output import row_count

    # The current generation's files and the small files it did not consume: never a
    # small file it did (a concurrent compactor may be deleting those right now).
    smalls = [k for k in small_files(storage, run_id, table) if k not in consumed]
    inputs: list[tuple[str, str, int, int]] = []  # (group, key, bytes, rows)
    for key in [*(f["key"] for f in (current or {}).get("files", [])), *smalls]:
        body = storage.get(key)
        inputs.append((_top_folder(table, run_id, key), key, len(body), row_count(body)))
        del body
    outputs: list[list[tuple[str, int, int]]] = []
    size = rows = 0
    for _group, members in _by_group(inputs):
        group_bytes = sum(m[1] for m in members)
        group_rows = sum(m[2] for m in members)
        if outputs and size + group_bytes <= target_bytes and rows + group_rows <= target_rows:
            outputs[-1].extend(members)
            size += group_bytes
            rows += group_rows
            continue
        outputs.append([])
        size = rows = 0
        for member in members:  # a group past a target alone is cut between its files
            if outputs[-1] and (size + member[1] > target_bytes or rows + member[2] > target_rows):
                outputs.append([])
                size = rows = 0
            outputs[-1].append(member)
            size += member[1]
            rows += member[2]
    plan = {
        "run_id": run_id,
        "generation": generation,
        "target_bytes": target_bytes,
        "outputs": [
            {
                "key": output_key(table, run_id, generation, i),
                "inputs": [{"key": k, "bytes": b, "rows": r} for k, b, r in members],
            }
            for i, members in enumerate(outputs)
        ],
    }
    step("plan")
    if not storage.put_if_absent(generation_prefix(table, run_id, generation) + PLAN, dumps(plan)):
        adopted = _read_plan(storage, table, run_id, generation)  # a concurrent compactor planned first
        assert adopted is not None
        return adopted
    return plan


def _top_folder(table: StageTable, run_id: str, key: str) -> str:
    """What packs together: a small file's top id folder (its first-level unit); a compacted
    file, or a small file of a one-stage table (no folder), is its own group."""
    if _is_generation_file(table, run_id, key):
        return key
    prefix = table.output_run_prefix(run_id)
    if key.startswith(prefix):
        return key[len(prefix) :].split("/", 1)[0]
    return key


def _by_group(inputs: Iterable[tuple[str, str, int, int]]) -> list[tuple[str, list[tuple[str, int, int]]]]:
    groups: dict[str, list[tuple[str, int, int]]] = {}
    for group, key, size, rows in inputs:
        groups.setdefault(group, []).append((key, size, rows))
    return list(groups.items())


def _rewrite(storage: Storage, inputs: list[dict[str, Any]], api: ApiDescription) -> bytes:
    """One output's bytes: its inputs read one at a time into compact columns, sorted by
    ``sort_key(api)``, written a row group at a time (``fanout_core.output.SortedColumns``)."""
    from fanout_core.output import SortedColumns

    # TEMPORARY (issue 21): SortedColumns(rows, api) once output takes the description.
    columns = SortedColumns(sum(int(i["rows"]) for i in inputs))
    for item in inputs:
        columns.add(storage.get(item["key"]))
    return columns.to_parquet(sort_key(api), {"fanout.compacted_from": str(len(inputs))})


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
    # The newest commit, read just before writing: a compactor that lost a race must not
    # put back the manifest of the generation it started from.
    current = read_current(storage, run_id, table) or current
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
    present = {
        *storage.list(table.output_run_prefix(run_id)),
        *storage.list(table.compacted_run_prefix(run_id)),  # generations compacted before data/ held them
    }
    deleted = 0
    for output in plan["outputs"]:
        for item in output["inputs"]:
            if item["key"] not in keep and item["key"] in present:
                step("delete")
                storage.delete(item["key"])
                deleted += 1
    return deleted
