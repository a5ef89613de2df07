"""Which API a command crawls or reads: its description (``--api``), table, base URL and secret.

Every command that takes ``--api FILE`` resolves it here once and passes the description
(and the table made from it) on as parameters; nothing below rebuilds them from a global.
Without ``--api`` a command reads Hermes' built-in description and the product's table.

A run crawled locally with a description other than the built-in records which one
(``record_api``): status, failures, redrive and compact of that run refuse another
(``check_recorded_api``), since the same prefixes read by a different description would be
misread. A Hermes run records nothing, so its bucket's keys stay exactly as they were.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from fanout_core import keys, strict_json
from fanout_core.api_client import CallStats, PacerLike
from fanout_core.api_description import ApiDescription, ApiDescriptionError, builtin, is_builtin, load
from fanout_core.assembly import hermes_client
from fanout_core.errors import SettingsError
from fanout_core.settings import EnvironmentSettings
from fanout_core.stages import STAGES, StageTable, table_for
from fanout_core.storage import NoSuchKey, Storage
from fanout_core.task_context import Api

RECORD_NAME = "api.json"
"""The object, under the first stage's plans (``plans/<prefix>run=<run>/``), naming the
description a run was crawled with: where the stack's plans already live, no stage's prefix,
so it triggers nothing."""


class Client(Api, Protocol):
    """What the local runtime needs of a client: the core's lists and the task's deadline."""

    def set_deadline(self, deadline: float | None) -> None: ...


_SECRET_KIND = {
    "bearer": "bearer token",
    "api_key": "API key",
    "basic": "user:password",
}


def load_api(path: str | Path | None) -> ApiDescription:
    """The description at ``path`` (None: the built-in); a broken one is a ``SettingsError``
    (one line, exit 2) naming the field and its line."""
    if path is None:
        return builtin()
    try:
        return load(path)
    except ApiDescriptionError as exc:
        raise SettingsError(f"bad API description: {exc}") from None


def table_of(api: ApiDescription) -> StageTable:
    """The stage table of ``api``: the product's own for the built-in description."""
    return STAGES if is_builtin(api) else table_for(api)


def secret_for(api: ApiDescription, environ: Mapping[str, str] | None = None) -> str:
    """The API's secret, from the environment variable its ``auth.env`` names ("" for
    ``auth: none``); missing, it is a ``SettingsError`` naming the variable. Never printed."""
    if api.auth.type == "none":
        return ""
    env = os.environ if environ is None else environ
    variable = api.auth.env
    if variable is None:  # pragma: no cover - the description's check requires it
        raise SettingsError(f"the API description {api.name} names no auth.env for its secret")
    secret = env.get(variable)
    if not secret:
        what = _SECRET_KIND.get(api.auth.type, "secret")
        raise SettingsError(f"set {variable} to the {api.name.capitalize()} {what}")
    return secret


def auth_parts(api: ApiDescription, secret: str) -> tuple[dict[str, str], dict[str, str]]:
    """The headers and query parameters ``api``'s auth sends with ``secret``: the client's own
    (``fanout_core.secrets.credentials``), for the calls the CLI makes itself."""
    from fanout_core.secrets import credentials

    if api.auth.type == "none" or not secret:
        return {}, {}
    given = credentials(api.auth, secret)
    return dict(given.headers), dict(given.params)


def api_client(
    settings: EnvironmentSettings,
    api: ApiDescription,
    *,
    url: str,
    secret: str,
    pacer: PacerLike | None,
    stats: CallStats,
    pool_size: int,
    sleep: Callable[[float], None] = time.sleep,
) -> Client:
    """The client of ``api`` at ``url`` with the environment's page size, timeouts and bounds:
    the one place the local runtime and its worker processes build one (``sleep``: how its
    waits to retry sleep, ``fanout.at_work``)."""
    return hermes_client(
        settings,
        url=url,
        token=secret,
        pacer=pacer,
        stats=stats,
        pool_size=pool_size,
        api=api,
        sleep=sleep,
    )


def base_url_for(api: ApiDescription, flag: str | None, settings_url: str) -> str:
    """The base URL: the flag's, else (Hermes) the environment's ``hermes_url``, else the
    description's ``base_url``; a described API without one needs ``--api-url``."""
    if flag:
        return flag
    if is_builtin(api):
        return settings_url
    if api.base_url:
        return api.base_url
    raise SettingsError(f"the API description {api.name} names no base_url; give --api-url")


def fingerprint(api: ApiDescription) -> str:
    """What identifies a description: a digest of its canonical JSON (the file's source path,
    its YAML spelling and its base URL, which ``--api-url`` overrides, play no part)."""
    return hashlib.sha256(dataclasses.replace(api, base_url=None).to_json()).hexdigest()


def record_key(table: StageTable, run_id: str) -> str:
    return f"{keys.PLANS_PREFIX}{table.first.input_prefix}run={keys.check_run_id(run_id)}/{RECORD_NAME}"


def record_api(storage: Storage, table: StageTable, run_id: str) -> None:
    """Note which description ``run_id`` is crawled with (a described API's runs only);
    idempotent, and the first run's record stays (``check_recorded_api`` refuses another)."""
    if is_builtin(table.api):
        return
    body = json.dumps(
        {"name": table.api.name, "sha256": fingerprint(table.api)}, sort_keys=True, separators=(",", ":")
    ).encode()
    storage.put_if_absent(record_key(table, run_id), body)


def check_recorded_api(storage: Storage, table: StageTable, run_id: str) -> None:
    """A ``SettingsError`` (one line) if ``run_id`` was crawled with another description than
    ``table``'s. A run with no record was crawled with the built-in, or by the stack: it is
    read as ``table`` says (a different description's prefixes do not find it at all)."""
    try:
        raw = storage.get(record_key(table, run_id))
    except NoSuchKey:  # a Hermes run, or one the stack crawled: nothing to check against
        return
    try:
        doc = strict_json.loads(raw.decode("utf-8"))
        name, digest = str(doc["name"]), str(doc["sha256"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise SettingsError(
            f"run {run_id}: {record_key(table, run_id)} is not a description record"
        ) from None
    if digest != fingerprint(table.api):
        hint = "drop --api" if is_builtin(table.api) else "give --api the description the run used"
        raise SettingsError(
            f"run {run_id} was crawled with the API description {name!r}, not "
            f"{table.api.name!r} ({table.api.source or 'built-in'}); {hint}"
        )
