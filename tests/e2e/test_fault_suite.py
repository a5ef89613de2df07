"""The fault-injection suite: every fault at once through the real CLI, then redrive.

Injected together: 20% 5xx and 10% 429 from Hermes, hangs past the client's
timeout, ids that answer 404 (a warrior, a troop, a data group), duplicate event
delivery, transient storage failures, and the runtime killed with SIGKILL twice
mid-run (its worker processes with it). The rows must equal the simulator's truth
with nothing missing or doubled, and the failure records must name exactly the
ids made bad. Then the cause is cleared, ``fanout redrive`` runs, and the run must
be complete and exact.

A second server keeps changing its listings between fetches (a data group appears on odd
fetches of a troop's listing) and names an id twice in every listing, under the same
faults: the rows must equal the truth as of the listings the run kept (its plans).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

from fanout.audit import compare, output_rows
from fanout.simulator import SimConfig, Universe
from fanout_core.failures import FailureRecord
from fanout_core.storage import LocalDirStorage

from .conftest import fanout_cli
from .test_cli import _children, _finish, _manifest, _wait_for
from .test_hostile_api import kept_groups

CHAOS_ENV = {
    "hermes_rate_limit": 100000,
    "hermes_timeout_s": 0.3,
    "max_attempts": 10,
    "retry_base_delay_s": 0.02,
    "retry_max_delay_s": 0.3,
    "stages": {
        "warriors": {"reserved_concurrency": 2, "units_per_task": 2},
        "troops": {"reserved_concurrency": 4},
        "data_groups": {"reserved_concurrency": 6, "units_per_task": 4},
    },
}


def _bad_ids(universe: Universe) -> dict[str, str]:
    warriors = [w["warrior_id"] for w in universe.warriors()]
    troop = universe.troops(warriors[1])[2]["troop_id"]
    t3 = universe.troops(warriors[2])[3]["troop_id"]
    group = universe.data_groups(warriors[2], t3)[5]["data_group_id"]
    return {"warrior": warriors[0], "troop": troop, "data_group": group}


def test_every_fault_at_once_loses_nothing_writes_nothing_twice_and_redrive_completes(
    simulator, tmp_path: Path
):
    shape = {"warriors": 5, "troops_per_warrior": 6, "groups_per_troop": 10, "records_per_group": 12}
    clean = SimConfig.from_size("demo", token="e2e-token", awkward_ids=True, **shape)
    bad = _bad_ids(Universe(clean))
    faulty = SimConfig.from_size(
        "demo",
        token="e2e-token",
        awkward_ids=True,
        **shape,
        latency_s=0.002,
        error_rate_5xx=0.2,
        error_rate_429=0.1,
        hang_rate=0.01,
        hang_s=1.0,
        not_found_ids=frozenset(bad.values()),
        fault_seed=21,
    )
    config_file = tmp_path / "cdk.json"
    config_file.write_text(json.dumps({"context": {"environments": {"chaos": CHAOS_ENV}}}))
    bucket = tmp_path / "bucket"
    store = LocalDirStorage(bucket)
    manifest = _manifest(tmp_path, "chaos.json", {"warriors": "all"})
    common = ["--bucket-dir", str(bucket), "--env", "chaos", "--config", str(config_file)]
    run = ["local", "run", str(manifest), "--hermes-url", simulator(faulty), *common, "--json", "--quiet"]
    run += [
        "--processes",
        "2",
        "--duplicate-rate",
        "0.25",
        "--storage-fault-rate",
        "0.03",
        "--fault-seed",
        "8",
    ]

    groups = shape["warriors"] * shape["troops_per_warrior"] * shape["groups_per_troop"]
    tasks = groups // 4
    for threshold in (tasks // 6, tasks // 3):
        proc = fanout_cli(*run)
        _wait_for(lambda t=threshold: len(list(store.list("done/data_groups/"))) >= t, timeout=120)
        workers = _children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        _wait_for(lambda w=workers: not any(Path(f"/proc/{pid}").exists() for pid in w), timeout=10)

    code, out, err = _finish(fanout_cli(*run), timeout=300)
    assert code == 1, err  # finished, with failure records for the 404 ids
    summary = json.loads(out)
    rows, files = output_rows(store, "chaos")
    comparison = compare(rows, Universe(faulty).expected_rows(exclude_not_found=True))
    assert comparison.exact, comparison.summary()

    named: dict[str, str] = {}
    for key in store.list("failed/"):
        record = FailureRecord.from_bytes(store.get(key))
        assert (record.kind, record.status) == ("units", 404)
        for unit in record.units:
            level = "data_group" if "data_group_id" in unit else "troop" if "troop_id" in unit else "warrior"
            named[level] = unit[f"{level}_id"]
    assert named == bad

    code, out, err = _finish(
        fanout_cli("redrive", "chaos", "--hermes-url", simulator(clean), *common, "--json", "--quiet")
    )
    assert code == 0, err
    code, status_out, _ = _finish(fanout_cli("status", "chaos", *common, "--json"))
    assert code == 0
    assert json.loads(status_out)["complete"] is True
    rows, files = output_rows(store, "chaos")
    comparison = compare(rows, Universe(clean).expected_rows())
    assert comparison.exact, comparison.summary()
    print(
        "\nfault suite:",
        json.dumps(
            {
                "after kills, last run": {
                    k: summary[k] for k in ("api_calls", "throttled", "retries", "failure_records")
                },
                "failure records": len(named),
                "redrive": json.loads(out)["redrive"],
                "rows expected": comparison.expected,
                "rows found": comparison.found,
                "files": files,
            }
        ),
    )


def test_listings_that_change_and_repeat_ids_under_every_fault_give_the_kept_listings_rows(
    simulator, tmp_path: Path
):
    shape = {"warriors": 4, "troops_per_warrior": 5, "groups_per_troop": 8, "records_per_group": 10}
    hostile = SimConfig.from_size(
        "demo",
        token="e2e-token",
        awkward_ids=True,
        **shape,
        changing_listings=True,
        duplicate_ids=True,
        latency_s=0.002,
        error_rate_5xx=0.2,
        error_rate_429=0.1,
        fault_seed=33,
    )
    config_file = tmp_path / "cdk.json"
    config_file.write_text(json.dumps({"context": {"environments": {"chaos": CHAOS_ENV}}}))
    bucket = tmp_path / "bucket"
    store = LocalDirStorage(bucket)
    manifest = _manifest(tmp_path, "shifting.json", {"warriors": "all"})
    common = ["--bucket-dir", str(bucket), "--env", "chaos", "--config", str(config_file)]
    run = ["local", "run", str(manifest), "--hermes-url", simulator(hostile), *common, "--json", "--quiet"]
    run += ["--processes", "2", "--duplicate-rate", "0.25", "--storage-fault-rate", "0.03"]
    run += ["--fault-seed", "12"]

    proc = fanout_cli(*run)
    _wait_for(lambda: len(list(store.list("done/data_groups/"))) >= 10, timeout=120)
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    _wait_for(lambda w=workers: not any(Path(f"/proc/{pid}").exists() for pid in w), timeout=10)

    code, out, err = _finish(fanout_cli(*run), timeout=300)
    assert code == 0, err
    summary = json.loads(out)
    groups = kept_groups(store, "shifting")
    assert len(groups) == len(set(groups))  # no group planned twice, however often it was listed
    universe = Universe(hostile)
    extra_of = {}
    for w in universe.warriors():
        for t in universe.troops(w["warrior_id"]):
            extra = universe.extra_data_group(w["warrior_id"], t["troop_id"])
            assert extra is not None
            extra_of[(w["warrior_id"], t["troop_id"])] = extra["data_group_id"]
    kept_extras = [g for g in groups if extra_of[(g[0], g[1])] == g[2]]
    assert kept_extras, "no listing with the extra group was kept: the test shows nothing"
    rows, files = output_rows(store, "shifting")
    comparison = compare(rows, universe.expected_rows_for(groups))
    assert comparison.exact, comparison.summary()
    print(
        "\nshifting listings under faults:",
        json.dumps(
            {
                "groups kept": len(groups),
                "troops whose kept listing had the extra group": len(kept_extras),
                "duplicate ids": summary["duplicate_ids"],
                "rows": comparison.found,
                "files": files,
            }
        ),
    )
