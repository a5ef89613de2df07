"""``fanout plan``: how many calls, rows, bytes, how long and how much, before anything runs.

Why a sample and not a count: counting every list is the crawl itself. The first level is
listed as the seed would list it; below it, a bounded random sample of units per level is
listed (at most ``max_calls`` calls, at most about 1 % of the estimated calls, though a
first pass lists up to ``PILOT_UNITS`` units of every level whatever the tree's size), each
unit giving its child count and the pages its list took. Per level:

* ``units[k+1] = units[k] x mean(children of the sampled units of level k)``;
* ``calls[k] = units[k] x mean(pages of their lists)``.

A level whose known units were all listed (a census) is exact; the top levels usually are,
so a tree with one huge top unit is seen whole. The 90 % interval is a bootstrap: each
replicate resamples every sampled level's (children, pages) pairs with replacement (a
census is kept as it is) and recomputes the totals; the interval is the replicates' 5th to
95th percentiles, its top raised by what units too rare for the sample to show could add
(:func:`_unseen`): a sample of lists that all took one page cannot tell that 2 % take ten.
Units sampled below come only from the children of units sampled above, chosen uniformly,
so every unit of a level has about the same chance to be chosen (self-weighting).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from fanout.learned_limit import LearnedLimit
from fanout_core.api_client import CallStats
from fanout_core.api_description import ApiDescription, Level
from fanout_core.settings import EnvironmentSettings

PILOT_UNITS = 2
"""Units per level the first pass lists, to size the budget (1 % of its estimate)."""
BUDGET_SHARE = 0.01
"""At most this share of the estimated calls is spent sampling."""
DEFAULT_MAX_CALLS = 200
BOOTSTRAP = 1000
INTERVAL = (0.05, 0.95)


class Lister(Protocol):
    """What the plan needs of a client: the core's ``list(level, ids)`` and its counters."""

    stats: CallStats

    def list(self, level_name: str, ids: tuple[str, ...]) -> Iterator[dict[str, Any]]: ...


@dataclass
class LevelSample:
    """The sampled units of one stage level (units of ``level`` listing ``child``)."""

    level: str
    child: str
    children: list[int] = field(default_factory=list)
    pages: list[int] = field(default_factory=list)
    item_bytes: list[int] = field(default_factory=list)
    """Leaf level only: the JSON bytes of each sampled unit's rows, as served."""
    pool: list[tuple[str, ...]] = field(default_factory=list)
    """Known, not yet listed units of this level (id paths), the sample's frame."""
    known: int = 0
    """Units of this level known (listed or in the pool)."""

    @property
    def sampled(self) -> int:
        return len(self.children)


@dataclass
class Sample:
    first_units: int
    first_calls: int
    levels: list[LevelSample]
    calls: int
    """Every call the plan made (the first level's listing included)."""
    budget: int


@dataclass(frozen=True)
class Range:
    estimate: float
    low: float
    high: float

    def as_json(self) -> dict[str, float]:
        return {"estimate": round(self.estimate, 1), "low": round(self.low, 1), "high": round(self.high, 1)}


@dataclass
class LevelForecast:
    level: str
    child: str
    units: Range
    calls: Range
    sampled: int
    census: bool


@dataclass
class Forecast:
    api: str
    first_level: str
    first_units: int
    first_calls: int
    levels: list[LevelForecast]
    calls: Range
    rows: Range
    json_bytes: Range
    sample_calls: int
    budget: int


def _item_id(level: Level, item: dict[str, Any]) -> str:
    value = item[level.id_field or ""]
    return value if isinstance(value, str) else str(value)


def _listed(client: Lister, level: str, ids: tuple[str, ...], leaf: bool) -> tuple[list[Any], int, int]:
    """The items of one list, the pages it took and (leaf) their JSON bytes."""
    before = client.stats.snapshot()
    items = list(client.list(level, ids))
    after = client.stats.snapshot()
    pages = int(after["calls"] - before["calls"] - (after["retries"] - before["retries"]))
    size = sum(len(json.dumps(i, separators=(",", ":"), default=str)) for i in items) if leaf else 0
    return items, max(pages, 1), size


