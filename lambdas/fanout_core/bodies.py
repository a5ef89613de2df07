"""Task bodies: what the object under each stage's prefix holds, parsed into typed values.

A body names its run, the units above its own (their ids are its ``path``, one per folder
of its key, each with the fields it carries to the rows) and its units, the things one
task fetches. Which fields those are is the API description's (``fanout_core.api_description``):
a stage's ``TaskFormat`` reads and writes the bodies of its level, so one format serves
every level of every API. For the built-in description the bytes are those fanout wrote
before descriptions existed. Every parser rejects what the description does not allow
with a message that says what is wrong, so a bad object becomes one clear failure
record and nothing else. ``dumps`` is the canonical JSON of every object the pipeline
writes, so the same value always has the same bytes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from fanout_core import strict_json
from fanout_core.errors import BadManifest, BadTask, FanoutError, PermanentError, TransientError

if TYPE_CHECKING:
    from fanout_core.api_description import ApiDescription, Level

MAX_ID_LEN = 128
MAX_MANIFEST_BYTES = 1024 * 1024
"""A manifest larger than this is refused unread (1 MiB holds ~7,000 ids of 128 characters)."""

_DECIMAL = re.compile(r"-?[0-9]+")
"""An integer id as the client writes it back: its decimal string."""


def check_id(value: Any, what: str, error: type[FanoutError] = BadTask) -> str:
    if not isinstance(value, str):
        raise error(f"{what} must be a string, got {type(value).__name__} {value!r}"[:300])
    if not 1 <= len(value) <= MAX_ID_LEN:
        raise error(f"{what} must be 1 to {MAX_ID_LEN} characters, got {len(value)}")
    # Control characters are Unicode's Cc: C0, DEL and C1 (U+0080..U+009F).
    if "/" in value or any(ord(c) < 32 or 127 <= ord(c) <= 159 for c in value):
        raise error(f"{what} {value!r} holds '/' or a control character")
    # A lone surrogate is no character: it cannot be encoded as UTF-8 into a key or a body.
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise error(f"{what} {value!r} holds a lone surrogate, which is not a character")
    return value


_DECIMAL_RE = re.compile(r"-?(0|[1-9][0-9]{0,18})")


def check_level_id(value: Any, level: Level, what: str, error: type[FanoutError] = BadTask) -> str:
    """A unit id as bodies and keys hold it: ``check_id``'s rules, and for an ``integer`` id
    its decimal string (what ``unit_from_item`` writes of the API's JSON integer)."""
    ident = check_id(value, what, error)
    if level.id_type == "integer" and not _DECIMAL_RE.fullmatch(ident):
        raise error(f"{what} {ident[:40]!r} is not a decimal integer ({level.name} ids are integers)")
    return ident


def _load(body: bytes, what: str, error: type[FanoutError]) -> dict[str, Any]:
    try:
        doc = strict_json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise error(f"{what} is not UTF-8: {exc}") from None
    except strict_json.RepeatedKey as exc:
        raise error(f"{what} is refused: {exc}") from None
    except ValueError as exc:
        raise error(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise error(f"{what} nests arrays or objects too deeply to be read") from None
    if not isinstance(doc, dict):
        raise error(f"{what} must be a JSON object, got {type(doc).__name__}")
    return doc


def _only(doc: dict[str, Any], allowed: set[str], what: str, error: type[FanoutError]) -> None:
    extra = set(doc) - allowed
    if extra:
        # The names come from the input: each is shown cut short, and only the first few.
        names = sorted(extra)
        shown = ", ".join(repr(n if len(n) <= 40 else n[:37] + "...") for n in names[:5])
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        raise error(f"{what} has unknown field(s) {shown}{more}; allowed: {', '.join(sorted(allowed))}")
    missing = allowed - set(doc)
    if missing:
        raise error(f"{what} lacks field(s) {', '.join(sorted(missing))}")


def dumps(doc: dict[str, Any]) -> bytes:
    """Canonical JSON: the same task always serializes to the same bytes."""
    return json.dumps(doc, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


# --- the seed manifest -------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """The seed: the chosen units of the first level, or ``None`` for every one the API lists."""

    level: str
    """The first level's name, the manifest's one field."""
    ids: tuple[str, ...] | None


def _builtin() -> ApiDescription:
    from fanout_core.api_description import builtin

    return builtin()


def parse_manifest(body: bytes, api: ApiDescription | None = None) -> Manifest:
    """The seed manifest of ``api`` (the built-in description when None)."""
    level = (api or _builtin()).levels[0]
    name = level.name
    if len(body) > MAX_MANIFEST_BYTES:
        raise BadManifest(f"manifest is {len(body):,} bytes; at most {MAX_MANIFEST_BYTES:,} are read")
    doc = _load(body, "manifest", BadManifest)
    _only(doc, {name}, "manifest", BadManifest)
    named = doc[name]
    if named == "all":
        return Manifest(name, None)
    if not isinstance(named, list):
        raise BadManifest(f'manifest "{name}" must be a list of {name} ids or the string "all"')
    if not named:
        raise BadManifest(f'manifest "{name}" is an empty list; name at least one, or use "all"')
    ids = [_manifest_id(v, level, f"manifest {name}[{i}]") for i, v in enumerate(named)]
    seen: set[str] = set()
    for ident in ids:
        if ident in seen:
            raise BadManifest(f"manifest names {_one(name)} {ident!r} twice")
        seen.add(ident)
    return Manifest(name, tuple(ids))


def _manifest_id(value: Any, level: Level, what: str) -> str:
    """An integer level's ids may be written as JSON integers, as the API lists them."""
    if level.id_type == "integer" and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return check_level_id(value, level, what, BadManifest)


def _one(plural: str) -> str:
    """A level's name in the singular (a trailing ``s`` dropped), for messages only."""
    return plural[:-1] if plural.endswith("s") and len(plural) > 1 else plural


def manifest_body(ids: list[str] | None, api: ApiDescription | None = None) -> bytes:
    """The seed manifest naming ``ids`` of ``api``'s first level (the built-in's when None)."""
    name = (api or _builtin()).levels[0].name
    return dumps({name: "all" if ids is None else list(ids)})


# --- units: the things a task fetches ---------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """One unit of a level: its id and the fields its listing gave that the level keeps
    (``carry`` and ``keep``; above a task's own level, only the carried ones)."""

    id_name: str
    id: str
    attrs: tuple[tuple[str, str], ...] = ()

    def fields(self) -> dict[str, str]:
        """Every id and attribute of the unit, as bodies and failure records name them."""
        return {self.id_name: self.id, **dict(self.attrs)}


@dataclass(frozen=True, eq=False)
class TaskFormat:
    """The bodies of one stage: the levels above its own (their ids are a body's path) and
    its level, whose units a task holds. Built from the description by the stage table."""

    above: tuple[Level, ...]
    level: Level

    @property
    def plain(self) -> bool:
        """A level that keeps no field writes its units as bare id strings."""
        return not self.level.carry

    def __repr__(self) -> str:
        return f"TaskFormat({self.level.name!r})"

    # --- units ---

    def unit_from_item(self, item: Any) -> Unit:
        """A unit from one item of the level's listing: a missing or mistyped field is a
        broken answer (transient, as any broken page), an id that breaks the id rules is
        permanent."""
        level = self.level
        if not isinstance(item, dict):
            raise TransientError(f"a {_one(level.name)} item is not an object", status=200)
        raw = item.get(cast(str, level.id_field))
        if level.id_type == "integer":
            # The client (pages.check_listing) has already written a JSON integer back as its
            # decimal string; an item that did not come through it may still hold the integer.
            if isinstance(raw, int) and not isinstance(raw, bool):
                raw = str(raw)
            elif not isinstance(raw, str) or not _DECIMAL.fullmatch(raw):
                raise TransientError(
                    f"a {_one(level.name)} item has no integer {level.id_field!r}: {str(item)[:80]}",
                    status=200,
                )
        elif not isinstance(raw, str):
            raise TransientError(
                f"a {_one(level.name)} item has no valid {level.id_field!r}: {str(item)[:80]}", status=200
            )
        for name in (*level.require, *(c.source for c in level.carry)):
            if not isinstance(item.get(name), str):
                raise TransientError(
                    f"a {_one(level.name)} item has no valid {name!r}: {str(item)[:80]}", status=200
                )
        ident = check_level_id(raw, level, cast(str, level.id_name), PermanentError)
        return Unit(
            cast(str, level.id_name), ident, tuple((c.name, cast(str, item[c.source])) for c in level.carry)
        )

    def unit_from_fields(self, fields: Any, what: str | None = None) -> Unit:
        """A unit from its fields as a body or a failure record lists them."""
        level = self.level
        id_name = cast(str, level.id_name)
        where = what or id_name
        if not isinstance(fields, dict):
            raise BadTask(f"{where} must be an object with {', '.join(self._unit_names())}")
        attrs = []
        for c in level.carry:
            value = fields.get(c.name)
            if not isinstance(value, str):
                raise BadTask(f"{where} must be an object with {', '.join(self._unit_names())}")
            attrs.append((c.name, value))
        ident = check_level_id(fields.get(id_name), level, f"{what}.{id_name}" if what else id_name)
        return Unit(id_name, ident, tuple(attrs))

    def _unit_names(self) -> tuple[str, ...]:
        return (cast(str, self.level.id_name), *(c.name for c in self.level.carry))

    @staticmethod
    def carried(level: Level, unit: Unit) -> Unit:
        """What of ``unit`` the bodies below keep: its id and the fields carried to the rows."""
        to_rows = {c.name for c in level.carry if c.to_rows}
        return Unit(unit.id_name, unit.id, tuple((n, v) for n, v in unit.attrs if n in to_rows))

    # --- bodies ---

    def make(self, run_id: str, above: tuple[Unit, ...], units: tuple[Unit, ...]) -> TaskBody:
        """A body of this stage; ``above`` holds one unit per level above (its carried fields only)."""
        return TaskBody(self, run_id, above, tuple(units))

    def to_doc(self, body: TaskBody) -> dict[str, Any]:
        doc: dict[str, Any] = {"run_id": body.run_id}
        for unit in body.above:
            doc.update(unit.fields())
        doc[self.level.name] = [u.id if self.plain else u.fields() for u in body.units]
        return doc

    def from_bytes(self, raw: bytes) -> TaskBody:
        level = self.level
        what = f"{level.name} task"
        doc = _load(raw, what, BadTask)
        above_names = [
            (lv, cast(str, lv.id_name), [c.name for c in lv.carry if c.to_rows]) for lv in self.above
        ]
        allowed = {"run_id", level.name, *(n for _, i, cs in above_names for n in (i, *cs))}
        _only(doc, allowed, what, BadTask)
        listed = doc[level.name]
        if not isinstance(listed, list) or not listed:
            raise BadTask(f"{what}: {level.name} must be a non-empty list")
        above = []
        for lv, id_name, carried in above_names:
            for name in carried:
                if not isinstance(doc[name], str):
                    raise BadTask(f"{what}: {name} must be a string")
            ident = check_level_id(doc[id_name], lv, id_name)
            above.append(Unit(id_name, ident, tuple((n, cast(str, doc[n])) for n in carried)))
        if self.plain:
            units = tuple(
                Unit(cast(str, level.id_name), check_level_id(u, level, f"{level.name}[{i}]"))
                for i, u in enumerate(listed)
            )
        else:
            units = tuple(self.unit_from_fields(u, f"{level.name}[{i}]") for i, u in enumerate(listed))
        body = TaskBody(self, check_id(doc["run_id"], "run_id"), tuple(above), units)
        _distinct(body.units, what)
        return body


# --- task bodies -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskBody:
    """One task: its run, one unit per level above (ids and carried fields), its units."""

    format: TaskFormat = field(compare=False, repr=False)
    run_id: str
    above: tuple[Unit, ...]
    units: tuple[Unit, ...]

    @property
    def path(self) -> tuple[str, ...]:
        """The ids above the units, one per folder level of the task's key."""
        return tuple(u.id for u in self.above)

    def to_bytes(self) -> bytes:
        return dumps(self.format.to_doc(self))

    def with_units(self, units: tuple[Unit, ...]) -> TaskBody:
        return TaskBody(self.format, self.run_id, self.above, tuple(units))

    def columns(self) -> dict[str, str]:
        """The output columns every row of this task shares: the ids and carried fields above."""
        out: dict[str, str] = {}
        for unit in self.above:
            out.update(unit.fields())
        return out

    def unit_ids(self, unit: Unit) -> dict[str, str]:
        """Every id and attribute of one unit, as a failure record lists it."""
        return {**self.columns(), **unit.fields()}

    def unit_from_fields(self, fields: Any) -> Unit:
        """A unit of this body's level from a failure record's fields (redrive)."""
        return self.format.unit_from_fields(fields)


def _distinct(units: tuple[Unit, ...], what: str) -> tuple[Unit, ...]:
    """A body never holds one unit twice: a listing's repeats are collapsed before batching."""
    seen: set[str] = set()
    for unit in units:
        if unit.id in seen:
            raise BadTask(f"{what} names {unit.id!r} twice")
        seen.add(unit.id)
    return units


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
