"""Per-environment settings: one frozen, validated object per environment.

They come from ``cdk.json`` context (``environments: {name: {...}}``). The stack,
the local runtime (environment ``local`` unless ``--env`` says otherwise) and the
CLI read them through ``load_environment``; nothing deep in the code reads
``os.environ``. Every error names the setting it is about.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fanout_core import strict_json
from fanout_core.errors import SettingsError
from fanout_core.stages import STAGE_NAMES

LAMBDA_MAX_TIMEOUT_S = 900
LAMBDA_MIN_UNRESERVED = 100
MIN_EVENT_AGE_S, MAX_EVENT_AGE_S = 60, 21600
REMOVAL_POLICIES = ("retain", "destroy")
ENGINES = ("s3_events", "queue", "stepfunctions")
"""How a stage's tasks reach its function: ``s3_events`` invokes each stage's function
asynchronously (Lambda's internal queue, its event age, an on-failure queue);
``queue`` sends the notifications to the stage's SQS queue, which the function consumes;
``stepfunctions`` runs one execution per run whose Distributed Map per stage lists the
run's task objects and invokes the function on batches of their keys."""
SFN_MAX_BATCH = 1000
"""Task keys one Step Functions child hands its function at most (``items_per_batch``)."""
SHARED_MAX_RATE = 500.0
"""Pacing ``shared`` writes one DynamoDB item once per call, twice when another instance
moved the budget meanwhile, and one item takes about 1,000 writes/s."""
PACINGS = ("static", "adaptive", "shared")
"""How each Lambda instance paces: ``static`` keeps to its fixed share of R (stage weight,
then reserved concurrency); ``adaptive`` starts there and probes up to R, backing off on
429s, so the shares of idle stages flow to busy ones (``fanout_core.adaptive_rate``);
``shared`` reserves each call's slot in one fleet-wide budget, a DynamoDB item the stack
creates (``fanout_core.fleet_budget``)."""
EMAIL = re.compile(r"[^@\s,;]+@[^@\s,;]+\.[^@\s,;.]+")
"""One address, as SNS's e-mail protocol takes it (not a list, no display name)."""
RECURSION_CUTOFF = 16
"""Lambda's recursive-loop detection stops a function invoked about this many times in
one chain of requests (S3, SQS, SNS, Lambda; the trace header rides along)."""
ESM_MIN_CONCURRENCY = 2
"""The floor of an SQS event source mapping's ``MaximumConcurrency`` (2-1,000)."""


@dataclass(frozen=True, kw_only=True)
class StageSettings:
    reserved_concurrency: int = 4
    memory_mb: int = 512
    timeout_s: int = 300
    retry_attempts: int = 2
    """Lambda's own asynchronous retries (0-2)."""
    max_event_age_s: int = 21600
    units_per_task: int = 1
    """How many sibling units (of the stage's level) one task object carries."""
    rate_weight: float = 1.0
    """This stage's share of the Hermes rate budget, relative to the other stages."""
    retry_concurrency: int = 2
    """Reserved concurrency of the stage's retry consumer (a second function, same code,
    fed only by the stage's retry queue), so a due retry never waits for the stage's own
    cap to free up; at least 2, an SQS event source mapping's floor."""

    @property
    def instances(self) -> int:
        """Most instances of the stage's code at once: its cap plus its retry consumer's."""
        return self.reserved_concurrency + self.retry_concurrency


@dataclass(frozen=True, kw_only=True)
class EnvironmentSettings:
    name: str
    account: str | None = None
    region: str | None = None
    hermes_url: str = "http://127.0.0.1:8080"
    token_secret_name: str = ""
    hermes_rate_limit: float = 500.0
    """Calls per second Hermes allows the pipeline's token, across every stage: an upper
    bound pacing never exceeds (adaptive pacing finds a lower real limit from 429s)."""
    hermes_rate_start: float | None = None
    """Calls/s a local run's adaptive budget starts from when R is not known exactly
    (None: R itself); it climbs from there to the real limit in about a second."""
    pacing: str = "static"
    """One of ``PACINGS``: how each Lambda instance paces (``shared``: one budget for the
    whole fleet, in the stack's budget table; ``fanout_core.fleet_budget``)."""
    remember_limit: bool = True
    """Keep the limit adaptive pacing finds in the bucket (``limits/``, per API base URL)
    and start the next run from it (``fanout_core.learned_limit``, both runtimes); R stays the
    upper bound."""
    hermes_page_size: int = 100
    hermes_timeout_s: float = 20.0
    """Read timeout of one Hermes call; a call past it is a transient failure."""
    hermes_request_deadline_s: float = 60.0
    """Total time one Hermes call may take (connect, headers, body), never past the task's
    deadline; a call past it is a transient failure (the client's request_deadline_s)."""
    hermes_max_pages: int = 10_000
    """Pages one Hermes list may take; past it, or on a page token seen before in the same
    list, the list fails permanently (the client's max_pages)."""
    hermes_max_items_per_list: int = 1_000_000
    """Items one Hermes list may hold before it fails permanently (the client's
    max_items_per_list; a list's items are held in memory)."""
    max_attempts: int = 6
    """Attempts per task before a failure record is written (the retry extension)."""
    retry_base_delay_s: float = 60.0
    retry_max_delay_s: float = 900.0
    max_records_per_task: int = 500_000
    """Records one leaf task may hold in memory; a data group past it fails as too large."""
    account_concurrency_limit: int = 1000
    removal_policy: str = "retain"
    """What ``cdk destroy`` does to the bucket: ``retain`` keeps the data, ``destroy``
    empties and deletes it (for throw-away environments)."""
    engine: str = "s3_events"
    """One of ``ENGINES``: what carries a task's notification to its stage's function."""
    alarm_email: str | None = None
    """An address the alarm topic mails (after the address confirms); None: subscribe
    whatever you like to the ``AlarmTopicArn`` output yourself."""
    items_per_batch: int = 4
    """Engine ``stepfunctions``: the most task keys a leaf child workflow takes
    (``ItemBatcher``; the definition gives each as many as fill the leaf's cap once, up
    to this). The function runs them one after another, so this many tasks should fit
    the leaf's timeout at an instance's share of R; a batch out of time retries its
    unfinished tasks."""
    tolerated_failure_percentage: float = 5.0
    """Engine ``stepfunctions``: the share of a stage's child workflows that may fail
    (each one's tasks recorded under ``failed/``) before its Map, and the run, fails."""
    api: str | None = None
    """The environment's API description file, relative to the repository (None: the
    built-in Hermes one). The stack reads it; a function gets its JSON in the bundle."""
    stages: Mapping[str, StageSettings] = field(default_factory=dict)

    def stage(self, name: str) -> StageSettings:
        return self.stages[name]

    def rate_share(self, stage_name: str) -> float:
        """Calls/s one stage may make in total; instances divide it by their concurrency."""
        total = sum(s.rate_weight for s in self.stages.values())
        return self.hermes_rate_limit * self.stages[stage_name].rate_weight / total

    def instance_rate(self, stage_name: str) -> float:
        """Calls/s one concurrent instance of a stage may make so that all together (the
        stage's function and its retry consumer, each at its reservation) stay under R."""
        return self.rate_share(stage_name) / self.stages[stage_name].instances

    @property
    def max_receives(self) -> int:
        """``maxReceiveCount`` of every queue feeding a stage: one more than
        ``max_attempts``. A receive beyond the first is a delivery that died (crash,
        timeout), and the handler counts it as an attempt, so the last receive finds the
        task past ``max_attempts`` and writes its failure record instead of running it;
        only when even that fails does the message reach the DLQ. No receive is ever
        throttled (each mapping's cap is its function's whole reservation)."""
        return receives_before_dead_letter(self.max_attempts)


def receives_before_dead_letter(max_attempts: int) -> int:
    """``maxReceiveCount`` of every queue feeding a stage of an environment with this
    ``max_attempts`` (``EnvironmentSettings.max_receives``): SQS moves a message to the
    DLQ only after that many receives, which the dead-letter recorder relies on."""
    return max_attempts + 1


_STAGE_FIELDS = {f for f in StageSettings.__dataclass_fields__}
_ENV_FIELDS = {f for f in EnvironmentSettings.__dataclass_fields__} - {"name", "stages"}


def invocations_per_chain(stage_name: str, max_attempts: int, first_stage: str = STAGE_NAMES[0]) -> int:
    """The most invocations of one stage's function a single chain of requests makes:
    the first stage's seed writes its parts back under its own prefix (one hop), every
    attempt is one invocation (a retry comes back through the stage's own queue), and
    an on-failure record through that queue is one more. A redrive is written by the
    CLI, outside any chain, so it starts a new one."""
    self_hops = 1 if stage_name == first_stage else 0
    return self_hops + max_attempts + 1


def _int(where: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingsError(f"{where} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise SettingsError(f"{where} must be between {lo} and {hi}, got {value}")
    return value


def _num(where: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SettingsError(f"{where} must be a number, got {value!r}")
    if not lo <= value <= hi:
        raise SettingsError(f"{where} must be between {lo} and {hi}, got {value}")
    return float(value)


def _stage(env: str, name: str, raw: Any) -> StageSettings:
    where = f"environments.{env}.stages.{name}"
    if not isinstance(raw, Mapping):
        raise SettingsError(f"{where} must be an object")
    unknown = set(raw) - _STAGE_FIELDS
    if unknown:
        raise SettingsError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")
    d = StageSettings()
    return StageSettings(
        reserved_concurrency=_int(
            f"{where}.reserved_concurrency",
            raw.get("reserved_concurrency", d.reserved_concurrency),
            1,
            1000,
        ),
        memory_mb=_int(f"{where}.memory_mb", raw.get("memory_mb", d.memory_mb), 128, 10240),
        timeout_s=_int(f"{where}.timeout_s", raw.get("timeout_s", d.timeout_s), 1, LAMBDA_MAX_TIMEOUT_S),
        retry_attempts=_int(f"{where}.retry_attempts", raw.get("retry_attempts", d.retry_attempts), 0, 2),
        max_event_age_s=_int(
            f"{where}.max_event_age_s",
            raw.get("max_event_age_s", d.max_event_age_s),
            MIN_EVENT_AGE_S,
            MAX_EVENT_AGE_S,
        ),
        units_per_task=_int(f"{where}.units_per_task", raw.get("units_per_task", d.units_per_task), 1, 10000),
        rate_weight=_num(f"{where}.rate_weight", raw.get("rate_weight", d.rate_weight), 0.001, 1e6),
        retry_concurrency=_int(
            f"{where}.retry_concurrency",
            raw.get("retry_concurrency", d.retry_concurrency),
            ESM_MIN_CONCURRENCY,
            1000,
        ),
    )


def parse_environment(name: str, raw: Any, stage_names: tuple[str, ...] = STAGE_NAMES) -> EnvironmentSettings:
    """Validate one environment's raw settings (a mapping from cdk.json) for the stages
    ``stage_names`` (those of the API description's table; the built-in's by default)."""
    where = f"environments.{name}"
    if not isinstance(raw, Mapping):
        raise SettingsError(f"{where} must be an object")
    unknown = set(raw) - _ENV_FIELDS - {"stages"}
    if unknown:
        raise SettingsError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")
    raw_stages = raw.get("stages", {})
    if not isinstance(raw_stages, Mapping):
        raise SettingsError(f"{where}.stages must be an object")
    extra = set(raw_stages) - set(stage_names)
    if extra:
        raise SettingsError(
            f"{where}.stages: unknown stage(s) {', '.join(sorted(extra))}; "
            f"stages are {', '.join(stage_names)}"
        )
    stages = {s: _stage(name, s, raw_stages.get(s, {})) for s in stage_names}
    d = EnvironmentSettings(name=name)
    account_limit = _int(
        f"{where}.account_concurrency_limit",
        raw.get("account_concurrency_limit", d.account_concurrency_limit),
        LAMBDA_MIN_UNRESERVED + 1,
        1_000_000,
    )
    reserved = sum(s.instances for s in stages.values())
    if account_limit - reserved < LAMBDA_MIN_UNRESERVED:
        raise SettingsError(
            f"{where}.stages.*.reserved_concurrency + retry_concurrency add up to {reserved}, which leaves "
            f"{account_limit - reserved} of the account's {account_limit} unreserved; "
            f"Lambda requires at least {LAMBDA_MIN_UNRESERVED}"
        )
    for key in ("account", "region", "token_secret_name", "hermes_url", "alarm_email"):
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            raise SettingsError(f"{where}.{key} must be a string, got {value!r}")
    hermes_url = raw.get("hermes_url", d.hermes_url)
    if not hermes_url.startswith(("http://", "https://")):
        raise SettingsError(f"{where}.hermes_url must be an http(s) URL, got {hermes_url!r}")
    removal_policy = raw.get("removal_policy", d.removal_policy)
    if removal_policy not in REMOVAL_POLICIES:
        raise SettingsError(
            f"{where}.removal_policy must be one of {', '.join(REMOVAL_POLICIES)}, got {removal_policy!r}"
        )
    alarm_email = raw.get("alarm_email")
    if alarm_email is not None and not EMAIL.fullmatch(alarm_email):
        raise SettingsError(f"{where}.alarm_email must be one e-mail address, got {alarm_email!r}")
    engine = raw.get("engine", d.engine)
    if engine not in ENGINES:
        raise SettingsError(f"{where}.engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "queue":
        for stage_name, st in stages.items():
            if st.reserved_concurrency < ESM_MIN_CONCURRENCY:
                raise SettingsError(
                    f"{where}.stages.{stage_name}.reserved_concurrency is {st.reserved_concurrency}, but "
                    f"engine queue caps each stage with an event source mapping's MaximumConcurrency, "
                    f"which is at least {ESM_MIN_CONCURRENCY}"
                )
    pacing = raw.get("pacing", d.pacing)
    if pacing not in PACINGS:
        raise SettingsError(f"{where}.pacing must be one of {', '.join(PACINGS)}, got {pacing!r}")
    rate_limit = _num(
        f"{where}.hermes_rate_limit", raw.get("hermes_rate_limit", d.hermes_rate_limit), 0.1, 1e6
    )
    if pacing == "shared" and rate_limit > SHARED_MAX_RATE:
        raise SettingsError(
            f"{where}.hermes_rate_limit is {rate_limit:g}, but pacing shared writes its one budget "
            f"item once or twice per call and a DynamoDB item takes about 1000 writes/s "
            f"(at most {SHARED_MAX_RATE:g} calls/s); "
            "use pacing adaptive"
        )
    remember_limit = raw.get("remember_limit", d.remember_limit)
    if not isinstance(remember_limit, bool):
        raise SettingsError(f"{where}.remember_limit must be true or false, got {remember_limit!r}")
    rate_start = raw.get("hermes_rate_start")
    if rate_start is not None:
        rate_start = _num(f"{where}.hermes_rate_start", rate_start, 0.1, 1e6)
    max_attempts = _int(f"{where}.max_attempts", raw.get("max_attempts", d.max_attempts), 1, 100)
    worst = max(invocations_per_chain(n, max_attempts, stage_names[0]) for n in stage_names)
    if worst >= RECURSION_CUTOFF:
        raise SettingsError(
            f"{where}.max_attempts is {max_attempts}: a task's chain would invoke its function "
            f"{worst} times, and Lambda's recursive-loop detection stops it at {RECURSION_CUTOFF}; "
            f"use at most {max_attempts - (worst - RECURSION_CUTOFF + 1)}"
        )
    base = _num(f"{where}.retry_base_delay_s", raw.get("retry_base_delay_s", d.retry_base_delay_s), 0, 900)
    top = _num(f"{where}.retry_max_delay_s", raw.get("retry_max_delay_s", d.retry_max_delay_s), 0, 900)
    if top < base:
        raise SettingsError(f"{where}.retry_max_delay_s ({top}) is below retry_base_delay_s ({base})")
    return EnvironmentSettings(
        name=name,
        account=raw.get("account"),
        region=raw.get("region"),
        hermes_url=hermes_url.rstrip("/"),
        token_secret_name=raw.get("token_secret_name", f"fanout/{name}/hermes-token"),
        hermes_rate_limit=rate_limit,
        hermes_rate_start=rate_start,
        pacing=pacing,
        remember_limit=remember_limit,
        hermes_page_size=_int(
            f"{where}.hermes_page_size", raw.get("hermes_page_size", d.hermes_page_size), 1, 1000
        ),
        hermes_timeout_s=_num(
            f"{where}.hermes_timeout_s", raw.get("hermes_timeout_s", d.hermes_timeout_s), 0.01, 900
        ),
        hermes_request_deadline_s=_num(
            f"{where}.hermes_request_deadline_s",
            raw.get("hermes_request_deadline_s", d.hermes_request_deadline_s),
            0.1,
            LAMBDA_MAX_TIMEOUT_S,
        ),
        hermes_max_pages=_int(
            f"{where}.hermes_max_pages", raw.get("hermes_max_pages", d.hermes_max_pages), 1, 10_000_000
        ),
        hermes_max_items_per_list=_int(
            f"{where}.hermes_max_items_per_list",
            raw.get("hermes_max_items_per_list", d.hermes_max_items_per_list),
            1,
            1_000_000_000,
        ),
        max_attempts=max_attempts,
        retry_base_delay_s=base,
        retry_max_delay_s=top,
        max_records_per_task=_int(
            f"{where}.max_records_per_task",
            raw.get("max_records_per_task", d.max_records_per_task),
            1,
            100_000_000,
        ),
        account_concurrency_limit=account_limit,
        removal_policy=removal_policy,
        engine=engine,
        items_per_batch=_int(
            f"{where}.items_per_batch", raw.get("items_per_batch", d.items_per_batch), 1, SFN_MAX_BATCH
        ),
        tolerated_failure_percentage=_num(
            f"{where}.tolerated_failure_percentage",
            raw.get("tolerated_failure_percentage", d.tolerated_failure_percentage),
            0,
            100,
        ),
        alarm_email=alarm_email,
        api=_api_path(where, raw.get("api")),
        stages=MappingProxyType(stages),
    )


def _api_path(where: str, value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise SettingsError(f"{where}.api must be the path of an API description file")
    return value


def parse_environments(
    context: Any, stage_names: tuple[str, ...] = STAGE_NAMES
) -> dict[str, EnvironmentSettings]:
    if not isinstance(context, Mapping) or not context:
        raise SettingsError("environments must be a non-empty object of name -> settings")
    return {name: parse_environment(name, raw, stage_names) for name, raw in context.items()}


def select_environment(
    context: Any, name: str, stage_names: tuple[str, ...] = STAGE_NAMES
) -> EnvironmentSettings:
    if not isinstance(context, Mapping) or name not in context:
        known = ", ".join(sorted(context)) if isinstance(context, Mapping) else "none"
        raise SettingsError(f"unknown environment {name!r}; environments in cdk.json: {known}")
    return parse_environment(name, context[name], stage_names)


def load_environment(
    name: str, cdk_json: str | Path, stage_names: tuple[str, ...] = STAGE_NAMES
) -> EnvironmentSettings:
    """The environment ``name`` from a cdk.json file's ``context.environments``."""
    try:
        doc = strict_json.loads(Path(cdk_json).read_text())
    except (OSError, ValueError) as exc:
        raise SettingsError(f"cannot read settings from {cdk_json}: {exc}") from exc
    return select_environment(doc.get("context", {}).get("environments"), name, stage_names)


def environment_to_raw(env: EnvironmentSettings) -> dict[str, Any]:
    """The raw form ``parse_environment`` accepts: how the stack hands settings to Lambda."""
    raw: dict[str, Any] = {k: getattr(env, k) for k in sorted(_ENV_FIELDS)}
    raw = {k: v for k, v in raw.items() if v is not None}
    raw["stages"] = {
        name: {k: getattr(s, k) for k in sorted(_STAGE_FIELDS)} for name, s in env.stages.items()
    }
    return raw


def environment_to_json(env: EnvironmentSettings) -> str:
    return json.dumps(environment_to_raw(env), sort_keys=True, separators=(",", ":"))


def environment_from_json(
    name: str, text: str, stage_names: tuple[str, ...] = STAGE_NAMES
) -> EnvironmentSettings:
    try:
        raw = strict_json.loads(text)
    except ValueError as exc:
        raise SettingsError(f"environment {name!r}: settings are not JSON: {exc}") from exc
    return parse_environment(name, raw, stage_names)
