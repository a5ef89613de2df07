"""How a runtime builds the parts of a run from one environment's settings.

The Lambda cold start, the local runtime, its worker processes and the CLI all build
their API clients, retry policy and per-stage concurrency here, so a setting means
the same thing everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from fanout_core import learned_limit
from fanout_core.adaptive_rate import CUT_AT, W_MAX, Tuning
from fanout_core.api_client import ApiClient, CallStats, PacerLike
from fanout_core.api_description import ApiDescription, builtin, is_builtin
from fanout_core.errors import SettingsError
from fanout_core.fleet_budget import BudgetStore, FleetPacer
from fanout_core.pacing import AdaptivePacer, Pacer
from fanout_core.retry import RetryPolicy
from fanout_core.settings import EnvironmentSettings
from fanout_core.stages import StageTable
from fanout_core.storage import Storage


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
    settings: EnvironmentSettings,
    stage_name: str,
    *,
    budget: BudgetStore | None = None,
    limits: Storage | None = None,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> PacerLike:
    """The pacer one Lambda instance of a stage builds at its cold start.

    ``static`` and ``adaptive`` start at the instance's share, ``R x weight /
    sum(weights) / instances`` (the stage's reserved plus its retry consumer's
    concurrency), so that all instances together start under R; ``static`` keeps to it,
    ``adaptive`` probes above it up to R and backs off on 429s. ``shared`` reserves its
    calls from the fleet's one budget (``budget``, the stack's table) and falls back to
    the static share only while that store fails.

    ``limits`` (the bucket), when the fleet keeps the learned limit
    (``learned_limit.kept_on_aws``): the record is read once here; ``adaptive`` starts at
    its share of the rate held (as right after a cut there), ``shared`` seeds the budget
    item with it; the pacer returned writes what it finds (``learned_limit.LimitKeeper``).
    ``clock`` and ``sleep``: the pacer's (None: its own default), for fake-clock tests.
    """
    share = settings.instance_rate(stage_name)
    bound = settings.hermes_rate_limit
    keep = limits is not None and learned_limit.kept_on_aws(settings)
    learned = learned_limit.load(limits, settings.hermes_url) if keep and limits is not None else None
    start = learned_limit.start_rate(learned, bound)
    if settings.pacing == "shared":
        if budget is None:
            raise SettingsError("pacing 'shared' needs the budget table (FANOUT_BUDGET_TABLE)")
        fleet = FleetPacer(
            budget,
            bound,
            fallback_rate=share,
            tuning=SHARED_TUNING,
            fleet_size=sum(s.instances for s in settings.stages.values()),
            learned=start,
            clock=clock or time.time,  # the budget item's times are wall-clock epoch seconds
            sleep=sleep,
        )
        if not keep or limits is None:
            return fleet

        def fleet_found() -> learned_limit.Finding | None:
            found = fleet.found()
            return None if found is None else _finding(found[0], found[1], 1.0, bound, SHARED_TUNING)

        return _remembering(fleet, fleet_found, limits, settings, SHARED_TUNING, clock or time.time)
    if settings.pacing == "adaptive":
        # The instance's part of the fleet's rate: a learned fleet rate scales like R.
        part = share / bound
        pacer = AdaptivePacer(
            bound,
            start=share if start is None else start * part,
            tuning=FLEET_TUNING,
            probe_from_start=start is None,
            known=start is not None,
            clock=clock or time.monotonic,
            sleep=sleep,
        )
        if not keep or limits is None:
            return pacer
        first_cut = pacer.state[CUT_AT]

        def instance_found() -> learned_limit.Finding | None:
            s = pacer.state  # a few floats read without the lock: a torn read is one early look
            if s[CUT_AT] == first_cut or not s[W_MAX]:
                return None
            return _finding(s[W_MAX], s[CUT_AT], part, bound, FLEET_TUNING)

        return _remembering(pacer, instance_found, limits, settings, FLEET_TUNING, clock or time.monotonic)
    return Pacer(share)


def _finding(w_max: float, cut_at: float, part: float, bound: float, tuning: Tuning) -> learned_limit.Finding:
    """A cut (of a pacer pacing ``part`` of the fleet's rate) as the fleet's rates: where
    429s began, and the rate the pace holds after it (``hold`` of it; after a 429 at the
    pacer's bound R, a clump, it climbs straight back to R). Never above R."""
    limit = min(bound, w_max / part)
    held = limit if w_max >= bound else tuning.hold * limit
    return learned_limit.Finding(limit=limit, held=held, cut_at=cut_at)


def _remembering(
    pacer: PacerLike,
    found: Callable[[], learned_limit.Finding | None],
    limits: Storage,
    settings: EnvironmentSettings,
    tuning: Tuning,
    clock: Callable[[], float],
) -> learned_limit.RememberingPacer:
    """The pacer, writing what it found once the pace held ``recover_s + hold_s`` after a cut."""
    keeper = learned_limit.LimitKeeper(
        limits, settings.hermes_url, quiet_s=tuning.recover_s + tuning.hold_s, clock=clock
    )
    return learned_limit.RememberingPacer(pacer, found, keeper)


def retry_policy(settings: EnvironmentSettings) -> RetryPolicy:
    return RetryPolicy.from_settings(settings)


def stage_concurrency(
    settings: EnvironmentSettings, table: StageTable, overrides: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Tasks each stage runs at once: an override where given, else its reserved concurrency."""
    return {
        s.name: (overrides or {}).get(s.name) or settings.stage(s.name).reserved_concurrency for s in table
    }
