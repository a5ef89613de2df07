"""Where a run's S3 requests go: every storage call of one local run, counted as S3 bills it.

Not a timing benchmark: it counts requests, which do not depend on the machine. The local
runtime drives the same core as the Lambda handlers, so wrapping its storage counts what
the deployed functions would send for the same tasks (``S3Storage.exists`` is one HEAD, as
is ``last_modified``, both billed as a GET; ``list`` is one LIST per 1,000 keys;
``put``/``put_if_absent`` one PUT; ``get`` one GET)::

    python -m bench.s3_requests --size full --env dev

The run uses ``--env``'s settings (``units_per_task`` above all) with the rate limit lifted
and one process (leaf worker processes would open storage of their own, uncounted).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from fanout.settings_files import find_settings
from fanout.simulator import SimConfig, Universe, run_in_subprocess
from fanout.start_run import start_run
from fanout_core import keys
from fanout_core.bodies import manifest_body
from fanout_core.stages import STAGES
from fanout_core.storage import LocalDirStorage, Storage

TOKEN = "bench-token"
LIST_PAGE = 1000


def kind_of(key: str) -> str:
    """What an object is: a stage's task, a marker, a plan, output, compaction's."""
    markers = ((keys.DONE_PREFIX, "done"), (keys.FAILED_PREFIX, "failed"), (keys.PLANS_PREFIX, "plan"))
    for prefix, name in markers:
        if key.startswith(prefix):
            return name
    stage = STAGES.for_key(key)
    if stage is not None:
        return f"task {stage.name}"
    if key.startswith(STAGES.output_prefix_of(STAGES.leaf)):
        return "output"
    return "compaction/other"


class CountingStorage:
    """A storage wrapper that counts each call as the S3 request it would be, per kind of key."""

    def __init__(self, inner: Storage):
        self.inner = inner
        self.counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def _count(self, request: str, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[(kind_of(key), request)] += n

    def get(self, key: str) -> bytes:
        self._count("GET", key)
        return self.inner.get(key)

    def put(self, key: str, body: bytes) -> None:
        self._count("PUT", key)
        self.inner.put(key, body)

    def put_if_absent(self, key: str, body: bytes) -> bool:
        self._count("PUT", key)
        return self.inner.put_if_absent(key, body)

    def exists(self, key: str) -> bool:
        self._count("HEAD", key)
        return self.inner.exists(key)

    def last_modified(self, key: str) -> float | None:
        self._count("HEAD", key)
        return self.inner.last_modified(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def list(self, prefix: str) -> Iterator[str]:
        found = list(self.inner.list(prefix))
        self._count("LIST", prefix, max(1, -(-len(found) // LIST_PAGE)))
        return iter(found)


def measure(size: str, env: str, bucket_dir: str | None = None) -> dict[str, Any]:
    config = SimConfig.from_size(size, token=TOKEN)
    settings = find_settings(env, None)
    settings = replace(settings, hermes_rate_limit=100_000)
    universe = Universe(config)
    counting: list[CountingStorage] = []

    def wrap(storage: Storage) -> Storage:
        counting.append(CountingStorage(storage))
        return counting[-1]

    with tempfile.TemporaryDirectory() as scratch, run_in_subprocess(config) as url:
        outcome = start_run(
            LocalDirStorage(bucket_dir or scratch),
            settings,
            run_id="s3-requests",
            manifest=manifest_body(None),
            hermes_url=url,
            token=TOKEN,
            pacing=False,
            wrap_storage=wrap,
            processes=1,
        )
    counts = counting[0].counts
    rows: dict[str, dict[str, int]] = {}
    for (kind, request), n in sorted(counts.items()):
        rows.setdefault(kind, {})[request] = n
    put_list = sum(n for (_, r), n in counts.items() if r in ("PUT", "LIST"))
    return {
        "size": size,
        "env": env,
        "api_calls": universe.expected_calls(settings.hermes_page_size),
        "ok": outcome.ok,
        "by_kind": rows,
        "put_plus_list": put_list,
        "get": sum(n for (_, r), n in counts.items() if r in ("GET", "HEAD")),  # billed alike
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="full", choices=("tiny", "demo", "full"))
    parser.add_argument("--env", default="dev")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--bucket-dir", help="keep the run's bucket here (for `fanout cost`)")
    args = parser.parse_args(argv)
    result = measure(args.size, args.env, args.bucket_dir)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.size} crawl, env {args.env}: {result['api_calls']} API calls, ok={result['ok']}")
    print(f"  {'objects':<18} {'PUT':>7} {'LIST':>7} {'GET':>7} {'HEAD':>7}")
    for kind, row in result["by_kind"].items():
        counts = " ".join(f"{row.get(r, 0):>7}" for r in ("PUT", "LIST", "GET", "HEAD"))
        print(f"  {kind:<18} {counts}")
    print(f"  PUT + LIST {result['put_plus_list']}, GET + HEAD {result['get']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
