"""Preflight: is Hermes there, does it take the token, can the bucket be written, before a run.

Without it a wrong URL, a refused token or a down server shows only after every task has
spent its retries (about 10 s locally, hours on AWS), as failure records. ``fanout check``
runs these checks on their own; ``local run`` runs them before it seeds anything.

Each check ends in one ``Finding``: a cause in plain words (the same kinds a failure
record names: ``connection_refused``, ``unauthorized``, ``not_found``, ...) and one line
that says what is wrong and what to do. Two requests at most reach Hermes: the health
probe (no token) and one listing of a single warrior. The token is never shown.

Each request is bounded like the Hermes client's calls (its own transport): ``timeout_s`` in
all (connect, headers, body), however slowly the server sends, and ``MAX_BODY_BYTES`` read.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3

from fanout.bucket import StorageSpec
from fanout_core.errors import SettingsError
from fanout_core.hermes_http import check_base_url, parse_retry_after
from fanout_core.hermes_transport import BodyTooLarge, deadline_session, read_capped, request_deadline
from fanout_core.pages import decode_page, validate_page
from fanout_core.secrets import check_token, redact

PROBE_PREFIX = "fanout-check/"
"""Where the bucket probe is written and deleted: no stage's prefix, so it triggers nothing."""
MAX_BODY_BYTES = 1024 * 1024
"""Bytes read of any answer: a health body or a one-warrior page is far smaller."""
UNANSWERED = (
    requests.RequestException,
    urllib3.exceptions.HTTPError,  # a body cut short (ProtocolError), a broken chunk
    http.client.HTTPException,
    TimeoutError,
    BodyTooLarge,
    OSError,
)
"""What a request of the preflight may end in instead of a whole answer."""
TRANSIENT_TRIES = 3
"""Listings tried when Hermes answers 429 or 5xx (a flaky server is not a wrong setting)."""


@dataclass(frozen=True)
class Finding:
    check: str
    """What was checked: ``hermes``, ``token``, ``bucket``."""
    ok: bool
    cause: str
    """``ok`` or the failure's kind in plain words (``connection_refused``, ``unauthorized``, ...)."""
    message: str
    """One line: what was found and, for a failure, the fix."""
    transient: bool = False
    """A failure that the run's own retries may get past (429, 5xx): a warning for ``local run``."""
    advice: bool = False
    """Worth saying, never a failure (a token sent over plain http)."""

    @property
    def fails_check(self) -> bool:
        return not self.ok and not self.advice

    @property
    def stops_run(self) -> bool:
        """Whether ``local run`` refuses to start: a failure its retries cannot get past."""
        return self.fails_check and not self.transient


def check_usage(url: str, token: str | None) -> str:
    """The base URL, checked without a request; SettingsError (a usage error) if it or the token is bad."""
    try:
        url = check_base_url(url)
    except SettingsError as exc:
        if isinstance(url, str) and "://" not in url and url.strip():
            raise SettingsError(f"{exc} (did you mean http://{url.strip()} ?)") from None
        raise
    if not token:
        raise SettingsError("set HERMES_TOKEN to the Hermes bearer token")
    check_token(token)
    return url


def check_hermes(url: str, token: str, *, timeout_s: float = 5.0) -> Iterator[Finding]:
    """Reachability (the health probe), then authentication (one real listing), then token hygiene."""
    session = deadline_session(url)
    host = urlsplit(url).hostname or url
    timeout = (min(3.05, timeout_s), timeout_s)
    health = f"{url}/v1/health"
    try:
        _get(session, health, {}, timeout_s)
    except UNANSWERED as exc:
        yield _unreachable(url, host, exc, timeout, health)
        return
    listing = f"{url}/v1/warriors"
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    for attempt in range(1, TRANSIENT_TRIES + 1):
        wait = 0.5 * attempt
        try:
            status, response_headers, body = _get(session, listing + "?page_size=1", headers, timeout_s)
        except UNANSWERED as exc:
            finding = _unreachable(url, host, exc, timeout, listing)
        else:
            finding = _listed(url, listing, status, body, token, response_headers.get("Location"))
            wait = parse_retry_after(response_headers.get("Retry-After")) or wait
        if not finding.transient or attempt == TRANSIENT_TRIES:
            break
        time.sleep(min(wait, 2.0))
    yield finding
    if finding.ok and urlsplit(url).scheme == "http" and not _is_loopback(host):
        yield Finding(
            "token",
            False,
            "token_in_clear",
            f"the token travels unencrypted over http:// to {host}; fix: use https:// if Hermes offers it",
            advice=True,
        )


