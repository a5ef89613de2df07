"""The API description: the hierarchy, the API's shape and the rows, read from one file.

Everything that used to name a level (the stage table, task bodies, the client's lists,
record checks, the Parquet schema, the stack's functions and Glue columns, the simulator)
reads an ``ApiDescription`` instead. Hermes' is ``apis/hermes.yaml`` beside this module,
the default. ``docs/describe-your-api.md`` is the format's reference and walkthrough.

A description is checked whole at load: an error names the field and, for YAML, its line
(``ApiDescriptionError``, one line). The YAML is parsed here, never in a Lambda: the bundle
carries the validated description as canonical JSON (``to_json``), read by ``from_json``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

BUILTIN_DIR = Path(__file__).parent / "apis"
DEFAULT_API = BUILTIN_DIR / "hermes.yaml"
"""Hermes' description: the default wherever no ``--api`` or ``"api"`` names another."""

MIN_LEVELS, MAX_LEVELS = 2, 6
MAX_DESCRIPTION_BYTES = 256 * 1024

PaginationType = Literal["cursor", "next_url", "link_header", "offset", "page_number", "single_page"]
PAGINATION_TYPES: tuple[str, ...] = (
    "cursor",
    "next_url",
    "link_header",
    "offset",
    "page_number",
    "single_page",
)
AuthType = Literal["none", "bearer", "api_key", "basic"]
AUTH_TYPES: tuple[str, ...] = ("none", "bearer", "api_key", "basic")
ColumnType = Literal["string", "int64", "double", "boolean", "timestamp", "date", "json"]
COLUMN_TYPES: tuple[str, ...] = ("string", "int64", "double", "boolean", "timestamp", "date", "json")
ExtraPolicy = Literal["keep", "drop", "refuse"]
IdType = Literal["string", "integer"]

RESERVED_COLUMNS = ("run_id", "fetched_at")
"""Columns every row has: the run first, the fetch time last."""

_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,39}")
_FIELD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}")
_PREFIX_RE = re.compile(r"[a-z0-9][a-z0-9_\-]{0,39}/")
_PARAM_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-\[\]]{0,63}")
_ENV_RE = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")
_PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")


class ApiDescriptionError(ValueError):
    """A description that breaks the format: one line naming the field (and its line)."""


# --- the model ------------------------------------------------------------------------


@dataclass(frozen=True)
class Auth:
    """How every call proves itself. The secret is never in the description: ``env`` names
    the environment variable that holds it locally; on AWS it is the environment's Secrets
    Manager secret. For ``basic`` the secret is ``user:password``."""

    type: AuthType = "none"
    env: str | None = None
    location: Literal["header", "query"] | None = None
    """``api_key`` only: where the key is sent."""
    name: str | None = None
    """``api_key`` only: the header or query parameter that carries it."""


@dataclass(frozen=True)
class Total:
    """Where a list reports how many items it holds: a response header or a body path."""

    header: str | None = None
    path: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Pagination:
    """How one list goes from page to page; each style stops on its own end signal, and
    every style keeps the same bounds (``max_pages``, ``max_items``, no cursor or URL
    followed twice, the call's total deadline)."""

    type: PaginationType = "single_page"
    page_size: int | None = None
    """Items asked for per page (sent as ``page_size_param``); None sends no size."""
    page_size_param: str | None = None
    cursor_path: tuple[str, ...] = ()
    """``cursor``: where the next cursor sits in the body; null or absent ends the list."""
    cursor_param: str | None = None
    """``cursor``: the query parameter the cursor is sent back in."""
    next_url_path: tuple[str, ...] = ()
    """``next_url``: where the next page's URL sits in the body; null or absent ends it."""
    offset_param: str | None = None
    """``offset``: the query parameter of the first item's offset (from 0)."""
    page_param: str | None = None
    """``page_number``: the query parameter of the page number."""
    first_page: int = 1
    total: Total | None = None
    """Where the list reports its total (optional); offset and page-number lists also stop on it."""
    max_pages: int = 10_000
    max_items: int = 1_000_000


@dataclass(frozen=True)
class Carried:
    """One field of a unit written to a task body (and, if ``to_rows``, to every row below)."""

    name: str
    """Its name in task bodies, failure records and the output rows."""
    source: str
    """The item field it is read from."""
    to_rows: bool


