"""``fanout compact``, ``fanout cost`` and ``fanout report`` on real runs of the local runtime.

The cost test is a hand calculation: a tiny run's done markers get round ``seconds`` and
every figure is then worked out below, in the open, from the run's counts and the
price table, and compared to the cent (and to the last digit of the Decimal).
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import pytest

from fanout.audit import compare, normalize, output_rows
from fanout.cost import BUDGET_WRITES_PER_CALL, budget_writes_per_call, count_run, estimate, prices_for
from fanout.simulator import SimConfig, Universe
from fanout.start_run import start_run
from fanout_core import keys
from fanout_core.bodies import manifest_body
from fanout_core.compaction import current_files, read_current
from fanout_core.stages import STAGES
from fanout_core.storage import LocalDirStorage
from tests.core.test_fleet_budget import concurrent

from .conftest import ROOT, TOKEN, fast_settings

SECONDS = {"warriors": Decimal("0.0015"), "troops": Decimal("0.25"), "data_groups": Decimal("1.2004")}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fanout", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def tiny_run(simulator, tmp_path: Path) -> tuple[LocalDirStorage, SimConfig]:
    config = SimConfig.from_size("tiny", token=TOKEN, awkward_ids=True)
    store = LocalDirStorage(tmp_path / "bucket")
    start_run(
        store,
        fast_settings(),
        run_id="2026-11-27",
        manifest=manifest_body(None),
        hermes_url=simulator(config),
        token=TOKEN,
        compact=True,
    )
    return store, config


def test_a_run_compacted_at_its_end_reads_back_exact(tiny_run) -> None:
    store, config = tiny_run
    current = read_current(store, "2026-11-27")
    assert current is not None and len(current["files"]) == 1
    parquet = [k for k in store.list("data/") if k.endswith(".parquet")]
    assert parquet == [f["key"] for f in current["files"]]  # the small files are gone
    rows, files = output_rows(store, "2026-11-27")
    assert files == 1 and compare(rows, Universe(config).expected_rows()).exact


def test_a_plain_glob_over_a_compacted_runs_output_folder_reads_exactly_its_rows(tiny_run) -> None:
    import duckdb
    import pandas as pd

    from fanout_core.output import COLUMNS

    store, config = tiny_run
    folder = store.root / STAGES.output_run_prefix("2026-11-27")
    expected = list(Universe(config).expected_rows())
    [(count,)] = duckdb.sql(f"SELECT count(*) FROM read_parquet('{folder}/**/*.parquet')").fetchall()
    assert count == len(expected)
    frame = pd.read_parquet(folder)
    assert tuple(frame.columns) == COLUMNS  # no column made of a folder name
    cols = ["warrior_id", "troop_id", "service", "data_group_id", "ts", "metric", "value", "unit"]
    rows = [normalize(r) for r in frame[cols].itertuples(index=False, name=None)]
    assert compare(rows, expected).exact


def test_the_cli_compacts_once_and_refuses_an_incomplete_run(simulator, tmp_path: Path) -> None:
    config = SimConfig.from_size("tiny", token=TOKEN)
    bucket = tmp_path / "bucket"
    done = _cli(
        "demo", "--size", "tiny", "--run-id", "r1", "--bucket-dir", str(bucket), "--quiet", "--no-compact"
    )
    assert done.returncode == 0, done.stderr
    store = LocalDirStorage(bucket)
    assert read_current(store, "r1") is None and len(current_files(store, "r1")) == 9
    first = _cli("compact", "r1", "--bucket-dir", str(bucket), "--json")
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["state"] == "compacted" and doc["inputs"] == 9 and len(doc["files"]) == 1
    assert doc["rows"] == len(list(Universe(config).expected_rows()))
    again = _cli("compact", "r1", "--bucket-dir", str(bucket))
    assert again.returncode == 0 and "already compacted" in again.stdout
    store.put(STAGES.leaf.address("r2", ("w", "t"), 0).key, b"{}")
    store.put(STAGES.seed("r2").key, b'{"warriors": "all"}')
    refused = _cli("compact", "r2", "--bucket-dir", str(bucket))
    assert refused.returncode == 3 and "not complete" in refused.stderr


def _fix_seconds(store: LocalDirStorage, run_id: str) -> None:
    for stage in STAGES:
        for marker in store.list(keys.done_key(stage.run_prefix(run_id))):
            doc = json.loads(store.get(marker))
            doc["seconds"] = float(SECONDS[stage.name])
            store.put(marker, json.dumps(doc).encode())
    seed = STAGES.seed(run_id).done_key
    doc = json.loads(store.get(seed))
    doc["seconds"] = float(SECONDS["warriors"])
    store.put(seed, json.dumps(doc).encode())


def test_cost_equals_a_hand_calculation_to_the_cent(tiny_run) -> None:
    store, config = tiny_run
    _fix_seconds(store, "2026-11-27")
    settings = fast_settings()
    prices = prices_for("us-east-1")
    counts = count_run(store, "2026-11-27", settings)
    bill = estimate(counts, prices, rate_limit=50, pacing=settings.pacing)

    # The run's counts (tiny: 3 warriors x 3 troops x 4 groups; 2 warriors, 1 troop, 3 groups per task).
    by = {s.stage: s for s in counts.stages}
    assert [(s.tasks, s.invocations) for s in counts.stages] == [(1 + 2, 3), (9, 9), (9 * 2, 18)]
    children = {"warriors": 2 + 9, "troops": 18}  # parts of the seed + troop tasks; group tasks
    files, records = 18, len(list(Universe(config).expected_rows()))
    assert [by[n].memory_mb for n in ("warriors", "troops", "data_groups")] == [512, 512, 512]

    # Lambda: 30 invocations; ms rounded up per task; GB-s = s x MB / 1024.
    invocations = 3 + 9 + 18
    gb_s = (
        3 * Decimal("0.002") * 512 / 1024  # 1.5 ms bills as 2 ms
        + 9 * Decimal("0.250") * 512 / 1024
        + 18 * Decimal("1.201") * 512 / 1024  # 1200.4 ms bills as 1201 ms
    )
    assert gb_s == Decimal("0.003") + Decimal("1.125") + Decimal("10.809")
    # S3: per task 1 GET + the done PUT; listing tasks HEAD twice (done marker, plan) and PUT
    # a plan and their children; leaf tasks HEAD once (done marker: a first attempt does not
    # ask whether its file exists) and PUT their files; the seed's upload; compaction GETs
    # each input twice and PUTs a plan, one output, current.json and the Athena manifest.
    # A HEAD is billed as a GET; no task LISTs.
    heads = 2 * (3 + 9) + 18
    lists = 0
    puts = invocations + (3 + 9) + children["warriors"] + children["troops"] + files + 1 + (1 + 1 + 2)
    gets = invocations + heads + 2 * 18
    secrets = min(3, 2) + min(9, 4) + min(18, 6)  # a cold start per concurrent instance
    stored = counts.stored_bytes
    assert stored == sum(f.stat().st_size for f in store.root.rglob("*") if f.is_file())  # every object
    hand = (
        invocations * Decimal("0.0000002")
        + gb_s * Decimal("0.0000133334")
        + (puts + lists) * Decimal("0.005") / 1000
        + gets * Decimal("0.0004") / 1000
        + Decimal(stored) / 1024**3 * Decimal("0.023")
        + 0 * Decimal("0.40") / 1_000_000  # no retries
        + secrets * Decimal("0.05") / 10_000
    )
    lines = {li.component: li for li in bill["lines"]}
    assert lines["Lambda requests"].quantity == invocations
    assert lines["Lambda duration"].quantity == gb_s
    assert lines["S3 PUT + LIST"].quantity == puts + lists
    assert lines["S3 GET"].quantity == gets
    assert lines["Secrets Manager"].quantity == secrets
    assert bill["total"] == hand
    assert round(bill["total"], 2) == round(hand, 2)
    # The server: N / R seconds, at least a minute, per-second billing.
    calls = Universe(config).expected_calls(settings.hermes_page_size)
    assert bill["server"]["api_calls"] == calls == 1 + 3 + 9 + 36
    assert bill["server"]["billed_s"] == 60  # 49 calls / 50 per s < the 60 s minimum
    assert bill["server"]["on_demand_crawl"] == Decimal(60) / 3600 * Decimal("0.0168")
    assert records > 0


def test_cost_with_pacing_shared_adds_the_budget_tables_writes(tiny_run) -> None:
    store, _ = tiny_run
    settings = fast_settings()
    counts = count_run(store, "2026-11-27", settings)
    prices = prices_for("us-east-1")
    static = estimate(counts, prices, rate_limit=50, pacing="static")
    shared = estimate(counts, prices, rate_limit=50, pacing="shared")
    (budget,) = [li for li in shared["lines"] if li.component.startswith("DynamoDB")]
    assert not [li for li in static["lines"] if li.component.startswith("DynamoDB")]
    assert budget.quantity == counts.api_calls * Decimal("0.122") > 0  # R 50: dev's measured shape
    assert budget.cost == budget.quantity * Decimal("0.625") / 1_000_000
    assert shared["total"] == static["total"] + budget.cost


def test_the_budget_writes_per_call_are_those_of_the_measured_shape_nearest_the_runs_r() -> None:
    assert budget_writes_per_call(50.0) == Decimal("0.122")  # dev, dev-queue, dev-sfn
    assert budget_writes_per_call(500.0) == Decimal("0.169")  # prod, prod-sfn
    assert budget_writes_per_call(100.0) == Decimal("0.122")  # nearer 50 than 500 by ratio


@pytest.mark.parametrize("shape", BUDGET_WRITES_PER_CALL, ids=lambda s: s.env)
def test_the_cost_models_budget_writes_hold_a_fake_clock_fleet_of_their_shape(shape) -> None:
    """The figure the bill uses is no lower than what a fleet of the shape leasing on the
    fake clock writes (Hermes 30-80 ms plus 5 ms of work a call): a lease that got
    costlier fails here. Nor more than 1.5 times it (the bench's threads on one machine,
    its failed guesses and cuts): a lease that got cheaper must be measured again."""
    sent, store = concurrent(shape.bench_instances, shape.bench_rate, 4_000, latency=(0.035, 0.085))
    fake = Decimal(store.writes) / len(sent)
    assert fake <= shape.writes_per_call <= Decimal("1.5") * fake


def test_cost_with_the_queue_engine_adds_three_sqs_requests_per_invocation(tiny_run) -> None:
    store, _ = tiny_run
    counts = count_run(store, "2026-11-27", fast_settings())
    prices = prices_for("us-east-1")
    events = estimate(counts, prices, rate_limit=50, pacing="static")
    queue = estimate(counts, prices, rate_limit=50, pacing="static", engine="queue")
    (retries,) = [li for li in events["lines"] if li.component == "SQS retries"]
    (messages,) = [li for li in queue["lines"] if li.component == "SQS messages"]
    assert retries.quantity == 3 * counts.total("retries") == 0
    assert messages.quantity == 3 * counts.total("invocations") == 3 * (3 + 9 + 18)
    assert queue["total"] == events["total"] + messages.cost


def test_cost_prints_text_and_json_and_takes_price_overrides(tiny_run, tmp_path: Path) -> None:
    store, _ = tiny_run
    bucket = str(store.root)
    text = _cli("cost", "2026-11-27", "--bucket-dir", bucket)
    assert text.returncode == 0, text.stderr
    assert "Lambda duration" in text.stdout and "Spot" in text.stdout and "as of 2025-01" in text.stdout
    assert "DynamoDB budget" in text.stdout  # --env dev (the default) paces shared
    plain = json.loads(_cli("cost", "2026-11-27", "--bucket-dir", bucket, "--json").stdout)
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"lambda_request": 0.0001}))
    dearer = json.loads(
        _cli("cost", "2026-11-27", "--bucket-dir", bucket, "--json", "--prices", str(prices)).stdout
    )

    def requests(doc: dict) -> dict:
        return next(c for c in doc["components"] if c["component"] == "Lambda requests")

    budget = next(c for c in plain["components"] if c["component"] == "DynamoDB budget (est.)")
    assert budget["unit"] == "write units" and budget["cost_usd"] > 0

    invocations = requests(plain)["quantity"]
    assert requests(dearer)["cost_usd"] == pytest.approx(invocations * 0.0001)
    prices.write_text(json.dumps({"no_such_price": 1}))
    bad = _cli("cost", "2026-11-27", "--bucket-dir", bucket, "--prices", str(prices))
    assert bad.returncode == 2 and "unknown price" in bad.stderr


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.headings: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs)["src"] or "")
        self._in_h2 = tag == "h2"

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self.headings.append(data.strip())
            self._in_h2 = False


def test_the_report_renders_self_contained(tiny_run, tmp_path: Path) -> None:
    import matplotlib.image

    store, _ = tiny_run
    out = tmp_path / "report.html"
    done = _cli("report", "2026-11-27", "--bucket-dir", str(store.root), "--output", str(out))
    assert done.returncode == 0, done.stderr
    html = out.read_text()
    assert not re.search(r"""(src|href)=["'](https?:|//|file:)""", html)  # nothing fetched from elsewhere
    parser = _Images()
    parser.feed(html)
    assert len(parser.images) >= 4
    assert any("calls per second" in h for h in parser.headings)
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        png = tmp_path / "figure.png"
        png.write_bytes(base64.b64decode(src.split(",", 1)[1]))
        pixels = matplotlib.image.imread(png)
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100


