#!/usr/bin/env python3
"""CDK entry point: ``cdk synth|deploy -c env=NAME`` builds the one stack ``Fanout-NAME``.

Settings come from cdk.json's ``environments``; a bad one stops synthesis with a
message that names it, before any resource is built.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "lambdas"))
sys.path.insert(0, str(ROOT))

from fanout_core.errors import SettingsError  # noqa: E402
from stacks import build_app  # noqa: E402


def main() -> int:
    try:
        app, _stack = build_app()
    except SettingsError as exc:
        print(f"fanout: bad settings: {exc}", file=sys.stderr)
        return 2
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
