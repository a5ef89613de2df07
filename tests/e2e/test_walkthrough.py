"""docs/describe-your-api.md's walkthrough, run exactly as written against json-server.

Its shell blocks and the files it has the reader write run in order as one bash script, in a
scratch folder that sees the repository's ``node_modules`` and ``docs``; the rows it crawls
are then compared, value for value, with the ``db.json`` json-server served."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
from datetime import datetime
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "describe-your-api.md"
_STEP = re.compile(r"<!-- walkthrough(?:: (shell)|-file: (\S+)) -->\s*\n```[a-z]*\n(.*?)\n```", re.S)


def _script() -> str:
    lines = ["set -euo pipefail", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT", "mkdir -p blog"]
    for shell, path, body in _STEP.findall(PAGE.read_text(encoding="utf-8")):
        if shell:
            lines.append(body)
        else:  # the reader writes this file with an editor
            lines.append(f"cat > {path} <<'WALKTHROUGH_EOF'\n{body}\nWALKTHROUGH_EOF")
    return "\n".join(lines) + "\n"


def test_the_walkthroughs_last_description_is_the_example_file() -> None:
    files = [body for _s, path, body in _STEP.findall(PAGE.read_text(encoding="utf-8")) if path]
    example = (ROOT / "docs/examples/blog/api.yaml").read_text(encoding="utf-8")
    assert example.split("\n", 1)[1] == files[-1] + "\n"


def test_the_walkthrough_runs_as_written_and_crawls_every_comment_exactly(tmp_path: Path) -> None:
    for name in ("node_modules", "docs"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "lambdas")])
    # Its own process group, killed once bash is done: json-server's node may be a child of
    # a wrapper that bash's trap kills, and would hold a pipe open; output goes to files.
    out_path, err_path = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with out_path.open("w") as out_file, err_path.open("w") as err_file:
        shell = subprocess.Popen(
            ["bash", "-c", _script()],
            cwd=tmp_path,
            env=env,
            stdout=out_file,
            stderr=err_file,
            start_new_session=True,
        )
        try:
            shell.wait(timeout=300)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(shell.pid, signal.SIGKILL)
    out, err = out_path.read_text(), err_path.read_text()
    assert shell.returncode == 0, out[-3000:] + err[-3000:]
    assert "ok   level comments:" in out and "columns:" in out
    assert "rows written   205" in out

    db = json.loads((ROOT / "docs/examples/blog/db.json").read_text(encoding="utf-8"))
    users = {u["id"]: u for u in db["users"]}
    posts = {p["id"]: p for p in db["posts"]}
    want = sorted(
        (
            str(posts[c["postId"]]["userId"]),
            users[posts[c["postId"]]["userId"]]["name"],
            str(c["postId"]),
            posts[c["postId"]]["title"],
            c["id"],
            c["body"],
            datetime.fromisoformat(c["created_at"].replace("Z", "+00:00")),
            float(c["rating"]),
            c["flagged"],
            c["likes"],
            c["author"]["name"],
            c["author"]["email"],
        )
        for c in db["comments"]
    )
    files = sorted((tmp_path / "blog/bucket/data/run=blog-1").glob("*.parquet"))
    frame = pd.concat([pd.read_parquet(f) for f in files])
    assert list(frame.columns) == [
        "run_id", "user_id", "user_name", "post_id", "title", "comment_id", "body", "created_at",
        "rating", "flagged", "likes", "author_name", "author_email", "fetched_at",
    ]  # fmt: skip
    assert set(frame["run_id"]) == {"blog-1"}
    found = sorted(
        (
            r.user_id, r.user_name, r.post_id, r.title, int(r.comment_id), r.body,
            r.created_at.to_pydatetime(), float(r.rating), bool(r.flagged), int(r.likes),
            r.author_name, None if pd.isna(r.author_email) else r.author_email,
        )
        for r in frame.itertuples()
    )  # fmt: skip
    assert found == want