def take_sample(
    api: ApiDescription,
    client: Lister,
    first_ids: Sequence[str] | None,
    *,
    max_calls: int = DEFAULT_MAX_CALLS,
    rng: random.Random | None = None,
) -> Sample:
    """List the first level (unless ``first_ids`` names its units) and sample below it."""
    rng = rng or random.Random(0)
    stage_levels = api.stage_levels
    first = stage_levels[0]
    calls_before = client.stats.snapshot()["calls"]
    if first_ids is None:
        items, first_calls, _ = _listed(client, first.name, (), False)
        top = [(_item_id(first, i),) for i in items]
    else:
        top, first_calls = [(str(i),) for i in first_ids], 0
    levels = [LevelSample(lv.name, api.levels[k + 1].name) for k, lv in enumerate(stage_levels)]
    levels[0].pool, levels[0].known = list(top), len(top)

    def used() -> int:
        return int(client.stats.snapshot()["calls"] - calls_before)

    def list_some(k: int, n: int, limit: int | None) -> None:
        ls = levels[k]
        child_level = api.levels[k + 1]
        leaf = child_level.is_leaf
        for _ in range(min(n, len(ls.pool))):
            if limit is not None and used() >= limit:
                return
            unit = ls.pool.pop(rng.randrange(len(ls.pool)))
            items, pages, size = _listed(client, child_level.name, unit, leaf)
            ls.children.append(len(items))
            ls.pages.append(pages)
            if leaf:
                ls.item_bytes.append(size)
            else:
                below = levels[k + 1]
                below.pool.extend((*unit, _item_id(child_level, i)) for i in items)
                below.known += len(items)

    # Pilot: a few units per level, top down, to size the budget.
    for k in range(len(levels)):
        list_some(k, PILOT_UNITS, max_calls)
    rough = forecast_of(api, Sample(len(top), first_calls, levels, used(), 0), replicates=0)
    budget = max(min(used(), max_calls), min(max_calls, math.floor(BUDGET_SHARE * rough.calls.estimate)))
    # Then the rest, top down: a level whose known units cost no more than an even share
    # is listed whole (a census: the top levels, where one huge unit would otherwise hide);
    # else the level gets a share weighted by the square root of its estimated calls, so
    # the levels that make most calls are sampled most without starving the others.
    weights = [math.sqrt(max(1.0, lf.calls.estimate)) for lf in rough.levels]
    for k in range(len(levels)):
        left = budget - used()
        if left <= 0:
            break
        per_unit = max(1.0, _mean(levels[k].pages))
        share = left * weights[k] / sum(weights[k:])
        # The top's census may take half of what is left: a heavy top unit hides its whole
        # subtree, the costliest miss.
        even = left / 2 if k == 0 else left / (len(levels) - k)
        if len(levels[k].pool) * per_unit <= even:
            share = len(levels[k].pool) * per_unit
        list_some(k, int(share // per_unit), budget)
    return Sample(len(top), first_calls, levels, used(), budget)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _totals(
    first_units: int, first_calls: int, levels: list[tuple[list[int], list[int], list[int], bool]]
) -> tuple[list[float], list[float], float, float]:
    """Units and calls per level, rows and JSON bytes, from per-level samples."""
    units: list[float] = []
    calls: list[float] = []
    n = float(first_units)
    rows = size = 0.0
    for children, pages, item_bytes, _census in levels:
        units.append(n)
        calls.append(n * _mean(pages) if pages else 0.0)
        rows = n * _mean(children)
        if item_bytes:
            size = n * _mean(item_bytes)
        n = rows
    return units, calls, rows, size


def _interval(values: list[float], estimate: float, unseen: float = 0.0) -> Range:
    """The bootstrap's 90 % range, always holding ``estimate``, its top raised by ``unseen``."""
    if not values:
        return Range(estimate, estimate, estimate + unseen)
    ordered = sorted(values)
    lo = ordered[int(INTERVAL[0] * (len(ordered) - 1))]
    hi = ordered[math.ceil(INTERVAL[1] * (len(ordered) - 1))]
    return Range(estimate, min(lo, estimate), max(hi, estimate) + unseen)


def _unseen(units: float, sample: Sequence[int], census: bool) -> float:
    """What units no sample of n could show may add: a share up to 3 / n of them (the rule of
    three, a 95 % bound when none was seen), each once more as big as the biggest seen."""
    if census or not sample:
        return 0.0
    return units * min(1.0, 3 / len(sample)) * max(sample)


def _unseen_subtrees(units: list[float], per: list[tuple[list[int], list[int], list[int], bool]]) -> float:
    """Calls the children no sample could show may bring with them: at each level that was
    sampled, not listed whole, the unseen children (``_unseen`` of its children counts) times
    the calls of one child's whole subtree, as sampled. One top unit with ten times the others'
    children, missed by a sample of 2 of 10, brings its children's lists and theirs."""
    extra = 0.0
    below = 0.0  # calls of one unit of the level below, its subtree included
    for k in reversed(range(len(per))):
        children, pages, _item_bytes, census = per[k]
        if k < len(per) - 1:
            extra += _unseen(units[k], children, census) * below
        below = _mean(pages) + (_mean(children) * below if k < len(per) - 1 else 0.0)
    return extra


def forecast_of(
    api: ApiDescription, sample: Sample, *, replicates: int = BOOTSTRAP, seed: int = 0
) -> Forecast:
    """The point estimates and their bootstrap intervals."""
    per = [
        (ls.children, ls.pages, ls.item_bytes, not ls.pool and ls.sampled == ls.known) for ls in sample.levels
    ]
    units, calls, rows, size = _totals(sample.first_units, sample.first_calls, per)
    rng = random.Random(seed)
    boot_units: list[list[float]] = [[] for _ in per]
    boot_calls: list[list[float]] = [[] for _ in per]
    boot_total: list[float] = []
    boot_rows: list[float] = []
    boot_bytes: list[float] = []
    for _ in range(replicates):
        drawn = []
        for children, pages, item_bytes, census in per:
            if census or not children:
                drawn.append((children, pages, item_bytes, census))
                continue
            picks = [rng.randrange(len(children)) for _ in children]
            drawn.append(
                (
                    [children[i] for i in picks],
                    [pages[i] for i in picks],
                    [item_bytes[i] for i in picks] if item_bytes else [],
                    census,
                )
            )
        u, c, r, s = _totals(sample.first_units, sample.first_calls, drawn)
        for k in range(len(per)):
            boot_units[k].append(u[k])
            boot_calls[k].append(c[k])
        boot_total.append(sample.first_calls + sum(c))
        boot_rows.append(r)
        boot_bytes.append(s)
    unseen = [_unseen(units[k], ls.pages, per[k][3]) for k, ls in enumerate(sample.levels)]
    leaf_units, leaf = units[-1], sample.levels[-1]
    levels = [
        LevelForecast(
            ls.level,
            ls.child,
            _interval(boot_units[k], units[k]),
            _interval(boot_calls[k], calls[k], unseen[k]),
            ls.sampled,
            per[k][3],
        )
        for k, ls in enumerate(sample.levels)
    ]
    return Forecast(
        api=api.name,
        first_level=api.levels[0].name,
        first_units=sample.first_units,
        first_calls=sample.first_calls,
        levels=levels,
        calls=_interval(
            boot_total, sample.first_calls + sum(calls), sum(unseen) + _unseen_subtrees(units, per)
        ),
        rows=_interval(boot_rows, rows, _unseen(leaf_units, leaf.children, per[-1][3])),
        json_bytes=_interval(boot_bytes, size, _unseen(leaf_units, leaf.item_bytes, per[-1][3])),
        sample_calls=sample.calls,
        budget=sample.budget,
    )


def duration(seconds: float) -> str:
    """A short human duration: 45 s, 12 min, 3.4 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def summary_line(fc: Forecast, rate: float) -> str:
    """The one line ``local run`` prints before it starts."""
    c = fc.calls
    return (
        f"about {c.estimate:,.0f} calls ({c.low:,.0f}-{c.high:,.0f}), "
        f"~{duration(c.estimate / rate)} at {rate:g}/s"
    )


def costs(
    fc: Forecast,
    settings: EnvironmentSettings,
    prices: dict[str, Any],
    table: Any,
) -> dict[str, Any]:
    """The forecast priced with ``fanout.cost``'s model: a run's counts as the bucket would
    record them (tasks per stage from ``units_per_task``, its S3 requests as
    ``cost.count_run`` counts them, Lambda seconds as paced at each instance's share of R),
    for each engine, and the same crawl on a server and on Spot. A stage the environment
    does not name (a described API's) is priced at the default stage settings, with an
    equal share of R."""
    from fanout.cost import RunCounts, StageCounts, estimate
    from fanout_aws.sfn_starter import Batching
    from fanout_core.settings import StageSettings

    named = all(stage.name in settings.stages for stage in table)

    def stage_settings(name: str) -> StageSettings:
        return settings.stages.get(name) or StageSettings()

    def instance_rate(name: str) -> float:
        if named:
            return settings.instance_rate(name)
        return settings.hermes_rate_limit / len(table) / stage_settings(name).instances

    counts = RunCounts("plan", [])
    for k, stage in enumerate(table):
        st = stage_settings(stage.name)
        lf = fc.levels[k]
        units = lf.units.estimate
        tasks = max(1, math.ceil(units / max(1, st.units_per_task)))
        sc = StageCounts(stage.name, st.memory_mb, st.reserved_concurrency, tasks=tasks, finished=tasks)
        sc.invocations = tasks
        sc.s3_get = tasks
        calls = lf.calls.estimate + (fc.first_calls if k == 0 else 0)
        sc.api_calls = round(calls)
        sc.billed_ms = round(1000 * calls / instance_rate(stage.name))
        if stage is table.leaf:
            sc.s3_list = tasks
            sc.s3_put = 2 * tasks
        else:
            below = fc.levels[k + 1].units.estimate
            child_tasks = math.ceil(below / max(1, stage_settings(table[k + 1].name).units_per_task))
            sc.s3_list = 2 * tasks
            sc.s3_put = 2 * tasks + child_tasks
        counts.stages.append(sc)
    counts.output_bytes = round(fc.json_bytes.estimate)
    counts.stored_bytes = counts.output_bytes
    out: dict[str, Any] = {}
    for engine in ("s3_events", "queue", "stepfunctions"):
        bill = estimate(
            counts,
            prices,
            settings.hermes_rate_limit,
            pacing=settings.pacing,
            engine=engine,
            batching=Batching(settings.items_per_batch, stage_settings(table.leaf.name).reserved_concurrency),
        )
        out[engine] = bill
    return out


def to_json(
    fc: Forecast, rate: float, bills: dict[str, Any] | None, learned: LearnedLimit | None = None
) -> dict[str, Any]:
    """The documented ``--json`` shape (docs/json-output.md, schema ``plan``)."""
    doc: dict[str, Any] = {
        "api": fc.api,
        "first_level": {"name": fc.first_level, "units": fc.first_units, "calls": fc.first_calls},
        "levels": [
            {
                "level": lf.level,
                "lists": lf.child,
                "units": lf.units.as_json(),
                "calls": lf.calls.as_json(),
                "sampled": lf.sampled,
                "census": lf.census,
            }
            for lf in fc.levels
        ],
        "calls": fc.calls.as_json(),
        "rows": fc.rows.as_json(),
        "json_bytes": fc.json_bytes.as_json(),
        "rate_limit": rate,
        "seconds_at_rate": round(fc.calls.estimate / rate, 1),
        "sample": {"calls": fc.sample_calls, "budget": fc.budget},
        "summary": summary_line(fc, rate),
        "learned_limit": {
            "limit": learned.limit if learned else None,
            "held": learned.held if learned else None,
            "learned_on": learned.learned_on if learned else None,
            "seconds": round(fc.calls.estimate / learned.held, 1) if learned else None,
        },
        "cost": None,
    }
    if bills:
        first = next(iter(bills.values()))
        server = first["server"]
        doc["cost"] = {
            "region": first["region"],
            "prices_as_of": first["prices_as_of"],
            "engines_usd": {e: _usd(b["total"]) for e, b in bills.items()},
            "server": {
                "instance": server["instance"],
                "billed_s": int(server["billed_s"]),
                "on_demand_usd": _usd(server["on_demand_crawl"]),
                "spot_usd": _usd(server["spot_crawl"]),
            },
        }
    return doc


def _usd(value: Decimal) -> float:
    return round(float(value), 6)


def render_text(
    fc: Forecast, rate: float, bills: dict[str, Any] | None, learned: LearnedLimit | None = None
) -> str:
    """One screen: per level, the totals, time at R and the bill per engine."""

    def rng(r: Range) -> str:
        return f"{r.estimate:>12,.0f} {r.low:>12,.0f} {r.high:>12,.0f}"

    out = [
        f"plan for {fc.api}: {fc.first_units:,} {fc.first_level} "
        f"({fc.first_calls} calls to list them); {fc.sample_calls} calls sampled (budget {fc.budget})",
        f"  {'level':<14} {'lists':<14} {'sampled':>8} {'units':>12} {'calls':>12} {'low':>12} {'high':>12}",
    ]
    for lf in fc.levels:
        mark = " (all)" if lf.census else ""
        out.append(
            f"  {lf.level:<14} {lf.child:<14} {lf.sampled:>8} "
            f"{lf.units.estimate:>12,.0f} {rng(lf.calls)}{mark}"
        )
    out.append(f"  {'calls':<14} {'':<14} {'':>8} {'':>12} {rng(fc.calls)}")
    out.append(f"  {'rows':<14} {'':<14} {'':>8} {'':>12} {rng(fc.rows)}")
    out.append(f"  {'bytes (JSON)':<14} {'':<14} {'':>8} {'':>12} {rng(fc.json_bytes)}")
    out.append(f"  {summary_line(fc, rate)}")
    if learned is not None:
        out.append(
            f"  {learned.line()}: ~{duration(fc.calls.estimate / learned.held)} at {learned.held:.0f}/s"
        )
    if bills:
        first = next(iter(bills.values()))
        line = ", ".join(f"{e} ${float(b['total']):.4f}" for e, b in bills.items())
        out.append(f"  on AWS ({first['region']}, prices as of {first['prices_as_of']}): {line}")
        s = first["server"]
        out.append(
            f"  on a server ({s['instance']}, billed {s['billed_s']} s): on demand "
            f"${float(s['on_demand_crawl']):.4f}, Spot ${float(s['spot_crawl']):.4f}"
        )
    return "\n".join(out)


ClientFactory = Callable[[], Lister]
