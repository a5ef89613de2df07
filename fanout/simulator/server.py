"""The Hermes server: routes, auth, rate limit, injected faults and pages, in one thread.

Why its own module: this is where the contract's behaviour lives (which path answers what,
in which order faults apply); the HTTP mechanics are in :mod:`fanout.simulator.transport`.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import math
import random
import threading
import time
from email.utils import formatdate
from typing import Any, cast
from urllib.parse import parse_qs, unquote

from fanout.simulator.config import SimConfig
from fanout.simulator.described import DescribedUniverse, is_hermes
from fanout.simulator.described_server import DescribedRoutes
from fanout.simulator.faults import _GARBAGE, _FaultDice
from fanout.simulator.page_tokens import _PageTokens
from fanout.simulator.rate_limit import _TokenBuckets
from fanout.simulator.records import _records_json, _records_json_bad_first
from fanout.simulator.stats import SimStats, _Counters
from fanout.simulator.transport import _error_response, _Handler, _json_response, _Reply, _Response, _Server
from fanout.simulator.universe import Universe
from fanout_core.api_description import ApiDescription
from fanout_core.secrets import redact


class HermesSimulator:
    """A Hermes server (or any described API's) in a background thread of this process.

    ``start()`` returns the base URL (port 0 picks a free port); ``stop()`` shuts it down,
    including idle keep-alive connections and hanging requests. Also a context manager.
    ``api``: the description to serve; None or Hermes' own serves today's Hermes exactly,
    any other is served by :mod:`fanout.simulator.described_server` over a
    :class:`~fanout.simulator.described.DescribedUniverse` (``self.universe``), its secret
    being ``config.token``. The rate limit and injected faults apply to either.
    """

    universe: Universe | DescribedUniverse

    def __init__(
        self,
        config: SimConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        api: ApiDescription | None = None,
    ):
        self.config = config or SimConfig()
        self.api = api
        self._described: DescribedRoutes | None = None
        if api is None or is_hermes(api):
            self.universe = Universe(self.config)
        else:
            self.universe = DescribedUniverse(api, self.config)
            self._described = DescribedRoutes(api, self.universe, self.config)
        self._host = host
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._counters = _Counters(self.config.request_log_size)
        self._tokens = _PageTokens(self.config.seed)
        self._dice = _FaultDice(self.config.fault_seed)
        self._buckets = (
            _TokenBuckets(self.config.rate_limit, self.config.burst) if self.config.rate_limit else None
        )
        self._auth = f"bearer {self.config.token}"
        # Hostile modes (see SimConfig); none of this is touched when they are off.
        self._loop_ids = self.universe.loop_ids() if isinstance(self.universe, Universe) else frozenset()
        self._listing_fetches: dict[tuple[int, ...], int] = {}
        self._hostile_lock = threading.Lock()
        self._drip_rng = random.Random(f"drip:{self.config.fault_seed}")
        self._within_limit = 0
        """Calls let through by the rate limit so far (``refuse_share`` counts on it)."""
        self._started_at = time.monotonic()

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> str:
        if self._server is not None:
            return self.url
        self._server = _Server((self._host, self._port), self)
        self._started_at = time.monotonic()  # the outage window counts from here
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},  # stop() waits up to one interval
            name="hermes-simulator",
            daemon=True,
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> HermesSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("simulator is not running; call start() first")
        address = self._server.server_address
        host, port = str(address[0]), int(address[1])
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    @property
    def _hu(self) -> Universe:
        """Hermes' universe (only Hermes' own pages read it)."""
        return cast(Universe, self.universe)

    @property
    def stats(self) -> SimStats:
        return self._counters.snapshot()

    def reset_stats(self) -> None:
        self._counters.reset()

    # ---- request handling ----------------------------------------------------------------

    def _in_outage(self) -> bool:
        at = self.config.outage_at_s
        return at is not None and 0 <= time.monotonic() - self._started_at - at < self.config.outage_s

    def _retry_after(self, seconds: float) -> str:
        wait = max(0, math.ceil(seconds))
        if self.config.retry_after_format == "http-date":
            # HTTP-dates have whole seconds; round up so the client never comes back early.
            return formatdate(math.ceil(time.time()) + wait, usegmt=True)
        return str(wait)

    def _logged(self, line: str) -> str:
        """A request line as the stats keep it: a query API key masked."""
        api = self.api
        if self._described is not None and api is not None and api.auth.location == "query":
            return redact(line, self.config.token)
        return line

    def _handle(self, h: _Handler) -> _Response:
        """The answer to one GET, marked to drip when ``drip_bytes_per_s`` picks it."""
        resp = self._answer(h)
        c = self.config
        if c.drip_bytes_per_s is not None and resp.kind != "health":
            with self._hostile_lock:
                drip = self._drip_rng.random() < c.drip_share
            if drip:
                resp = dataclasses.replace(resp, drip=True)
        return resp

    def _answer(self, h: _Handler) -> _Response:
        """Health, auth, rate limit, injected faults, then the page."""
        c = self.config
        raw_path, _, query = h.path.partition("?")
        # Split BEFORE decoding: an id may hold "%2F", which must not become a separator.
        segments = [unquote(s) for s in raw_path.split("/")]
        stopping = h.server.stopping
        if c.latency_s or c.latency_jitter_s:
            stopping.wait(c.latency_s + random.random() * c.latency_jitter_s)

        described = self._described
        if described is not None:
            if described.is_health(raw_path):
                return _json_response(200, {"status": "ok"}, kind="health")
            no_entry = described.refuse(h.headers, parse_qs(query, keep_blank_values=True))
            if no_entry is not None:
                return no_entry
        elif segments == ["", "v1", "health"]:
            return _json_response(200, {"status": "ok"}, kind="health")
        else:
            auth = h.headers.get("Authorization", "")
            if auth[:7].lower() != "bearer " or not hmac.compare_digest(
                auth[7:].strip().encode(), c.token.encode()
            ):
                return _error_response(
                    401,
                    "unauthorized",
                    "missing or wrong bearer token",
                    (("WWW-Authenticate", 'Bearer realm="hermes"'),),
                )

        draw = self._dice.roll()
        if self._in_outage():
            retry = self._retry_after(1)
            refused = "outage: every call refused"
            return _error_response(429, "unavailable", refused, (("Retry-After", retry),), "outage")
        if self._buckets is not None:
            wait = self._buckets.take(c.token)
            if wait > 0:
                return _error_response(
                    429,
                    "rate_limited",
                    f"more than {c.rate_limit:g} requests/s for this token",
                    (("Retry-After", self._retry_after(wait)),),
                    kind="rate_limited",
                )
        if c.refuse_share:
            with self._hostile_lock:
                self._within_limit += 1
                n = self._within_limit
            if math.floor(n * c.refuse_share) > math.floor((n - 1) * c.refuse_share):
                return _error_response(
                    429,
                    "too_many_requests",
                    "refused whatever the rate",
                    (("Retry-After", self._retry_after(1)),),
                    "refused_share",
                )
        cut_429 = c.error_rate_429
        cut_5xx = cut_429 + c.error_rate_5xx
        cut_garbage = cut_5xx + c.garbage_rate
        if draw.fault < cut_429:
            retry = self._retry_after(int(draw.pick * 2))
            return _error_response(
                429, "too_many_requests", "injected 429", (("Retry-After", retry),), "injected_429"
            )
        if draw.fault < cut_5xx:
            status = (500, 502, 503, 504)[int(draw.pick * 4)]
            return _error_response(status, "unavailable", f"injected {status}", (), "injected_5xx")
        if draw.fault < cut_garbage:
            body = _GARBAGE[0] if draw.pick < 0.5 else _GARBAGE[1]
            return _Response(200, body, kind="garbage")
        if draw.hang < c.hang_rate:
            self._counters.hang()
            stopping.wait(c.hang_s)

        try:
            if "/." in raw_path and any(s in (".", "..") for s in raw_path.split("/")):
                # A literal dot segment: an id "." or ".." must arrive as %2E / %2E%2E.
                raise _Reply(404, "not_found", "no such route (literal dot segment)")
            if described is not None:
                return described.page(segments, raw_path, query, h.headers.get("Host"))
            return _Response(200, self._page(segments, query), kind="page")
        except _Reply as reply:
            return _error_response(reply.status, reply.error, reply.message)

    def _page(self, segments: list[str], query: str) -> bytes:
        """The JSON body of a list page, or a _Reply for 404 / 400."""
        if len(segments) < 3 or segments[0] != "" or segments[1] != "v1":
            raise _Reply(404, "not_found", "no such route")
        rest = segments[2:]
        ids: list[str]
        if rest == ["warriors"]:
            ids = []
        elif len(rest) == 3 and rest[0] == "warriors" and rest[2] == "troops":
            ids = [rest[1]]
        elif len(rest) == 5 and rest[0] == "warriors" and rest[2] == "troops" and rest[4] == "data_groups":
            ids = [rest[1], rest[3]]
        elif (
            len(rest) == 7
            and rest[0] == "warriors"
            and rest[2] == "troops"
            and rest[4] == "data_groups"
            and rest[6] == "data"
        ):
            ids = [rest[1], rest[3], rest[5]]
        else:
            raise _Reply(404, "not_found", "no such route")

        kinds = ("warrior", "troop", "data group")
        for kind, ident in zip(kinds, ids, strict=False):
            if ident in self.config.not_found_ids:
                raise _Reply(404, "not_found", f"{kind} {ident!r} not found")
        try:
            indices = self._hu.resolve(*ids) if ids else ()
        except KeyError:
            raise _Reply(404, "not_found", f"unknown id in {'/'.join(ids)!r}") from None

        params = parse_qs(query, keep_blank_values=True)
        page_size = self.config.default_page_size
        if "page_size" in params:
            text = params["page_size"][-1]
            if not (text.isascii() and text.isdigit()) or not (1 <= int(text) <= self.config.max_page_size):
                raise _Reply(
                    400,
                    "bad_request",
                    f"page_size must be an integer in 1..{self.config.max_page_size}",
                )
            page_size = int(text)
        path_key = "\x1f".join(["v1", *ids, str(len(ids))])
        offset = state = 0
        first = "page_token" not in params
        if not first:
            try:
                offset, state = self._tokens.decode_state(path_key, params["page_token"][-1])
            except (ValueError, UnicodeDecodeError) as exc:
                raise _Reply(400, "bad_request", f"invalid page_token: {exc}") from None

        c = self.config
        if c.cursor_loop is not None and ids and ids[-1] in self._loop_ids:
            return self._looping_page(indices, path_key, first, offset, state, page_size)
        hostile_listing = c.duplicate_ids or (c.changing_listings and len(indices) == 2)
        if hostile_listing and len(indices) in (1, 2):
            return self._hostile_listing(indices, path_key, first, offset, state, page_size)
        end = offset + page_size
        if len(indices) == 3:
            # Records: render from raw values (see Universe._record_raw) instead of
            # json.dumps, whose float repr would dominate the cost of a page.
            raw = self._hu._record_raw(*indices)
            next_token = self._tokens.encode(path_key, end) if end < len(raw) else None
            bad = self._hu.bad_kind(*indices) if c.bad_records and offset == 0 and raw else None
            text = (
                '{"items":'
                + (_records_json(raw[offset:end]) if bad is None else _records_json_bad_first(raw[:end], bad))
                + ',"next_page_token":'
                + json.dumps(next_token)
                + "}"
            )
            return text.encode("utf-8")
        items = self._hu.list_items(indices)
        next_token = self._tokens.encode(path_key, end) if end < len(items) else None
        page = {"items": items[offset:end], "next_page_token": next_token}
        return json.dumps(page, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    @staticmethod
    def _page_json(items: list[dict[str, Any]], next_token: str | None) -> bytes:
        page = {"items": items, "next_page_token": next_token}
        return json.dumps(page, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def _looping_page(
        self, indices: tuple[int, ...], path_key: str, first: bool, offset: int, state: int, size: int
    ) -> bytes:
        """``cursor_loop``: the first page points at token A, and the list never ends:
        A -> A ("repeat") or A -> B -> A ("cycle"); both serve the items after page one."""
        if first:
            next_token = self._tokens.encode(path_key, size, 1)
        elif self.config.cursor_loop == "cycle":
            next_token = self._tokens.encode(path_key, offset, 2 if state == 1 else 1)
        else:
            next_token = self._tokens.encode(path_key, offset, 1)
        if len(indices) == 3:
            items = self._hu._records(*indices)[offset : offset + size]
        else:
            items = self._hu.list_items(indices)[offset : offset + size]
        return self._page_json(items, next_token)

    def _hostile_listing(
        self, indices: tuple[int, ...], path_key: str, first: bool, offset: int, state: int, size: int
    ) -> bytes:
        """A troop or data-group listing under ``changing_listings`` / ``duplicate_ids``.

        The token's state carries what the first page chose: bit 0 "the extra group is
        listed", the bits above it where the first page ended (``duplicate_ids``).
        """
        c = self.config
        items = self._hu.list_items(indices)
        if first:
            extra = 0
            if c.changing_listings and len(indices) == 2:
                with self._hostile_lock:
                    n = self._listing_fetches[indices] = self._listing_fetches.get(indices, 0) + 1
                extra = n % 2
            listed = [*items, self._hu._extra[indices[0], indices[1]]] if extra else items
            cut = min(size, len(listed)) if c.duplicate_ids else 0
            state = extra | cut << 1
        else:
            extra, cut = state & 1, state >> 1
            listed = [*items, self._hu._extra[indices[0], indices[1]]] if extra else items
        if cut:
            # The item that ends page one opens page two again.
            listed = [*listed[:cut], listed[cut - 1], *listed[cut:]]
        end = cut if first and cut else offset + size
        next_token = self._tokens.encode(path_key, end, state) if end < len(listed) else None
        return self._page_json(listed[offset:end], next_token)