@pytest.mark.parametrize("compact", [True, False], ids=["compacted", "not-compacted"])
def test_the_summary_and_status_name_the_folder_that_holds_the_rows_and_its_files(
    tmp_path: Path, compact: bool
) -> None:
    bucket = tmp_path / "bucket"
    flags = [] if compact else ["--no-compact"]
    done = _cli(
        "demo", "--size", "tiny", "--run-id", "r1", "--bucket-dir", str(bucket), "--quiet", "--json", *flags
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    folder = Path(doc["output"])
    files = sorted(folder.rglob("*.parquet"))
    assert doc["output"] == f"{bucket.resolve()}/{STAGES.output_run_prefix('r1')}"
    assert doc["output_files"] == len(files) == (1 if compact else 9)
    status = _cli("status", "r1", "--bucket-dir", str(bucket))
    assert f"data files: {len(files)} in {STAGES.output_run_prefix('r1')}" in status.stdout


def test_a_plain_glob_over_a_run_not_compacted_reads_exactly_its_rows(simulator, tmp_path: Path) -> None:
    import duckdb
    import pandas as pd

    config = SimConfig.from_size("tiny", token=TOKEN, awkward_ids=True)
    store = LocalDirStorage(tmp_path / "bucket")
    start_run(
        store,
        fast_settings(),
        run_id="r1",
        manifest=manifest_body(None),
        hermes_url=simulator(config),
        token=TOKEN,
        compact=False,
    )
    folder = store.root / STAGES.output_run_prefix("r1")
    expected = list(Universe(config).expected_rows())
    [(count,)] = duckdb.sql(f"SELECT count(*) FROM read_parquet('{folder}/**/*.parquet')").fetchall()
    assert count == len(expected)
    frame = pd.read_parquet(folder)  # the warrior= and troop= folders add two columns
    cols = ["warrior_id", "troop_id", "service", "data_group_id", "ts", "metric", "value", "unit"]
    rows = [normalize(r) for r in frame[cols].itertuples(index=False, name=None)]
    assert compare(rows, expected).exact