@dataclass(frozen=True)
class Level:
    """One level of the hierarchy: how to list its items under the ids of the levels above.

    Every level but the last has units that a stage handles (``prefix``); the last level's
    items are the output rows.
    """

    name: str
    """Plural, as the task bodies and the manifest name its units (``shops``)."""
    path: str
    """Path template; ``{<level name>}`` stands for the id of that level above."""
    query: Mapping[str, str] = field(default_factory=dict)
    items: tuple[str, ...] = ()
    """Dotted path to the item list in a page; empty: the body itself is the list."""
    pagination: Pagination = field(default_factory=Pagination)
    prefix: str | None = None
    """The S3 prefix of the stage that handles this level's units (None for the leaf)."""
    folder: str | None = None
    """The key folder name of this level's ids (``shop`` in ``shop=<id>/``)."""
    id_field: str | None = None
    """The item field that is a unit's id."""
    id_name: str | None = None
    """The id's name in bodies, records and rows (defaults to ``id_field``)."""
    id_type: IdType = "string"
    carry: tuple[Carried, ...] = ()
    require: tuple[str, ...] = ()
    """Item fields that must be present as strings, though nothing keeps them."""
    description: str = ""

    @property
    def is_leaf(self) -> bool:
        return self.prefix is None

    @property
    def placeholders(self) -> tuple[str, ...]:
        return tuple(_PLACEHOLDER_RE.findall(self.path))


@dataclass(frozen=True)
class Column:
    """One output column read from each leaf item."""

    name: str
    type: ColumnType
    source: tuple[str, ...]
    """Dotted path in the item (defaults to the column's name)."""
    nullable: bool = False
    required: bool = True
    """Whether the field must be present (a nullable field may still be required)."""


@dataclass(frozen=True)
class Rows:
    columns: tuple[Column, ...]
    extra: ExtraPolicy = "drop"
    """What happens to item fields no column reads: kept as JSON text in ``extra_column``,
    dropped, or refused (the unit fails)."""
    extra_column: str = "extra"


