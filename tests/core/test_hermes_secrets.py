"""The Hermes token never leaves the client, and a bad token or URL is refused at construction.

Every error path is driven against a real socket (a refused port, a server that never
answers, one that echoes the token back); the token, its percent-encoded and its escaped
forms must appear in no raised message and in no chained cause.
"""

from __future__ import annotations

import socket
import traceback
from urllib.parse import quote, quote_plus

import pytest

from fanout_core.errors import FanoutError, PermanentError, SettingsError, TransientError
from fanout_core.hermes import HermesClient
from fanout_core.secrets import redact

from .raw_http import always, echoes_the_token, servers

serve = pytest.fixture(servers)

# A token whose percent-encoded forms differ from it, so each form is checked.
TOKEN = "s3cr3t+t0k/en=x y"
FORMS = (TOKEN, quote(TOKEN, safe=""), quote_plus(TOKEN), quote(TOKEN))


def assert_no_token(exc: BaseException) -> None:
    text = "".join(traceback.format_exception(exc))
    for form in FORMS:
        assert form not in text, text
    assert "***" in text or "s3cr3t" not in text


def client(url: str, **options: object) -> HermesClient:
    options.setdefault("max_retries", 0)
    options.setdefault("sleep", lambda _s: None)
    return HermesClient(url, TOKEN, **options)  # type: ignore[arg-type]


# --- redact ------------------------------------------------------------------------------------


def test_redact_replaces_the_secret_and_its_encoded_forms() -> None:
    text = " | ".join([*FORMS, repr(TOKEN + "\n")])
    assert redact(text, [TOKEN]) == " | ".join(["***"] * len(FORMS) + ["'***\\n'"])


def test_redact_ignores_empty_secrets_and_leaves_other_text_alone() -> None:
    assert redact("nothing to hide", ["", "absent"]) == "nothing to hide"


def test_redact_hides_a_secret_written_with_escapes() -> None:
    secret = "abc\ndef"
    assert redact(f"header {secret!r} is invalid", [secret]) == "header '***' is invalid"


# --- the token is refused at construction ----------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("Xq7v\r\n", id="crlf-at-end"),
        pytest.param("Xq7v\n", id="lf-at-end"),
        pytest.param("Xq\r\nv", id="crlf-inside"),
        pytest.param(" Xq7v", id="space-first"),
        pytest.param("Xq7v ", id="space-last"),
        pytest.param("\tXq7v", id="tab-first"),
        pytest.param("Xq\tv", id="tab-inside"),
        pytest.param("Xq\x00v", id="nul"),
        pytest.param("Xq\x7fv", id="del"),
        pytest.param("Xq\x85v", id="c1-nel"),
        pytest.param("Xq7v\u00a0", id="nbsp-last"),
    ],
)
def test_a_token_with_whitespace_at_an_end_or_a_control_character_is_refused(token: str) -> None:
    with pytest.raises(SettingsError) as info:
        HermesClient("http://127.0.0.1:9", token)
    message = str(info.value)
    assert message.startswith("the Hermes token holds whitespace or a control character")
    assert token not in message and token.strip() not in message
    assert isinstance(info.value, ValueError)


def test_a_token_a_header_cannot_carry_is_refused() -> None:
    with pytest.raises(SettingsError, match="cannot carry") as info:
        HermesClient("http://127.0.0.1:9", "トークン")
    assert "トークン" not in str(info.value)


def test_an_empty_token_is_refused() -> None:
    with pytest.raises(SettingsError, match="the Hermes token is empty"):
        HermesClient("http://127.0.0.1:9", "")


def test_a_token_with_inner_spaces_and_punctuation_is_accepted() -> None:
    hermes = HermesClient("http://127.0.0.1:9", TOKEN)
    assert hermes.session.headers["Authorization"] == f"Bearer {TOKEN}"


# --- no error message carries the token ----------------------------------------------------------


def test_a_refused_connection_names_no_token() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    with pytest.raises(TransientError, match="connection failed") as info:
        list(client(f"http://127.0.0.1:{port}").list("troops", (TOKEN,)))
    assert_no_token(info.value)


