"""The Hermes API client: one pooled session, every page, transient told from permanent.

It keeps to ``docs/hermes-api.yaml``: identifiers percent-encoded as one path
segment (``.`` and ``..`` too, as ``%2E``), bearer token, ``page_size``/``page_token``
pagination until a null token, 429 honoured via Retry-After, 5xx/timeouts/broken bodies
retried a few times with backoff inside the task's time budget, 400/401/403/404 never
retried.

Whatever a server does, a call ends: each has a total deadline (``request_deadline_s``,
never past the task's), and each list a bound (no page token followed twice,
``max_pages``, ``max_items_per_list``). A record the contract does not allow is a
BadRecord (permanent: it fails its one data group). The token is checked at construction
and never appears in an error message.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import http.client
import io
import json
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager, ProxyManager

from fanout_core.errors import BadRecord, FanoutError, PermanentError, SettingsError, TransientError
from fanout_core.secrets import redact

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
PERMANENT_STATUSES = frozenset({400, 401, 403, 404})
MAX_RETRY_AFTER_S = 300.0
"""A Retry-After above this is absurd; it is clamped rather than obeyed."""
DEFAULT_MAX_PAGES = 10_000
"""Pages one list may take before it is given up (a server that never ends its list)."""
DEFAULT_MAX_ITEMS_PER_LIST = 1_000_000
"""Items one list may hold before it is given up (every item is held in memory)."""
DEFAULT_REQUEST_DEADLINE_S = 60.0
"""Seconds one call may take in all (connect, headers, body), whatever the server sends."""
_READ_SIZE = 256 * 1024

_SCHEMAS: dict[str, dict[str, tuple[type, ...]]] = {
    "warrior": {"warrior_id": (str,), "name": (str,)},
    "troop": {"troop_id": (str,), "service": (str,)},
    "data_group": {"data_group_id": (str,), "name": (str,)},
}
"""Required fields of the listings (the identifier first); records are checked by _check_records."""
PREVIEW_CHARS = 80
"""How much of a bad value an error message shows."""


class PacerLike(Protocol):
    def acquire(self) -> float: ...
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


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP-date), clamped.

    Missing or unreadable gives None (the caller's own backoff applies); negative or
    past dates give 0; absurd values are clamped to ``MAX_RETRY_AFTER_S``.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:  # asctime dates carry no zone; every HTTP-date is GMT
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


class HermesClient:
    """A Hermes client shared by every task of one process (the session pools connections)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        page_size: int = 100,
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
        if not 1 <= page_size <= 1000:
            raise ValueError("page_size must be between 1 and 1000")
        if max_pages < 1:
            raise ValueError(f"max_pages must be at least 1, got {max_pages}")
        if max_items_per_list < 1:
            raise ValueError(f"max_items_per_list must be at least 1, got {max_items_per_list}")
        if not (isinstance(request_deadline_s, int | float) and 0 < request_deadline_s < math.inf):
            raise ValueError(
                f"request_deadline_s must be a positive number of seconds, got {request_deadline_s!r}"
            )
        check_token(token)
        self.base_url = check_base_url(base_url)
        self._secrets = (token,)
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
        if session is None:
            session = requests.Session()
            adapter = DeadlineAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            # Read proxy settings once: with trust_env requests re-reads the environment
            # and ~/.netrc on every call, which doubled the client's CPU per call.
            session.proxies.update(requests.utils.get_environ_proxies(self.base_url))
            session.trust_env = False
        session.headers.update({"Authorization": f"Bearer {token}", "Accept": "application/json"})
        self.session = session

    # -- time budget ---------------------------------------------------------------
    def set_deadline(self, deadline: float | None) -> None:
        """The monotonic time by which this thread's task must be done (None: no limit)."""
        self._deadline.value = deadline

    def _time_left(self) -> float:
        deadline = getattr(self._deadline, "value", None)
        return float("inf") if deadline is None else deadline - self._clock()

    # -- the four lists -------------------------------------------------------------
    def list_warriors(self) -> Iterator[dict[str, Any]]:
        return self._pages(("warriors",), "warrior")

    def list_troops(self, warrior_id: str) -> Iterator[dict[str, Any]]:
        return self._pages(("warriors", warrior_id, "troops"), "troop")

    def list_data_groups(self, warrior_id: str, troop_id: str) -> Iterator[dict[str, Any]]:
        return self._pages(("warriors", warrior_id, "troops", troop_id, "data_groups"), "data_group")

    def list_records(self, warrior_id: str, troop_id: str, data_group_id: str) -> Iterator[dict[str, Any]]:
        path = ("warriors", warrior_id, "troops", troop_id, "data_groups", data_group_id, "data")
        return self._pages(path, "record")

    # -- mechanics ----------------------------------------------------------------
    def url_for(self, segments: tuple[str, ...]) -> str:
        return self.base_url + "/v1/" + "/".join(_segment(s) for s in segments)

    def _pages(self, segments: tuple[str, ...], kind: str) -> Iterator[dict[str, Any]]:
        """Every item of one list, page after page until a null token.

        Bounded whatever the server does and however the caller iterates: every check runs
        before the next page is asked for or before a page's items are handed out. A token
        already followed in this list (A -> A, A -> B -> A), more than ``max_pages`` pages
        or more than ``max_items_per_list`` items fail the list permanently. Tokens are
        remembered by a 16-byte digest, since they may be long.
        """
        url = self.url_for(segments)
        token: str | None = None
        followed: set[bytes] = set()
        pages = items_seen = 0
        try:
            while True:
                if pages >= self.max_pages:
                    raise PermanentError(
                        f"{url}: the list goes on for more than {self.max_pages} pages "
                        f"(max_pages); given up after {pages} pages",
                        status=200,
                    )
                params: dict[str, Any] = {"page_size": self.page_size}
                if token is not None:
                    params["page_token"] = token
                page, suspicious = self._get_with_retries(url, params)
                pages += 1
                items, token = _validate_page(page, kind, url, self.page_size, pages, self._preview)
                if suspicious and _holds_constant(page):
                    error = BadRecord if kind == "record" else TransientError
                    raise error(
                        f"{url}: page {pages} holds NaN or Infinity, which JSON does not allow", status=200
                    )
                items_seen += len(items)
                if items_seen > self.max_items_per_list:
                    raise PermanentError(
                        f"{url}: the list holds more than {self.max_items_per_list} items "
                        f"(max_items_per_list); given up after {pages} pages",
                        status=200,
                    )
                if token is not None:
                    digest = hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=16).digest()
                    if digest in followed:
                        raise PermanentError(
                            f"{url}: page {pages} hands back a next_page_token already followed, "
                            f"so the list would never end; given up after {pages} pages",
                            status=200,
                        )
                    followed.add(digest)
                yield from items
                if token is None:
                    return
        except Exception as exc:
            # Every error leaves through here: none may carry the token.
            scrubbed = self._scrub(exc)
            if scrubbed is exc:
                raise
            raise scrubbed from None

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

    def _get_with_retries(self, url: str, params: Mapping[str, Any]) -> tuple[Any, bool]:
        """The decoded page, and whether its body may hold NaN or Infinity."""
        attempt = 0
        while True:
            try:
                return self._get_once(url, params)
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

    def _get_once(self, url: str, params: Mapping[str, Any]) -> tuple[Any, bool]:
        if self.pacer is not None:
            waited = self.pacer.acquire()
            if waited:
                self.stats.add(paced_s=waited)
        self.stats.add(calls=1)
        # One deadline bounds the whole call (connect, headers, body): request_deadline_s,
        # never past the task's. Per-read timeouts alone let a server that sends a byte now
        # and then hold the call forever.
        left = self._time_left()
        budget = self.request_deadline_s if left > self.request_deadline_s else max(left, 0.1)
        timeout = (min(self.timeout[0], budget), min(self.timeout[1], budget))
        deadline = time.monotonic() + budget
        # The URL is sent exactly as built: requests would turn %2E back into "." (it
        # unquotes unreserved characters) and urllib3 would then drop "." and ".." segments.
        full_url = url + "?" + urlencode(params)
        session = self.session
        _REQUEST_DEADLINE.value = deadline  # read by the responses of the client's own adapter
        try:
            request = session.prepare_request(requests.Request("GET", full_url))
            request.url = full_url
            send_kwargs = session.merge_environment_settings(full_url, {}, True, None, None)
            response = session.send(request, timeout=timeout, allow_redirects=True, **send_kwargs)
        except requests.Timeout as exc:
            raise self._timeout_error(url, budget, deadline, exc) from None
        except _UNSENDABLE as exc:
            # The request could not even be built: retrying cannot help.
            raise PermanentError(
                f"calling {url} failed before sending: {type(exc).__name__}: {self._redact(str(exc))}"
            ) from None
        except requests.RequestException as exc:
            raise TransientError(f"connection failed calling {url}: {self._redact(str(exc))}") from None
        finally:
            _REQUEST_DEADLINE.value = None
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
                    f"reading the body of {url} failed: {type(exc).__name__}: {self._redact(str(exc))}"
                ) from None
        if status == 200:
            try:
                decoded = _decode_page(body)
            except ValueError as exc:
                raise TransientError(
                    f"{url} answered 200 with a body that is not JSON ({len(body)} bytes): {exc}",
                    status=200,
                ) from None
            if self.pacer is not None:
                self.pacer.on_success()
            # NaN or Infinity may hide where no check looks; only then is the page walked.
            return decoded, (b"NaN" in body or b"Infinity" in body)
        message = self._redact(_error_message(body))
        if status == 429:
            self.stats.add(throttled=1)
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise TransientError(f"{url}: 429 rate limited{message}", status=429, retry_after=retry_after)
        if status in PERMANENT_STATUSES:
            raise PermanentError(f"{url}: {status}{message}", status=status)
        if status in TRANSIENT_STATUSES or status >= 500:
            raise TransientError(f"{url}: {status}{message}", status=status)
        raise PermanentError(f"{url}: unexpected status {status}{message}", status=status)

    def _timeout_error(self, url: str, budget: float, deadline: float, exc: BaseException) -> TransientError:
        if time.monotonic() >= deadline - 0.01:
            return TransientError(
                f"{url}: the call took longer than {budget:.3g} s (the server is sending too slowly)"
            )
        return TransientError(f"timeout calling {url}: {self._redact(str(exc))}")

    def _read_capped(self, response: requests.Response, url: str, budget: float, deadline: float) -> bytes:
        """The (decoded) body, read piece by piece so that neither the cap nor the deadline
        waits for more than one socket read."""
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_page_bytes:
            raise PermanentError(
                f"{url}: a {int(declared)}-byte page is larger than the {self.max_page_bytes}-byte cap",
                status=response.status_code,
            )
        raw = response.raw
        chunks: list[bytes] = []
        size = 0
        while True:
            # read1: whatever one socket read brought (iter_content would wait for 256 KB).
            chunk = raw.read1(_READ_SIZE, decode_content=True)
            if not chunk:
                break
            size += len(chunk)
            if size > self.max_page_bytes:
                raise PermanentError(
                    f"{url}: page larger than the {self.max_page_bytes}-byte cap",
                    status=response.status_code,
                )
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise TimeoutError("the request's deadline has passed")
        # The whole body is read: the connection goes back to the pool (closing the
        # response unread would close it).
        raw.release_conn()
        return b"".join(chunks)


