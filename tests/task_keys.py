"""Task keys of the product's stage table, built the way the core builds them, for tests.

Tests name stages and expected keys; the code under test never does (it reads the
stage table), so these helpers live here and nowhere in the product.
"""

from __future__ import annotations

from fanout_core import keys
from fanout_core.stages import STAGES


def manifest_key(run_id: str) -> str:
    return STAGES.seed(run_id).key


def warriors_part_key(run_id: str, index: int, redrive: int = 0) -> str:
    return STAGES.named("warriors").address(run_id, (), index).redriven(redrive).key


def troops_task_key(run_id: str, warrior_id: str, index: int, redrive: int = 0) -> str:
    return STAGES.named("troops").address(run_id, (warrior_id,), index).redriven(redrive).key


def data_groups_task_key(run_id: str, warrior_id: str, troop_id: str, index: int, redrive: int = 0) -> str:
    address = STAGES.named("data_groups").address(run_id, (warrior_id, troop_id), index)
    return address.redriven(redrive).key


def data_key_for_task(task_key: str) -> str:
    address = STAGES.parse(task_key)
    return address.output_key(STAGES.output_prefix_of(address.stage))


def run_id_of_task_key(key: str) -> str:
    return STAGES.parse(key).run_id


def redrive_key(task_key: str, redrive: int) -> str:
    return STAGES.parse(task_key).redriven(redrive).key


def run_prefix(stage_name: str, run_id: str) -> str:
    return STAGES.named(stage_name).run_prefix(run_id)


def parse_data_key(key: str) -> tuple[str, str, str]:
    """(run, warrior, troop) of a ``data/`` key, ids decoded."""
    parts = key.split("/")
    assert parts[0] + "/" == STAGES.output_prefix and len(parts) == 5, key
    run, warrior, troop = (p.split("=", 1)[1] for p in parts[1:4])
    return run, keys.decode_id(warrior), keys.decode_id(troop)
