"""Compaction from the command line and at the end of a local run (the core is
``fanout_core.compaction``; this module only knows where the bucket is)."""

from __future__ import annotations

from typing import TextIO

from fanout.bucket import StorageSpec
from fanout_core.compaction import CompactionResult, NotComplete, ReadRaced, compact_run
from fanout_core.stages import STAGES, StageTable
from fanout_core.storage import LocalDirStorage, Storage


def uri_base(storage: Storage, spec: StorageSpec | None) -> str:
    """What a key is prefixed with in the Athena manifest: ``s3://bucket/``, or ``file://`` + the folder."""
    if spec is not None and spec.bucket:
        return f"s3://{spec.bucket}/"
    if isinstance(storage, LocalDirStorage):
        return storage.root.resolve().as_uri() + "/"
    bucket = getattr(storage, "bucket", None)
    return f"s3://{bucket}/" if isinstance(bucket, str) else ""


def describe(result: CompactionResult) -> str:
    if result.state == "empty":
        return f"run {result.run_id}: no output to compact"
    if result.state == "current":
        return (
            f"run {result.run_id}: already compacted, generation {result.generation}: "
            f"{len(result.files)} file(s), {result.rows} rows"
            + (f"; removed {result.deleted} leftover input(s)" if result.deleted else "")
        )
    # Short: with a demo's run id it fits an 80-column terminal. The inputs are removed
    # once replaced, so only a count that differs from theirs is worth a word.
    return (
        f"run {result.run_id}: {result.inputs} file(s) into {len(result.files)} "
        f"(gen. {result.generation}), {result.rows:,} rows"
        + (f", {result.deleted} removed" if result.deleted != result.inputs else "")
    )


def compact_finished_run(
    storage: Storage,
    run_id: str,
    spec: StorageSpec | None,
    progress: TextIO | None,
    failure_records: list[str],
    table: StageTable = STAGES,
) -> CompactionResult | None:
    """The hook at the end of ``demo`` and ``local run``: this process has no task of the run left.

    A run with failure records is left as it is: it will most likely be redriven, and
    compacting it now would only mean a second generation after the redrive.
    """
    if failure_records:
        if progress is not None:
            print(
                f"not compacted: {len(failure_records)} task(s) failed; after `fanout redrive "
                f"{run_id}`, run `fanout compact {run_id}`",
                file=progress,
            )
        return None
    try:
        result = compact_run(storage, run_id, table=table, uri_base=uri_base(storage, spec))
    except NotComplete as exc:
        # Another process (a cron run overlapping a manual one) still runs tasks of this run:
        # the one that sees it complete compacts it. Expected, not an error.
        if progress is not None:
            print(
                f"not compacted yet: {exc}; the process still running it compacts it at its end",
                file=progress,
            )
        return None
    except ReadRaced as exc:
        if progress is not None:
            print(f"not compacted: {exc}; run `fanout compact {run_id}`", file=progress)
        return None
    if progress is not None:
        print(f"compacted: {describe(result)}", file=progress)
    return result