def _get(
    session: requests.Session, url: str, headers: dict[str, str], timeout_s: float
) -> tuple[int, Any, bytes]:
    """One GET, bounded in all by ``timeout_s`` and ``MAX_BODY_BYTES`` (TimeoutError, BodyTooLarge)."""
    deadline = time.monotonic() + timeout_s
    with request_deadline(deadline):
        response = session.get(
            url,
            headers=headers,
            timeout=(min(3.05, timeout_s), timeout_s),
            stream=True,
            allow_redirects=False,
        )
    with response:
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise BodyTooLarge(f"a {int(declared)}-byte body")
        try:
            body = read_capped(response.raw, MAX_BODY_BYTES, deadline)
        except urllib3.exceptions.ReadTimeoutError as exc:
            raise TimeoutError(str(exc)) from None
    return response.status_code, response.headers, body


def check_bucket(spec: StorageSpec, where: str) -> Finding:
    """The bucket can be listed, and written: a probe object is put, read back and deleted."""
    key = f"{PROBE_PREFIX}probe-{uuid.uuid4().hex}.txt"
    step = "open"
    try:
        storage = spec.build()
        step = "list"
        next(iter(storage.list("amazon_warriors/")), None)
        step = "write"
        storage.put(key, b"fanout check: safe to delete\n")
        step = "read back"
        storage.get(key)
        step = "delete"
        storage.delete(key)
    except Exception as exc:
        return Finding("bucket", False, f"bucket_{step.replace(' ', '_')}", _bucket_message(where, step, exc))
    if spec.bucket_dir is not None:  # the folder the probe made, so `ls` shows only prefixes
        _remove_empty_probe_folder(spec.bucket_dir)
    return Finding("bucket", True, "ok", f"bucket {where}: listed, written and cleaned up")


def run_checks(
    url: str, token: str, spec: StorageSpec | None, where: str, *, timeout_s: float = 5.0
) -> list[Finding]:
    findings = list(check_hermes(url, token, timeout_s=timeout_s))
    if spec is not None:
        findings.append(check_bucket(spec, where))
    return findings


def print_findings(findings: list[Finding], write: Callable[[str], Any], *, quiet_ok: bool = False) -> None:
    for f in findings:
        if f.ok and quiet_ok:
            continue
        mark = "ok  " if f.ok else ("FAIL" if f.fails_check else "note")
        write(f"{mark} {f.check}: {f.message}")


# -- what a failure says ---------------------------------------------------------------


def _listed(url: str, listing: str, status: int, body: bytes, token: str, location: str | None) -> Finding:
    body = body[:65536]
    said = redact(_said(body), [token])
    if status == 200:
        try:
            page = decode_page(body)
            items, _next = validate_page(page, "warrior", listing, 1, 1, repr)
        except Exception:
            return Finding(
                "hermes",
                False,
                "bad_response",
                f"{listing} answered 200 but not with a page of warriors; fix: point --hermes-url at a "
                "Hermes API that keeps docs/hermes-api.yaml (the part of the URL before /v1)",
            )
        first = f"first warrior {items[0].get('warrior_id')!r}" if items else "no warriors listed"
        return Finding("hermes", True, "ok", f"{url} is reachable and took the token ({first})")
    if 300 <= status < 400:  # not followed: the preflight reads no more than it asked for
        return Finding(
            "hermes",
            False,
            "redirected",
            f"{listing} redirects ({status}) to {redact(location or '?', [token])[:160]}; fix: give "
            "--hermes-url the base URL it redirects to",
        )
    if status == 401:
        return Finding(
            "hermes",
            False,
            "unauthorized",
            f"Hermes refused the token (401 at {listing}{said}); fix: set HERMES_TOKEN to a token "
            "this Hermes issued",
        )
    if status == 403:
        return Finding(
            "hermes",
            False,
            "forbidden",
            f"Hermes took the token but may not list warriors with it (403{said}); fix: use a token "
            "with read access to the warriors API",
        )
    if status == 404:
        hint = " (drop the trailing /v1: fanout adds it)" if url.rstrip("/").endswith("/v1") else ""
        return Finding(
            "hermes",
            False,
            "not_found",
            f"{listing} does not exist (404): the base path is wrong; fix: --hermes-url is the part "
            f"before /v1, e.g. https://host:port{hint}",
        )
    if status == 429:
        return Finding(
            "hermes",
            False,
            "rate_limited",
            f"Hermes answers 429 (rate limited) before the run has started{said}; fix: wait, or pace "
            "the run below the token's limit with --rate-limit",
            transient=True,
        )
    if status >= 500:
        return Finding(
            "hermes",
            False,
            "server_error",
            f"Hermes answers {status} at {listing}{said}; the run's retries may get past it, but if it "
            "persists the server is down: ask whoever runs it",
            transient=True,
        )
    return Finding(
        "hermes",
        False,
        "bad_response",
        f"{listing} answered {status}{said}, which the Hermes contract does not use; fix: check "
        "that --hermes-url points at Hermes",
    )