# --- the total deadline, down to each socket read -------------------------------------------------
#
# The client's own sessions mount DeadlineAdapter, whose connections hand every response a
# reader that bounds each recv (status line, headers, body) by the time left before the
# call's deadline (a thread-local set around each send). Nothing runs in another thread:
# the socket's timeout is lowered as the deadline comes closer, only then (one syscall).

_REQUEST_DEADLINE = threading.local()


class _DeadlineReader(io.RawIOBase):
    """A socket's raw reader whose every read ends by ``deadline`` (monotonic seconds)."""

    def __init__(self, sock: Any, deadline: float):
        self._raw = sock.makefile("rb", buffering=0)  # counted as an open file of the socket
        self._sock = sock
        self._deadline = deadline
        self._per_read: float | None = sock.gettimeout()
        self._lowered = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request's deadline has passed")
        if self._per_read is None or left < self._per_read:
            self._sock.settimeout(left)
            self._lowered = True
        result: int | None = self._raw.readinto(buffer)
        return result

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
            if self._lowered:
                with contextlib.suppress(OSError):  # the connection may be closed already
                    self._sock.settimeout(self._per_read)
        super().close()


class _DeadlineSocket:
    """What http.client's response reads from: the socket, behind a _DeadlineReader."""

    __slots__ = ("_deadline", "_sock")

    def __init__(self, sock: Any, deadline: float):
        self._sock = sock
        self._deadline = deadline

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))


