"""Each task attempt logs one line whose fields are top-level keys of Lambda's JSON log
format (``logging`` ``extra=``), and one EMF line with an ``Environment`` dimension."""

from __future__ import annotations

import json

import task_keys

from fanout_aws.s3_event import s3_event_for
from fanout_core.bodies import manifest_body

from .conftest import BUCKET, invoke

FIELDS = ("run_id", "stage", "task_key", "attempt", "outcome", "calls", "seconds")


def test_a_finished_task_logs_its_fields_as_keys(deployment, monkeypatch, caplog):
    dep = deployment()
    seed = task_keys.manifest_key("logs")
    dep.storage.put(seed, manifest_body(None))
    with caplog.at_level("INFO", logger="fanout"):
        invoke("warriors", s3_event_for(BUCKET, [seed]), monkeypatch, dep)
    (line,) = [r for r in caplog.records if getattr(r, "task_key", None) == seed]
    values = {name: getattr(line, name) for name in FIELDS}
    assert values["run_id"] == "logs" and values["stage"] == "warriors"
    assert values["attempt"] == 1 and values["outcome"] == "finished"
    assert values["calls"] >= 1 and values["seconds"] >= 0


def test_a_retried_task_logs_its_error_kind(deployment, monkeypatch, caplog):
    dep = deployment()
    seed = task_keys.manifest_key("logs-retry")
    dep.storage.put(seed, manifest_body(None))
    dep.sim.stop()
    with caplog.at_level("INFO", logger="fanout"):
        invoke("warriors", s3_event_for(BUCKET, [seed]), monkeypatch, dep)
    (line,) = [r for r in caplog.records if getattr(r, "task_key", None) == seed]
    assert line.outcome == "retry"
    assert line.error_kind == "connection_refused"


def test_emf_lines_carry_the_environment_dimension(deployment, monkeypatch, capsys):
    dep = deployment()
    seed = task_keys.manifest_key("emf")
    dep.storage.put(seed, manifest_body(None))
    invoke("warriors", s3_event_for(BUCKET, [seed]), monkeypatch, dep)
    (doc,) = [json.loads(x) for x in capsys.readouterr().out.splitlines() if '"_aws"' in x]
    assert doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Environment", "Stage"]]
    assert doc["Environment"] == "test" and doc["Stage"] == "warriors"
