"""How a runtime builds the parts of a run from one environment's settings.

The Lambda cold start, the local runtime, its worker processes and the CLI all build
their API clients, retry policy and per-stage concurrency here, so a setting means
the same thing everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from fanout_core.adaptive_rate import Tuning
from fanout_core.api_client import ApiClient, CallStats, PacerLike
from fanout_core.api_description import ApiDescription, builtin, is_builtin
from fanout_core.errors import SettingsError
from fanout_core.fleet_budget import BudgetStore, FleetPacer
from fanout_core.pacing import AdaptivePacer, Pacer
from fanout_core.retry import RetryPolicy
from fanout_core.settings import EnvironmentSettings
from fanout_core.stages import StageTable


def hermes_client(
    settings: EnvironmentSettings,
    *,
    url: str,
    token: str,
    pacer: PacerLike | None,
    stats: CallStats,
    pool_size: int,
    api: ApiDescription | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ApiClient:
    """A client of ``api`` (the built-in description when None) at ``url`` with the
    environment's timeouts and bounds; ``token`` is the API's secret, which the
    description's auth sends (a bearer token, an API key, or ``user:password``). The
    environment's ``hermes_page_size`` is the built-in description's page size; a described
    API's levels ask for the page sizes their description gives. ``sleep`` waits before a
    retry (a local run's leaf stage gives its place up meanwhile)."""
    api = api if api is not None else builtin()
    return ApiClient(
        api,
        url,
        token,
        page_size=settings.hermes_page_size if is_builtin(api) else None,
        read_timeout=settings.hermes_timeout_s,
        request_deadline_s=settings.hermes_request_deadline_s,
        max_pages=settings.hermes_max_pages,
        max_items_per_list=settings.hermes_max_items_per_list,
        pacer=pacer,
        stats=stats,
        pool_size=pool_size,
        sleep=sleep,
    )


FLEET_TUNING = Tuning(hold_s=12.0)
"""Instances probe independently, so each probes rarely: a fleet of N makes N probes."""
SHARED_TUNING = Tuning(hold_s=6.0, probe_s=4.0)
"""The shared budget probes as one, but every probe above a real limit ends in a clump (the
slots already handed out to waiting instances are still sent), so it probes half as often
and more gently than a local run: with R told a third too high, bench/fleet.py measured
0.7-1.1 % 429s at 0.92-0.96 R, against 1.9-2.5 % at 0.92-0.96 R with the local tuning.
A 429 at the told R (R right) climbs straight back to R either way."""


def instance_pacer(
    settings: EnvironmentSettings, stage_name: str, *, budget: BudgetStore | None = None
) -> Pacer | AdaptivePacer | FleetPacer:
    """The pacer one Lambda instance of a stage builds at its cold start.

    ``static`` and ``adaptive`` start at the instance's share, ``R x weight /
    sum(weights) / instances`` (the stage's reserved plus its retry consumer's
    concurrency), so that all instances together start under R; ``static`` keeps to it,
    ``adaptive`` probes above it up to R and backs off on 429s. ``shared`` reserves its
    calls from the fleet's one budget (``budget``, the stack's table) and falls back to
    the static share only while that store fails.
    """
    share = settings.instance_rate(stage_name)
    if settings.pacing == "shared":
        if budget is None:
            raise SettingsError("pacing 'shared' needs the budget table (FANOUT_BUDGET_TABLE)")
        return FleetPacer(
            budget,
            settings.hermes_rate_limit,
            fallback_rate=share,
            tuning=SHARED_TUNING,
            fleet_size=sum(s.instances for s in settings.stages.values()),
        )
    if settings.pacing == "adaptive":
        return AdaptivePacer(
            settings.hermes_rate_limit, start=share, tuning=FLEET_TUNING, probe_from_start=True
        )
    return Pacer(share)


def retry_policy(settings: EnvironmentSettings) -> RetryPolicy:
    return RetryPolicy.from_settings(settings)


def stage_concurrency(
    settings: EnvironmentSettings, table: StageTable, overrides: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Tasks each stage runs at once: an override where given, else its reserved concurrency."""
    return {
        s.name: (overrides or {}).get(s.name) or settings.stage(s.name).reserved_concurrency for s in table
    }
