"""Which settings a local command uses: an environment of a cdk.json file, and a ``--config``
file's values laid over it.

A ``--config`` file names only what it changes: a file holding just ``hermes_rate_limit``
keeps every other setting of the environment (it once reset ``units_per_task`` to 1, and a
run wrote 2,400 files instead of 100).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fanout_core import strict_json
from fanout_core.errors import SettingsError
from fanout_core.settings import EnvironmentSettings, parse_environment
from fanout_core.stages import STAGE_NAMES


def find_settings(
    env: str = "local", config: str | Path | None = None, stage_names: tuple[str, ...] = STAGE_NAMES
) -> EnvironmentSettings:
    """The environment ``env`` of ./cdk.json (else the project's), with ``config`` laid over it,
    for the stages ``stage_names`` (those of the run's table; the built-in's by default).

    ``config`` is a cdk.json (its ``context.environments.<env>``), an ``{"environments":
    {...}}`` object, or one environment's settings on their own. Settings it leaves out keep
    the environment's values; a stage it names keeps the stage settings it does not name.
    """
    base_file = next(
        (p for p in (Path("cdk.json"), Path(__file__).parents[1] / "cdk.json") if p.is_file()), None
    )
    environments = _environments(_read(base_file)) if base_file else {}
    raw: Mapping[str, Any] | None = environments.get(env)
    if config is not None:
        overlay = _overlay(Path(config), env)
        if overlay is None:
            raise SettingsError(f"settings file {config} has no environment {env!r}")
        raw = overlay_settings(raw or {}, overlay)
    if raw is None:
        if base_file is None and env == "local":
            raw = {}
        elif base_file is None:
            raise SettingsError(f"no cdk.json found to read environment {env!r} from")
        else:
            known = ", ".join(sorted(environments)) or "none"
            raise SettingsError(f"unknown environment {env!r}; environments in {base_file}: {known}")
    return parse_for(env, raw, stage_names)


def parse_for(env: str, raw: Any, stage_names: tuple[str, ...]) -> EnvironmentSettings:
    """``raw`` checked as the settings of the stages ``stage_names``. An environment's settings
    for the built-in description's stages apply to Hermes' runs only: a described API's run
    leaves them out (its own stages, named by its levels, take theirs or the defaults)."""
    stages = raw.get("stages") if isinstance(raw, Mapping) else None
    if stage_names != STAGE_NAMES and isinstance(stages, Mapping):
        kept = {k: v for k, v in stages.items() if k in stage_names or k not in STAGE_NAMES}
        raw = {**raw, "stages": kept}
    return parse_environment(env, raw, stage_names)


def overlay_settings(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with every value ``overlay`` names replaced; stages are merged one by one."""
    merged = {**base, **overlay}
    stages, extra = base.get("stages", {}), overlay.get("stages", {})
    if not (isinstance(stages, Mapping) and isinstance(extra, Mapping)) or not all(
        isinstance(m, Mapping) for m in (*stages.values(), *extra.values())
    ):
        raise SettingsError("stages, and each stage in it, must be an object of settings")
    merged["stages"] = {name: {**stages.get(name, {}), **extra.get(name, {})} for name in {*stages, *extra}}
    return merged


def _read(path: Path) -> Any:
    try:
        return strict_json.loads(path.read_text())
    except FileNotFoundError:
        raise SettingsError(f"settings file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise SettingsError(f"cannot read settings from {path}: {exc}") from None


def _environments(doc: Any) -> dict[str, Any]:
    """``context.environments`` of a cdk.json, or ``environments`` of a shorter file."""
    if isinstance(doc, Mapping) and isinstance(doc.get("context"), Mapping):
        doc = doc["context"]
    envs = doc.get("environments") if isinstance(doc, Mapping) else None
    return dict(envs) if isinstance(envs, Mapping) else {}


def _overlay(path: Path, env: str) -> Mapping[str, Any] | None:
    doc = _read(path)
    if not isinstance(doc, Mapping):
        raise SettingsError(f"settings file {path} must hold a JSON object")
    if "context" in doc or "environments" in doc:
        found = _environments(doc).get(env)
        if found is not None and not isinstance(found, Mapping):
            raise SettingsError(f"{path}: environments.{env} must be an object")
        return found
    return doc
