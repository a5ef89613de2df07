"""Hermes' task bodies of the product's stage table, built the way the core builds them, for tests.

The core reads every body through its stage's ``TaskFormat`` (from the API description);
tests name Hermes' levels, so these helpers live here and nowhere in the product.
"""

from __future__ import annotations

from fanout_core.bodies import TaskBody, Unit
from fanout_core.stages import STAGES


def warrior(warrior_id: str) -> Unit:
    return Unit("warrior_id", warrior_id)


def troop(troop_id: str, service: str) -> Unit:
    return Unit("troop_id", troop_id, (("service", service),))


def data_group(data_group_id: str, name: str) -> Unit:
    return Unit("data_group_id", data_group_id, (("name", name),))


def warriors_part(run_id: str, warriors: tuple[str, ...]) -> TaskBody:
    return STAGES.named("warriors").body.make(run_id, (), tuple(warrior(w) for w in warriors))


def troops_task(run_id: str, warrior_id: str, troops: tuple[Unit, ...]) -> TaskBody:
    return STAGES.named("troops").body.make(run_id, (warrior(warrior_id),), troops)


def data_groups_task(
    run_id: str, warrior_id: str, troop_id: str, service: str, groups: tuple[Unit, ...]
) -> TaskBody:
    above = (warrior(warrior_id), Unit("troop_id", troop_id, (("service", service),)))
    return STAGES.named("data_groups").body.make(run_id, above, groups)
