"""Record values and their JSON text: metrics, 5-minute timestamps, thousandths.

Why its own module: pages of records are the simulator's hot path, so records are kept as
raw tuples and rendered straight to JSON text here (``json.dumps`` of floats would dominate
a page's cost); ``json.loads`` of that text gives exactly ``Universe.records()``.
"""

from __future__ import annotations

import calendar
import json
import time

_METRICS = (
    ("cpu_pct", "%"), ("mem_mb", "MiB"), ("latency_ms", "ms"), ("requests", "1/s"),
    ("errors", "1/s"), ("queue_depth", None), ("disk_used_gb", "GiB"),
)  # fmt: skip
_METRICS_JSON = tuple(
    (json.dumps(metric), "null" if unit is None else json.dumps(unit)) for metric, unit in _METRICS
)

_TS_BASE = calendar.timegm((2026, 11, 27, 8, 0, 0))
_TS_STEP_S = 300
_TS_SLOTS_PER_DAY = 24 * 3600 // _TS_STEP_S
_TS_CACHE: dict[int, str] = {}

_RawRecord = tuple[str, int, int | None, bool]


def _ts(slot: int) -> str:
    """RFC 3339 UTC text of the slot-th 5-minute step after the base time (memoised)."""
    text = _TS_CACHE.get(slot)
    if text is None:
        moment = time.gmtime(_TS_BASE + slot * _TS_STEP_S)
        text = _TS_CACHE[slot] = time.strftime("%Y-%m-%dT%H:%M:%SZ", moment)
    return text


def _thousandths(k: int) -> str:
    """JSON number text for k / 1000 (parses to exactly the float ``k / 1000``)."""
    whole, frac = divmod(abs(k), 1000)
    return f"{'-' if k < 0 else ''}{whole}.{frac:03d}"


def _records_json(raw: list[_RawRecord]) -> str:
    """JSON array text of raw records; json.loads gives exactly ``Universe.records()``."""
    parts = []
    for ts, m, k, has_unit in raw:
        metric, unit = _METRICS_JSON[m]
        value = "null" if k is None else _thousandths(k)
        parts.append(
            f'{{"ts":"{ts}","metric":{metric},"value":{value},"unit":{unit if has_unit else "null"}}}'
        )
    return "[" + ",".join(parts) + "]"


BAD_RECORD_KINDS = {
    "huge_int_value": False,
    "lowercase_ts": True,
    "missing_metric": False,
    "nan_value": False,
}
"""The ``bad_records`` defects, each mapped to whether the record still keeps the contract."""


def _bad_record_json(kind: str, record: _RawRecord) -> str:
    """JSON-ish text of one raw record altered by a ``bad_records`` defect (see SimConfig)."""
    ts, m, k, has_unit = record
    metric, unit = _METRICS_JSON[m]
    value = "null" if k is None else _thousandths(k)
    fields = {"ts": f'"{ts}"', "metric": metric, "value": value, "unit": unit if has_unit else "null"}
    if kind == "huge_int_value":
        fields["value"] = "1" + "0" * 400  # a JSON integer no float can hold
    elif kind == "lowercase_ts":
        fields["ts"] = f'"{ts.lower()}"'  # RFC 3339 allows "t" and "z": still valid
    elif kind == "missing_metric":
        del fields["metric"]
    elif kind == "nan_value":
        fields["value"] = "NaN"  # not JSON at all
    else:
        raise ValueError(f"unknown bad record kind {kind!r}")
    return "{" + ",".join(f'"{name}":{text}' for name, text in fields.items()) + "}"


def _records_json_bad_first(raw: list[_RawRecord], kind: str) -> str:
    """Like :func:`_records_json`, with the first record altered by ``kind``."""
    rest = _records_json(raw[1:])[1:-1]
    return "[" + _bad_record_json(kind, raw[0]) + ("," + rest if rest else "") + "]"