class _DeadlineResponse(http.client.HTTPResponse):
    def __init__(self, sock: Any, debuglevel: int = 0, method: str | None = None, url: str | None = None):
        deadline = getattr(_REQUEST_DEADLINE, "value", None)
        if deadline is not None:
            sock = _DeadlineSocket(sock, deadline)
        super().__init__(sock, debuglevel, method, url)


class _DeadlineHTTPConnection(HTTPConnection):
    response_class = _DeadlineResponse


class _DeadlineHTTPSConnection(HTTPSConnection):
    response_class = _DeadlineResponse


class _DeadlineHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _DeadlineHTTPConnection


class _DeadlineHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


_DEADLINE_POOLS = {"http": _DeadlineHTTPConnectionPool, "https": _DeadlineHTTPSConnectionPool}


class DeadlineAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections keep to the calling client's request deadline."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _DEADLINE_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        manager: PoolManager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if type(manager) is ProxyManager:  # SOCKS proxies keep their own connections
            manager.pool_classes_by_scheme = _DEADLINE_POOLS
        return manager


def _segment(ident: str) -> str:
    """One identifier as one path segment: percent-encoded, and "." and ".." too.

    Left bare, "." and ".." are dot segments that every HTTP stack on the way removes
    (RFC 3986 section 5.2.4); encoded, they reach the server, which decodes them.
    """
    if ident == ".":
        return "%2E"
    if ident == "..":
        return "%2E%2E"
    return quote(ident, safe="")


