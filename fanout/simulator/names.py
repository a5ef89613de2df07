"""Ids and names of the simulated universe: the plain ones, the awkward templates, the words.

Why its own module: the awkward id templates are a contract test in themselves (together they
use every character an id may hold), and they read best on their own.
"""

from __future__ import annotations

import hashlib


def _stable_int(*parts: object) -> int:
    """A 64-bit hash of the parts that is the same in every process (unlike ``hash()``)."""
    text = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


_HEROES = (
    "Achilles", "Hector", "Ajax", "Diomedes", "Odysseus", "Penthesilea", "Aeneas",
    "Patroclus", "Hippolyta", "Leonidas", "Atalanta", "Memnon", "Sarpedon", "Nestor",
)  # fmt: skip
_SERVICES = (
    "auth", "billing", "catalog", "checkout", "inventory", "search", "shipping",
    "notifications", "ledger", "gateway", "profile", "recommendations", "pricing", "media",
)  # fmt: skip
_GROUP_KINDS = ("metrics", "latency", "errors", "capacity", "traffic", "saturation")

# Awkward id templates. Together they use every character the contract allows beyond
# [A-Za-z0-9] plus "%" and non-Latin scripts; the indices keep every id unique.
_AWKWARD_WARRIORS = (
    "Ωμέγα +{w}",
    "戦士 = {w}",
    "o'brien %20 {w}",
    "naïve+plus=eq {w}",
    "(sir) lancelot, {w}",
    "agent:{w}@hermes",
    "tilde~{w}_x.y-z",
    "Воин №{w}",
)
_AWKWARD_TROOPS = (
    "t+{w}.{t}",
    "трупа {w}-{t}",
    "svc=({w},{t})",
    "x~y:{w}@{t}",
    "it's {w} %2F {t}",
    "部隊 {w} {t}",
)
_AWKWARD_GROUPS = (
    "données {w}.{t}.{g}",
    "grp+{w}+{t}+{g}=",
    "(g) {w}, {t}, {g}",
    "ß@{w}:{t}:{g}",
    "~'{w}' {t} {g}%",
    "%25 {w} {t} {g}",
    "δεδομένα={w}={t}={g}",
)