def _said(body: bytes) -> str:
    """The server's own error message, short, if its body is the contract's error object."""
    try:
        doc = decode_page(body)
    except ValueError:
        return ""
    message = doc.get("message") if isinstance(doc, dict) else None
    return f': "{message[:120]}"' if isinstance(message, str) and message else ""


def _unreachable(url: str, host: str, exc: BaseException, timeout: tuple[float, float], what: str) -> Finding:
    chain = list(_causes(exc))
    where = urlsplit(url).netloc
    if isinstance(exc, BodyTooLarge):
        return Finding(
            "hermes",
            False,
            "too_large",
            f"{what} answered with a body of more than {MAX_BODY_BYTES} bytes, which no Hermes sends "
            "there; fix: check that --hermes-url points at Hermes",
        )
    if isinstance(exc, TimeoutError):
        return Finding(
            "hermes",
            False,
            "timeout",
            f"{what} did not finish its answer within {timeout[1]:g} s (it sends too slowly); fix: check "
            "that it is Hermes and that it is not overloaded",
            transient=True,  # it is there: a slow answer may be a passing one
        )
    if any(_is_plain_http_reply(e) for e in chain):
        return Finding(
            "hermes",
            False,
            "tls",
            f"{where} does not speak TLS (https:// to a plain-HTTP port: the answer to the handshake "
            "was not TLS); fix: use http:// if it is served in plain HTTP, or the server's https port",
        )
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return Finding(
            "hermes",
            False,
            "connection_refused",
            f"cannot connect to {where}: connection refused (nothing listens there); fix: start Hermes, "
            "or correct the host and port in --hermes-url",
        )
    if any(isinstance(e, socket.gaierror | urllib3.exceptions.NameResolutionError) for e in chain):
        return Finding(
            "hermes",
            False,
            "dns",
            f"cannot resolve the host {host!r}; fix: check its spelling in --hermes-url, or your DNS/VPN",
        )
    if isinstance(exc, requests.exceptions.SSLError):
        return Finding(
            "hermes",
            False,
            "tls",
            f"the TLS handshake with {where} failed ({_short(exc)}); fix: http:// or https://? "
            "or trust the server's certificate (REQUESTS_CA_BUNDLE)",
        )
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return Finding(
            "hermes",
            False,
            "timeout",
            f"no connection to {where} within {timeout[0]:g} s (a firewall, or the wrong host); "
            "fix: check the host and port in --hermes-url",
        )
    if isinstance(exc, requests.exceptions.Timeout):
        return Finding(
            "hermes",
            False,
            "timeout",
            f"{where} accepted the connection but sent no answer within {timeout[1]:g} s; fix: check "
            "that it is Hermes and that it is not overloaded",
            transient=True,  # it is there: a slow answer may be a passing one
        )
    return Finding(
        "hermes",
        False,
        "connection_failed",
        f"cannot talk to {where}: {_short(exc)}; fix: check --hermes-url",
    )


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        reason = getattr(e, "reason", None)  # urllib3's wrapped error; an ssl.SSLError's is a str
        todo += [e.__cause__, e.__context__, reason if isinstance(reason, BaseException) else None]
        todo += [a for a in e.args if isinstance(a, BaseException)]


def _is_plain_http_reply(exc: BaseException) -> bool:
    """An ssl error that says the peer answered the ClientHello with something that is not TLS."""
    if not isinstance(exc, ssl.SSLError):
        return False
    said = f"{getattr(exc, 'reason', '')} {exc}".upper()
    return any(s in said for s in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "HTTP_REQUEST"))


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 160 else text[:157] + "..."


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bucket_message(where: str, step: str, exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        fix = "fix: give this user write access to it, or choose another --bucket-dir"
    elif isinstance(exc, NotADirectoryError | FileExistsError):
        fix = "fix: --bucket-dir must be a folder (or a path that does not exist yet)"
    elif "NoSuchBucket" in str(exc):
        fix = "fix: check the bucket's name (and --s3-endpoint-url / --region)"
    elif "AccessDenied" in str(exc) or "403" in str(exc):
        fix = (
            "fix: the AWS credentials in use need s3:ListBucket, s3:PutObject, s3:GetObject, s3:DeleteObject"
        )
    elif "credentials" in str(exc).lower():
        fix = "fix: configure AWS credentials (AWS_PROFILE, or aws configure)"
    else:
        fix = "fix: check --bucket / --bucket-dir and the endpoint"
    return f"cannot {step} the bucket {where}: {type(exc).__name__}: {_short(exc)}; {fix}"


def _remove_empty_probe_folder(bucket_dir: str) -> None:
    with contextlib.suppress(OSError):  # not empty (another check's probe): leave it
        (Path(bucket_dir) / PROBE_PREFIX).rmdir()
