"""The answers of a described API: its routes, auth, fixed query, pagination and page bodies.

Why its own module: :class:`~fanout.simulator.server.HermesSimulator` keeps Hermes' own
answers byte for byte and shares its lifecycle, rate limit and injected faults with any
API; what differs per description (which path lists which level, how a page says there is
more, where the items sit, how a call proves itself) lives here.

What a client can rely on (beyond Hermes' rules on path segments and faults):

* Routes are the levels' ``path`` templates: a ``{level}`` placeholder is one path segment,
  split on "/" first and then percent-decoded. Unknown routes and ids answer 404.
* A level's fixed ``query`` parameters must be sent with their values (else 400).
* Pagination per level: ``cursor`` (an opaque signed token at ``cursor_path``, sent back in
  ``cursor_param``); ``next_url`` (the next page's URL at ``next_url_path``: absolute on even
  pages, path-relative on odd ones) and ``link_header`` (``Link: <absolute URL>;
  rel="next"``), both carrying the fixed query, the page size and a signed ``page_token``
  but never a query API key; ``offset`` and ``page_number`` (a page shorter than the size
  asked for is the last; past the end a page is empty); ``single_page`` (every item at once).
  The page size is ``page_size_param`` if sent, else the description's ``page_size``.
  A ``total`` is reported in its header or body path.
* Auth per ``auth.type``: ``bearer``, ``api_key`` (header or query, named ``name``),
  ``basic`` (the secret is ``user:password``) or ``none``; a wrong or missing one answers
  401. The health path answers without auth. A query API key is masked in
  ``SimStats.recent_requests``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import parse_qsl, quote, urlencode

from fanout.simulator.config import SimConfig
from fanout.simulator.described import DescribedUniverse, put_path
from fanout.simulator.page_tokens import _PageTokens
from fanout.simulator.transport import _error_response, _json_response, _Reply, _Response
from fanout_core.api_description import ApiDescription, Level

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def _segment_matcher(template: str) -> tuple[str | None, re.Pattern[str] | None, tuple[str, ...]]:
    """(literal, None, ()) for a fixed segment, else (None, pattern, level names captured)."""
    names = tuple(_PLACEHOLDER.findall(template))
    if not names:
        return template, None, ()
    pattern = "".join(
        "(.+)" if i % 2 else re.escape(part) for i, part in enumerate(_PLACEHOLDER.split(template))
    )
    return None, re.compile(pattern, re.DOTALL), names


def _last(params: Mapping[str, list[str]], name: str) -> str | None:
    """A query parameter's value (the last if repeated), or None."""
    values = params.get(name)
    return values[-1] if values else None


