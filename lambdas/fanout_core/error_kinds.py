"""Error kinds: why a task or unit failed, in the plain words an operator filters on.

A failure record keeps the exception's class for whoever debugs fanout; the kind is
what the operator reads, groups by and redrives (``redrive --error-class KIND``). An
error may name its kind where it is raised (a refused connection, a deadline); else the
kind follows from its type and HTTP status, so records written before kinds existed
get one too.
"""

from __future__ import annotations

from typing import Any

from fanout_core.errors import (
    BadManifest,
    BadRecord,
    BadTask,
    FanoutError,
    PacerBeyondDeadline,
    SettingsError,
    TransientError,
    describe,
)

KINDS: dict[str, str] = {
    "not_found": "Hermes answered 404: the id, or the URL's base path, does not exist",
    "unauthorized": "Hermes answered 401: the token is missing, wrong or expired",
    "forbidden": "Hermes answered 403: the token may not read this",
    "rate_limited": "Hermes answered 429 on every attempt: the rate limit is set too high",
    "server_error": "Hermes answered 5xx on every attempt",
    "bad_status": "Hermes answered a status the contract does not define",
    "timeout": "a call to Hermes did not finish within its deadline",
    "paced_past_deadline": "the rate budget's next slot lay past the task's deadline: it was given back",
    "connection_refused": "nothing accepts connections at the Hermes URL",
    "unreachable": "the Hermes host cannot be reached (name resolution, network)",
    "bad_url": "the request could not be built from the Hermes URL",
    "bad_response": "Hermes answered with something the contract does not allow",
    "bad_record": "a record breaks the contract (the message names the field)",
    "too_large": "a list or task goes past a bound (pages, items, bytes, records)",
    "incomplete_list": "a list ended with fewer or more items than the total it reported",
    "bad_task": "the task object is missing or not a task of its stage",
    "bad_manifest": "the seed manifest is not what the contract describes",
    "configuration": "a setting or secret is missing or wrong",
    "storage": "the bucket could not be read or written",
    "crashed": "the process running the task died or ran out of time",
    "internal_error": "an unexpected error inside fanout",
}
"""Every kind, with what it means; the CLI shows these words."""

HINTS: dict[str, str] = {
    "not_found": "check the ids in the manifest and the URL's base path (fanout check), then redrive",
    "unauthorized": "set HERMES_TOKEN (or the environment's secret) to a valid token, then redrive",
    "forbidden": "ask for read access for the token, then redrive",
    "rate_limited": "lower --rate-limit (or hermes_rate_limit), then redrive",
    "server_error": "redrive once Hermes is healthy",
    "timeout": "redrive once Hermes answers in time (or raise request_deadline_s)",
    "paced_past_deadline": "redrive; if it recurs, the rate limit serves fewer calls than the stage's "
    "concurrency asks for in one timeout: lower the concurrency or raise the timeout",
    "connection_refused": "start Hermes or fix --hermes-url (fanout check), then redrive",
    "unreachable": "fix --hermes-url or the network (fanout check), then redrive",
    "bad_url": "fix --hermes-url (fanout check), then redrive",
    "configuration": "fix the setting or secret named in the message, then redrive",
    "storage": "fix the bucket (space, permissions), then redrive",
    "crashed": "redrive; if it crashes again, raise the stage's memory or timeout",
    "incomplete_list": "redrive (the list may have changed while it was read); if it recurs, the "
    "API's paging or its total is wrong",
}
"""What to do next, for the kinds where the fix is not "read the message"."""

_BY_STATUS = {401: "unauthorized", 403: "forbidden", 404: "not_found", 429: "rate_limited"}

_BY_CLASS = {
    "BadRecord": "bad_record",
    "TooManyRecords": "too_large",
    "BadTask": "bad_task",
    "BadManifest": "bad_manifest",
    "SettingsError": "configuration",
    "TimeoutError": "timeout",
    "PacerBeyondDeadline": "paced_past_deadline",
}


def kind_of(error: BaseException) -> str:
    """The kind of a live exception."""
    named = getattr(error, "kind", None)
    if isinstance(named, str) and named in KINDS:
        return named
    if isinstance(error, SettingsError):
        return "configuration"
    if isinstance(error, BadRecord):
        return "bad_record"
    if isinstance(error, BadManifest):
        return "bad_manifest"
    if isinstance(error, BadTask):
        return "bad_task"
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, PacerBeyondDeadline):
        return "paced_past_deadline"
    if isinstance(error, FanoutError):
        return _kind_of_status(error.status, transient=isinstance(error, TransientError))
    if isinstance(error, OSError):
        return "storage"
    return "internal_error"


def kind_of_fields(error_class: str, status: Any, *, transient: bool | None = None) -> str:
    """The kind of an error known only as a record holds it (records from before kinds)."""
    if error_class in _BY_CLASS:
        return _BY_CLASS[error_class]
    if error_class in {"TransientError", "PermanentError"}:
        return _kind_of_status(
            status if isinstance(status, int) else None, transient=error_class == "TransientError"
        )
    return "internal_error"


def kind_in(fields: dict[str, Any]) -> str:
    """The kind a record's (or a unit's) fields name, derived when it is absent."""
    kind = fields.get("error_kind")
    if isinstance(kind, str) and kind in KINDS:
        return kind
    return kind_of_fields(str(fields.get("error_class", "")), fields.get("status"))


def _kind_of_status(status: int | None, *, transient: bool) -> str:
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status is not None and status >= 500:
        return "server_error"
    if status == 200:
        return "bad_response"
    if status is not None:
        return "bad_status"
    return "internal_error" if transient else "bad_response"


def failure_fields(error: BaseException) -> dict[str, Any]:
    """An error as a failure record (or one of its units) holds it."""
    error_class, message, status = describe(error)
    return {"error_class": error_class, "error_kind": kind_of(error), "message": message, "status": status}
