"""The client of a described API: one pooled session, every page, transient told from permanent.

One ``ApiClient`` serves any API an ``ApiDescription`` describes (Hermes' is the built-in
one): ``list(level_name, ids)`` fills the level's path template with the ids above it, each
percent-encoded as one path segment (``.`` and ``..`` too, as ``%2E``), sends the level's
fixed query and the API's auth, and follows the level's pagination style until its end
signal. Listing items come back checked (id, carried, kept and required fields); the leaf
level's items come back as rows, checked and converted per column (``rows``).

Every style shares one transport: 429 honoured via Retry-After, 5xx/timeouts/broken bodies
retried a few times with backoff inside the task's time budget, 400/401/403/404 never
retried. Whatever a server does, a call ends: each has a total deadline
(``request_deadline_s``, never past the task's), no wait for the pacer's slot passes the
task's deadline less ``PACER_RESERVE_S`` (``PacerBeyondDeadline``: the task is given back
and retried, not left to sleep through its own deadline), and each list a bound (no cursor
or next URL followed twice, ``max_pages``, ``max_items_per_list``, the page byte cap). A next
URL must stay on the base URL's scheme, host and port: the secret goes nowhere else. A
record breaking its columns is a BadRecord (permanent: it fails its one unit). The secret
is checked at construction and never appears in an error message.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl, urldefrag, urlencode, urljoin, urlsplit

import requests
import urllib3

from fanout_core.api_description import ApiDescription, Level
from fanout_core.errors import BadRecord, FanoutError, PacerBeyondDeadline, PermanentError, TransientError
from fanout_core.hermes_http import (
    MAX_RETRY_AFTER_S,
    PERMANENT_STATUSES,
    TRANSIENT_STATUSES,
    UNSENDABLE,
    check_base_url,
    connection_kind,
    encode_segment,
    parse_retry_after,
)
from fanout_core.hermes_transport import (
    REQUEST_DEADLINE,
    BodyTooLarge,
    DeadlineAdapter,
    deadline_session,
    read_capped,
)
from fanout_core.pages import (
    PREVIEW_CHARS,
    check_listing,
    check_size,
    decode_page,
    error_message,
    holds_constant,
    link_next,
    next_cursor,
    next_url_in_body,
    page_items,
    total_of,
)
from fanout_core.rows import RowChecker
from fanout_core.secrets import Credentials, check_token, credentials, redact

log = logging.getLogger("fanout")

__all__ = [
    "DEFAULT_MAX_ITEMS_PER_LIST",
    "DEFAULT_MAX_PAGES",
    "DEFAULT_REQUEST_DEADLINE_S",
    "MAX_RETRY_AFTER_S",
    "PERMANENT_STATUSES",
    "PREVIEW_CHARS",
    "TRANSIENT_STATUSES",
    "ApiClient",
    "CallStats",
    "DeadlineAdapter",
    "PacerLike",
    "check_base_url",
    "check_token",
    "parse_retry_after",
    "redact",
]

DEFAULT_MAX_PAGES = 10_000
"""Pages one list may take before it is given up (a server that never ends its list)."""
DEFAULT_MAX_ITEMS_PER_LIST = 1_000_000
"""Items one list may hold before it is given up (every item is held in memory)."""
DEFAULT_REQUEST_DEADLINE_S = 60.0
"""Seconds one call may take in all (connect, headers, body), whatever the server sends."""
PACER_RESERVE_S = 1.0
"""Seconds of the task's time left that a pacer's wait may not use: the call itself and
recording its outcome need them (the margin a retry's sleep keeps too). A call needs one
round trip, a second at most at the rates paced; a slower call meets its own deadline."""


class PacerLike(Protocol):
    def acquire(self, max_wait: float = math.inf) -> float:
        """Wait for the next slot and return the seconds waited; raise ``PacerBeyondDeadline``
        (taking no slot) when that wait would exceed ``max_wait`` seconds."""
        ...

    def on_throttled(self, retry_after: float | None) -> None: ...
    def on_success(self) -> None: ...


@dataclass
class CallStats:
    """Counters the summary, the metrics and the benchmarks read; thread-safe."""

    calls: int = 0
    throttled: int = 0
    transient_errors: int = 0
    retries: int = 0
    paced_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: float) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return {
                "calls": self.calls,
                "throttled": self.throttled,
                "transient_errors": self.transient_errors,
                "retries": self.retries,
                "paced_s": self.paced_s,
            }


_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str
    port: int | None

    @classmethod
    def of(cls, url: str) -> _Origin:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        try:
            port = parts.port
        except ValueError:
            port = -1
        return cls(scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme))

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


def refuse_foreign_redirect(response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
    """A response hook: a redirect off the origin that was called is not followed. requests
    would carry an API-key header there (it strips only Authorization), and the page would
    not be the API's. Every hop is checked, so a chain never leaves the first origin."""
    if not response.is_redirect:
        return
    here = _Origin.of(response.url)
    try:
        there: _Origin | None = _Origin.of(urljoin(response.url, response.headers.get("Location", "")))
    except ValueError:
        there = None
    if there != here:
        response.close()
        raise PermanentError(
            f"{response.url}: redirects ({response.status_code}) to {there or 'no URL'}, off the "
            f"API's origin {here}; it is not followed (the secret goes to the API only)",
            status=response.status_code,
            kind="bad_url",
        )


class ApiClient:
    """A client of one described API, shared by every task of one process (the session
    pools connections)."""

    def __init__(
        self,
        api: ApiDescription,
        base_url: str,
        secret: str,
        *,
        page_size: int | None = None,
        connect_timeout: float = 3.05,
        read_timeout: float = 20.0,
        max_retries: int = 4,
        backoff_base_s: float = 0.2,
        backoff_cap_s: float = 10.0,
        max_page_bytes: int = 32 * 1024 * 1024,
        max_pages: int = DEFAULT_MAX_PAGES,
        max_items_per_list: int = DEFAULT_MAX_ITEMS_PER_LIST,
        request_deadline_s: float = DEFAULT_REQUEST_DEADLINE_S,
        pool_size: int = 64,
        pacer: PacerLike | None = None,
        stats: CallStats | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        """``page_size`` None asks each level for its description's page size; a number
        asks every level that sends a size for that one instead. ``max_pages`` and
        ``max_items_per_list`` bound every list (a level's description may bound it lower)."""
        if page_size is not None and not 1 <= page_size <= 1000:
            raise ValueError("page_size must be between 1 and 1000")
        if max_pages < 1:
            raise ValueError(f"max_pages must be at least 1, got {max_pages}")
        if max_items_per_list < 1:
            raise ValueError(f"max_items_per_list must be at least 1, got {max_items_per_list}")
        if not (isinstance(request_deadline_s, int | float) and 0 < request_deadline_s < math.inf):
            raise ValueError(
                f"request_deadline_s must be a positive number of seconds, got {request_deadline_s!r}"
            )
        title = api.name.capitalize()
        creds: Credentials = credentials(api.auth, secret, api=title)
        self.api = api
        self.base_url = check_base_url(base_url, f"the {title} URL")
        self._origin = _Origin.of(self.base_url)
        self._secrets = creds.secrets
        self._auth_params = creds.params
        self.page_size = page_size
        self.timeout = (connect_timeout, read_timeout)
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.max_page_bytes = max_page_bytes
        self.max_pages = max_pages
        self.max_items_per_list = max_items_per_list
        self.request_deadline_s = float(request_deadline_s)
        self.pacer = pacer
        self.stats = stats if stats is not None else CallStats()
        self._sleep = sleep
        self._clock = clock
        self._deadline = threading.local()
        self._rows = RowChecker(api.rows)
        self._levels = {lv.name: (i, lv) for i, lv in enumerate(api.levels)}
        if session is None:
            session = deadline_session(self.base_url, pool_size=pool_size)
        session.headers.update({**creds.headers, "Accept": "application/json"})
        if refuse_foreign_redirect not in session.hooks["response"]:
            session.hooks["response"].append(refuse_foreign_redirect)
        self.session = session
        self._template: tuple[Any, requests.PreparedRequest, dict[str, Any]] | None = None
        """What the session held, the GET it prepared then, and its send settings (``_prepare``)."""

    # -- time budget ---------------------------------------------------------------
    def set_deadline(self, deadline: float | None) -> None:
        """The monotonic time by which this thread's task must be done (None: no limit)."""
        self._deadline.value = deadline

    def _time_left(self) -> float:
        deadline = getattr(self._deadline, "value", None)
        return float("inf") if deadline is None else deadline - self._clock()

    # -- the lists ------------------------------------------------------------------
    def list(self, level_name: str, ids: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
        """Every item of ``level_name`` under ``ids`` (the ids of every level above it, top
        first): checked listing items, or for the leaf level its rows (column name -> value)."""
        level = self._level(level_name, ids)
        return self._pages(level, self.url_for(level_name, ids))

    def _level(self, level_name: str, ids: tuple[str, ...]) -> Level:
        try:
            index, level = self._levels[level_name]
        except KeyError:
            raise ValueError(f"{self.api.name}: no level {level_name!r}") from None
        if len(ids) != index:
            raise ValueError(f"{self.api.name}: {level_name} lists under {index} ids, got {len(ids)}")
        return level

    def url_for(self, level_name: str, ids: tuple[str, ...] = ()) -> str:
        """The list's URL: the path template with each id above as one encoded segment."""
        level = self._level(level_name, ids)

        def fill(m: re.Match[str]) -> str:
            return encode_segment(ids[self._levels[m.group(1)][0]])

        return self.base_url + _PLACEHOLDER.sub(fill, level.path)

    # -- mechanics ----------------------------------------------------------------
    def _pages(self, level: Level, url: str) -> Iterator[dict[str, Any]]:
        """Every item of one list, page after page until the level's style says it ends.

        Bounded whatever the server does and however the caller iterates: every check runs
        before the next page is asked for or before a page's items are handed out. A cursor
        or next URL already followed in this list (A -> A, A -> B -> A), more than
        ``max_pages`` pages or more than ``max_items_per_list`` items fail the list
        permanently; so does a next URL off the base URL's origin. Cursors and URLs are
        remembered by a 16-byte digest, since they may be long.
        """
        pag = level.pagination
        style = pag.type
        size = pag.page_size if self.page_size is None or pag.page_size is None else self.page_size
        max_pages = min(self.max_pages, pag.max_pages)
        max_items = min(self.max_items_per_list, pag.max_items)
        base_params: dict[str, Any] = dict(level.query)
        if size is not None and pag.page_size_param is not None:
            base_params[pag.page_size_param] = size
        cursor: str | None = None
        offset = 0
        page_no = pag.first_page
        next_url: str | None = None
        followed: set[bytes] = set()
        pages = items_seen = 0
        try:
            while True:
                if pages >= max_pages:
                    raise PermanentError(
                        f"{url}: the list goes on for more than {max_pages} pages "
                        f"(max_pages); given up after {pages} pages",
                        status=200,
                        kind="too_large",
                    )
                shown = url if next_url is None else next_url
                if next_url is None:
                    params = dict(base_params)
                    if style == "cursor" and cursor is not None:
                        params[pag.cursor_param or ""] = cursor
                    elif style == "offset":
                        params[pag.offset_param or ""] = offset
                    elif style == "page_number":
                        params[pag.page_param or ""] = page_no
                    params.update(self._auth_params)
                    target = url + "?" + urlencode(params) if params else url
                else:
                    target = self._with_auth(next_url)
                page, suspicious, headers = self._get_with_retries(shown, target)
                pages += 1
                items = page_items(page, level, shown)
                found: str | None = None
                if style == "cursor":
                    cursor = found = next_cursor(page, pag, shown)
                elif style == "next_url":
                    found = next_url_in_body(page, pag, shown)
                elif style == "link_header":
                    found = link_next(headers.get("Link"))
                total = total_of(page, headers, pag, shown)
                check_size(items, size, shown)
                if level.is_leaf:
                    items = self._rows.check(items, shown, pages, self._preview)
                else:
                    check_listing(level, items, shown, self._preview)
                if suspicious and holds_constant(page):
                    error = BadRecord if level.is_leaf else TransientError
                    raise error(
                        f"{shown}: page {pages} holds NaN or Infinity, which JSON does not allow", status=200
                    )
                items_seen += len(items)
                if items_seen > max_items:
                    raise PermanentError(
                        f"{url}: the list holds more than {max_items} items "
                        f"(max_items_per_list); given up after {pages} pages",
                        status=200,
                        kind="too_large",
                    )
                if style in ("next_url", "link_header") and found is not None:
                    found = self._next_target(shown, target, found, pages)
                if found is not None:
                    digest = hashlib.blake2b(found.encode("utf-8", "surrogatepass"), digest_size=16).digest()
                    if digest in followed:
                        what = ".".join(pag.cursor_path) if style == "cursor" else "next URL"
                        raise PermanentError(
                            f"{shown}: page {pages} hands back a {what} already followed, "
                            f"so the list would never end; given up after {pages} pages",
                            status=200,
                        )
                    followed.add(digest)
                yield from items
                if style in ("cursor", "next_url", "link_header"):
                    if found is None:
                        break
                    if style != "cursor":
                        next_url = found
                elif style == "single_page":
                    break
                else:
                    short = not items or (size is not None and len(items) < size)
                    offset += len(items)
                    page_no += 1
                    counted = offset if style == "offset" else (page_no - pag.first_page) * (size or 0)
                    if short or (total is not None and counted >= total):
                        break
            if total is not None and items_seen != total:
                # The list said how many it holds and ended with another count: items were
                # lost or doubled between pages (a list changing while read, a broken pager).
                raise PermanentError(
                    f"{url}: the list ended with {items_seen} items after {pages} pages, but "
                    f"reported a total of {total}",
                    status=200,
                    kind="incomplete_list",
                )
        except Exception as exc:
            # Every error leaves through here: none may carry the secret.
            scrubbed = self._scrub(exc)
            if scrubbed is exc:
                raise
            raise scrubbed from None

    def _next_target(self, shown: str, current: str, found: str, pages: int) -> str:
        """A next page's URL, resolved against the current page's; refused (permanently)
        off the base URL's origin, where the secret must never be sent."""
        try:
            resolved = urldefrag(urljoin(current, found))[0]
            origin = _Origin.of(resolved)
        except ValueError:
            raise PermanentError(
                f"{shown}: page {pages} names a next URL that is no URL", status=200
            ) from None
        if origin != self._origin:
            raise PermanentError(
                f"{shown}: page {pages} points its next page to {origin}, off the API's origin "
                f"{self._origin}; it is not followed (the secret goes to the API only)",
                status=200,
                kind="bad_url",
            )
        return resolved

    def _with_auth(self, url: str) -> str:
        """A next URL with the query key added, unless the server's URL carries it already."""
        if not self._auth_params:
            return url
        query = urlsplit(url).query
        present = {k for k, _ in parse_qsl(query, keep_blank_values=True)}
        extra = {k: v for k, v in self._auth_params.items() if k not in present}
        if not extra:
            return url
        return url + ("&" if query else "?" if "?" not in url else "") + urlencode(extra)

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets)

    def _preview(self, value: Any) -> str:
        """A bad value as an error message shows it: repr, token removed, then cut short."""
        text = self._redact(repr(value))
        return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 3] + "..."

    def _scrub(self, exc: Exception) -> Exception:
        """``exc`` with the token taken out of its message and its chained causes.

        A FanoutError is fixed in place (its type decides retries); any other exception
        whose text still shows the token is replaced by a TransientError saying the same.
        """
        if isinstance(exc, FanoutError):
            exc.args = tuple(self._redact(a) if isinstance(a, str) else a for a in exc.args)
        elif self._redact(str(exc)) != str(exc):
            return TransientError(f"{type(exc).__name__}: {self._redact(str(exc))}")
        cause: BaseException | None = exc.__cause__ or exc.__context__
        while cause is not None:
            if self._redact(str(cause)) != str(cause):
                exc.__cause__ = None
                exc.__suppress_context__ = True
                break
            cause = cause.__cause__ or cause.__context__
        return exc

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.backoff_cap_s, self.backoff_base_s * 2**attempt))

    def _get_with_retries(self, url: str, full_url: str) -> tuple[Any, bool, Mapping[str, str]]:
        """The decoded page, whether its body may hold NaN or Infinity, and its headers.
        ``url`` names the list in messages; ``full_url`` is sent."""
        attempt = 0
        while True:
            try:
                return self._get_once(url, full_url)
            except PacerBeyondDeadline:
                raise  # waiting here would only bring the deadline nearer: give the task back
            except TransientError as exc:
                self.stats.add(transient_errors=1)
                if exc.status == 429 and self.pacer is not None:
                    self.pacer.on_throttled(exc.retry_after)
                delay = exc.retry_after if exc.retry_after is not None else self._backoff(attempt)
                attempt += 1
                if attempt > self.max_retries or delay >= self._time_left() - 1.0:
                    raise
                self.stats.add(retries=1)
                self._sleep(delay)

    def _task_time_left(self, url: str) -> float:
        """Seconds left before the task's deadline; past it no call starts (its runtime
        needs the time left to record the outcome)."""
        left = self._time_left()
        if left <= 0:
            raise TransientError(f"{url}: the task's deadline passed before this call could start")
        return left

    def _get_once(self, url: str, full_url: str) -> tuple[Any, bool, Mapping[str, str]]:
        left = self._task_time_left(url)
        if self.pacer is not None:
            try:
                waited = self.pacer.acquire(max_wait=left - PACER_RESERVE_S)
            except PacerBeyondDeadline as exc:
                log.warning(
                    "pacing wait past the task's deadline: task given back to be retried",
                    extra={"outcome": "paced_past_deadline", "reason": str(exc)[:200]},
                )
                raise
            if waited:
                self.stats.add(paced_s=waited)
        # One deadline bounds the whole call (connect, headers, body): request_deadline_s,
        # never past the task's. Per-read timeouts alone let a server that sends a byte now
        # and then hold the call forever.
        budget = min(self.request_deadline_s, self._task_time_left(url))
        self.stats.add(calls=1)
        timeout = (min(self.timeout[0], budget), min(self.timeout[1], budget))
        deadline = time.monotonic() + budget
        # The URL is sent exactly as built: requests would turn %2E back into "." (it
        # unquotes unreserved characters) and urllib3 would then drop "." and ".." segments.
        session = self.session
        REQUEST_DEADLINE.value = deadline  # read by the responses of the client's own adapter
        try:
            request, send_kwargs = self._prepare(full_url)
            response = session.send(request, timeout=timeout, allow_redirects=True, **send_kwargs)
        except requests.Timeout as exc:
            raise self._timeout_error(url, budget, deadline, exc) from None
        except UNSENDABLE as exc:
            # The request could not even be built: retrying cannot help.
            raise PermanentError(
                f"calling {url} failed before sending: {type(exc).__name__}: {self._redact(str(exc))}",
                kind="bad_url",
            ) from None
        except requests.RequestException as exc:
            raise TransientError(
                f"connection failed calling {url}: {self._redact(str(exc))}", kind=connection_kind(exc)
            ) from None
        finally:
            REQUEST_DEADLINE.value = None
        with response:
            status = response.status_code
            try:
                body = self._read_capped(response, url, budget, deadline)
            except (TimeoutError, urllib3.exceptions.ReadTimeoutError, requests.Timeout) as exc:
                raise self._timeout_error(url, budget, deadline, exc) from None
            except (
                requests.RequestException,
                urllib3.exceptions.HTTPError,
                http.client.HTTPException,
                OSError,
            ) as exc:
                raise TransientError(
                    f"reading the body of {url} failed: {type(exc).__name__}: {self._redact(str(exc))}",
                    kind="bad_response",
                ) from None
        if status == 200:
            try:
                decoded = decode_page(body)
            except ValueError as exc:
                raise TransientError(
                    f"{url} answered 200 with a body that is not JSON ({len(body)} bytes): {exc}",
                    status=200,
                ) from None
            if self.pacer is not None:
                self.pacer.on_success()
            # NaN or Infinity may hide where no check looks; only then is the page walked.
            return decoded, (b"NaN" in body or b"Infinity" in body), response.headers
        message = self._redact(error_message(body))
        if status == 429:
            self.stats.add(throttled=1)
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise TransientError(f"{url}: 429 rate limited{message}", status=429, retry_after=retry_after)
        if status in PERMANENT_STATUSES:
            raise PermanentError(f"{url}: {status}{message}", status=status)
        if status in TRANSIENT_STATUSES or status >= 500:
            raise TransientError(f"{url}: {status}{message}", status=status)
        raise PermanentError(f"{url}: unexpected status {status}{message}", status=status)

    def _prepare(self, full_url: str) -> tuple[requests.PreparedRequest, dict[str, Any]]:
        """The GET of ``full_url``, sent exactly as built, and the settings to send it with.

        Every call is the same GET but for its URL, so it is prepared once and copied:
        Session.prepare_request merges the headers, hooks, cookies and auth anew each time
        (~150 us, some 7 % of a leaf call's CPU). It is prepared again when the session's
        headers, auth, hooks or send settings change; a session holding cookies, or reading
        the environment per URL (trust_env: proxies, ~/.netrc), prepares every call as before.
        """
        session = self.session
        if session.trust_env or session.cookies:
            request = session.prepare_request(requests.Request("GET", full_url))
            request.url = full_url
            return request, dict(session.merge_environment_settings(full_url, {}, True, None, None))
        held = (
            tuple(session.headers.items()),
            session.auth,
            tuple(session.hooks["response"]),
            tuple(session.proxies.items()),
            session.verify,
            session.stream,
            session.cert,
        )
        if self._template is None or self._template[0] != held:
            prepared = session.prepare_request(requests.Request("GET", self.base_url))
            settings = dict(session.merge_environment_settings(self.base_url, {}, True, None, None))
            self._template = (held, prepared, settings)
        _held, template, sending = self._template
        request = template.copy()
        request.prepare_url(full_url, None)  # refuses the URLs prepare_request refuses
        request.url = full_url
        return request, sending

    def _timeout_error(self, url: str, budget: float, deadline: float, exc: BaseException) -> TransientError:
        if time.monotonic() >= deadline - 0.01:
            return TransientError(
                f"{url}: the call took longer than {budget:.3g} s (the server is sending too slowly)",
                kind="timeout",
            )
        return TransientError(f"timeout calling {url}: {self._redact(str(exc))}", kind="timeout")

    def _read_capped(self, response: requests.Response, url: str, budget: float, deadline: float) -> bytes:
        """The (decoded) body, read piece by piece so that neither the cap nor the deadline
        waits for more than one socket read."""
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_page_bytes:
            raise PermanentError(
                f"{url}: a {int(declared)}-byte page is larger than the {self.max_page_bytes}-byte cap",
                status=response.status_code,
                kind="too_large",
            )
        try:
            return read_capped(response.raw, self.max_page_bytes, deadline)
        except BodyTooLarge:
            raise PermanentError(
                f"{url}: page larger than the {self.max_page_bytes}-byte cap",
                status=response.status_code,
                kind="too_large",
            ) from None