_UNSENDABLE = (
    requests.exceptions.InvalidHeader,
    requests.exceptions.InvalidURL,
    requests.exceptions.InvalidSchema,
    requests.exceptions.MissingSchema,
)


def check_token(token: str) -> None:
    """Refuse a bearer token no header can carry safely; the message never shows the token."""
    if not isinstance(token, str):
        raise SettingsError(f"the Hermes token must be a string, got {type(token).__name__}")
    if not token:
        raise SettingsError("the Hermes token is empty; set it to the bearer token Hermes issued")
    if token[0].isspace() or token[-1].isspace() or any(ord(c) < 32 or 127 <= ord(c) <= 159 for c in token):
        raise SettingsError(
            "the Hermes token holds whitespace or a control character; a line break or a space "
            "at either end is most likely a copy-paste accident: set it again without them"
        )
    try:
        token.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise SettingsError(
            f"the Hermes token holds a character an HTTP header cannot carry (at position {exc.start})"
        ) from None


def check_base_url(url: str) -> str:
    """The Hermes base URL without its trailing slash; a one-line SettingsError if it is no URL."""
    if not isinstance(url, str):
        raise SettingsError(f"the Hermes URL must be a string, got {type(url).__name__}")
    shown = repr(url)
    if any(c.isspace() or ord(c) < 32 or 127 <= ord(c) <= 159 for c in url):
        raise SettingsError(f"the Hermes URL {shown} holds whitespace or a control character")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise SettingsError(f"the Hermes URL {shown} is not a URL: {exc}") from None
    if parts.username is not None or parts.password is not None:
        shown = repr(parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl())
        raise SettingsError(
            f"the Hermes URL {shown} must not hold a user name or password (the token goes in a header)"
        )
    if parts.scheme not in ("http", "https") or not url.lower().startswith(("http://", "https://")):
        raise SettingsError(f"the Hermes URL {shown} must start with http:// or https://")
    if not parts.hostname:
        raise SettingsError(f"the Hermes URL {shown} names no host")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0 or (port is None and parts.netloc.endswith(":")):
        raise SettingsError(f"the Hermes URL {shown} has a port that is not a number from 1 to 65535")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise SettingsError(f"the Hermes URL {shown} must not have a query or fragment")
    try:
        prepared = requests.PreparedRequest()
        prepared.prepare_url(url, None)
    except requests.RequestException as exc:
        raise SettingsError(f"the Hermes URL {shown} is not a URL: {exc}") from None
    return (prepared.url or url).rstrip("/")


