"""The command line as a careless user meets it: bad numbers, abbreviations, unknown flags."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from fanout.cli import build_parser

from .conftest import fanout_cli

# (invocation, the subcommand whose usage is shown, what the message names)
BAD_INVOCATIONS = [
    (["demo", "--rate-limit", "0"], "fanout demo", "--rate-limit"),
    (["demo", "--rate-limit", "-5"], "fanout demo", "--rate-limit"),
    (["demo", "--rate-limit", "fast"], "fanout demo", "--rate-limit"),
    (["demo", "--rate-limit", "nan"], "fanout demo", "--rate-limit"),
    (["demo", "--warriors-concurrency", "-1"], "fanout demo", "--warriors-concurrency"),
    (["demo", "--processes", "0"], "fanout demo", "--processes"),
    (["local", "run", "MANIFEST", "--data-groups-concurrency", "0"], "fanout local run", "concurrency"),
    (["local", "run", "MANIFEST", "--troops-concurrency", "2.5"], "fanout local run", "concurrency"),
    (["local", "run", "MANIFEST", "--duplicate-rate", "1.5"], "fanout local run", "--duplicate-rate"),
    (["local", "run", "MANIFEST", "--storage-fault-rate", "1"], "fanout local run", "--storage-fault-rate"),
    (["local", "run", "MANIFEST", "--rate-limit", "0"], "fanout local run", "--rate-limit"),
    (["local", "run", "MANIFEST", "--rate-limit", "-1"], "fanout local run", "--rate-limit"),
    (["local", "run", "MANIFEST", "--hermes", "http://127.0.0.1:9"], "fanout local run", "--hermes"),
    (
        ["local", "run", "MANIFEST", "--hermes-url", "http://127.0.0.1:9", "--bogus"],
        "fanout local run",
        "--bogus",
    ),
    (["status", "r1", "--stale-after", "-1"], "fanout status", "--stale-after"),
    (["status", "r1", "--show-pending", "many"], "fanout status", "--show-pending"),
    (["status", "r1", "--js"], "fanout status", "--js"),
    (["compact", "r1", "--target-mb", "0"], "fanout compact", "--target-mb"),
    (["hermes", "serve", "--port", "70000"], "fanout hermes serve", "--port"),
    (["hermes", "serve", "--rate-limit", "0"], "fanout hermes serve", "--rate-limit"),
    (["hermes", "serve", "--error-rate-5xx", "2"], "fanout hermes serve", "--error-rate-5xx"),
]


@pytest.mark.parametrize(
    ("argv", "usage_of", "named"), BAD_INVOCATIONS, ids=[" ".join(a) for a, _, _ in BAD_INVOCATIONS]
)
def test_a_bad_invocation_is_a_usage_error_of_its_own_subcommand(tmp_path: Path, argv, usage_of, named):
    """Exit 2, the subcommand's own usage, the option named, no traceback, nothing written."""
    manifest = tmp_path / "m1.json"
    manifest.write_text(json.dumps({"warriors": "all"}))
    bucket = tmp_path / "b"
    argv = [str(manifest) if a == "MANIFEST" else a for a in argv]
    if argv[0] != "hermes":
        argv += ["--bucket-dir", str(bucket)]
    proc = fanout_cli(*argv)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    assert f"usage: {usage_of} " in err
    assert named in err.splitlines()[-1]
    assert not bucket.exists()


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    out = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                out += _parsers(sub)
    return out


def test_every_parser_refuses_abbreviations_and_every_option_has_help():
    for parser in _parsers(build_parser()):
        assert parser.allow_abbrev is False, parser.prog
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, f"{parser.prog}: {action.option_strings or action.dest} has no help"


def test_the_top_level_help_is_whole_sentences_without_markup():
    proc = fanout_cli("--help")
    out, _err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "``" not in out and "`" not in out
    description = build_parser().description or ""
    assert description.rstrip().endswith(".")
    for command in ("demo", "local", "status", "redrive", "compact", "cost", "report", "hermes"):
        assert f"    {command} " in out
    assert max(len(line) for line in out.splitlines()) <= 100
