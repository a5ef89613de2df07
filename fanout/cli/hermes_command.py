"""``fanout hermes serve``: the bundled Hermes simulator on its own."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    from fanout import simulator

    hermes = sub.add_parser("hermes", help="the bundled Hermes simulator")
    hermes_sub = hermes.add_subparsers(dest="hermes_command", required=True)
    serve = hermes_sub.add_parser("serve", help="serve the simulated Hermes API")
    simulator.add_serve_arguments(serve)
    serve.set_defaults(run=_serve)


def _serve(args: argparse.Namespace) -> int:
    from fanout import simulator

    return simulator.serve_from_args(args)
