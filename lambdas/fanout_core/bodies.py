"""Task bodies: what the object under each stage's prefix holds, parsed into typed values.

A body names its run, the ids of the path above its units (its ``path``, one id per
folder level of its key) and its units, the things one task fetches: warriors, troops
or data groups. Every parser rejects what the contract does not describe with a
message that says what is wrong, so a bad object becomes one clear failure record and
nothing else. ``dumps`` is the canonical JSON of every object the pipeline writes, so
the same value always has the same bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self

from fanout_core import strict_json
from fanout_core.errors import BadManifest, BadTask, FanoutError, PermanentError

MAX_ID_LEN = 128
MAX_MANIFEST_BYTES = 1024 * 1024
"""A manifest larger than this is refused unread (1 MiB holds ~7,000 ids of 128 characters)."""


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


@dataclass(frozen=True)
class Manifest:
    """The seed: chosen warriors, or ``None`` for every warrior the API lists."""

    warriors: tuple[str, ...] | None


def parse_manifest(body: bytes) -> Manifest:
    if len(body) > MAX_MANIFEST_BYTES:
        raise BadManifest(f"manifest is {len(body):,} bytes; at most {MAX_MANIFEST_BYTES:,} are read")
    doc = _load(body, "manifest", BadManifest)
    _only(doc, {"warriors"}, "manifest", BadManifest)
    warriors = doc["warriors"]
    if warriors == "all":
        return Manifest(None)
    if not isinstance(warriors, list):
        raise BadManifest('manifest "warriors" must be a list of warrior ids or the string "all"')
    if not warriors:
        raise BadManifest('manifest "warriors" is an empty list; name at least one, or use "all"')
    ids = [check_id(w, f"manifest warriors[{i}]", BadManifest) for i, w in enumerate(warriors)]
    seen: set[str] = set()
    for w in ids:
        if w in seen:
            raise BadManifest(f"manifest names warrior {w!r} twice")
        seen.add(w)
    return Manifest(tuple(ids))


def manifest_body(warriors: list[str] | None) -> bytes:
    return dumps({"warriors": "all" if warriors is None else list(warriors)})


# --- units: the things a task fetches ---------------------------------------------------


class Unit(Protocol):
    """One warrior, troop or data group: an id and the attributes its listing gave."""

    @property
    def id(self) -> str: ...
    def fields(self) -> dict[str, str]: ...


@dataclass(frozen=True)
class Warrior:
    warrior_id: str

    @property
    def id(self) -> str:
        return self.warrior_id

    def fields(self) -> dict[str, str]:
        return {"warrior_id": self.warrior_id}

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Warrior:
        """A unit from a Hermes list item; an id that breaks the contract is permanent."""
        return cls(check_id(item["warrior_id"], "warrior_id", PermanentError))

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> Warrior:
        return cls(check_id(fields.get("warrior_id"), "warrior_id"))


@dataclass(frozen=True)
class Troop:
    troop_id: str
    service: str

    @property
    def id(self) -> str:
        return self.troop_id

    def fields(self) -> dict[str, str]:
        return {"troop_id": self.troop_id, "service": self.service}

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Troop:
        return cls(check_id(item["troop_id"], "troop_id", PermanentError), str(item["service"]))

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> Troop:
        return cls(check_id(fields.get("troop_id"), "troop_id"), str(fields.get("service", "")))


@dataclass(frozen=True)
class DataGroup:
    data_group_id: str
    name: str

    @property
    def id(self) -> str:
        return self.data_group_id

    def fields(self) -> dict[str, str]:
        return {"data_group_id": self.data_group_id, "name": self.name}

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> DataGroup:
        return cls(check_id(item["data_group_id"], "data_group_id", PermanentError), str(item["name"]))

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> DataGroup:
        return cls(check_id(fields.get("data_group_id"), "data_group_id"), str(fields.get("name", "")))


# --- task bodies -----------------------------------------------------------------------------


class TaskBody(Protocol):
    """What every stage's body offers the core, whatever its fields are called."""

    unit_type: ClassVar[Any]
    """The class of its units (``Warrior``, ``Troop``, ``DataGroup``)."""

    @property
    def run_id(self) -> str: ...
    @property
    def path(self) -> tuple[str, ...]:
        """The ids above the units, one per folder level of the task's key."""
        ...

    @property
    def units(self) -> tuple[Any, ...]: ...
    def to_bytes(self) -> bytes: ...
    def with_units(self, units: tuple[Any, ...]) -> Self: ...
    def unit_ids(self, unit: Any) -> dict[str, str]:
        """Every id and attribute of one unit, as a failure record lists it."""
        ...

    def columns(self) -> dict[str, str]:
        """The output columns every row of this task shares (leaf stages only)."""
        ...

    @classmethod
    def from_bytes(cls, body: bytes) -> Self: ...
    @classmethod
    def make(cls, run_id: str, path: tuple[str, ...], parent: Any, units: tuple[Any, ...]) -> Self:
        """The body of a child task: ``parent`` is the unit whose listing gave ``units``."""
        ...