class DescribedRoutes:
    """Health, auth and pages of one described API over a :class:`DescribedUniverse`."""

    def __init__(self, api: ApiDescription, universe: DescribedUniverse, config: SimConfig) -> None:
        self.api = api
        self.universe = universe
        self.config = config
        self._tokens = _PageTokens(config.seed)
        self._secret = config.token
        if api.auth.type == "basic" and ":" not in self._secret:
            raise ValueError(f"{api.name}: a basic auth secret is user:password; the one given has no ':'")
        self._level_index = {lv.name: d for d, lv in enumerate(api.levels)}
        self._routes = [
            (d, [_segment_matcher(s) for s in lv.path.split("/")]) for d, lv in enumerate(api.levels)
        ]
        used = {api.auth.name, *(p for lv in api.levels for p in self._params_of(lv))}
        self._token_param = next(p for p in ("page_token", "sim_page_token", "_page") if p not in used)
        for lv in api.levels:  # a page shape no JSON body can hold fails here, not on a call
            self._body(lv, [], {"cursor": None, "next": None, "total": 0})

    @staticmethod
    def _params_of(level: Level) -> set[str]:
        p = level.pagination
        named = (p.page_size_param, p.cursor_param, p.offset_param, p.page_param)
        return {*level.query, *(n for n in named if n)}

    # ---- health and auth -----------------------------------------------------------------

    def is_health(self, raw_path: str) -> bool:
        return self.api.health is not None and raw_path == self.api.health

    def refuse(self, headers: Any, params: dict[str, list[str]]) -> _Response | None:
        """The 401 for a call without the right credentials, or None to go on."""
        auth = self.api.auth
        secret = self._secret.encode()
        if auth.type == "none":
            return None
        if auth.type == "api_key":
            name = cast(str, auth.name)
            given = headers.get(name) if auth.location == "header" else _last(params, name)
            if given is not None and hmac.compare_digest(given.encode(), secret):
                return None
            return _error_response(401, "unauthorized", f"missing or wrong API key ({auth.location} {name})")
        header = headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if auth.type == "bearer":
            if scheme.lower() == "bearer" and hmac.compare_digest(value.encode(), secret):
                return None
            challenge = 'Bearer realm="simulator"'
        else:
            try:
                decoded = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                decoded = b""
            if scheme.lower() == "basic" and hmac.compare_digest(decoded, secret):
                return None
            challenge = 'Basic realm="simulator"'
        return _error_response(
            401,
            "unauthorized",
            f"missing or wrong {auth.type} credentials",
            (("WWW-Authenticate", challenge),),
        )

    # ---- routes --------------------------------------------------------------------------

    def _route(self, segments: list[str]) -> tuple[int, dict[int, str]]:
        """The level a path lists and the ids it names by level index; 404 if none."""
        for d, matchers in self._routes:
            if len(matchers) != len(segments):
                continue
            ids: dict[int, str] = {}
            for (literal, pattern, names), seg in zip(matchers, segments, strict=True):
                if pattern is None:
                    if seg != literal:
                        break
                    continue
                m = pattern.fullmatch(seg)
                if m is None:
                    break
                for name, value in zip(names, m.groups(), strict=True):
                    ids[self._level_index[name]] = value
            else:
                return d, ids
        raise _Reply(404, "not_found", "no such route")

    def page(self, segments: list[str], raw_path: str, query: str, host: str | None) -> _Response:
        """A page of the list a path names, or a _Reply (400, 404)."""
        d, ids = self._route(segments)
        level = self.api.levels[d]
        pairs = parse_qsl(query, keep_blank_values=True)
        params: dict[str, list[str]] = {}
        for k, v in pairs:
            params.setdefault(k, []).append(v)
        for name, value in level.query.items():
            if _last(params, name) != value:
                raise _Reply(400, "bad_request", f"query parameter {name}={value} is required")
        for ident in ids.values():
            if ident in self.config.not_found_ids:
                raise _Reply(404, "not_found", f"{ident!r} not found")
        u = self.universe
        loops = False
        if d == 0:
            items: list[dict[str, Any]] = u._unit_list(())[0]
        else:
            try:
                parent = u.resolve(ids)
            except KeyError:
                raise _Reply(404, "not_found", f"unknown id in {'/'.join(ids.values())!r}") from None
            if len(parent) != d:
                raise _Reply(404, "not_found", "no such route")
            items = u.leaf(parent)[0] if level.is_leaf else u._unit_list(parent)[0]
            loops = u.loops(parent)

        pag = level.pagination
        size = self._size(level, params)
        n = len(items)
        path_key = "\x1f".join([self.api.name, level.name, *(f"{k}={v}" for k, v in sorted(ids.items()))])
        headers: list[tuple[str, str]] = []
        fields: dict[str, Any] = {"cursor": None, "next": None, "total": n}
        if pag.type == "single_page":
            start, end = 0, n
        elif pag.type == "offset":
            start = self._whole(params, cast(str, pag.offset_param), 0)
            end = start + size
        elif pag.type == "page_number":
            page = self._whole(params, cast(str, pag.page_param), pag.first_page)
            if page < pag.first_page:
                raise _Reply(400, "bad_request", f"{pag.page_param} starts at {pag.first_page}")
            start = (page - pag.first_page) * size
            end = start + size
        else:
            token_param = cast(str, pag.cursor_param) if pag.type == "cursor" else self._token_param
            start = state = 0
            first = token_param not in params
            if not first:
                try:
                    start, state = self._tokens.decode_state(path_key, params[token_param][-1])
                except (ValueError, UnicodeDecodeError) as exc:
                    raise _Reply(400, "bad_request", f"invalid {token_param}: {exc}") from None
            end = start + size
            token = None
            if loops:
                # cursor_loop: page one leads to A; A leads to A ("repeat") or B, B to A ("cycle").
                cycle = self.config.cursor_loop == "cycle"
                token = self._tokens.encode(
                    path_key, end if first else start, 2 if cycle and state == 1 else 1
                )
            elif end < n:
                token = self._tokens.encode(path_key, end)
            if token is not None:
                if pag.type == "cursor":
                    fields["cursor"] = token
                else:
                    kept = [(k, v) for k, v in pairs if k not in (token_param, self.api.auth.name)]
                    rel = f"{raw_path}?{urlencode([*kept, (token_param, token)], quote_via=quote)}"
                    absolute = f"http://{host}{rel}" if host else rel
                    if pag.type == "link_header":
                        headers.append(("Link", f'<{absolute}>; rel="next"'))
                    else:
                        fields["next"] = rel if (start // size) % 2 else absolute
        if pag.total is not None and pag.total.header:
            headers.append((pag.total.header, str(n)))
        body = self._body(level, items[start:end], fields)
        return _json_response(200, body, tuple(headers), kind="page")

    def _size(self, level: Level, params: dict[str, list[str]]) -> int:
        pag = level.pagination
        size = pag.page_size or self.config.default_page_size
        top = max(self.config.max_page_size, pag.page_size or 0)
        if pag.page_size_param and pag.page_size_param in params and pag.type != "single_page":
            text = params[pag.page_size_param][-1]
            if not (text.isascii() and text.isdigit() and len(text) <= 12) or not 1 <= int(text) <= top:
                raise _Reply(400, "bad_request", f"{pag.page_size_param} must be an integer in 1..{top}")
            size = int(text)
        return size

    @staticmethod
    def _whole(params: dict[str, list[str]], name: str, default: int) -> int:
        if name not in params:
            return default
        text = params[name][-1]
        if not (text.isascii() and text.isdigit()) or len(text) > 12:
            raise _Reply(400, "bad_request", f"{name} must be a whole number, got {text[:40]!r}")
        return int(text)

    @staticmethod
    def _body(level: Level, items: list[dict[str, Any]], fields: dict[str, Any]) -> Any:
        """The page body: the items at the level's ``items`` path, the cursor, next URL and
        total at theirs; ValueError for a shape no JSON body can hold (both the list and a
        field at its root, or one path inside another)."""
        pag = level.pagination
        placed: list[tuple[tuple[str, ...], Any]] = []
        if pag.type == "cursor":
            placed.append((pag.cursor_path, fields["cursor"]))
        elif pag.type == "next_url":
            placed.append((pag.next_url_path, fields["next"]))
        if pag.total is not None and pag.total.path:
            placed.append((pag.total.path, fields["total"]))
        if not level.items:
            if placed:
                raise ValueError(f"level {level.name}: the body is the item list, so it holds no other field")
            return items
        placed.insert(0, (level.items, items))
        for i, (a, _) in enumerate(placed):
            for b, _ in placed[i + 1 :]:
                if a[: len(b)] == b or b[: len(a)] == a:
                    raise ValueError(f"level {level.name}: {'.'.join(a)} and {'.'.join(b)} overlap")
        body: dict[str, Any] = {}
        for path, value in placed:
            put_path(body, path, value)
        return body
