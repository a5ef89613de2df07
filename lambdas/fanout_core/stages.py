"""The stage table: the one place that names the stages and their prefixes.

The CDK stack (functions, notification filters, IAM scopes), the local runtime
(dispatch by prefix) and the CLI (status, redrive) all read ``STAGES``.
"""

from __future__ import annotations

from dataclasses import dataclass

MANIFEST_PREFIX = "amazon_warriors/"
DATA_PREFIX = "data/"
DONE_PREFIX = "done/"
FAILED_PREFIX = "failed/"
ARCHIVE_PREFIX = "archive/"


@dataclass(frozen=True, kw_only=True)
class Stage:
    name: str
    input_prefix: str
    output_prefix: str
    handler: str
    """Dotted path of the Lambda entrypoint, ``module.function``."""
    writes_parquet: bool = False
    description: str = ""

    @property
    def function_id(self) -> str:
        return "".join(part.capitalize() for part in self.name.split("_"))


STAGES: tuple[Stage, ...] = (
    Stage(
        name="warriors",
        input_prefix=MANIFEST_PREFIX,
        output_prefix="troops/",
        handler="fanout_aws.handlers.warriors.handler",
        description="resolve the manifest's warriors, fetch their troops, one task per troop batch",
    ),
    Stage(
        name="troops",
        input_prefix="troops/",
        output_prefix="data_groups/",
        handler="fanout_aws.handlers.troops.handler",
        description="fetch each troop's data groups, one task per data-group batch",
    ),
    Stage(
        name="data_groups",
        input_prefix="data_groups/",
        output_prefix=DATA_PREFIX,
        handler="fanout_aws.handlers.data_groups.handler",
        writes_parquet=True,
        description="fetch each data group's records, write Parquet",
    ),
)

STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)


def stage_named(name: str) -> Stage:
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise KeyError(f"unknown stage {name!r}; stages are {', '.join(STAGE_NAMES)}")


def stage_for_key(key: str) -> Stage | None:
    """The stage an object at ``key`` triggers, as the bucket's notifications would."""
    for stage in STAGES:
        if key.startswith(stage.input_prefix) and key.endswith(".json"):
            return stage
    return None
