"""What the simulator serves and how badly it behaves, as one frozen, validated value.

Why its own module: the universe, the server and the CLI all read the same config, and a
child process (``run_in_subprocess``) receives it as JSON, so it must stand alone.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Literal

SIZES = ("tiny", "demo", "full")
RetryAfterFormat = Literal["seconds", "http-date"]


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    """Everything that decides what the simulator serves and how badly it behaves.

    Data knobs (``seed`` .. ``awkward_ids``) define the :class:`Universe`; the rest only
    shape the HTTP behaviour. Fault rates are shares of authenticated, non-health requests:
    one draw decides between injected 429, 5xx and garbage (so their sum must be <= 1);
    a separate draw decides whether to hang before answering.
    """

    seed: int = 7
    warriors: int = 5
    troops_per_warrior: int = 4
    groups_per_troop: int = 5
    records_per_group: int = 20
    vary_records: bool = False
    """Each group gets a deterministic 0..2*records_per_group records instead of exactly n."""
    empty_group_every: int = 0
    """When k > 0, every k-th data group (in crawl order, 1-based) has no records."""
    max_page_size: int = 1000
    default_page_size: int = 100
    awkward_ids: bool = False
    token: str = "sim-token"
    rate_limit: float | None = None
    """Requests per second per bearer token (token bucket); None means unlimited."""
    rate_burst: float | None = None
    """Bucket size; None means max(1, rate_limit / 10)."""
    retry_after_format: RetryAfterFormat = "seconds"
    error_rate_5xx: float = 0.0
    error_rate_429: float = 0.0
    garbage_rate: float = 0.0
    hang_rate: float = 0.0
    hang_s: float = 5.0
    latency_s: float = 0.0
    not_found_ids: frozenset[str] = frozenset()
    fault_seed: int | None = None

    def __post_init__(self) -> None:
        # Accept any iterable of ids (a CLI list, a set) but store a frozenset.
        if not isinstance(self.not_found_ids, frozenset):
            object.__setattr__(self, "not_found_ids", frozenset(self.not_found_ids))
        for name in ("warriors", "troops_per_warrior", "groups_per_troop", "records_per_group"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.empty_group_every < 0:
            raise ValueError("empty_group_every must be >= 0")
        if not 1 <= self.default_page_size <= self.max_page_size:
            raise ValueError(
                f"default_page_size must be in 1..max_page_size ({self.max_page_size}), "
                f"got {self.default_page_size}"
            )
        for name in ("error_rate_5xx", "error_rate_429", "garbage_rate", "hang_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.error_rate_429 + self.error_rate_5xx + self.garbage_rate > 1.0 + 1e-9:
            raise ValueError("error_rate_429 + error_rate_5xx + garbage_rate must be <= 1")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ValueError("rate_limit must be > 0 (or None for unlimited)")
        if self.rate_burst is not None and self.rate_burst < 1:
            raise ValueError("rate_burst must be >= 1")
        if self.retry_after_format not in ("seconds", "http-date"):
            raise ValueError("retry_after_format must be 'seconds' or 'http-date'")
        if self.hang_s < 0 or self.latency_s < 0:
            raise ValueError("hang_s and latency_s must be >= 0")
        if not self.token:
            raise ValueError("token must not be empty")

    @property
    def burst(self) -> float:
        """The effective bucket size (only meaningful with a rate limit)."""
        if self.rate_burst is not None:
            return self.rate_burst
        return max(1.0, (self.rate_limit or 0.0) / 10)

    @classmethod
    def from_size(cls, name: str, **overrides: Any) -> SimConfig:
        """A named preset, optionally with fields replaced.

        tiny: unit tests (49 calls, some groups empty or multi-record-varied);
        demo: a local demo run (2,511 calls); full: the talk's scale (51,051 calls).
        """
        presets: dict[str, dict[str, Any]] = {
            "tiny": dict(
                warriors=3,
                troops_per_warrior=3,
                groups_per_troop=4,
                records_per_group=6,
                vary_records=True,
                empty_group_every=5,
            ),
            "demo": dict(warriors=10, troops_per_warrior=10, groups_per_troop=24, records_per_group=24),
            "full": dict(warriors=50, troops_per_warrior=20, groups_per_troop=50, records_per_group=24),
        }
        if name not in presets:
            raise ValueError(f"unknown size {name!r}; choose one of {', '.join(SIZES)}")
        return cls(**{**presets[name], **overrides})

    def to_json(self) -> str:
        """Serialise for a child process (see :func:`run_in_subprocess`)."""
        data = dataclasses.asdict(self)
        data["not_found_ids"] = sorted(self.not_found_ids)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> SimConfig:
        data = json.loads(text)
        data["not_found_ids"] = frozenset(data.get("not_found_ids", ()))
        return cls(**data)
