"""Peer (a): the plain crawler, the straightforward script the talk started from.

One process, one ``ThreadPoolExecutor`` of the same total concurrency as fanout's stages
combined, one ``requests`` session: list warriors, then each warrior's troops, each
troop's data groups and each group's records (every page), and write one Parquet file per
data group straight to disk with fastparquet. No task objects, no done markers, no
resume: what it buys in speed is what fanout pays for durability.

It encodes each file with fanout's own ``records_to_parquet`` (the same columns, dtypes
and fastparquet options), under ``data/run=<run_id>/``, so ``fanout.audit`` reads its
output unchanged and the only differences left are the architecture and the file
granularity (one group per file here, ``units_per_task`` groups per file in fanout). A
hand-rolled ``pd.DataFrame.from_records`` + ``fastparquet.write`` measured about twice
as slow per file, which would have flattered fanout. With ``writer="pyarrow"`` (the
``plain-pyarrow`` peer, which needs requirements-bench.txt) the same crawler writes with
pyarrow, whose fixed cost per file is a tenth of fastparquet's.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter

from fanout_core.output import records_to_parquet

PAGE_SIZE = 100


class PlainCrawler:
    """Crawl everything under one thread pool; call :meth:`run` once."""

    def __init__(
        self,
        base_url: str,
        token: str,
        out_dir: str | Path,
        *,
        concurrency: int,
        run_id: str,
        writer: str = "fastparquet",
    ):
        self.writer = writer
        self.base = base_url.rstrip("/") + "/v1/"
        self.out = Path(out_dir) / "data" / f"run={run_id}"
        self.run_id = run_id
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=concurrency, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.session.trust_env = False
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="plain")
        self.fetched_at = datetime.now(UTC)
        self.calls = self.files = self.rows = 0
        self._lock = threading.Lock()
        self._pending = 0
        self._idle = threading.Condition(self._lock)
        self.errors: list[BaseException] = []

    # -- HTTP -----------------------------------------------------------------------------
    def get_all(self, *segments: str) -> list[dict[str, Any]]:
        """Every item of one list, following ``next_page_token`` until it is null."""
        url = self.base + "/".join(quote(s, safe="") for s in segments)
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {"page_size": PAGE_SIZE}
            if token:
                params["page_token"] = token
            page = self._get(url, params)
            items.extend(page["items"])
            token = page["next_page_token"]
            if token is None:
                return items

    def _get(self, url: str, params: dict[str, Any]) -> Any:
        for attempt in range(6):
            with self._lock:
                self.calls += 1
            try:
                resp = self.session.get(url, params=params, timeout=(3.05, 20))
            except requests.RequestException:
                time.sleep(random.uniform(0, 0.2 * 2**attempt))
                continue
            if resp.status_code == 200:
                return resp.json()
            if resp.status_code in (429, 500, 502, 503, 504):
                wait = resp.headers.get("Retry-After")
                time.sleep(float(wait) if wait and wait.isdigit() else random.uniform(0, 0.2 * 2**attempt))
                continue
            resp.raise_for_status()
        raise RuntimeError(f"{url}: still failing after 6 attempts")

    # -- the crawl ------------------------------------------------------------------------
    def submit(self, fn: Any, *args: Any) -> None:
        with self._lock:
            self._pending += 1
        future: Future[None] = self.pool.submit(fn, *args)
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            if future.exception() is not None:
                self.errors.append(future.exception())  # type: ignore[arg-type]
            self._pending -= 1
            if self._pending == 0:
                self._idle.notify_all()

    def run(self) -> None:
        for warrior in self.get_all("warriors"):
            self.submit(self.warrior, warrior["warrior_id"])
        with self._idle:
            while self._pending:
                self._idle.wait()
        self.pool.shutdown()
        if self.errors:
            raise self.errors[0]

    def warrior(self, warrior_id: str) -> None:
        for troop in self.get_all("warriors", warrior_id, "troops"):
            self.submit(self.troop, warrior_id, troop["troop_id"], troop["service"])

    def troop(self, warrior_id: str, troop_id: str, service: str) -> None:
        folder = self.out / f"warrior={quote(warrior_id, safe='')}" / f"troop={quote(troop_id, safe='')}"
        folder.mkdir(parents=True, exist_ok=True)
        for group in self.get_all("warriors", warrior_id, "troops", troop_id, "data_groups"):
            self.submit(self.group, warrior_id, troop_id, service, group["data_group_id"], folder)

    def group(self, warrior_id: str, troop_id: str, service: str, group_id: str, folder: Path) -> None:
        records = self.get_all("warriors", warrior_id, "troops", troop_id, "data_groups", group_id, "data")
        encode = pyarrow_parquet if self.writer == "pyarrow" else records_to_parquet
        body, n = encode(
            run_id=self.run_id,
            warrior_id=warrior_id,
            troop_id=troop_id,
            service=service,
            groups=[(group_id, records)],
            fetched_at=self.fetched_at,
        )
        (folder / f"group={quote(group_id, safe='')}.parquet").write_bytes(body)
        with self._lock:
            self.files += 1
            self.rows += n


def pyarrow_parquet(
    *,
    run_id: str,
    warrior_id: str,
    troop_id: str,
    service: str,
    groups: list[tuple[str, list[dict[str, Any]]]],
    fetched_at: datetime,
) -> tuple[bytes, int]:
    """The same columns as fanout's records_to_parquet, written with pyarrow.

    fastparquet spends about 12 ms of CPU per file whatever its size, pyarrow about
    1.3 ms: with one file per data group that fixed cost is most of the plain
    crawler's time, so this variant shows the architecture without it.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [(group_id, r) for group_id, records in groups for r in records]
    n = len(rows)
    ts_type = pa.timestamp("us", tz="UTC")
    table = pa.table(
        {
            "run_id": pa.array([run_id] * n, pa.string()),
            "warrior_id": pa.array([warrior_id] * n, pa.string()),
            "troop_id": pa.array([troop_id] * n, pa.string()),
            "service": pa.array([service] * n, pa.string()),
            "data_group_id": pa.array([g for g, _ in rows], pa.string()),
            "ts": pa.array([r["ts"] for _, r in rows], pa.string()).cast(ts_type),
            "metric": pa.array([r["metric"] for _, r in rows], pa.string()),
            "value": pa.array([r["value"] for _, r in rows], pa.float64()),
            "unit": pa.array([r.get("unit") for _, r in rows], pa.string()),
            "fetched_at": pa.array([fetched_at] * n, ts_type),
        }
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="snappy")
    return sink.getvalue().to_pybytes(), n


def run_peer(spec: dict[str, Any]) -> dict[str, Any]:
    """The peer entry point (see bench.common): crawl, write, report what was done."""
    crawler = PlainCrawler(
        spec["url"],
        spec["token"],
        spec["out_dir"],
        concurrency=int(spec["concurrency"]),
        run_id=spec["run_id"],
        writer=spec.get("writer", "fastparquet"),
    )
    crawler.run()
    return {"calls": crawler.calls, "files": crawler.files, "rows": crawler.rows, "ok": True}