def _distinct(units: tuple[Any, ...], what: str) -> tuple[Any, ...]:
    """A body never holds one unit twice: a listing's repeats are collapsed before batching."""
    seen: set[str] = set()
    for unit in units:
        if unit.id in seen:
            raise BadTask(f"{what} names {unit.id!r} twice")
        seen.add(unit.id)
    return units


@dataclass(frozen=True)
class WarriorsPart:
    run_id: str
    warriors: tuple[str, ...]

    unit_type: ClassVar[Any] = Warrior

    @property
    def path(self) -> tuple[str, ...]:
        return ()

    @property
    def units(self) -> tuple[Warrior, ...]:
        return tuple(Warrior(w) for w in self.warriors)

    def with_units(self, units: tuple[Any, ...]) -> WarriorsPart:
        return WarriorsPart(self.run_id, tuple(u.id for u in units))

    def unit_ids(self, unit: Any) -> dict[str, str]:
        return dict(unit.fields())

    def columns(self) -> dict[str, str]:
        return {}

    @classmethod
    def make(cls, run_id: str, path: tuple[str, ...], parent: Any, units: tuple[Any, ...]) -> WarriorsPart:
        return cls(run_id, tuple(u.id for u in units))

    def to_bytes(self) -> bytes:
        return dumps({"run_id": self.run_id, "warriors": list(self.warriors)})

    @classmethod
    def from_bytes(cls, body: bytes) -> WarriorsPart:
        doc = _load(body, "warriors task", BadTask)
        _only(doc, {"run_id", "warriors"}, "warriors task", BadTask)
        ws = doc["warriors"]
        if not isinstance(ws, list) or not ws:
            raise BadTask("warriors task: warriors must be a non-empty list")
        part = cls(
            check_id(doc["run_id"], "run_id"),
            tuple(check_id(w, f"warriors[{i}]") for i, w in enumerate(ws)),
        )
        _distinct(part.units, "warriors task")
        return part


