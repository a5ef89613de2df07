"""The Hermes token: refused at cold start if it needs trimming, and never in a log line."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote, quote_plus

import boto3
import pytest

from fanout_aws import config as env_names
from fanout_aws.s3_event import s3_event_for
from fanout_aws.secrets import check_token, read_secret, redact
from fanout_aws.stage_handler import InvocationFailed
from fanout_core import keys
from fanout_core.bodies import manifest_body
from fanout_core.errors import SettingsError, TransientError
from fanout_core.failures import FailureRecord
from tests.core.raw_http import echoes_the_token, raw_server

from .conftest import BUCKET, REGION, invoke

SECRET_TOKEN = "s3cr3t/tok+en=Zz"
"""Changes under URL encoding, so both forms are checked."""

BAD_TOKENS = [
    (" Zq9x", "leading-space"),
    ("Zq9x ", "trailing-space"),
    ("Zq9x\n", "trailing-lf"),
    ("Zq9x\r\n", "trailing-crlf"),
    ("Zq\r9x", "inner-cr"),
    ("Zq\n9x", "inner-lf"),
    ("Zq\t9x", "tab"),
    ("Zq\x009x", "nul"),
    ("Zq\x1b9x", "escape"),
    ("Zq\x7f9x", "delete"),
]


@pytest.mark.parametrize("token", [t for t, _ in BAD_TOKENS], ids=[i for _, i in BAD_TOKENS])
@pytest.mark.parametrize("as_json", [False, True], ids=["plain", "json"])
def test_a_secret_holding_a_token_that_needs_trimming_is_refused_without_echoing_it(
    aws: None, token: str, as_json: bool
) -> None:
    client = boto3.client("secretsmanager", region_name=REGION)
    client.create_secret(Name="hermes", SecretString=json.dumps({"token": token}) if as_json else token)
    with pytest.raises(SettingsError, match=r"secret 'hermes'.*store the bare token") as raised:
        read_secret(client, "hermes")
    for part in ("Zq", "9x"):
        assert part not in str(raised.value)


def test_an_empty_token_is_refused() -> None:
    with pytest.raises(SettingsError, match="is empty"):
        check_token("", "secret 'hermes'")


@pytest.mark.parametrize("token", [SECRET_TOKEN, "a b", "eyJhbGciOi.J9.x-y_z~"])
def test_a_bare_token_is_accepted_as_it_is(token: str) -> None:
    assert check_token(token, "test") == token


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"Bearer {SECRET_TOKEN} refused", "Bearer *** refused"),
        (f"?token={quote(SECRET_TOKEN, safe='')}&x=1", "?token=***&x=1"),
        (f"?token={quote_plus(SECRET_TOKEN)}", "?token=***"),
        (f"/path/{quote(SECRET_TOKEN)}/", "/path/***/"),
        ("nothing secret here", "nothing secret here"),
    ],
    ids=["bare", "url-encoded", "form-encoded", "path-encoded", "absent"],
)
def test_redact_replaces_the_token_and_its_url_encoded_forms(text: str, expected: str) -> None:
    assert redact(text, SECRET_TOKEN) == expected


def test_redact_without_a_secret_changes_nothing() -> None:
    assert redact("text", None) == redact("text", "") == "text"


@pytest.mark.parametrize("token", ["Zq9x\r\n", " Zq9x", "Zq\x1b9x"], ids=["crlf", "space", "escape"])
def test_a_token_that_needs_trimming_fails_the_task_as_configuration_without_echoing_it(
    deployment, monkeypatch, token
):
    dep = deployment()
    monkeypatch.setenv(env_names.ENV_TOKEN, token)
    key = "amazon_warriors/r1.json"
    assert invoke("warriors", s3_event_for(BUCKET, [key]), monkeypatch, dep) is None
    record = FailureRecord.from_bytes(dep.storage.get(keys.failed_key(key)))
    assert record.error_kind == "configuration"
    assert re.search(r"\$HERMES_TOKEN.*store the bare token", record.message)
    assert "Zq" not in record.message and "9x" not in record.message
    assert dep.objects() == [keys.failed_key(key)]


def test_a_secret_that_needs_trimming_fails_the_task_naming_the_secret(deployment, monkeypatch):
    dep = deployment()
    boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name="fanout/hermes", SecretString="tok\n"
    )
    monkeypatch.delenv(env_names.ENV_TOKEN)
    monkeypatch.setenv(env_names.ENV_TOKEN_SECRET, "fanout/hermes")
    key = "amazon_warriors/r1.json"
    invoke("warriors", s3_event_for(BUCKET, [key]), monkeypatch, dep)
    record = FailureRecord.from_bytes(dep.storage.get(keys.failed_key(key)))
    assert "secret 'fanout/hermes' holds a line break" in record.message


def _leaky_error(*_: Any, **__: Any) -> Any:
    raise TransientError(
        f"GET https://hermes/v1/warriors?token={quote(SECRET_TOKEN, safe='')} failed; "
        f"Authorization: Bearer {SECRET_TOKEN}; form {quote_plus(SECRET_TOKEN)}"
    )


@pytest.mark.parametrize(
    ("with_queues", "via"),
    [(True, "s3"), (False, "s3"), (False, "sqs")],
    ids=["retry-warning", "bookkeeping-failure-raised", "bookkeeping-failure-in-batch"],
)
def test_the_token_appears_in_no_log_line_nor_the_raised_error(
    deployment, monkeypatch, caplog, capsys, with_queues, via
):
    dep = deployment(with_queues=with_queues)
    monkeypatch.setenv(env_names.ENV_TOKEN, SECRET_TOKEN)
    monkeypatch.setattr("fanout_aws.stage_handler.run_task", _leaky_error)
    key = "amazon_warriors/r1.json"
    retry = json.dumps(
        {"fanout_retry": {"task_key": key, "attempt": 2, "first_attempt_at": "2024-05-01T12:00:00Z"}}
    )
    event: dict[str, Any] = (
        s3_event_for(BUCKET, [key])
        if via == "s3"
        else {"Records": [{"eventSource": "aws:sqs", "messageId": "m-0", "body": retry}]}
    )
    raised = ""
    with caplog.at_level("DEBUG"):
        try:
            invoke("warriors", event, monkeypatch, dep)
        except InvocationFailed as exc:
            raised = str(exc)
    out = capsys.readouterr()
    # Every field of every log record, extras included (Lambda's JSON log shows them all).
    fields = " ".join(json.dumps(r.__dict__, default=str, ensure_ascii=False) for r in caplog.records)
    logged = caplog.text + fields + out.out + out.err
    assert "failed; Authorization: Bearer ***" in logged + raised  # the error itself is there
    for form in {SECRET_TOKEN, quote(SECRET_TOKEN, safe=""), quote_plus(SECRET_TOKEN)}:
        assert form not in logged
        assert form not in raised
    assert (raised != "") == (not with_queues and via == "s3")


ESCAPED_TOKEN = "s3cr\\t-\u00e9+tok/en"
"""A backslash and a non-ASCII (latin-1) character: repr, JSON and the header's bytes each
spell it differently from how it is written; every spelling starts with ``s3cr``."""


def _logged(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> str:
    """Every field of every log record, extras included (Lambda's JSON log shows them all)."""
    out = capsys.readouterr()
    fields = " ".join(json.dumps(r.__dict__, default=str, ensure_ascii=False) for r in caplog.records)
    return caplog.text + fields + out.out + out.err


def test_a_token_echoed_escaped_by_hermes_is_masked_in_the_log_and_the_failure_record(
    deployment, monkeypatch, caplog, capsys
):
    with raw_server(echoes_the_token(401)) as server:
        dep = deployment(hermes_url=server.url)
        monkeypatch.setenv(env_names.ENV_TOKEN, ESCAPED_TOKEN)
        key = "amazon_warriors/r1.json"
        dep.storage.put(key, manifest_body(None))
        with caplog.at_level("DEBUG"):
            invoke("warriors", s3_event_for(BUCKET, [key]), monkeypatch, dep)
    assert server.requests[0].headers["authorization"] == f"Bearer {ESCAPED_TOKEN}"
    record = FailureRecord.from_bytes(dep.storage.get(keys.failed_key(key)))
    assert record.error_kind == "unauthorized" and "bad token: ***" in record.message
    logged = _logged(caplog, capsys)
    assert "bad token: ***" in logged
    assert "s3cr" not in record.message + logged


def test_a_token_repr_escaped_in_an_error_raised_outside_the_client_is_masked_in_the_log(
    deployment, monkeypatch, caplog, capsys
):
    def raises(*_: Any, **__: Any) -> Any:
        raise TransientError(f"header {ESCAPED_TOKEN!r} and {ESCAPED_TOKEN!a} refused")

    dep = deployment()
    monkeypatch.setenv(env_names.ENV_TOKEN, ESCAPED_TOKEN)
    monkeypatch.setattr("fanout_aws.stage_handler.run_task", raises)
    with caplog.at_level("DEBUG"):
        invoke("warriors", s3_event_for(BUCKET, ["amazon_warriors/r1.json"]), monkeypatch, dep)
    logged = _logged(caplog, capsys)
    assert "header '***' and '***' refused" in logged
    assert "s3cr" not in logged


def test_the_lambda_handler_and_the_local_runtime_use_the_one_redact_and_check_token() -> None:
    import fanout.preflight
    import fanout.start_run
    import fanout_aws.secrets
    import fanout_aws.stage_handler
    import fanout_core.hermes
    import fanout_core.secrets

    for module in (fanout_aws.secrets, fanout_aws.stage_handler, fanout_core.hermes, fanout.preflight):
        assert module.redact is fanout_core.secrets.redact
    for module in (fanout_aws.secrets, fanout_aws.stage_handler, fanout_core.hermes, fanout.start_run):
        assert module.check_token is fanout_core.secrets.check_token