def _error_message(body: bytes) -> str:
    try:
        doc = json.loads(body)
        return f" ({doc.get('error')}: {doc.get('message')})" if isinstance(doc, dict) else ""
    except ValueError:
        return ""


def _validate_page(
    page: Any, kind: str, url: str, page_size: int, page_no: int, preview: Callable[[Any], str]
) -> tuple[list[dict[str, Any]], str | None]:
    """Check a page against the contract.

    A body that is not the page shape is transient (it may be a glitch); so is a broken
    warrior, troop or data group. A record the contract does not allow is a BadRecord
    (permanent: the list gives it again), naming the field, the page and the position.
    """
    if not isinstance(page, dict) or not isinstance(page.get("items"), list):
        raise TransientError(f"{url}: page is not an object with an items list", status=200)
    if "next_page_token" not in page:
        raise TransientError(f"{url}: page has no next_page_token", status=200)
    token = page["next_page_token"]
    if token is not None and (not isinstance(token, str) or not token):
        raise TransientError(f"{url}: next_page_token is neither null nor a string", status=200)
    items = page["items"]
    if len(items) > page_size:
        raise PermanentError(
            f"{url}: page holds {len(items)} items, more than the page_size {page_size} asked for",
            status=200,
        )
    if kind == "record":
        _check_records(items, url, page_no, preview)
        return items, token
    required = _SCHEMAS[kind]
    for item in items:
        if not isinstance(item, dict):
            raise TransientError(f"{url}: a {kind} item is not an object", status=200)
        for name, types in required.items():
            if name not in item or not isinstance(item[name], types) or isinstance(item[name], bool):
                raise TransientError(
                    f"{url}: a {kind} item has no valid {name!r}: {preview(item)}", status=200
                )
        ident = item[next(iter(required))]
        if not 1 <= len(ident) <= 128 or _BAD_ID_CHAR(ident) is not None:
            raise PermanentError(f"{url}: identifier {preview(ident)} breaks the contract", status=200)
    return items, token


# Control characters are Unicode's Cc (C0, DEL, C1); a lone surrogate is no character.
_BAD_ID_CHAR = re.compile("[/\x00-\x1f\x7f-\x9f\ud800-\udfff]").search

# RFC 3339 date-time (section 5.6), ASCII digits only. The fast pattern takes the usual
# upper-case form whose every field is in range whatever the month; anything else
# (days 29-31, years 0001 and 9999 that an offset may push out of range, lower-case
# "t"/"z", more than 6 fractional digits, mistakes) goes to _check_ts, which says what
# is wrong or normalises it.
_TS_FAST = re.compile(
    r"(?!0000|0001|9999)[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
).fullmatch
_TS_SYNTAX = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
).fullmatch


class _Bad(Exception):
    """What is wrong with one field of one record (the caller adds where)."""


_MISSING: Any = object()


