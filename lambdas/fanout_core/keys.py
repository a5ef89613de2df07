"""Object keys: a task key is parsed once into a ``TaskAddress``, and every key is built from one.

Identifiers may hold spaces, ``+``, ``=``, ``'``, ``%``, ``.``, ``..`` and any script. In a
key each one becomes a *segment*: its UTF-8 percent-encoding with only
``A-Z a-z 0-9 _ . - ~`` left bare, so a segment never holds ``/``, ``=``, ``+`` or a
space. A segment of at most ``SEGMENT_MAX`` bytes decodes back to the exact id. A longer
encoding (a 128-character id in another script encodes to over 1,000 bytes) is
shortened to exactly ``SEGMENT_MAX + 1`` bytes: a readable head, ``~``, and a SHA-256
digest of the id; the full id lives in the task body and the Parquet columns. So every
key of every contract-valid id stays far below S3's 1,024-byte limit, and every folder
name below the local file system's 255 bytes. The Hive-style ``name=value`` folders
keep Athena/Glue partitioning.

Which prefix and which folder levels a stage's keys have is the stage table's business
(``fanout_core.stages``); this module only knows how an address becomes a key and back.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

from fanout_core.errors import BadManifest, BadTask

if TYPE_CHECKING:
    from fanout_core.stages import Stage

RUN_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
SEGMENT_MAX = 120
"""Longest segment that is an id's plain encoding; a shortened one is one byte longer."""
_DIGEST_MIN_HEX = 40
_SEGMENT_RE = re.compile(r"(?:[A-Za-z0-9_.~-]|%[0-9A-F]{2})+")
_PART_RE = re.compile(r"part-(\d{5,})(?:~redrive-([1-9]\d*))?\.json")
_ESCAPE_TAIL = re.compile(r"%[0-9A-F]?$")

DONE_PREFIX = "done/"
FAILED_PREFIX = "failed/"
PLANS_PREFIX = "plans/"
"""Where a listing stage keeps the children it decided on, once, for every later attempt."""
ARCHIVE_PREFIX = "archive/"
TASK_SUFFIX = ".json"


def encode_id(identifier: str) -> str:
    """The key segment of an identifier (its plain encoding, or a shortened one)."""
    encoded = quote(identifier, safe="")
    if len(encoded) <= SEGMENT_MAX:
        return encoded
    head = encoded[: SEGMENT_MAX - _DIGEST_MIN_HEX]
    head = _ESCAPE_TAIL.sub("", head)  # never cut an escape in half
    digest = hashlib.sha256(identifier.encode("utf-8", "surrogatepass")).hexdigest()
    return head + "~" + digest[: SEGMENT_MAX - len(head)]


def is_shortened(segment: str) -> bool:
    return len(segment) > SEGMENT_MAX


def decode_id(segment: str) -> str:
    """The identifier a plain segment encodes; a shortened one names its id only by digest."""
    if is_shortened(segment):
        raise ValueError(f"segment {segment[:40]!r}... is a shortened id; the task body holds the id")
    return unquote(segment, errors="strict")


def check_segment(segment: str, what: str) -> str:
    """A segment must be exactly what ``encode_id`` makes of some id (one key per id)."""
    if not segment or len(segment) > SEGMENT_MAX + 1 or not _SEGMENT_RE.fullmatch(segment):
        raise BadTask(f"{what} segment {segment[:200]!r} is not an encoded identifier")
    if not is_shortened(segment):
        try:
            identifier = decode_id(segment)
        except UnicodeDecodeError:
            raise BadTask(f"{what} segment {segment[:200]!r} is not UTF-8") from None
        if encode_id(identifier) != segment:
            raise BadTask(f"{what} segment {segment[:200]!r} is not in canonical form")
    return segment


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not RUN_ID_RE.fullmatch(run_id):
        raise BadManifest(
            f"run id {str(run_id)[:80]!r} must be 1 to 64 characters of A-Z a-z 0-9 . _ - "
            "(it is the manifest's file name without .json)"
        )
    return run_id


def part_name(index: int, redrive: int = 0) -> str:
    return f"part-{index:05d}" + (f"~redrive-{redrive}" if redrive else "")


