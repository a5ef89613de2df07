"""The documentation's marked blocks: JSON shapes (``<!-- schema: NAME -->``, in
docs/json-output.md) and runnable examples (``<!-- example: NAME -->``, in docs/operating.md),
so the tests check what the documentation says."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
JSON_OUTPUT = ROOT / "docs" / "json-output.md"
_BLOCK = re.compile(r"<!-- (schema|example): ([a-z_]+) -->\s*\n```[a-z]*\n(.*?)\n```", re.S)


def blocks(kind: str, *paths: Path) -> dict[str, str]:
    """Every marked block of ``kind`` in the pages ``paths``, by name."""
    found: dict[str, str] = {}
    for path in paths:
        for k, name, body in _BLOCK.findall(path.read_text(encoding="utf-8")):
            if k == kind:
                assert name not in found, f"block {name} is marked twice"
                found[name] = body
    return found


def schemas() -> dict[str, Any]:
    return {name: json.loads(body) for name, body in blocks("schema", JSON_OUTPUT).items()}


_TYPES: dict[str, Any] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def violations(value: Any, shape: Any, defs: dict[str, Any], where: str = "$") -> list[str]:
    """Where ``value`` departs from the documented ``shape`` (empty: it keeps to it)."""
    if isinstance(shape, str) and shape.startswith("$"):
        return violations(value, defs[shape[1:]], defs, where)
    if isinstance(shape, str):
        if any(_TYPES[t](value) for t in shape.split("|")):
            return []
        return [f"{where}: {value!r} is not {shape}"]
    if isinstance(shape, list):
        if not isinstance(value, list):
            return [f"{where}: {value!r} is not a list"]
        return [v for i, item in enumerate(value) for v in violations(item, shape[0], defs, f"{where}[{i}]")]
    if not isinstance(value, dict):
        return [f"{where}: {value!r} is not an object"]
    if len(shape) == 1 and next(iter(shape)).startswith("<"):
        inner = next(iter(shape.values()))
        return [v for k, item in value.items() for v in violations(item, inner, defs, f"{where}.{k}")]
    fields = expand(shape, defs)
    out = [f"{where}: undocumented key {k!r}" for k in value if k not in fields]
    out += [f"{where}: missing key {k!r}" for k in fields if k not in value]
    for k, inner in fields.items():
        if k in value:
            out += violations(value[k], inner, defs, f"{where}.{k}")
    return out


def expand(shape: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """An object's keys, with ``"...": "$x"`` replaced by the keys of ``x``."""
    fields: dict[str, Any] = {}
    for k, inner in shape.items():
        if k == "...":
            fields.update(expand(defs[inner[1:]], defs))
        else:
            fields[k] = inner
    return fields
