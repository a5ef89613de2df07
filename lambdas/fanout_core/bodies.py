"""The bodies of the objects under each stage's prefix, parsed into typed values.

Every parser rejects what the contract does not describe with a message that says
what is wrong, so a bad object becomes one clear failure record and nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fanout_core.errors import BadManifest, BadTask, FanoutError

MAX_ID_LEN = 128


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
        doc = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise error(f"{what} is not UTF-8: {exc}") from None
    except ValueError as exc:
        raise error(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise error(f"{what} must be a JSON object, got {type(doc).__name__}")
    return doc


def _only(doc: dict[str, Any], allowed: set[str], what: str, error: type[FanoutError]) -> None:
    extra = set(doc) - allowed
    if extra:
        raise error(f"{what} has unknown field(s) {', '.join(sorted(map(str, extra)))}")
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


@dataclass(frozen=True)
class WarriorsPart:
    run_id: str
    warriors: tuple[str, ...]

    def to_bytes(self) -> bytes:
        return dumps({"run_id": self.run_id, "warriors": list(self.warriors)})

    @classmethod
    def from_bytes(cls, body: bytes) -> WarriorsPart:
        doc = _load(body, "warriors task", BadTask)
        _only(doc, {"run_id", "warriors"}, "warriors task", BadTask)
        ws = doc["warriors"]
        if not isinstance(ws, list) or not ws:
            raise BadTask("warriors task: warriors must be a non-empty list")
        return cls(
            check_id(doc["run_id"], "run_id"),
            tuple(check_id(w, f"warriors[{i}]") for i, w in enumerate(ws)),
        )


@dataclass(frozen=True)
class Troop:
    troop_id: str
    service: str


@dataclass(frozen=True)
class TroopsTask:
    run_id: str
    warrior_id: str
    troops: tuple[Troop, ...]

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
            tuple(parsed),
        )


@dataclass(frozen=True)
class DataGroup:
    data_group_id: str
    name: str


@dataclass(frozen=True)
class DataGroupsTask:
    run_id: str
    warrior_id: str
    troop_id: str
    service: str
    data_groups: tuple[DataGroup, ...]

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
            tuple(parsed),
        )


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
