"""Which settings a local command uses: an environment of a cdk.json file."""

from __future__ import annotations

from pathlib import Path

from fanout_core.errors import SettingsError
from fanout_core.settings import EnvironmentSettings, load_environment, parse_environment


def find_settings(env: str = "local", config: str | Path | None = None) -> EnvironmentSettings:
    """The environment from cdk.json: ``config``, else ./cdk.json, else the project's own."""
    candidates = [Path(config)] if config else [Path("cdk.json"), Path(__file__).parents[1] / "cdk.json"]
    for path in candidates:
        if path.is_file():
            return load_environment(env, path)
    if config:
        raise SettingsError(f"settings file {config} does not exist")
    if env != "local":
        raise SettingsError(f"no cdk.json found to read environment {env!r} from")
    return parse_environment("local", {})
