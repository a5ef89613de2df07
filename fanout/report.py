"""``fanout report``: one self-contained HTML page of a run, drawn from its bucket alone.

Four pictures (PNG, embedded as ``data:`` URIs, so the file opens anywhere offline):

- **calls per second over time against R**: each finished task's Hermes calls (as
  ``fanout.cost`` counts them) spread evenly over its measured seconds, ending at its
  done marker's ``finished_at``; the environment's rate limit drawn across.
- **tasks waiting per stage over time** (the talk's "queue depth"): a task object's
  write time (its last-modified) opens it, its done marker (or failure record) closes it.
- **failures by stage and error class**, 429s named: what the failure records say. A 429
  that a retry absorbed leaves no record in the bucket, so only the ones that failed a
  task are counted.
- **cost by component**: ``fanout cost``'s estimate.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter
from datetime import datetime
from typing import Any

from fanout import learned_limit
from fanout.cost import api_calls, cents, count_run, estimate, prices_for
from fanout_core import keys
from fanout_core.settings import EnvironmentSettings
from fanout_core.stages import STAGES, TASK_SUFFIX, StageTable
from fanout_core.storage import NoSuchKey, Storage


def _epoch(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _json(storage: Storage, key: str) -> dict[str, Any]:
    try:
        doc = json.loads(storage.get(key))
    except (NoSuchKey, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def collect(
    storage: Storage, run_id: str, settings: EnvironmentSettings, table: StageTable = STAGES
) -> dict[str, Any]:
    """Per task: stage, opened, closed, seconds, calls; and the failure records."""
    tasks: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for stage in table:
        found = [k for k in storage.list(stage.run_prefix(run_id)) if k.endswith(TASK_SUFFIX)]
        if stage is table.first and storage.exists(table.seed(run_id).key):
            found.insert(0, table.seed(run_id).key)
        for key in found:
            done = _json(storage, keys.done_key(key))
            failure = _json(storage, keys.failed_key(key))
            if failure:
                failures.append({"stage": stage.name, **failure})
            closed = _epoch(done.get("finished_at")) or _epoch(failure.get("last_attempt_at"))
            tasks.append(
                {
                    "stage": stage.name,
                    "opened": storage.last_modified(key),
                    "closed": closed,
                    "seconds": float(done.get("seconds", 0) or 0),
                    "calls": api_calls(storage, table, stage, key, done, settings.hermes_page_size, run_id),
                }
            )
    return {"tasks": tasks, "failures": failures}


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _figures(
    data: dict[str, Any], rate_limit: float, bill: dict[str, Any], stages: list[str]
) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    tasks = data["tasks"]
    times = [t for task in tasks for t in (task["opened"], task["closed"]) if t is not None]
    start = min(times) if times else 0.0
    end = max(times) if times else 1.0
    span = max(end - start, 1.0)
    step = max(span / 200, 0.05)
    edges = np.arange(0.0, span + step, step)
    figures: list[tuple[str, str]] = []

    calls = np.zeros(len(edges) - 1)
    for task in tasks:
        if task["closed"] is None or not task["calls"]:
            continue
        t1 = task["closed"] - start
        t0 = max(0.0, t1 - max(task["seconds"], 1e-3))
        lo, hi = np.searchsorted(edges, [t0, t1], side="right") - 1
        hi = min(max(hi, lo), len(calls) - 1)
        calls[lo : hi + 1] += task["calls"] / (hi - lo + 1)
    fig, ax = plt.subplots(figsize=(9, 3.2))
    ax.plot(edges[:-1], calls / step, drawstyle="steps-post", label="calls/s (from done markers)")
    ax.axhline(rate_limit, color="crimson", linestyle="--", label=f"R = {rate_limit:g}/s")
    ax.set_xlabel("seconds since the run's first task")
    ax.set_ylabel("calls per second")
    ax.legend(loc="upper right")
    figures.append(("Hermes calls per second over time, against R", _png(fig)))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 3.2))
    for name in stages:
        opened = sorted(t["opened"] - start for t in tasks if t["stage"] == name and t["opened"] is not None)
        closed = sorted(t["closed"] - start for t in tasks if t["stage"] == name and t["closed"] is not None)
        waiting = [
            np.searchsorted(opened, x, side="right") - np.searchsorted(closed, x, side="right") for x in edges
        ]
        ax.plot(edges, waiting, drawstyle="steps-post", label=name)
    ax.set_xlabel("seconds since the run's first task")
    ax.set_ylabel("tasks written, not finished")
    ax.legend(loc="upper right")
    figures.append(("Tasks waiting per stage over time (queue depth)", _png(fig)))
    plt.close(fig)

    kinds = Counter(
        (
            f["stage"],
            ("429 " if f.get("status") == 429 else "") + str(f.get("error_class", "?")),
            f.get("kind", "?"),
        )
        for f in data["failures"]
    )
    fig, ax = plt.subplots(figsize=(9, 2.8))
    if kinds:
        labels = [f"{s}: {e} ({k})" for s, e, k in kinds]
        ax.barh(labels, list(kinds.values()), color="darkorange")
        ax.set_xlabel("failure records")
    else:
        ax.text(0.5, 0.5, "no failure records: every task finished", ha="center", va="center", fontsize=13)
        ax.set_axis_off()
    throttled = sum(1 for f in data["failures"] if f.get("status") == 429)
    figures.append((f"Failures by stage and error class ({throttled} with status 429)", _png(fig)))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 3.0))
    lines = bill["lines"]
    ax.barh([li.component for li in lines], [float(li.cost) for li in lines], color="seagreen")
    ax.set_xlabel("USD")
    ax.invert_yaxis()
    figures.append((f"Estimated cost by component (total ${cents(bill['total'])})", _png(fig)))
    plt.close(fig)
    return figures


def render_report(
    storage: Storage,
    run_id: str,
    settings: EnvironmentSettings,
    region: str | None = None,
    table: StageTable = STAGES,
) -> str:
    data = collect(storage, run_id, settings, table)
    bill = estimate(
        count_run(storage, run_id, settings, table),
        prices_for(region or settings.region),
        settings.hermes_rate_limit,
        pacing=settings.pacing,
        engine=settings.engine,
    )
    figures = _figures(data, settings.hermes_rate_limit, bill, list(table.names))
    per_stage = Counter(t["stage"] for t in data["tasks"])
    server = bill["server"]
    summary = [
        ("run", run_id),
        ("environment (settings)", settings.name),
        ("tasks", ", ".join(f"{s} {per_stage[s]}" for s in table.names)),
        ("failure records", str(len(data["failures"]))),
        ("Hermes calls (estimated)", str(server["api_calls"])),
        (
            "estimated Lambda bill",
            f"${bill['total']:.4f} (prices as of {bill['prices_as_of']}, {bill['region']})",
        ),
        *(("rate limit", learned.line()) for learned in learned_limit.kept(storage)),
        (
            f"same crawl on {server['instance']}",
            f"on demand ${float(server['on_demand_crawl']):.4f}, Spot ${float(server['spot_crawl']):.4f}; "
            f"always on ${float(server['on_demand_day']):.2f}/day",
        ),
    ]
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in summary)
    body = "".join(
        f'<section><h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" src="{src}"></section>'
        for title, src in figures
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>fanout run {html.escape(run_id)}</title>"
        "<style>body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}"
        "th{text-align:left;padding-right:1.5em}img{max-width:100%}</style></head><body>"
        f"<h1>fanout run {html.escape(run_id)}</h1><table>{rows}</table>{body}"
        "<p><small>Drawn from the bucket alone by <code>fanout report</code>; method in fanout/report.py "
        "and fanout/cost.py.</small></p></body></html>"
    )