@dataclass(frozen=True)
class TaskAddress:
    """Where one task lives: its stage, run, the segments of its folders, and its part.

    ``part`` is None for the run's seed manifest (``<prefix><run>.json``). Built from ids
    with ``Stage.address``, or parsed from a key with ``StageTable.parse``; either way
    its key, markers and output key are derived here and nowhere else.
    """

    stage: Stage
    run_id: str
    segments: tuple[str, ...]
    part: int | None
    redrive: int = 0

    @property
    def is_seed(self) -> bool:
        return self.part is None

    def _folders(self) -> str:
        levels = (f"{level}={seg}" for level, seg in zip(self.stage.levels, self.segments, strict=True))
        return "/".join((f"run={self.run_id}", *levels))

    @property
    def key(self) -> str:
        if self.part is None:
            return f"{self.stage.input_prefix}{self.run_id}{TASK_SUFFIX}"
        return f"{self.stage.input_prefix}{self._folders()}/{part_name(self.part, self.redrive)}{TASK_SUFFIX}"

    @property
    def done_key(self) -> str:
        return DONE_PREFIX + self.key

    @property
    def failed_key(self) -> str:
        return FAILED_PREFIX + self.key

    @property
    def plan_key(self) -> str:
        return PLANS_PREFIX + self.key

    def output_key(self, output_prefix: str) -> str:
        """The Parquet object a leaf task writes: its key's folders, under ``output_prefix``."""
        if self.part is None:
            raise BadTask("a seed manifest writes no output")
        return f"{output_prefix}{self._folders()}/{part_name(self.part, self.redrive)}.parquet"

    def names(self, ids: tuple[str, ...]) -> bool:
        """Do ``ids`` (a body's path) encode to exactly this address's folder segments?"""
        return len(ids) == len(self.segments) and all(
            encode_id(i) == seg for i, seg in zip(ids, self.segments, strict=True)
        )

    def redriven(self, generation: int) -> TaskAddress:
        """A sibling for a task re-created with only its failed units."""
        return replace(self, redrive=generation)


def address_for(stage: Stage, run_id: str, ids: tuple[str, ...], part: int) -> TaskAddress:
    if len(ids) != len(stage.levels):
        raise ValueError(f"stage {stage.name} keys hold {len(stage.levels)} id(s), got {len(ids)}")
    return TaskAddress(stage, check_run_id(run_id), tuple(encode_id(i) for i in ids), part)


def seed_address(stage: Stage, run_id: str) -> TaskAddress:
    return TaskAddress(stage, check_run_id(run_id), (), None)


def parse_in_stage(key: str, stage: Stage, *, seeds: bool) -> TaskAddress:
    """Parse a key already known to start with ``stage.input_prefix``; BadTask if it is no task."""
    rest = key[len(stage.input_prefix) :]
    if not rest.endswith(TASK_SUFFIX):
        raise BadTask(f"{key[:300]!r} is not a task key (no {TASK_SUFFIX})")
    parts = rest.split("/")
    if len(parts) == 1:
        if not seeds:
            raise BadTask(f"{key[:300]!r} is not a task key of stage {stage.name}")
        try:
            return seed_address(stage, parts[0][: -len(TASK_SUFFIX)])
        except BadManifest as exc:
            raise BadManifest(f"{key[:300]!r} is not a seed manifest key: {exc}") from None
    if len(parts) != len(stage.levels) + 2:
        raise BadTask(
            f"{key[:300]!r}: a {stage.name} task key has run=, "
            + "".join(f"{level}=, " for level in stage.levels)
            + "then part-NNNNN.json"
        )
    run_folder, *level_folders, name = parts
    if not run_folder.startswith("run="):
        raise BadTask(f"{key[:300]!r} has no run=<id> folder")
    run_id = check_run_id(run_folder[len("run=") :])
    segments = []
    for level, folder in zip(stage.levels, level_folders, strict=True):
        if not folder.startswith(level + "="):
            raise BadTask(f"{key[:300]!r}: expected a {level}= folder, got {folder[:200]!r}")
        segments.append(check_segment(folder[len(level) + 1 :], level))
    match = _PART_RE.fullmatch(name)
    if match is None:
        raise BadTask(f"{key[:300]!r}: the file name must be part-NNNNN.json or part-NNNNN~redrive-N.json")
    return TaskAddress(stage, run_id, tuple(segments), int(match.group(1)), int(match.group(2) or 0))


def task_key_of_marker(marker_key: str) -> str:
    for prefix in (DONE_PREFIX, FAILED_PREFIX, PLANS_PREFIX):
        if marker_key.startswith(prefix):
            return marker_key[len(prefix) :]
    raise ValueError(f"{marker_key!r} is neither a done marker, a failure record nor a plan")


def done_key(task_key: str) -> str:
    return DONE_PREFIX + task_key


def failed_key(task_key: str) -> str:
    return FAILED_PREFIX + task_key


def archived_failure_key(task_key: str, stamp: str) -> str:
    return f"{ARCHIVE_PREFIX}{FAILED_PREFIX}{task_key}@{stamp}"
