"""The db.json that json-server serves in the tests: users -> posts -> comments.

Generated, not checked in, so that its shape is stated in one place and a test can vary it;
deterministic (one seed), so a failure reproduces. It carries the field types a description
of an API must map to columns (ids, names, bodies with quotes, newlines and non-ASCII text,
RFC 3339 timestamps with and without fractions, floats, booleans, nullable fields, nested
objects and a list) and the shapes that break pagination: a parent with no children, one
with exactly one or two full pages (5 or 10 at ``_limit=5``) and the largest counts.

The arrays are shuffled, so a child list is a real filter by foreign key (``userId``,
``postId``) and the order json-server answers in is the order of the arrays here, not by id.
One post's ``score`` is ``3.0``: json-server, being JavaScript, serves it as ``3``.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

SEED = 21
USERS = 7
MAX_POSTS = 9
MAX_COMMENTS = 12
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
NAMES = ("Zoë Ångström", "José O'Brien", "李小龍", "Ada Lovelace", 'Bob "the" Builder', "Émile Zola", "Nadia")
CITIES = ("Zürich", "Kraków", "東京", "São Paulo", "Reykjavík")
WORDS = ("alpha", "beta", "gamma", "δέλτα", "epsilon", "zeta", "ήτα", "theta", "iota", "kappa")

Db = dict[str, list[dict[str, Any]]]


def generate_db(
    seed: int = SEED, users: int = USERS, max_posts: int = MAX_POSTS, max_comments: int = MAX_COMMENTS
) -> Db:
    """users, posts and comments; the first users and posts get the edge-case counts."""
    rng = random.Random(seed)
    db: Db = {"users": [], "posts": [], "comments": []}
    post_counts = _counts(rng, users, max_posts, (0, max_posts, 5, 1))
    for uid, posts in enumerate(post_counts, start=1):
        db["users"].append(_user(rng, uid))
        for _ in range(posts):
            db["posts"].append(_post(rng, len(db["posts"]) + 1, uid))
    comment_counts = _counts(rng, len(db["posts"]), max_comments, (0, max_comments, 10, 5, 1))
    for pid, comments in enumerate(comment_counts, start=1):
        for _ in range(comments):
            db["comments"].append(_comment(rng, len(db["comments"]) + 1, pid))
    if db["posts"]:
        db["posts"][-1]["score"] = 3.0
    for items in db.values():
        rng.shuffle(items)
    return db


def children(db: Db, resource: str, parent_key: str, parent_id: int) -> list[dict[str, Any]]:
    """The items json-server's nested route ``/<parents>/<id>/<resource>`` answers, in order."""
    return [item for item in db[resource] if item[parent_key] == parent_id]


def _counts(rng: random.Random, n: int, most: int, edges: tuple[int, ...]) -> list[int]:
    counts = [rng.randint(0, most) for _ in range(n)]
    for i, edge in enumerate(e for e in edges if e <= most):
        if i < n:
            counts[i] = edge
    return counts


def _stamp(rng: random.Random, fraction: bool) -> str:
    moment = EPOCH + timedelta(seconds=rng.randint(0, 300 * 86400), milliseconds=rng.randint(0, 999))
    if fraction:
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def _user(rng: random.Random, uid: int) -> dict[str, Any]:
    name = NAMES[(uid - 1) % len(NAMES)]
    return {
        "id": uid,
        "name": name,
        "email": f"user{uid}@example.test",
        "joined_at": _stamp(rng, fraction=False),
        "karma": round(rng.uniform(-50, 500), 3),
        "active": rng.random() < 0.7,
        "address": {
            "city": rng.choice(CITIES),
            "geo": {"lat": round(rng.uniform(-90, 90), 6), "lng": round(rng.uniform(-180, 180), 6)},
        },
    }


def _post(rng: random.Random, pid: int, uid: int) -> dict[str, Any]:
    return {
        "id": pid,
        "userId": uid,
        "title": _text(rng, 3).title(),
        "body": f'{_text(rng, 8)}\n"{_text(rng, 2)}" — {_text(rng, 3)}',
        "published_at": _stamp(rng, fraction=False),
        "edited_at": _stamp(rng, fraction=True) if rng.random() < 0.4 else None,
        "score": round(rng.uniform(0, 5), 2),
        "draft": rng.random() < 0.2,
        "meta": {"tags": rng.sample(WORDS, rng.randint(0, 3)), "words": rng.randint(10, 2000)},
    }


def _comment(rng: random.Random, cid: int, pid: int) -> dict[str, Any]:
    author = rng.choice(NAMES)
    return {
        "id": cid,
        "postId": pid,
        "body": _text(rng, rng.randint(1, 12)),
        "created_at": _stamp(rng, fraction=True),
        "rating": round(rng.uniform(-1, 1), 4),
        "flagged": rng.random() < 0.1,
        "likes": rng.randint(0, 250),
        "author": {"name": author, "email": None if rng.random() < 0.3 else f"{cid}@mail.example.test"},
    }
