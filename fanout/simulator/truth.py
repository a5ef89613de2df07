"""The truth for any description, and rows in one comparable form, for "rows exact" checks.

Why its own module: the demo, end-to-end tests and benchmarks of a described API ask the
question ``fanout.audit`` answers for Hermes ("is every row there exactly once?"); this is
the one place that knows which universe serves a description, how its rows look, and how a
row read back from Parquet compares with them.

For a caller starting a simulator for a description (the demo, a test):

* :func:`simulator_config` - a size preset scaled to the description's levels, its secret;
* :func:`universe_for` - the truth (Hermes' ``Universe`` or a ``DescribedUniverse``);
* ``HermesSimulator(config, api=api)`` in process, or ``run_in_subprocess(config, api=api)``;
* :func:`expected_rows` - the rows a run keeps (all, or below a manifest's first-level ids);
* :func:`rows_from_frame` and :func:`compare_rows` - what a run wrote against them.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from fanout.simulator.config import SimConfig
from fanout.simulator.described import DescribedUniverse, canonical_json, is_hermes
from fanout.simulator.universe import Universe
from fanout_core import api_description
from fanout_core.api_description import ApiDescription

if TYPE_CHECKING:
    from fanout.audit import Comparison

__all__ = [
    "DEV_BASIC_SECRET",
    "DEV_SECRET",
    "compare_rows",
    "default_secret",
    "expected_rows",
    "is_hermes",
    "normalize_row",
    "row_columns",
    "rows_from_frame",
    "simulator_config",
    "universe_for",
]

DEV_SECRET = "sim-token"
"""The secret a simulator takes when neither a flag nor the description's variable names one."""
DEV_BASIC_SECRET = "sim-user:sim-token"
"""The same for basic auth, whose secret is ``user:password``."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def default_secret(api: ApiDescription | None, environ: dict[str, str] | None = None) -> str:
    """The secret a simulator of ``api`` accepts: its ``auth.env`` variable if set, else a
    fixed dev secret (``user:password`` shaped for basic auth)."""
    env = os.environ if environ is None else environ
    name = api.auth.env if api is not None else "HERMES_TOKEN"
    if name and env.get(name):
        return env[name]
    return DEV_BASIC_SECRET if api is not None and api.auth.type == "basic" else DEV_SECRET


def simulator_config(api: ApiDescription | None, size: str | None = None, **overrides: Any) -> SimConfig:
    """The config of a simulator serving ``api``: the ``size`` preset (None: the default
    tree) scaled to its levels, its secret from :func:`default_secret` unless ``token`` is
    given, then ``overrides``."""
    levels = 4 if api is None else len(api.levels)
    overrides.setdefault("token", default_secret(api))
    if size is not None:
        return SimConfig.from_size(size, levels=levels, **overrides)
    return SimConfig(**overrides)


def universe_for(api: ApiDescription | None, config: SimConfig) -> Universe | DescribedUniverse:
    """The truth a simulator of ``api`` with ``config`` serves (Hermes' own for None)."""
    if api is None or is_hermes(api):
        return Universe(config)
    return DescribedUniverse(api, config)


def row_columns(api: ApiDescription) -> tuple[str, ...]:
    """The columns of a truth row: ``column_names()`` without run_id and fetched_at."""
    return tuple(c for c in api.column_names() if c not in api_description.RESERVED_COLUMNS)


def expected_rows(
    api: ApiDescription | None, config: SimConfig, first_ids: Iterable[str | int] | None = None
) -> Iterator[tuple[Any, ...]]:
    """The rows a correct run of ``api`` keeps, normalized (:func:`normalize_row`), in
    crawl order and :func:`row_columns` order; only below ``first_ids`` if given (the
    manifest's chosen first-level ids). Units a correct crawler must fail give none."""
    api = api or api_description.builtin()
    universe = universe_for(api, config)
    if isinstance(universe, DescribedUniverse):
        yield from universe.expected_rows(first_ids)
        return
    chosen = None if first_ids is None else {str(x) for x in first_ids}
    for row in universe.expected_rows():
        if chosen is None or row[0] in chosen:
            yield normalize_row(api, row)


def _is_null(value: Any) -> bool:
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return True
    return isinstance(value, float) and math.isnan(value)


def _micros(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):  # RFC 3339, "t"/"z" allowed
        value = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    if hasattr(value, "value") and hasattr(value, "tz_localize"):  # pandas.Timestamp: nanoseconds
        stamp = value if value.tzinfo is None else value.tz_convert(None)
        return int(stamp.value) // 1000
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return (moment - _EPOCH) // timedelta(microseconds=1)
    raise TypeError(f"not a timestamp: {value!r}")


def _day(value: Any) -> str:
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)[:10]


def _json_text(value: Any) -> str:
    return canonical_json(json.loads(value) if isinstance(value, str) else value)


def normalize_row(api: ApiDescription, row: Iterable[Any]) -> tuple[Any, ...]:
    """A row in :func:`row_columns` order, as written or as the truth has it, in one
    comparable form: ids and carried fields as text, int64 as int, double as float,
    timestamps as UTC epoch microseconds, dates as ``YYYY-MM-DD``, json and the extra
    column as canonical JSON text; null, NaN, NA and NaT as None."""
    kinds = ["string"] * len(api.id_columns()) + [c.type for c in api.rows.columns]
    if api.rows.extra == "keep":
        kinds.append("json")
    values = tuple(row)
    if len(values) != len(kinds):
        raise ValueError(f"a row of {api.name} has {len(kinds)} values, got {len(values)}")
    out: list[Any] = []
    for kind, v in zip(kinds, values, strict=True):
        if _is_null(v):
            out.append(None)
        elif kind == "string":
            out.append(str(v))
        elif kind == "int64":
            out.append(int(v))
        elif kind == "double":
            out.append(float(v))
        elif kind == "boolean":
            out.append(bool(v))
        elif kind == "timestamp":
            out.append(_micros(v))
        elif kind == "date":
            out.append(_day(v))
        else:
            out.append(_json_text(v))
    return tuple(out)


def rows_from_frame(api: ApiDescription, frame: Any) -> list[tuple[Any, ...]]:
    """The normalized rows of a pandas frame holding the output's columns (a Parquet file
    of the run read back); run_id and fetched_at are left out."""
    cols = list(row_columns(api))
    return [normalize_row(api, r) for r in frame[cols].astype(object).itertuples(index=False, name=None)]


def compare_rows(found: Iterable[tuple[Any, ...]], expected: Iterable[tuple[Any, ...]]) -> Comparison:
    """What is missing, unexpected or written twice, both sides normalized already."""
    from fanout.audit import Comparison

    have, want = Counter(found), Counter(expected)
    return Comparison(
        expected=sum(want.values()),
        found=sum(have.values()),
        missing=sorted((want - have).elements(), key=repr)[:50],
        unexpected=sorted((r for r in have if r not in want), key=repr)[:50],
        duplicated=sorted((r for r, n in have.items() if n > want.get(r, 0) and r in want), key=repr)[:50],
    )
