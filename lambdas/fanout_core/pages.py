"""Pages of a described API: the page shape (the items at their dotted path, the next-page
signal of each pagination style), the listings' fields and identifiers, and JSON decoding
that tells NaN and Infinity (not JSON) apart. The leaf items' columns are ``rows``' work."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from fanout_core.api_description import Level, Pagination
from fanout_core.errors import PermanentError, TransientError

PREVIEW_CHARS = 80
"""How much of a bad value an error message shows."""
MAX_ID_LEN = 128
_ABSENT: Any = object()


def error_message(body: bytes) -> str:
    try:
        doc = json.loads(body)
        return f" ({doc.get('error')}: {doc.get('message')})" if isinstance(doc, dict) else ""
    except ValueError:
        return ""


def dig(doc: Any, path: tuple[str, ...]) -> Any:
    """The value at a dotted path of a page; ``_ABSENT`` where a step is absent or no object."""
    for part in path:
        if type(doc) is not dict:
            return _ABSENT
        doc = doc.get(part, _ABSENT)
        if doc is _ABSENT:
            return _ABSENT
    return doc


def page_items(page: Any, level: Level, url: str) -> list[Any]:
    """The page's item list; a page of another shape is transient (it may be a glitch)."""
    items = dig(page, level.items)
    if type(items) is not list:
        shape = f"an object with an {'.'.join(level.items)} list" if level.items else "a list"
        raise TransientError(f"{url}: page is not {shape}", status=200)
    return items


def check_size(items: list[Any], page_size: int | None, url: str) -> None:
    """More items than asked for: the server ignores the size, so no short page can be told."""
    if page_size is not None and len(items) > page_size:
        raise PermanentError(
            f"{url}: page holds {len(items)} items, more than the page_size {page_size} asked for",
            status=200,
        )


def next_cursor(page: Any, pag: Pagination, url: str) -> str | None:
    """``cursor`` pagination: the next cursor (None ends the list). Its field must be there:
    a page without it was cut short (transient), as Hermes' contract says."""
    name = ".".join(pag.cursor_path)
    token = dig(page, pag.cursor_path)
    if token is _ABSENT:
        raise TransientError(f"{url}: page has no {name}", status=200)
    if token is not None and (not isinstance(token, str) or not token):
        raise TransientError(f"{url}: {name} is neither null nor a string", status=200)
    return token


def next_url_in_body(page: Any, pag: Pagination, url: str) -> str | None:
    """``next_url`` pagination: the next page's URL (absent or null ends the list)."""
    found = dig(page, pag.next_url_path)
    if found is _ABSENT or found is None:
        return None
    if not isinstance(found, str) or not found:
        raise TransientError(f"{url}: {'.'.join(pag.next_url_path)} is neither null nor a URL", status=200)
    return found


_LINK = re.compile(r"<([^>]*)>\s*((?:;\s*[^;,]*)*)")
_REL = re.compile(r"""(?i)rel\s*=\s*(?:"([^"]*)"|([^\s;,"]+))""")


def link_next(header: str | None) -> str | None:
    """The ``rel="next"`` target of a Link header (RFC 8288), or None."""
    if not header:
        return None
    for m in _LINK.finditer(header):
        for rel in _REL.finditer(m.group(2)):
            if "next" in (rel.group(1) or rel.group(2) or "").lower().split():
                return m.group(1).strip() or None
    return None


def total_of(page: Any, headers: Mapping[str, str], pag: Pagination, url: str) -> int | None:
    """The list's total as the page reports it (None when the description names none)."""
    if pag.total is None:
        return None
    if pag.total.header is not None:
        raw: Any = headers.get(pag.total.header)
        where = f"header {pag.total.header}"
        if raw is not None and raw.strip().isdigit():
            raw = int(raw.strip())
    else:
        raw = dig(page, pag.total.path or ())
        where = ".".join(pag.total.path or ())
    if type(raw) is not int or raw < 0:
        raise TransientError(f"{url}: the list's total ({where}) is not a count", status=200)
    return raw


def check_listing(level: Level, items: list[Any], url: str, preview: Callable[[Any], str]) -> None:
    """Every item of a listing: an object whose id, carried, kept and required fields are there.

    A broken item is transient (a glitch); an id breaking the id rules is permanent (the
    list gives it again). An integer id (``id_type: integer``) is written back as its decimal
    string: ids are strings everywhere after the client.
    """
    kind = level.folder or level.name
    id_field = level.id_field or ""
    texts = (*(c.source for c in level.carry), *level.require)
    integer = level.id_type == "integer"
    for item in items:
        if type(item) is not dict:
            raise TransientError(f"{url}: a {kind} item is not an object", status=200)
        ident = item.get(id_field)
        if integer:
            if type(ident) is not int:
                raise TransientError(
                    f"{url}: a {kind} item has no valid {id_field!r} (an integer): {preview(item)}",
                    status=200,
                )
            ident = item[id_field] = str(ident)
        elif type(ident) is not str:
            raise TransientError(
                f"{url}: a {kind} item has no valid {id_field!r}: {preview(item)}", status=200
            )
        for name in texts:
            if type(item.get(name)) is not str:
                raise TransientError(
                    f"{url}: a {kind} item has no valid {name!r}: {preview(item)}", status=200
                )
        if not 1 <= len(ident) <= MAX_ID_LEN or _BAD_ID_CHAR(ident) is not None:
            raise PermanentError(f"{url}: identifier {preview(ident)} breaks the contract", status=200)


# Control characters are Unicode's Cc (C0, DEL, C1); a lone surrogate is no character.
_BAD_ID_CHAR = re.compile("[/\x00-\x1f\x7f-\x9f\ud800-\udfff]").search


class NonJSONConstant:
    """What the page parser makes of NaN, Infinity and -Infinity, which JSON does not allow
    (Python's json reads them as floats by default): a marker the checks refuse."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


_PAGE_DECODER = json.JSONDecoder(parse_constant=NonJSONConstant)


def decode_page(body: bytes) -> Any:
    """``json.loads(body)``, except that NaN and Infinity become NonJSONConstant markers."""
    return _PAGE_DECODER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))


def holds_constant(doc: Any) -> bool:
    if type(doc) is NonJSONConstant:
        return True
    if type(doc) is dict:
        return any(holds_constant(v) for v in doc.values())
    if type(doc) is list:
        return any(holds_constant(v) for v in doc)
    return False
