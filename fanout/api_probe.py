"""``fanout check --api``: one real call per level, following the first item down.

Writing a description is mostly reading the API's answers: this makes the calls the crawl
would make first (each level's path filled with the first item's id of every level above,
the level's fixed query, the auth, the first page of its pagination style) and prints what
came back: per level the first item's fields, and for the leaf a ``columns:`` block, types
guessed from the JSON values, ready to paste into the description's ``rows``.

Every call is the preflight's (``fanout.preflight._get``): bounded in time and bytes, no
redirect followed, the secret kept out of everything printed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from fanout_core.api_description import ApiDescription, Level
from fanout_core.hermes_http import encode_segment
from fanout_core.pages import decode_page
from fanout_core.secrets import redact

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_NAME = re.compile(r"[^a-z0-9_]+")
SHOWN_FIELDS = 30
"""Fields named per level (a level's items may have many)."""


@dataclass
class Probed:
    ok: bool = True
    lines: list[str] = field(default_factory=list)


def guess_type(value: Any) -> str | None:
    """A column type for one JSON value (None for null: it says nothing of the type)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "double"
    if isinstance(value, dict | list):
        return "json"
    if isinstance(value, str) and _RFC3339.fullmatch(value):
        return "timestamp"
    if isinstance(value, str) and _DATE.fullmatch(value):
        return "date"
    return "string"


def _merge(types: set[str]) -> str:
    if not types:
        return "string"
    if len(types) == 1:
        return next(iter(types))
    if types == {"int64", "double"}:
        return "double"
    if types <= {"timestamp", "date", "string"}:
        return "string"
    return "json"


def columns_block(items: Iterable[dict[str, Any]]) -> list[str]:
    """A description's ``columns:`` block for these items' fields, in first-seen order: a field
    null in any item is ``nullable``, one absent from any is ``required: false``."""
    rows = list(items)
    order: dict[str, None] = {}
    for item in rows:
        order.update(dict.fromkeys(item))
    lines = ["columns:"]
    for name in order:
        present = [item[name] for item in rows if name in item]
        types = {t for t in map(guess_type, present) if t is not None}
        column = _NAME.sub("_", name.lower()).strip("_") or "field"
        if not column[0].isalpha():
            column = "f_" + column
        parts = [f"name: {column}", f"type: {_merge(types)}"]
        if column != name:
            parts.append(f"source: {json.dumps(name)}")
        if any(v is None for v in present):
            parts.append("nullable: true")
        if len(present) < len(rows):
            parts.append("required: false")
        lines.append("  - {" + ", ".join(parts) + "}")
    return lines


def _first_page_query(level: Level, secret_params: dict[str, str]) -> dict[str, str]:
    p = level.pagination
    query = {**level.query}
    if p.page_size_param and p.page_size:
        query[p.page_size_param] = str(p.page_size)
    if p.type == "offset" and p.offset_param:
        query[p.offset_param] = "0"
    if p.type == "page_number" and p.page_param:
        query[p.page_param] = str(p.first_page)
    return {**query, **secret_params}


def _items(doc: Any, level: Level) -> list[Any] | None:
    for part in level.items:
        doc = doc.get(part) if isinstance(doc, dict) else None
    return doc if isinstance(doc, list) else None


def _fields(item: dict[str, Any]) -> str:
    names = list(item)
    shown = ", ".join(names[:SHOWN_FIELDS])
    return shown + (f", ... ({len(names)} in all)" if len(names) > SHOWN_FIELDS else "")


def probe_levels(api: ApiDescription, url: str, secret: str, *, timeout_s: float = 5.0) -> Probed:
    """Call each level once, top first, under the first item of every level above it."""
    from fanout.api_choice import auth_parts
    from fanout.preflight import UNANSWERED, _get
    from fanout_core.hermes_transport import deadline_session

    out = Probed()
    headers, params = auth_parts(api, secret)
    headers = {**headers, "Accept": "application/json"}
    session = deadline_session(url)
    hide = [secret] if secret else []
    ids: dict[str, str] = {}
    for level in api.levels:
        path = level.path
        for name, above in ids.items():
            path = path.replace("{" + name + "}", encode_segment(above))
        where = f"{url}{path}"
        query = _first_page_query(level, params)
        try:
            status, _headers, body = _get(
                session, f"{where}?{urlencode(query)}" if query else where, headers, timeout_s
            )
        except UNANSWERED as exc:
            out.ok = False
            out.lines.append(
                redact(f"FAIL level {level.name}: {where}: no answer ({type(exc).__name__})", hide)
            )
            return out
        if status != 200:
            out.ok = False
            out.lines.append(redact(f"FAIL level {level.name}: {where} answered {status}", hide))
            return out
        try:
            items = _items(decode_page(body), level)
        except ValueError:
            items = None
        if items is None:
            out.ok = False
            dotted = ".".join(level.items) or "(the body itself)"
            out.lines.append(
                f"FAIL level {level.name}: {where}: no list at items {dotted}; fix: the level's items"
            )
            return out
        if not items:
            out.ok = False
            out.lines.append(
                f"FAIL level {level.name}: {where} listed no items, so the levels below cannot be called"
            )
            return out
        first = items[0]
        if not isinstance(first, dict):
            out.ok = False
            out.lines.append(f"FAIL level {level.name}: {where}: its items are not objects")
            return out
        out.lines.append(
            redact(
                f"ok   level {level.name}: {where}: {len(items)} item(s); "
                f"first item's fields: {_fields(first)}",
                hide,
            )
        )
        if level.is_leaf:
            out.lines.append(f"     the fields of {level.name} as the description's rows (types guessed):")
            out.lines.extend(
                "     " + line for line in columns_block(i for i in items if isinstance(i, dict))
            )
            return out
        ident = first.get(level.id_field or "")
        if isinstance(ident, bool) or not isinstance(ident, str | int):
            out.ok = False
            out.lines.append(
                f"FAIL level {level.name}: the first item has no id at field {level.id_field!r} "
                f"(its fields: {_fields(first)})"
            )
            return out
        ids[level.name] = str(ident)
    return out
