"""The Lambda's configuration, read from its environment once per cold start.

The stack sets these variables; this module is the only deployed code that reads
``os.environ``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fanout_core.api_description import ApiDescriptionError, load
from fanout_core.errors import SettingsError
from fanout_core.settings import EnvironmentSettings, environment_from_json
from fanout_core.stages import STAGES, Stage, StageTable, table_for

ENV_NAME = "FANOUT_ENV_NAME"
ENV_SETTINGS = "FANOUT_SETTINGS"
ENV_BUCKET = "FANOUT_BUCKET"
ENV_STAGE = "FANOUT_STAGE"
"""The stage this function runs: every stage has the one entrypoint ``handlers.stage``."""
ENV_API = "FANOUT_API"
"""Path inside the bundle of the API description's JSON (``ApiDescription.to_json``);
unset: the built-in description."""
ENV_TOKEN_SECRET = "HERMES_TOKEN_SECRET"
"""Name or ARN of the Secrets Manager secret holding the API's secret (what the
description's auth sends: a bearer token, an API key, or ``user:password``)."""
ENV_TOKEN = "HERMES_TOKEN"
"""The secret itself; for tests and local use only (the stack never sets it)."""
ENV_RETRY_QUEUE_URL = "FANOUT_RETRY_QUEUE_URL"
ENV_BUDGET_TABLE = "FANOUT_BUDGET_TABLE"
"""The fleet's budget table; set by the stack only for pacing ``shared``."""
ENV_STATE_MACHINE_ARN = "FANOUT_STATE_MACHINE_ARN"
"""Engine ``stepfunctions``: the run state machine the starter function starts."""
ENV_MAX_ATTEMPTS = "FANOUT_MAX_ATTEMPTS"
"""The environment's ``max_attempts``, for the dead-letter recorder (which has no settings)."""


@dataclass(frozen=True, kw_only=True)
class LambdaConfig:
    stage: Stage
    bucket: str
    settings: EnvironmentSettings
    token_secret: str | None
    token: str | None
    retry_queue_url: str | None
    budget_table: str | None = None
    table: StageTable = STAGES
    """The stage table the function runs, ``stage`` one of its stages: picked once here, at
    cold start, and passed on to everything the handler calls."""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> LambdaConfig:
        env = os.environ if environ is None else environ
        missing = [k for k in (ENV_NAME, ENV_SETTINGS, ENV_BUCKET, ENV_STAGE) if not env.get(k)]
        if missing:
            raise SettingsError(f"missing environment variable(s): {', '.join(missing)}")
        table = table_from_environ(env)
        if table.api.auth.type != "none" and not env.get(ENV_TOKEN_SECRET) and not env.get(ENV_TOKEN):
            raise SettingsError(f"set {ENV_TOKEN_SECRET} (or {ENV_TOKEN} outside AWS)")
        try:
            stage = table.named(env[ENV_STAGE])
        except KeyError as exc:
            raise SettingsError(f"{ENV_STAGE}: {exc.args[0]}") from None
        settings = environment_from_json(env[ENV_NAME], env[ENV_SETTINGS], table.names)
        if settings.pacing == "shared" and not env.get(ENV_BUDGET_TABLE):
            raise SettingsError(f"pacing 'shared' needs {ENV_BUDGET_TABLE} (the stack's budget table)")
        return cls(
            stage=stage,
            bucket=env[ENV_BUCKET],
            settings=settings,
            token_secret=env.get(ENV_TOKEN_SECRET) or None,
            token=env.get(ENV_TOKEN) or None,
            retry_queue_url=env.get(ENV_RETRY_QUEUE_URL) or None,
            budget_table=env.get(ENV_BUDGET_TABLE) or None,
            table=table,
        )

    @property
    def needs_secret(self) -> bool:
        """An API whose auth is ``none`` is called with no secret (none is read)."""
        return self.table.api.auth.type != "none"


@dataclass(frozen=True, kw_only=True)
class RecorderConfig:
    """The dead-letter recorder's configuration: which bucket, which environment, and its
    ``max_attempts`` (so how many receives a message had before it reached a DLQ)."""

    bucket: str
    env_name: str
    max_attempts: int
    table: StageTable = STAGES
    """The stage table of the functions whose dead letters these are."""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> RecorderConfig:
        env = os.environ if environ is None else environ
        missing = [k for k in (ENV_NAME, ENV_BUCKET, ENV_MAX_ATTEMPTS) if not env.get(k)]
        if missing:
            raise SettingsError(f"missing environment variable(s): {', '.join(missing)}")
        raw = env[ENV_MAX_ATTEMPTS]
        if not (raw.isascii() and raw.isdigit() and int(raw) >= 1):
            raise SettingsError(f"{ENV_MAX_ATTEMPTS} must be a whole number of 1 or more, got {raw[:20]!r}")
        return cls(
            bucket=env[ENV_BUCKET],
            env_name=env[ENV_NAME],
            max_attempts=int(raw),
            table=table_from_environ(env),
        )


BUNDLE_ROOT = Path(__file__).resolve().parents[1]
"""The bundle's root (Lambda's working directory): a relative ``FANOUT_API`` is read from here."""

_tables: dict[str, StageTable] = {}


def table_from_environ(environ: Mapping[str, str] | None = None) -> StageTable:
    """The stage table of the description ``FANOUT_API`` names (the built-in's if unset),
    read once per process. A description that cannot be read or is invalid is a
    ``SettingsError`` naming the file: no retry can fix it."""
    env = os.environ if environ is None else environ
    path = env.get(ENV_API)
    if not path:
        return STAGES
    if path not in _tables:
        full = Path(path) if Path(path).is_absolute() else BUNDLE_ROOT / path
        try:
            _tables[path] = table_for(load(full))
        except ApiDescriptionError as exc:
            raise SettingsError(f"{ENV_API}: {exc}") from None
    return _tables[path]
