"""A described API crawled through the real CLI from json-server (issue 23): a list that ends
short of its ``X-Total-Count`` fails its unit with ``incomplete_list``; every other unit's rows
are exact against the db json-server serves."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from fanout_core.api_description import load
from fanout_core.compaction import current_files
from fanout_core.output import read_parquet_bytes
from fanout_core.stages import table_for
from fanout_core.storage import LocalDirStorage

from .conftest import JsonServer, start_json_server
from .json_db import Db, children
from .processes import ROOT

API_FILE = Path(__file__).with_name("json_server_api.yaml")


def _cli(*args: str) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'lambdas'}"}
    argv = [sys.executable, "-m", "fanout", *args]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def _micros(stamp: str) -> int:
    return round(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1_000_000)


def _expected(db: Db, skip_post: int) -> Counter[tuple[Any, ...]]:
    owner = {post["id"]: post["userId"] for post in db["posts"]}
    return Counter(
        (str(owner[c["postId"]]), str(c["postId"]), c["id"], c["body"], _micros(c["created_at"]), c["rating"],
         c["flagged"], c["likes"], c["author"]["name"], c["author"]["email"])
        for c in db["comments"] if c["postId"] != skip_post
    )  # fmt: skip


def _found(bucket: Path, run_id: str) -> Counter[tuple[Any, ...]]:
    storage = LocalDirStorage(bucket)
    cols = ["user_id", "post_id", "comment_id", "body", "created_at", "rating", "flagged", "likes"]
    cols += ["author_name", "author_email"]
    found: Counter[tuple[Any, ...]] = Counter()
    for key in current_files(storage, run_id, table_for(load(API_FILE))):
        frame = read_parquet_bytes(storage.get(key))
        for row in frame[cols].itertuples(index=False, name=None):
            user, post, cid, body, created, rating, flagged, likes, name, email = row
            email = None if email is None or email != email else email
            micros = round(created.timestamp() * 1_000_000)
            ids = (str(user), str(post), int(cid))
            found[(*ids, body, micros, float(rating), bool(flagged), int(likes), name, email)] += 1
    return found


def _short_post(db: Db) -> int:
    """A post whose comments fill two pages (10 at ``_limit=5``)."""
    return next(p["id"] for p in db["posts"] if len(children(db, "comments", "postId", p["id"])) == 10)


def test_a_list_cut_short_of_its_total_fails_its_unit_and_the_other_rows_are_exact(
    json_db: Db, json_db_path: Path, tmp_path: Path
) -> None:
    post = _short_post(json_db)
    log = tmp_path / "json-server-short.log"
    with start_json_server(json_db_path, log, short=f"/posts/{post}/comments") as server:
        manifest = tmp_path / "r1.json"
        manifest.write_text('{"users": "all"}')
        bucket = tmp_path / "bucket"
        code, said = _cli(
            "local", "run", str(manifest), "--api", str(API_FILE), "--api-url", server.url,
            "--bucket-dir", str(bucket), "--quiet",
        )  # fmt: skip
    assert code == 1, said
    code, out = _cli("failures", "r1", "--api", str(API_FILE), "--bucket-dir", str(bucket), "--json")
    assert code == 1, out
    tasks = json.loads(out)["failures"]
    failed = [(unit["unit_id"], unit["error_kind"]) for task in tasks for unit in task["units"]]
    assert failed == [(str(post), "incomplete_list")]
    assert _found(bucket, "r1") == _expected(json_db, post)


def test_local_run_with_plan_samples_the_described_api(json_server: JsonServer, tmp_path: Path) -> None:
    manifest = tmp_path / "r2.json"
    manifest.write_text('{"users": "all"}')
    code, said = _cli(
        "local", "run", str(manifest), "--api", str(API_FILE), "--api-url", json_server.url,
        "--bucket-dir", str(tmp_path / "bucket"), "--plan", "--quiet", "--no-compact",
    )  # fmt: skip
    assert code == 0, said
    assert re.search(r"^fanout: plan: about [\d,]+ calls \([\d,]+-[\d,]+\), ~", said, re.MULTILINE), said
