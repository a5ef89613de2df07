"""The learned limit's record, for the CLI and the local runtime: ``fanout_core.learned_limit``
is its one source (the Lambda runtime reads and writes it too)."""

from fanout_core.learned_limit import (
    MAX_BYTES,
    PREFIX,
    LearnedLimit,
    kept,
    key_for,
    read,
    start_rate,
    write,
)

__all__ = ["MAX_BYTES", "PREFIX", "LearnedLimit", "kept", "key_for", "read", "start_rate", "write"]
