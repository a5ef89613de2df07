"""Preflight: is the API there, does it take the secret, can the bucket be written, before a run.

Without it a wrong URL, a refused token or a down server shows only after every task has
spent its retries (about 10 s locally, hours on AWS), as failure records. ``fanout check``
runs these checks on their own; ``local run`` runs them before it seeds anything.

Each check ends in one ``Finding``: a cause in plain words (the same kinds a failure
record names: ``connection_refused``, ``unauthorized``, ``not_found``, ...) and one line
that says what is wrong and what to do. Two requests at most reach the API: the health
probe (no secret; the description's ``health`` path, none if it names none) and one listing
of the first level, one item asked for. The secret is never shown. For Hermes (the built-in
description) every message is as it always was.

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
from urllib.parse import urlencode, urlsplit

import requests
import urllib3

from fanout.bucket import StorageSpec
from fanout_core.api_description import ApiDescription, Level, builtin
from fanout_core.errors import SettingsError
from fanout_core.hermes_http import check_base_url, parse_retry_after
from fanout_core.hermes_transport import BodyTooLarge, deadline_session, read_capped, request_deadline
from fanout_core.pages import decode_page
from fanout_core.secrets import check_token, redact

PROBE_PREFIX = "fanout-check/"
"""Where the bucket probe is written and deleted: no stage's prefix, so it triggers nothing."""
MAX_BODY_BYTES = 1024 * 1024
"""Bytes read of any answer: a health body or a one-item page is far smaller."""
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


def check_usage(url: str, token: str | None, api: ApiDescription | None = None) -> str:
    """The base URL, checked without a request; SettingsError (a usage error) if it or the
    secret is bad (``api``'s auth: none takes no secret)."""
    api = api or builtin()
    try:
        url = check_base_url(url)
    except SettingsError as exc:
        if isinstance(url, str) and "://" not in url and url.strip():
            raise SettingsError(f"{exc} (did you mean http://{url.strip()} ?)") from None
        raise
    if api.auth.type == "none":
        return url
    if not token:
        from fanout.api_choice import secret_for

        secret_for(api, {})  # the SettingsError naming the variable
    check_token(token or "")
    return url


@dataclass(frozen=True)
class _Words:
    """How the messages name the API, its URL flag and its first level."""

    who: str
    flag: str
    level: Level
    hermes: bool

    @property
    def check(self) -> str:
        """The finding's name: ``hermes`` as it always was, ``api`` for a described API."""
        return "hermes" if self.hermes else "api"

    @classmethod
    def of(cls, api: ApiDescription) -> _Words:
        from fanout.api_choice import is_builtin

        if is_builtin(api):
            return cls("Hermes", "--hermes-url", api.levels[0], True)
        return cls(api.name, "--api-url", api.levels[0], False)


def check_hermes(
    url: str, token: str, *, timeout_s: float = 5.0, api: ApiDescription | None = None
) -> Iterator[Finding]:
    """Reachability (the health probe), then authentication (one real listing), then token hygiene."""
    from fanout.api_choice import auth_parts

    api = api or builtin()
    words = _Words.of(api)
    session = deadline_session(url)
    host = urlsplit(url).hostname or url
    timeout = (min(3.05, timeout_s), timeout_s)
    if api.health is not None:
        health = f"{url}{api.health}"
        try:
            _get(session, health, {}, timeout_s)
        except UNANSWERED as exc:
            yield _unreachable(url, host, exc, timeout, health, words)
            return
    level = api.levels[0]
    listing = f"{url}{level.path}"
    auth_headers, auth_params = auth_parts(api, token)
    headers = {**auth_headers, "Accept": "application/json"}
    query = {**level.query, **auth_params}
    if level.pagination.page_size_param:
        query[level.pagination.page_size_param] = "1"
    secrets = [token] if token else []
    for attempt in range(1, TRANSIENT_TRIES + 1):
        wait = 0.5 * attempt
        try:
            target = f"{listing}?{urlencode(query)}" if query else listing
            status, response_headers, body = _get(session, target, headers, timeout_s)
        except UNANSWERED as exc:
            finding = _unreachable(url, host, exc, timeout, listing, words)
        else:
            finding = _listed(url, listing, status, body, secrets, response_headers.get("Location"), words)
            wait = parse_retry_after(response_headers.get("Retry-After")) or wait
        if not finding.transient or attempt == TRANSIENT_TRIES:
            break
        time.sleep(min(wait, 2.0))
    yield finding
    if finding.ok and secrets and urlsplit(url).scheme == "http" and not _is_loopback(host):
        yield Finding(
            "token",
            False,
            "token_in_clear",
            f"the token travels unencrypted over http:// to {host}; fix: use https:// if "
            f"{words.who} offers it",
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
        next(iter(storage.list(PROBE_PREFIX)), None)
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
    url: str,
    token: str,
    spec: StorageSpec | None,
    where: str,
    *,
    timeout_s: float = 5.0,
    api: ApiDescription | None = None,
) -> list[Finding]:
    findings = list(check_hermes(url, token, timeout_s=timeout_s, api=api))
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