@dataclass(frozen=True)
class TroopsTask:
    run_id: str
    warrior_id: str
    troops: tuple[Troop, ...]

    unit_type: ClassVar[Any] = Troop

    @property
    def path(self) -> tuple[str, ...]:
        return (self.warrior_id,)

    @property
    def units(self) -> tuple[Troop, ...]:
        return self.troops

    def with_units(self, units: tuple[Any, ...]) -> TroopsTask:
        return TroopsTask(self.run_id, self.warrior_id, tuple(units))

    def unit_ids(self, unit: Any) -> dict[str, str]:
        return {"warrior_id": self.warrior_id, **unit.fields()}

    def columns(self) -> dict[str, str]:
        return {"warrior_id": self.warrior_id}

    @classmethod
    def make(cls, run_id: str, path: tuple[str, ...], parent: Any, units: tuple[Any, ...]) -> TroopsTask:
        (warrior_id,) = path
        return cls(run_id, warrior_id, tuple(units))

    def to_bytes(self) -> bytes:
        return dumps(
            {
                "run_id": self.run_id,
                "warrior_id": self.warrior_id,
                "troops": [{"troop_id": t.troop_id, "service": t.service} for t in self.troops],
            }
        )

    @classmethod
    def from_bytes(cls, body: bytes) -> TroopsTask:
        doc = _load(body, "troops task", BadTask)
        _only(doc, {"run_id", "warrior_id", "troops"}, "troops task", BadTask)
        troops = doc["troops"]
        if not isinstance(troops, list) or not troops:
            raise BadTask("troops task: troops must be a non-empty list")
        parsed = []
        for i, t in enumerate(troops):
            if not isinstance(t, dict) or not isinstance(t.get("service"), str):
                raise BadTask(f"troops task: troops[{i}] must be an object with troop_id and service")
            parsed.append(Troop(check_id(t.get("troop_id"), f"troops[{i}].troop_id"), t["service"]))
        return cls(
            check_id(doc["run_id"], "run_id"),
            check_id(doc["warrior_id"], "warrior_id"),
            _distinct(tuple(parsed), "troops task"),
        )


@dataclass(frozen=True)
class DataGroupsTask:
    run_id: str
    warrior_id: str
    troop_id: str
    service: str
    data_groups: tuple[DataGroup, ...]

    unit_type: ClassVar[Any] = DataGroup

    @property
    def path(self) -> tuple[str, ...]:
        return (self.warrior_id, self.troop_id)

    @property
    def units(self) -> tuple[DataGroup, ...]:
        return self.data_groups

    def with_units(self, units: tuple[Any, ...]) -> DataGroupsTask:
        return DataGroupsTask(self.run_id, self.warrior_id, self.troop_id, self.service, tuple(units))

    def unit_ids(self, unit: Any) -> dict[str, str]:
        return {**self.columns(), **unit.fields()}

    def columns(self) -> dict[str, str]:
        return {"warrior_id": self.warrior_id, "troop_id": self.troop_id, "service": self.service}

    @classmethod
    def make(cls, run_id: str, path: tuple[str, ...], parent: Any, units: tuple[Any, ...]) -> DataGroupsTask:
        warrior_id, troop_id = path
        return cls(run_id, warrior_id, troop_id, parent.service, tuple(units))

    def to_bytes(self) -> bytes:
        return dumps(
            {
                "run_id": self.run_id,
                "warrior_id": self.warrior_id,
                "troop_id": self.troop_id,
                "service": self.service,
                "data_groups": [{"data_group_id": g.data_group_id, "name": g.name} for g in self.data_groups],
            }
        )

    @classmethod
    def from_bytes(cls, body: bytes) -> DataGroupsTask:
        what = "data_groups task"
        doc = _load(body, what, BadTask)
        _only(doc, {"run_id", "warrior_id", "troop_id", "service", "data_groups"}, what, BadTask)
        groups = doc["data_groups"]
        if not isinstance(groups, list) or not groups:
            raise BadTask(f"{what}: data_groups must be a non-empty list")
        if not isinstance(doc["service"], str):
            raise BadTask(f"{what}: service must be a string")
        parsed = []
        for i, g in enumerate(groups):
            if not isinstance(g, dict) or not isinstance(g.get("name"), str):
                raise BadTask(f"{what}: data_groups[{i}] must be an object with data_group_id and name")
            parsed.append(
                DataGroup(check_id(g.get("data_group_id"), f"data_groups[{i}].data_group_id"), g["name"])
            )
        return cls(
            check_id(doc["run_id"], "run_id"),
            check_id(doc["warrior_id"], "warrior_id"),
            check_id(doc["troop_id"], "troop_id"),
            doc["service"],
            _distinct(tuple(parsed), what),
        )


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
