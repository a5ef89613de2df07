"""Error classes whose type alone decides retry or give up."""

from __future__ import annotations


class FanoutError(Exception):
    """Base of the pipeline's own errors."""

    status: int | None = None
    kind: str | None = None
    """The plain error kind when the raise site knows it (``fanout_core.error_kinds``)."""

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only fields survive pickling (the local runtime's worker processes).
        return (type(self), (str(self),), dict(self.__dict__))


class TransientError(FanoutError):
    """Worth retrying later: 429, 5xx, timeouts, broken bodies, storage hiccups."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        kind: str | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        if kind is not None:
            self.kind = kind


class PacerBeyondDeadline(TransientError):
    """The pacer's next slot for a call lies past what the task may wait: the task is given
    back (retried later) instead of sleeping towards a slot it could not use."""


class PermanentError(FanoutError):
    """Retrying cannot help: 400/401/403/404, or input that does not validate."""

    def __init__(self, message: str, *, status: int | None = None, kind: str | None = None):
        super().__init__(message)
        self.status = status
        if kind is not None:
            self.kind = kind


class BadRecord(PermanentError):
    """Hermes answered 200 with a record the contract does not allow (a value that is no
    finite number, a ts that is no RFC 3339 date-time, a missing or mistyped field).

    The same list gives the same record again, so retrying cannot help: the caller fails
    the one data group whose list raised it, and its siblings finish.
    """

    def __init__(self, message: str, *, status: int | None = 200):
        super().__init__(message, status=status, kind="bad_record")


class BadManifest(PermanentError):
    """The seed manifest is not what the contract describes."""


class BadTask(PermanentError):
    """A task object does not hold a task body this stage understands."""


class StorageFault(FanoutError):
    """The bucket itself refuses: a full disk, a read-only or missing directory, a file where
    a folder should be. No task can make progress until someone fixes it, so a runtime
    stops at once instead of retrying (nothing is lost: every write is atomic, and the same
    run started again resumes where this one stopped)."""

    kind = "storage"


class SettingsError(ValueError):
    """A setting is missing or out of range; the message names it."""


class ConfigurationError(PermanentError, SettingsError):
    """The deployment cannot run any task as it is (its token secret is missing, empty or
    unreadable): no retry helps until an operator fixes it, so each task it meets gets a
    failure record naming the cause at once, and ``redrive`` runs them after the fix.

    A settings error too, so that whatever checks settings at a cold start catches it."""

    kind = "configuration"


def is_transient(error: BaseException) -> bool:
    """Unknown exceptions count as transient: losing a task to a bug is worse than retrying."""
    return not isinstance(error, PermanentError)


def describe(error: BaseException) -> tuple[str, str, int | None]:
    """An error as a failure record holds it: class name, message, HTTP status."""
    return type(error).__name__, str(error)[:2000], getattr(error, "status", None)