def _listed(
    url: str, listing: str, status: int, body: bytes, secrets: list[str], location: str | None, words: _Words
) -> Finding:
    body = body[:65536]
    said = redact(_said(body), secrets)
    who, flag, plural = words.who, words.flag, words.level.name
    if status == 200:
        first = _first_item(body, words.level)
        if first is None:
            fix = (
                "point --hermes-url at a Hermes API that keeps docs/hermes-api.yaml (the part of the URL "
                "before /v1)"
                if words.hermes
                else f"check that {flag} and the description's {plural} path and items match the API"
            )
            return Finding(
                words.check,
                False,
                "bad_response",
                f"{listing} answered 200 but not with a page of {plural}; fix: {fix}",
            )
        return Finding(words.check, True, "ok", f"{url} is reachable and took the token ({first[0]})")
    if 300 <= status < 400:  # not followed: the preflight reads no more than it asked for
        return Finding(
            words.check,
            False,
            "redirected",
            f"{listing} redirects ({status}) to {redact(location or '?', secrets)[:160]}; fix: give "
            f"{flag} the base URL it redirects to",
        )
    variable = "HERMES_TOKEN" if words.hermes else "the description's auth.env variable"
    if status == 401:
        return Finding(
            words.check,
            False,
            "unauthorized",
            f"{who} refused the token (401 at {listing}{said}); fix: set {variable} to a token "
            f"this {who} issued",
        )
    if status == 403:
        return Finding(
            words.check,
            False,
            "forbidden",
            f"{who} took the token but may not list {plural} with it (403{said}); fix: use a token "
            f"with read access to the {plural} API",
        )
    if status == 404:
        if words.hermes:
            hint = " (drop the trailing /v1: fanout adds it)" if url.rstrip("/").endswith("/v1") else ""
            fix = f"--hermes-url is the part before /v1, e.g. https://host:port{hint}"
        else:
            fix = f"{flag} is the base URL the description's paths follow"
        return Finding(
            words.check,
            False,
            "not_found",
            f"{listing} does not exist (404): the base path is wrong; fix: {fix}",
        )
    if status == 429:
        return Finding(
            words.check,
            False,
            "rate_limited",
            f"{who} answers 429 (rate limited) before the run has started{said}; fix: wait, or pace "
            "the run below the token's limit with --rate-limit",
            transient=True,
        )
    if status >= 500:
        return Finding(
            words.check,
            False,
            "server_error",
            f"{who} answers {status} at {listing}{said}; the run's retries may get past it, but if it "
            "persists the server is down: ask whoever runs it",
            transient=True,
        )
    contract = "the Hermes contract does not use" if words.hermes else "is no listing's answer"
    return Finding(
        words.check,
        False,
        "bad_response",
        f"{listing} answered {status}{said}, which {contract}; fix: check that {flag} points at {who}",
    )


def _first_item(body: bytes, level: Level) -> tuple[str] | None:
    """``("first <folder> '<id>'",)`` or ``("no <level> listed",)`` for a page of the level's
    items; None if the body is no such page."""
    try:
        doc: Any = decode_page(body)
    except ValueError:
        return None
    for part in level.items:
        doc = doc.get(part) if isinstance(doc, dict) else None
    if not isinstance(doc, list) or not all(isinstance(item, dict) for item in doc):
        return None
    if not doc:
        return (f"no {level.name} listed",)
    ident = doc[0].get(level.id_field or "")
    if ident is None or isinstance(ident, bool) or not isinstance(ident, str | int):
        return None
    return (f"first {level.folder} {ident!r}",)


def _said(body: bytes) -> str:
    """The server's own error message, short, if its body is the contract's error object."""
    try:
        doc = decode_page(body)
    except ValueError:
        return ""
    message = doc.get("message") if isinstance(doc, dict) else None
    return f': "{message[:120]}"' if isinstance(message, str) and message else ""


def _unreachable(
    url: str, host: str, exc: BaseException, timeout: tuple[float, float], what: str, words: _Words
) -> Finding:
    who, flag = words.who, words.flag
    chain = list(_causes(exc))
    where = urlsplit(url).netloc
    if isinstance(exc, BodyTooLarge):
        return Finding(
            words.check,
            False,
            "too_large",
            f"{what} answered with a body of more than {MAX_BODY_BYTES} bytes, which no {who} sends "
            f"there; fix: check that {flag} points at {who}",
        )
    if isinstance(exc, TimeoutError):
        return Finding(
            words.check,
            False,
            "timeout",
            f"{what} did not finish its answer within {timeout[1]:g} s (it sends too slowly); fix: check "
            f"that it is {who} and that it is not overloaded",
            transient=True,  # it is there: a slow answer may be a passing one
        )
    if any(_is_plain_http_reply(e) for e in chain):
        return Finding(
            words.check,
            False,
            "tls",
            f"{where} does not speak TLS (https:// to a plain-HTTP port: the answer to the handshake "
            "was not TLS); fix: use http:// if it is served in plain HTTP, or the server's https port",
        )
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return Finding(
            words.check,
            False,
            "connection_refused",
            f"cannot connect to {where}: connection refused (nothing listens there); fix: start {who}, "
            f"or correct the host and port in {flag}",
        )
    if any(isinstance(e, socket.gaierror | urllib3.exceptions.NameResolutionError) for e in chain):
        return Finding(
            words.check,
            False,
            "dns",
            f"cannot resolve the host {host!r}; fix: check its spelling in {flag}, or your DNS/VPN",
        )
    if isinstance(exc, requests.exceptions.SSLError):
        return Finding(
            words.check,
            False,
            "tls",
            f"the TLS handshake with {where} failed ({_short(exc)}); fix: http:// or https://? "
            "or trust the server's certificate (REQUESTS_CA_BUNDLE)",
        )
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return Finding(
            words.check,
            False,
            "timeout",
            f"no connection to {where} within {timeout[0]:g} s (a firewall, or the wrong host); "
            f"fix: check the host and port in {flag}",
        )
    if isinstance(exc, requests.exceptions.Timeout):
        return Finding(
            words.check,
            False,
            "timeout",
            f"{where} accepted the connection but sent no answer within {timeout[1]:g} s; fix: check "
            f"that it is {who} and that it is not overloaded",
            transient=True,  # it is there: a slow answer may be a passing one
        )
    return Finding(
        words.check,
        False,
        "connection_failed",
        f"cannot talk to {where}: {_short(exc)}; fix: check {flag}",
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