def _check_ts(ts: Any, preview: Callable[[Any], str]) -> str:
    """``ts`` as yielded, or _Bad saying why it is not RFC 3339 (or cannot be stored).

    Yielded in the form the Parquet output reads: upper-case ``T`` and ``Z`` (pandas
    refuses lower case) and at most 6 fractional digits (the output keeps microseconds;
    a nanosecond value beside year 0001 would make pandas fail the whole column).
    """
    if ts is _MISSING:
        raise _Bad("'ts' is missing")
    if type(ts) is not str:
        raise _Bad(f"'ts' is {preview(ts)}, not a string")
    m = _TS_SYNTAX(ts)
    if m is None:
        raise _Bad(f"'ts' is {preview(ts)}, not an RFC 3339 date-time such as 2026-11-27T08:00:00Z")
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    try:
        date = datetime(year, month, day)
    except ValueError:
        raise _Bad(f"'ts' is {preview(ts)}: there is no such date") from None
    if second == 60 and hour < 24 and minute < 60:
        raise _Bad(f"'ts' is {preview(ts)}: a leap second, which the output's timestamps cannot hold")
    if hour > 23 or minute > 59 or second > 59:
        raise _Bad(f"'ts' is {preview(ts)}: there is no such time of day")
    offset = timedelta()
    if m.group(8) is not None:
        off_hours, off_minutes = int(m.group(9)), int(m.group(10))
        if off_hours > 23 or off_minutes > 59:
            raise _Bad(f"'ts' is {preview(ts)}: there is no such offset from UTC")
        offset = timedelta(hours=off_hours, minutes=off_minutes) * (1 if m.group(8) == "+" else -1)
    try:
        # The instant in UTC must be one the output's timestamps hold.
        date.replace(hour=hour, minute=minute, second=second, tzinfo=UTC) - offset
    except OverflowError:
        raise _Bad(f"'ts' is {preview(ts)}, outside the years 0001 to 9999 in UTC") from None
    fraction = m.group(7)
    if fraction is not None and len(fraction) > 6:
        ts = ts[: m.start(7) + 6] + ts[m.end(7) :]
    return ts.upper()


def _check_value(value: Any, preview: Callable[[Any], str]) -> None:
    if value is _MISSING:
        raise _Bad("'value' is missing (it is required; null stands for no value)")
    if type(value) is _NonJSONConstant:
        raise _Bad(
            f"'value' is {value!r}, which JSON does not allow (the contract wants a finite number or null)"
        )
    if type(value) is float:  # inf, from a literal such as 1e400
        raise _Bad(f"'value' is {preview(value)}: a number too large for a float")
    if type(value) is int:
        raise _Bad(f"'value' is an integer of {len(str(abs(value)))} digits, too large for a float")
    raise _Bad(f"'value' is {preview(value)}, not a number or null")


def _check_records(items: list[Any], url: str, page_no: int, preview: Callable[[Any], str]) -> None:
    """Every record of one page, as the contract defines it; a BadRecord saying where if not.

    The usual record costs a few type checks and one regex match (1.2 M of them a run);
    the helpers only run for what needs a closer look.
    """
    i = 0
    try:
        for i, item in enumerate(items):  # noqa: B007 (i says where, in the message)
            if type(item) is not dict:
                raise _Bad("the record is not an object")
            ts = item.get("ts", _MISSING)
            if type(ts) is not str or _TS_FAST(ts) is None:
                item["ts"] = _check_ts(ts, preview)
            metric = item.get("metric", _MISSING)
            if type(metric) is not str:
                raise _Bad(
                    "'metric' is missing"
                    if metric is _MISSING
                    else f"'metric' is {preview(metric)}, not a string"
                )
            value = item.get("value", _MISSING)
            kind = type(value)
            if kind is float:
                if value - value != 0.0:  # inf or nan
                    _check_value(value, preview)
            elif kind is int:
                try:
                    float(value)
                except OverflowError:
                    _check_value(value, preview)
            elif value is not None:
                _check_value(value, preview)
            unit = item.get("unit")
            if unit is not None and type(unit) is not str:
                raise _Bad(f"'unit' is {preview(unit)}, neither a string nor null")
    except _Bad as exc:
        raise BadRecord(f"{url}: page {page_no}, record {i + 1} of {len(items)}: {exc}") from None


class _NonJSONConstant:
    """What the page parser makes of NaN, Infinity and -Infinity, which JSON does not allow
    (Python's json reads them as floats by default): a marker the checks refuse."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


_PAGE_DECODER = json.JSONDecoder(parse_constant=_NonJSONConstant)


def _decode_page(body: bytes) -> Any:
    """``json.loads(body)``, except that NaN and Infinity become _NonJSONConstant markers."""
    return _PAGE_DECODER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))


def _holds_constant(doc: Any) -> bool:
    if type(doc) is _NonJSONConstant:
        return True
    if type(doc) is dict:
        return any(_holds_constant(v) for v in doc.values())
    if type(doc) is list:
        return any(_holds_constant(v) for v in doc)
    return False
