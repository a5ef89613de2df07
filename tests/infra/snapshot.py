"""Templates reduced to what must not change when the stack is made from a description.

``normalize`` keeps every resource's logical id, type and properties, and every output,
and drops only what is allowed to differ from the templates synthesized before issue 21:
asset hashes (the bundle now carries the description), and, on a stage's functions
(those with ``FANOUT_STAGE``), the handler (one entrypoint for every stage) and the
``FANOUT_STAGE``/``FANOUT_API`` variables; ``FANOUT_API`` goes from every function.

``python -m tests.infra.snapshot DIR`` rewrites ``tests/infra/snapshots/`` from the raw
templates in DIR (``<env>.json``): done once, from main before the change.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"
SNAPSHOT_ENVIRONMENTS = ("dev", "prod", "dev-queue", "dev-sfn", "prod-sfn")
ALLOWED_VARIABLES = ("FANOUT_STAGE", "FANOUT_API")
_ASSET_KEY = re.compile(r"^[0-9a-f]{64}\.zip$")


def _without_assets(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_assets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_assets(v) for v in value]
    if isinstance(value, str) and _ASSET_KEY.match(value):
        return "<asset>.zip"
    return value


def _function(props: dict[str, Any]) -> dict[str, Any]:
    props = dict(props)
    variables = dict(props.get("Environment", {}).get("Variables", {}))
    if "FANOUT_STAGE" in variables:
        props.pop("Handler", None)
    for name in ALLOWED_VARIABLES:
        variables.pop(name, None)
    if "Environment" in props:
        props["Environment"] = {**props["Environment"], "Variables": variables}
    return props


def normalize(template: dict[str, Any]) -> dict[str, Any]:
    resources = {}
    for logical_id, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::Lambda::Function":
            props = _function(props)
        resources[logical_id] = {"Type": resource["Type"], "Properties": props}
    return _without_assets({"Resources": resources, "Outputs": template.get("Outputs", {})})


def dumps(doc: dict[str, Any]) -> str:
    """One resource (or output) a line, keys sorted: small, and a change shows as its line."""
    lines = ["{"]
    for section_index, section in enumerate(("Resources", "Outputs")):
        lines.append(f" {json.dumps(section)}: {{")
        items = sorted(doc[section].items())
        for i, (key, value) in enumerate(items):
            comma = "," if i < len(items) - 1 else ""
            lines.append(f"  {json.dumps(key)}: {json.dumps(value, sort_keys=True)}{comma}")
        lines.append(" }" + ("," if section_index == 0 else ""))
    lines.append("}")
    return "\n".join(lines) + "\n"


def snapshot_path(env: str) -> Path:
    return SNAPSHOTS / f"{env}.json"


def main(raw_dir: str) -> None:
    SNAPSHOTS.mkdir(exist_ok=True)
    for env in SNAPSHOT_ENVIRONMENTS:
        raw = json.loads((Path(raw_dir) / f"{env}.json").read_text())
        snapshot_path(env).write_text(dumps(normalize(raw)))


if __name__ == "__main__":
    main(sys.argv[1])
