"""Per-invocation metrics as CloudWatch Embedded Metric Format: one JSON log line,
no API call, no extra dependency.

Dimensions ``Environment`` and ``Stage``: two environments in one account (dev and
prod) never add up into one line of a graph or one alarm.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from typing import TextIO

NAMESPACE = "Fanout"
METRIC_NAMES = (
    "Tasks",
    "ApiCalls",
    "Throttled429",
    "Retries",
    "Failures",
    "RecordsWritten",
    "ConfigurationErrors",
)
DIMENSIONS = ("Environment", "Stage")


def emf_line(
    environment: str, stage: str, values: Mapping[str, float], *, timestamp_ms: int | None = None
) -> str:
    unknown = set(values) - set(METRIC_NAMES)
    if unknown:
        raise ValueError(f"unknown metric(s): {sorted(unknown)}")
    doc = {
        "_aws": {
            "Timestamp": timestamp_ms if timestamp_ms is not None else int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [list(DIMENSIONS)],
                    "Metrics": [{"Name": name, "Unit": "Count"} for name in values],
                }
            ],
        },
        "Environment": environment,
        "Stage": stage,
        **{name: values[name] for name in values},
    }
    return json.dumps(doc, separators=(",", ":"))


def emit(environment: str, stage: str, values: Mapping[str, float], stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    out.write(emf_line(environment, stage, values) + "\n")
    out.flush()
