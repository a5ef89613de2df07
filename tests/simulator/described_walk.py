"""A minimal crawler of any described API over plain `requests`, written from the format's
rules alone (not from the simulator's code), so a walk equal to the truth means the server
keeps the description and the truth tells what it serves."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote, urljoin

import requests

from fanout_core.api_description import ApiDescription, Level

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def credentials(api: ApiDescription, secret: str) -> tuple[dict[str, str], dict[str, str]]:
    """(headers, query params) that prove a call per the description's auth."""
    auth = api.auth
    if auth.type == "bearer":
        return {"Authorization": f"Bearer {secret}"}, {}
    if auth.type == "basic":
        return {"Authorization": "Basic " + base64.b64encode(secret.encode()).decode()}, {}
    if auth.type == "api_key":
        assert auth.name
        return ({auth.name: secret}, {}) if auth.location == "header" else ({}, {auth.name: secret})
    return {}, {}


def segment(ident: str) -> str:
    """One id as one path segment: percent-encoded whole, "." and ".." too."""
    return quote(ident, safe="").replace(".", "%2E") if ident in (".", "..") else quote(ident, safe="")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict(r: requests.Response) -> Any:
    """The body as JSON, refusing NaN and Infinity (Python's reader takes them)."""
    return json.loads(r.text, parse_constant=_no_constant)


def at(doc: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


class Walker:
    def __init__(self, api: ApiDescription, base: str, secret: str) -> None:
        self.api, self.base = api, base
        self.headers, self.auth_params = credentials(api, secret)
        self.calls = 0
        self.failed: list[tuple[str, ...]] = []
        """Leaf lists whose items broke the description (``crawl(skip_failing=True)``)."""
        self.session = requests.Session()
        self.session.headers.update(self.headers)

    def _get(self, url: str, params: dict[str, Any] | None) -> requests.Response:
        self.calls += 1
        prepared = self.session.prepare_request(requests.Request("GET", url, params=params))
        # requests turns %2E back into "." (an id "." must arrive encoded): keep our path.
        assert prepared.url is not None
        prepared.url = url.partition("?")[0] + prepared.url[len(prepared.url.partition("?")[0]) :]
        r = self.session.send(prepared, timeout=10)
        r.raise_for_status()
        return r

    def list(self, level: Level, ids: dict[str, str]) -> list[dict[str, Any]]:
        """Every item of one list, following the level's pagination style."""
        path = level.path
        for name, ident in ids.items():
            path = path.replace("{" + name + "}", segment(ident))
        url = self.base + path
        pag = level.pagination
        params: dict[str, Any] = {**level.query, **self.auth_params}
        if pag.page_size_param:
            params[pag.page_size_param] = pag.page_size
        out: list[dict[str, Any]] = []
        if pag.type in ("offset", "page_number"):
            assert pag.page_size is not None
            n = 0 if pag.type == "offset" else pag.first_page
            while True:
                params[pag.offset_param or pag.page_param or ""] = n
                page = at(strict(self._get(url, params)), level.items)
                out.extend(page)
                if len(page) < pag.page_size:
                    return out
                n += pag.page_size if pag.type == "offset" else 1
        next_url: str | None = url
        seen: set[str] = set()
        while next_url is not None:
            r = self._get(next_url, params)
            body = strict(r)
            out.extend(at(body, level.items))
            if pag.type == "single_page":
                return out
            if pag.type == "cursor":
                token = at(body, pag.cursor_path)
                if token is None:
                    return out
                assert token not in seen
                seen.add(token)
                params = {**params, pag.cursor_param or "": token}
                continue
            if pag.type == "link_header":
                nxt = r.links.get("next", {}).get("url")
            else:
                nxt = at(body, pag.next_url_path)
            if nxt is None:
                return out
            next_url = urljoin(r.url, nxt)
            assert next_url.startswith(self.base + "/") and next_url not in seen
            seen.add(next_url)
            params = dict(self.auth_params)  # the next URL carries the rest
        return out

    def crawl(self, first_ids: list[str] | None = None, skip_failing: bool = False) -> list[tuple[Any, ...]]:
        """Every row below every unit, in ``column_names()`` order without run_id and fetched_at.
        With ``skip_failing`` a leaf list holding an item that breaks the description gives
        no rows (as a crawler fails that unit) and is named in ``failed``."""
        rows: list[tuple[Any, ...]] = []

        def walk(d: int, ids: dict[str, str], head: tuple[Any, ...]) -> None:
            level = self.api.levels[d]
            if level.is_leaf:
                try:
                    rows_here = [(*head, *self.row(item)) for item in self.list(level, ids)]
                except (AssertionError, ValueError, OverflowError, KeyError):
                    if not skip_failing:
                        raise
                    self.failed.append(tuple(ids.values()))
                    return
                rows.extend(rows_here)
                return
            items = self.list(level, ids)
            for item in items:
                ident = item[str(level.id_field)]
                if level.id_type == "integer":
                    assert type(ident) is int
                    ident = str(ident)
                else:
                    assert isinstance(ident, str)
                if d == 0 and first_ids is not None and ident not in first_ids:
                    continue
                carried = tuple(item[c.source] for c in level.carry if c.to_rows)
                for field in (*(c.source for c in level.carry), *level.require):
                    assert isinstance(item[field], str)
                walk(d + 1, {**ids, level.name: ident}, (*head, ident, *carried))

        walk(0, {}, ())
        return rows

    def row(self, item: dict[str, Any]) -> tuple[Any, ...]:
        """One leaf item converted per column, the way the output holds it."""
        out: list[Any] = []
        for col in self.api.rows.columns:
            try:
                v = at(item, col.source)
            except KeyError:
                assert not col.required, f"{col.name} missing"
                out.append(None)
                continue
            if v is None:
                assert col.nullable, f"{col.name} null"
                out.append(None)
            elif col.type == "timestamp":
                assert isinstance(v, str), f"{col.name}: {v!r}"
                moment = datetime.fromisoformat(v.upper().replace("Z", "+00:00"))
                out.append((moment - EPOCH) // timedelta(microseconds=1))
            elif col.type == "json":
                out.append(json.dumps(v, ensure_ascii=False, sort_keys=True, separators=(",", ":")))
            elif col.type == "double":
                assert type(v) in (int, float)
                out.append(float(v))
            else:
                want = {"string": str, "int64": int, "boolean": bool, "date": str}[col.type]
                assert type(v) is want, f"{col.name}: {v!r}"
                if col.type == "int64":
                    assert -(2**63) <= v < 2**63, f"{col.name} out of int64"
                if col.type == "date":
                    date.fromisoformat(v)
                out.append(v)
        named = {c.source[0] for c in self.api.rows.columns}
        extra = {k: v for k, v in item.items() if k not in named}
        if self.api.rows.extra == "refuse":
            assert not extra, extra
        if self.api.rows.extra == "keep":
            out.append(
                json.dumps(extra, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
                if extra
                else None
            )
        return tuple(out)