def test_a_timeout_names_no_token(serve) -> None:
    server = serve(lambda _r, conn: conn.closed.wait(5))
    with pytest.raises(TransientError, match="timeout") as info:
        list(client(server.url, read_timeout=0.2).list("troops", (TOKEN,)))
    assert_no_token(info.value)


@pytest.mark.parametrize(("status", "error"), [(401, PermanentError), (503, TransientError)])
def test_a_bad_status_whose_body_echoes_the_token_names_no_token(
    serve, status: int, error: type[FanoutError]
) -> None:
    body = f'{{"error": "unauthorized", "message": "token {TOKEN} (or {quote(TOKEN)}) is wrong"}}'.encode()
    server = serve(always(status, body))
    with pytest.raises(error) as info:
        list(client(server.url).list("troops", (TOKEN,)))
    assert info.value.status == status
    assert "unauthorized" in str(info.value)
    assert_no_token(info.value)


def test_an_invalid_header_names_no_token_and_is_permanent(serve) -> None:
    # The constructor refuses such a token; a header broken afterwards still must not leak.
    server = serve(always(200, b'{"items": [], "next_page_token": null}'))
    hermes = client(server.url)
    hermes.session.headers["Authorization"] = f"Bearer {TOKEN}\r\n"
    with pytest.raises(PermanentError) as info:
        list(hermes.list("troops", (TOKEN,)))
    assert server.requests == []
    assert_no_token(info.value)


def test_an_error_naming_the_token_in_its_url_is_scrubbed_too(serve) -> None:
    server = serve(always(404, b'{"error": "not_found", "message": "no"}'))
    with pytest.raises(PermanentError) as info:
        list(client(server.url).list("records", (TOKEN, "t", "g")))
    assert info.value.status == 404 and "/troops/t/" in str(info.value)
    assert_no_token(info.value)


ESCAPED_TOKEN = "s3cr\\t-\u00e9+tok/en"
"""A backslash and a non-ASCII (latin-1) character: repr, JSON and the header's bytes each
spell it differently from how it is written."""


@pytest.mark.parametrize(("status", "error"), [(401, PermanentError), (503, TransientError)])
def test_a_token_with_a_backslash_and_an_accent_echoed_in_every_escaped_form_is_masked(
    serve, status: int, error: type[FanoutError]
) -> None:
    server = serve(echoes_the_token(status))
    with pytest.raises(error) as info:
        list(
            HermesClient(server.url, ESCAPED_TOKEN, max_retries=0, sleep=lambda _s: None).list(
                "troops", ("w",)
            )
        )
    assert server.requests[0].headers["authorization"] == f"Bearer {ESCAPED_TOKEN}"  # sent as it is
    text = "".join(traceback.format_exception(info.value))
    assert "bad token: ***" in text
    assert "s3cr" not in text, text  # every spelling of the token starts so


# --- the URL is refused at construction -----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("notaurl", "must start with http:// or https://"),
        ("", "must start with http:// or https://"),
        ("ftp://x", "must start with http:// or https://"),
        ("http://", "names no host"),
        ("http:///v1", "names no host"),
        ("http://host:99999", "port"),
        ("http://host:0", "port"),
        ("http://host:http", "port"),
        ("http://[::1", "is not a URL"),
        ("http://h/?q=1", "query or fragment"),
        ("http://h/#top", "query or fragment"),
        (" http://h", "whitespace or a control character"),
        ("http://h\n", "whitespace or a control character"),
        ("http://user:hunter2@h", "user name or password"),
    ],
)
def test_a_hermes_url_that_is_not_a_url_is_refused_at_once(url: str, fragment: str) -> None:
    with pytest.raises(SettingsError) as info:
        HermesClient(url, "tok")
    message = str(info.value)
    assert fragment in message
    assert message.startswith("the Hermes URL")
    assert "\n" not in message and "hunter2" not in message


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("http://h", "http://h"),
        ("http://h:1/", "http://h:1"),
        ("https://h.example.com:443/prefix/", "https://h.example.com:443/prefix"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("http://127.0.0.1:65535", "http://127.0.0.1:65535"),
    ],
)
def test_a_good_hermes_url_is_kept(url: str, base: str) -> None:
    assert HermesClient(url, "tok").base_url == base