@dataclass(frozen=True)
class ApiDescription:
    name: str
    base_url: str | None
    auth: Auth
    levels: tuple[Level, ...]
    rows: Rows
    health: str | None = None
    """A path answered without auth or rate limit, for the preflight (None: none)."""
    source: str = ""
    """Where it was read from, for messages."""

    @property
    def stage_levels(self) -> tuple[Level, ...]:
        """The levels whose units a stage handles: all but the leaf."""
        return self.levels[:-1]

    @property
    def leaf(self) -> Level:
        return self.levels[-1]

    def level(self, name: str) -> Level:
        for lv in self.levels:
            if lv.name == name:
                return lv
        raise KeyError(
            f"{self.name}: no level {name!r}; levels are {', '.join(lv.name for lv in self.levels)}"
        )

    def id_columns(self) -> tuple[str, ...]:
        """The row columns that come from the units above (ids and carried fields), in order."""
        out: list[str] = []
        for lv in self.stage_levels:
            out.append(cast(str, lv.id_name))
            out.extend(c.name for c in lv.carry if c.to_rows)
        return tuple(out)

    def column_names(self) -> tuple[str, ...]:
        """Every output column in order: run, ids and carried fields, the rows' columns, extra, fetch time."""
        extra = (self.rows.extra_column,) if self.rows.extra == "keep" else ()
        return ("run_id", *self.id_columns(), *(c.name for c in self.rows.columns), *extra, "fetched_at")

    def to_json(self) -> bytes:
        """Canonical JSON of the validated description: what the Lambda bundle carries."""
        return json.dumps(_plain(self), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _plain(desc: ApiDescription) -> dict[str, Any]:
    def pag(p: Pagination) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": p.type, "max_pages": p.max_pages, "max_items": p.max_items}
        if p.page_size is not None:
            doc.update(page_size=p.page_size, page_size_param=p.page_size_param)
        if p.type == "cursor":
            doc.update(cursor_path=".".join(p.cursor_path), cursor_param=p.cursor_param)
        elif p.type == "next_url":
            doc.update(next_url_path=".".join(p.next_url_path))
        elif p.type == "offset":
            doc.update(offset_param=p.offset_param)
        elif p.type == "page_number":
            doc.update(page_param=p.page_param, first_page=p.first_page)
        if p.total is not None:
            doc["total"] = (
                {"header": p.total.header} if p.total.header else {"path": ".".join(p.total.path or ())}
            )
        return doc

    levels = []
    for lv in desc.levels:
        doc: dict[str, Any] = {
            "name": lv.name,
            "path": lv.path,
            "query": dict(lv.query),
            "items": ".".join(lv.items) or ".",
            "pagination": pag(lv.pagination),
        }
        if lv.description:
            doc["description"] = lv.description
        if not lv.is_leaf:
            doc.update(
                prefix=lv.prefix,
                folder=lv.folder,
                id={"field": lv.id_field, "name": lv.id_name, "type": lv.id_type},
                carry=[{c.name: c.source} for c in lv.carry if c.to_rows],
                keep=[{c.name: c.source} for c in lv.carry if not c.to_rows],
                require=list(lv.require),
            )
        levels.append(doc)
    top: dict[str, Any] = {"name": desc.name}
    if desc.base_url is not None:
        top["base_url"] = desc.base_url
    if desc.health is not None:
        top["health"] = desc.health
    return top | {
        "auth": {
            k: v
            for k, v in {
                "type": desc.auth.type,
                "env": desc.auth.env,
                "in": desc.auth.location,
                "name": desc.auth.name,
            }.items()
            if v is not None
        },
        "levels": levels,
        "rows": {
            "columns": [
                {
                    "name": c.name,
                    "type": c.type,
                    "source": ".".join(c.source),
                    "nullable": c.nullable,
                    "required": c.required,
                }
                for c in desc.rows.columns
            ],
            "extra": desc.rows.extra,
        }
        | ({"extra_column": desc.rows.extra_column} if desc.rows.extra == "keep" else {}),
    }


# --- loading ----------------------------------------------------------------------------


def load(path: str | Path | None = None) -> ApiDescription:
    """The description in ``path`` (YAML, or the bundle's JSON), checked whole; the built-in
    Hermes description when ``path`` is None."""
    p = Path(path) if path is not None else DEFAULT_API
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ApiDescriptionError(f"{p}: cannot read the API description: {exc.strerror or exc}") from None
    if len(raw) > MAX_DESCRIPTION_BYTES:
        raise ApiDescriptionError(
            f"{p}: {len(raw):,} bytes; an API description is at most {MAX_DESCRIPTION_BYTES:,}"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiDescriptionError(f"{p}: not UTF-8") from None
    if p.suffix == ".json":
        return from_json(text, source=str(p))
    doc, lines = _yaml_with_lines(text, str(p))
    return from_doc(doc, source=str(p), lines=lines)


def from_json(text: str | bytes, *, source: str = "<json>") -> ApiDescription:
    """A description from JSON (the bundle's form), checked as a YAML one is."""
    from fanout_core import strict_json

    try:
        doc = strict_json.loads(text if isinstance(text, str) else text.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise ApiDescriptionError(f"{source}: not valid JSON: {str(exc)[:200]}") from None
    return from_doc(doc, source=source, lines={})


_builtin: ApiDescription | None = None


def builtin() -> ApiDescription:
    """Hermes' description, read once per process."""
    global _builtin
    if _builtin is None:
        bundled = BUILTIN_DIR / "hermes.json"
        _builtin = load(bundled if bundled.exists() else DEFAULT_API)
    return _builtin


def is_builtin(api: ApiDescription) -> bool:
    """Whether ``api`` is Hermes' own description, wherever it was read from and whatever its
    base URL: the one rule the runtimes, the CLI and the simulator apply."""
    hermes = builtin()
    return api is hermes or replace(api, base_url=None, source="") == replace(
        hermes, base_url=None, source=""
    )


def _yaml_with_lines(text: str, source: str) -> tuple[Any, dict[tuple[str | int, ...], int]]:
    """Plain data from YAML, and the line of every value by its path. YAML's own
    conveniences that surprise in a config (repeated keys, anchors' merges, tags) are refused."""
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ApiDescriptionError(f"{source}:{where}: not valid YAML: {problem}") from None
    if node is None:
        raise ApiDescriptionError(f"{source}: the file is empty")
    lines: dict[tuple[str | int, ...], int] = {}

    def build(n: Any, path: tuple[str | int, ...]) -> Any:
        lines[path] = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            out: dict[str, Any] = {}
            for k, v in n.value:
                if not isinstance(k, yaml.ScalarNode) or k.tag == "tag:yaml.org,2002:merge":
                    raise ApiDescriptionError(
                        f"{source}: line {k.start_mark.line + 1}: keys must be plain names"
                    )
                key = k.value
                if key in out:
                    raise ApiDescriptionError(
                        f"{source}: line {k.start_mark.line + 1}: {key!r} is given twice"
                    )
                out[key] = build(v, (*path, key))
            return out
        if isinstance(n, yaml.SequenceNode):
            return [build(v, (*path, i)) for i, v in enumerate(n.value)]
        return scalars.construct_object(n, deep=True)

    scalars = yaml.SafeLoader("")
    return build(node, ()), lines


# --- checking ---------------------------------------------------------------------------


class _Check:
    """Reads one raw document, naming each bad field with its path and line."""

    def __init__(self, source: str, lines: Mapping[tuple[str | int, ...], int]):
        self.source = source
        self.lines = lines

    def fail(self, path: tuple[str | int, ...], message: str) -> ApiDescriptionError:
        name = ""
        for part in path:
            name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else part)
        at = path
        while at and at not in self.lines:
            at = at[:-1]
        line = self.lines.get(at)
        where = f"{self.source}: line {line}: " if line else f"{self.source}: "
        return ApiDescriptionError(f"{where}{name or 'the description'}: {message}")

    def mapping(self, value: Any, path: tuple[str | int, ...], allowed: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"must be a mapping, got {_kind(value)}")
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise self.fail((*path, unknown[0]), f"unknown field; allowed here: {', '.join(sorted(allowed))}")
        return value

    def text(self, value: Any, path: tuple[str | int, ...], pattern: re.Pattern[str] | None = None) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(path, f"must be a non-empty string, got {_kind(value)}")
        if pattern is not None and not pattern.fullmatch(value):
            raise self.fail(path, f"{value[:80]!r} must match {pattern.pattern}")
        return value

    def integer(self, value: Any, path: tuple[str | int, ...], low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(path, f"must be an integer from {low} to {high}, got {str(value)[:40]!r}")
        return value

    def boolean(self, value: Any, path: tuple[str | int, ...]) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"must be true or false, got {_kind(value)}")
        return value

    def choice(self, value: Any, path: tuple[str | int, ...], choices: tuple[str, ...]) -> str:
        if value not in choices:
            raise self.fail(path, f"must be one of {', '.join(choices)}, got {str(value)[:40]!r}")
        return cast(str, value)

    def dotted(self, value: Any, path: tuple[str | int, ...], *, body_ok: bool = False) -> tuple[str, ...]:
        if body_ok and value in (".", "", None):
            return ()
        parts = self.text(value, path).split(".")
        if not all(_FIELD_RE.fullmatch(p) and "." not in p for p in parts):
            raise self.fail(path, f"{value[:80]!r} must be a dotted path of field names")
        return tuple(parts)


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def from_doc(doc: Any, *, source: str, lines: Mapping[tuple[str | int, ...], int]) -> ApiDescription:
    """A description from plain data, checked whole."""
    ck = _Check(source, lines)
    top = ck.mapping(doc, (), {"name", "base_url", "health", "auth", "pagination", "levels", "rows"})
    for required in ("name", "levels", "rows"):
        if required not in top:
            raise ck.fail((required,), "is required")
    name = ck.text(top["name"], ("name",), _NAME_RE)
    base_url = top.get("base_url")
    if base_url is not None:
        base_url = ck.text(base_url, ("base_url",))
        if not base_url.startswith(("http://", "https://")):
            raise ck.fail(("base_url",), f"must be an http(s) URL, got {base_url[:80]!r}")
        base_url = base_url.rstrip("/")
    health = top.get("health")
    if health is not None:
        health = ck.text(health, ("health",))
        if not health.startswith("/"):
            raise ck.fail(("health",), "must be a path starting with /")
    auth = _auth(ck, top.get("auth", {"type": "none"}))
    default_pag = top.get("pagination", {"type": "single_page"})
    raw_levels = top["levels"]
    if not isinstance(raw_levels, list) or not MIN_LEVELS <= len(raw_levels) <= MAX_LEVELS:
        raise ck.fail(("levels",), f"must be a list of {MIN_LEVELS} to {MAX_LEVELS} levels")
    levels = tuple(
        _level(ck, raw, i, i == len(raw_levels) - 1, default_pag, raw_levels[:i])
        for i, raw in enumerate(raw_levels)
    )
    rows = _rows(ck, top["rows"])
    desc = ApiDescription(
        name=name, base_url=base_url, auth=auth, levels=levels, rows=rows, health=health, source=source
    )
    _check_whole(ck, desc)
    return desc


def _auth(ck: _Check, raw: Any) -> Auth:
    path: tuple[str | int, ...] = ("auth",)
    doc = ck.mapping(raw, path, {"type", "env", "in", "name"})
    kind = cast(AuthType, ck.choice(doc.get("type"), (*path, "type"), AUTH_TYPES))
    if kind == "none":
        if set(doc) - {"type"}:
            raise ck.fail(path, "type none takes no other field")
        return Auth()
    env = ck.text(doc.get("env"), (*path, "env"), _ENV_RE)
    if kind == "api_key":
        location = cast(
            Literal["header", "query"], ck.choice(doc.get("in"), (*path, "in"), ("header", "query"))
        )
        key_name = ck.text(doc.get("name"), (*path, "name"), _PARAM_RE)
        return Auth(kind, env, location, key_name)
    if "in" in doc or "name" in doc:
        raise ck.fail(path, f"'in' and 'name' belong to api_key auth, not {kind}")
    return Auth(kind, env)


_PAG_FIELDS: dict[str, set[str]] = {
    "cursor": {"cursor_path", "cursor_param", "page_size", "page_size_param"},
    "next_url": {"next_url_path", "page_size", "page_size_param"},
    "link_header": {"page_size", "page_size_param"},
    "offset": {"offset_param", "page_size", "page_size_param"},
    "page_number": {"page_param", "first_page", "page_size", "page_size_param"},
    "single_page": set(),
}
_PAG_COMMON = {"type", "total", "max_pages", "max_items"}


def _pagination(ck: _Check, raw: Any, path: tuple[str | int, ...]) -> Pagination:
    if not isinstance(raw, dict):
        raise ck.fail(path, f"must be a mapping, got {_kind(raw)}")
    kind = cast(PaginationType, ck.choice(raw.get("type"), (*path, "type"), PAGINATION_TYPES))
    doc = ck.mapping(raw, path, _PAG_FIELDS[kind] | _PAG_COMMON)
    page_size = None
    if "page_size" in doc:
        page_size = ck.integer(doc["page_size"], (*path, "page_size"), 1, 10_000)
    size_param = doc.get("page_size_param")
    if size_param is not None:
        size_param = ck.text(size_param, (*path, "page_size_param"), _PARAM_RE)
    if (page_size is None) != (size_param is None) and kind != "single_page":
        raise ck.fail(path, "page_size and page_size_param go together")
    if kind in ("offset", "page_number") and page_size is None:
        raise ck.fail((*path, "page_size"), f"is required for {kind} pagination (a short page ends the list)")
    total = None
    if "total" in doc:
        tdoc = ck.mapping(doc["total"], (*path, "total"), {"header", "path"})
        if len(tdoc) != 1:
            raise ck.fail((*path, "total"), "names exactly one of header or path")
        total = (
            Total(header=ck.text(tdoc["header"], (*path, "total", "header"), _PARAM_RE))
            if "header" in tdoc
            else Total(path=ck.dotted(tdoc["path"], (*path, "total", "path")))
        )
    pag = Pagination(
        type=kind,
        page_size=page_size,
        page_size_param=size_param,
        total=total,
        max_pages=ck.integer(doc.get("max_pages", 10_000), (*path, "max_pages"), 1, 1_000_000),
        max_items=ck.integer(doc.get("max_items", 1_000_000), (*path, "max_items"), 1, 100_000_000),
    )
    if kind == "cursor":
        return replace(
            pag,
            cursor_path=ck.dotted(doc.get("cursor_path"), (*path, "cursor_path")),
            cursor_param=ck.text(doc.get("cursor_param"), (*path, "cursor_param"), _PARAM_RE),
        )
    if kind == "next_url":
        return replace(pag, next_url_path=ck.dotted(doc.get("next_url_path"), (*path, "next_url_path")))
    if kind == "offset":
        return replace(pag, offset_param=ck.text(doc.get("offset_param"), (*path, "offset_param"), _PARAM_RE))
    if kind == "page_number":
        return replace(
            pag,
            page_param=ck.text(doc.get("page_param"), (*path, "page_param"), _PARAM_RE),
            first_page=ck.integer(doc.get("first_page", 1), (*path, "first_page"), 0, 1),
        )
    return pag


_LEVEL_FIELDS = {"name", "path", "query", "items", "pagination", "description"}
_UNIT_FIELDS = {"prefix", "folder", "id", "carry", "keep", "require"}


def _carried(ck: _Check, raw: Any, path: tuple[str | int, ...], to_rows: bool) -> tuple[Carried, ...]:
    """``[service]`` or ``{name: source}`` or a list mixing ``name`` and ``{name: source}``."""
    entries: list[tuple[str, str, tuple[str | int, ...]]] = []
    if isinstance(raw, dict):
        entries = [(k, v, (*path, k)) for k, v in raw.items()]
    elif isinstance(raw, list):
        for i, item in enumerate(raw):
            if isinstance(item, str):
                entries.append((item, item, (*path, i)))
            elif isinstance(item, dict) and len(item) == 1:
                ((k, v),) = item.items()
                entries.append((k, v, (*path, i)))
            else:
                raise ck.fail((*path, i), "must be a field name or {name: source field}")
    else:
        raise ck.fail(path, f"must be a list of field names or a mapping, got {_kind(raw)}")
    return tuple(
        Carried(ck.text(n, where, _NAME_RE), ck.text(s, where, _FIELD_RE), to_rows) for n, s, where in entries
    )


def _level(ck: _Check, raw: Any, i: int, leaf: bool, default_pag: Any, above: list[Any]) -> Level:
    path: tuple[str | int, ...] = ("levels", i)
    doc = ck.mapping(raw, path, _LEVEL_FIELDS | (set() if leaf else _UNIT_FIELDS))
    for required in ("name", "path") + (() if leaf else ("prefix", "id")):
        if required not in doc:
            raise ck.fail(
                (*path, required), "is required" + ("" if leaf else " (every level but the last has units)")
            )
    name = ck.text(doc["name"], (*path, "name"), _NAME_RE)
    url_path = ck.text(doc["path"], (*path, "path"))
    if not url_path.startswith("/"):
        raise ck.fail((*path, "path"), "must start with /")
    above_names = [str(a.get("name")) for a in above if isinstance(a, dict)]
    for ph in _PLACEHOLDER_RE.findall(url_path):
        if ph not in above_names:
            raise ck.fail(
                (*path, "path"), f"{{{ph}}} names no level above ({', '.join(above_names) or 'none'})"
            )
    if "{" in _PLACEHOLDER_RE.sub("", url_path) or "}" in _PLACEHOLDER_RE.sub("", url_path):
        raise ck.fail((*path, "path"), "has an unbalanced { or }")
    if i > 0 and above_names and above_names[-1] not in _PLACEHOLDER_RE.findall(url_path):
        raise ck.fail((*path, "path"), f"must name {{{above_names[-1]}}}: the unit whose items it lists")
    query = ck.mapping(doc.get("query", {}), (*path, "query"), set(doc.get("query", {}) or {}))
    for k, v in query.items():
        ck.text(k, (*path, "query", k), _PARAM_RE)
        if not isinstance(v, str | int) or isinstance(v, bool):
            raise ck.fail((*path, "query", k), "must be a string or an integer")
    level = Level(
        name=name,
        path=url_path,
        query={k: str(v) for k, v in query.items()},
        items=ck.dotted(doc.get("items", "."), (*path, "items"), body_ok=True),
        pagination=_pagination(ck, doc.get("pagination", default_pag), (*path, "pagination")),
        description=ck.text(doc["description"], (*path, "description")) if "description" in doc else "",
    )
    if leaf:
        return level
    prefix = ck.text(doc["prefix"], (*path, "prefix"), _PREFIX_RE)
    id_doc = doc["id"]
    if isinstance(id_doc, str):
        id_doc = {"field": id_doc}
    id_doc = ck.mapping(id_doc, (*path, "id"), {"field", "name", "type"})
    id_field = ck.text(id_doc.get("field"), (*path, "id", "field"), _FIELD_RE)
    return replace(
        level,
        prefix=prefix,
        folder=ck.text(doc.get("folder", name), (*path, "folder"), _NAME_RE),
        id_field=id_field,
        id_name=ck.text(id_doc.get("name", id_field), (*path, "id", "name"), _NAME_RE),
        id_type=cast(
            IdType, ck.choice(id_doc.get("type", "string"), (*path, "id", "type"), ("string", "integer"))
        ),
        carry=_carried(ck, doc.get("carry", []), (*path, "carry"), True)
        + _carried(ck, doc.get("keep", []), (*path, "keep"), False),
        require=tuple(
            ck.text(r, (*path, "require", j), _FIELD_RE)
            for j, r in enumerate(_list(ck, doc.get("require", []), (*path, "require")))
        ),
    )


def _list(ck: _Check, raw: Any, path: tuple[str | int, ...]) -> list[Any]:
    if not isinstance(raw, list):
        raise ck.fail(path, f"must be a list, got {_kind(raw)}")
    return raw


def _rows(ck: _Check, raw: Any) -> Rows:
    path: tuple[str | int, ...] = ("rows",)
    doc = ck.mapping(raw, path, {"columns", "extra", "extra_column"})
    cols_raw = _list(ck, doc.get("columns"), (*path, "columns"))
    if not cols_raw:
        raise ck.fail((*path, "columns"), "must name at least one column")
    columns = []
    for i, c in enumerate(cols_raw):
        where = (*path, "columns", i)
        cdoc = ck.mapping(c, where, {"name", "type", "source", "nullable", "required"})
        name = ck.text(cdoc.get("name"), (*where, "name"), _NAME_RE)
        columns.append(
            Column(
                name=name,
                type=cast(ColumnType, ck.choice(cdoc.get("type"), (*where, "type"), COLUMN_TYPES)),
                source=ck.dotted(cdoc.get("source", name), (*where, "source")),
                nullable=ck.boolean(cdoc.get("nullable", False), (*where, "nullable")),
                required=ck.boolean(cdoc.get("required", True), (*where, "required")),
            )
        )
    for i, c in enumerate(columns):
        if not c.required and not c.nullable:
            raise ck.fail((*path, "columns", i, "required"), "a field that may be absent must be nullable")
    extra = cast(
        ExtraPolicy, ck.choice(doc.get("extra", "drop"), (*path, "extra"), ("keep", "drop", "refuse"))
    )
    extra_column = ck.text(doc.get("extra_column", "extra"), (*path, "extra_column"), _NAME_RE)
    if "extra_column" in doc and extra != "keep":
        raise ck.fail((*path, "extra_column"), "only goes with extra: keep")
    return Rows(tuple(columns), extra, extra_column)


def _check_whole(ck: _Check, desc: ApiDescription) -> None:
    """What no single field shows: distinct names, prefixes that do not overlap, one
    name per output column."""
    names = [lv.name for lv in desc.levels]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise ck.fail(("levels", i, "name"), f"{n!r} names two levels")
    prefixes = [cast(str, lv.prefix) for lv in desc.stage_levels]
    reserved = ("data/", "compacted/", "athena/", "done/", "failed/", "plans/", "archive/")
    for i, p in enumerate(prefixes):
        for q in (*prefixes[:i], *reserved):
            if p.startswith(q) or q.startswith(p):
                raise ck.fail(("levels", i, "prefix"), f"{p!r} overlaps {q!r}")
    folders = [lv.folder for lv in desc.stage_levels]
    for i, f in enumerate(folders):
        if f in folders[:i] or f == "run":
            raise ck.fail(("levels", i, "folder"), f"{f!r} is used twice or reserved")
    seen: dict[str, tuple[str | int, ...]] = {c: () for c in RESERVED_COLUMNS}
    for i, lv in enumerate(desc.stage_levels):
        for name, where in (
            (lv.id_name, ("levels", i, "id")),
            *((c.name, ("levels", i, "carry")) for c in lv.carry),
        ):
            if name in seen or name == lv.name or name in names:
                raise ck.fail(where, f"{name!r} is already a column, a level or a reserved name")
            seen[cast(str, name)] = where
    for i, c in enumerate(desc.rows.columns):
        if c.name in seen:
            raise ck.fail(
                ("rows", "columns", i, "name"),
                f"{c.name!r} is already a column (ids, carried fields, run_id and fetched_at come first)",
            )
        seen[c.name] = ()
    if desc.rows.extra == "keep" and desc.rows.extra_column in seen:
        raise ck.fail(("rows", "extra_column"), f"{desc.rows.extra_column!r} is already a column")
