"""Resolved, hashed pins for the Lambda bundle and the dev/test environment, from one source.

``requirements.txt`` stays the loose list. ``python -m stacks.lock`` resolves it once,
with pip alone (``pip install --dry-run --report``, nothing installed), and writes two
files from that one resolution:

* ``requirements-lambda.lock``: every bundled distribution (the closure less what the
  Lambda runtime provides) as ``name==version`` with the sha256 of the wheel each
  target installs (``# target:`` lines name them: both Lambda architectures and every
  Python from 3.11 to the runtime's). The bundle is installed from it with
  ``--require-hashes``, and the asset hash covers its bytes.
* ``constraints.txt``: the same versions without hashes, plus the runtime-provided
  boto3 family, for ``make setup`` (``pip install -r requirements-dev.txt -c
  constraints.txt``), so the tests run the versions that are deployed.

Versions are picked for the oldest Python (the most constrained target: numpy 2.5
dropped 3.11, and a bundle of 2.5 would be tested against 2.4), then every other
target is resolved with those pins as constraints, so one version set holds for all
targets or the command fails. ``tests/infra/test_lock.py`` fails when the lock is
stale against ``requirements.txt`` or disagrees with what the test venv has installed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements.txt"
LOCK = ROOT / "requirements-lambda.lock"
CONSTRAINTS = ROOT / "constraints.txt"

Arch = Literal["aarch64", "x86_64"]
GLIBC_MINORS = range(17, 35)
"""manylinux_2_17 (the old manylinux2014) up to manylinux_2_34 (Amazon Linux 2023's glibc)."""

PROVIDED_BY_RUNTIME: frozenset[str] = frozenset({"boto3", "botocore", "s3transfer", "jmespath"})
"""Distributions the Lambda Python runtime ships; bundling them only adds size and
shadows the runtime's tested copies. urllib3, python-dateutil and six are also in
the runtime, but ``requests``/``pandas`` need them and the bundle brings its own."""

PYTHON_VERSIONS: tuple[str, ...] = ("3.11", "3.12", "3.13", "3.14")
"""pyproject's ``requires-python`` floor up to the Lambda runtime's: the bundle test
builds for this machine's Python, the stack for the runtime's."""
ARCHES: tuple[Arch, ...] = ("aarch64", "x86_64")
TARGETS: tuple[tuple[Arch, str], ...] = tuple((a, v) for v in PYTHON_VERSIONS for a in ARCHES)
"""Every (architecture, Python) the lock holds wheel hashes for; the first picks the versions."""

_TARGET_LINE = re.compile(r"^# target: (aarch64|x86_64) cp(\d+\.\d+)$")
_SOURCE_LINE = re.compile(r"^# source: requirements\.txt sha256=([0-9a-f]{64})$")
_PIN_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def normalize(name: str) -> str:
    """PEP 503 normalized distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def platform_tags(arch: Arch) -> list[str]:
    """Every manylinux tag Lambda's glibc accepts; pip needs them all spelled out."""
    return [f"manylinux_2_{minor}_{arch}" for minor in GLIBC_MINORS] + [f"manylinux2014_{arch}"]


def target_flags(arch: Arch, python_version: str) -> list[str]:
    """pip options that pick wheels for a Lambda platform instead of this machine's."""
    flags = ["--only-binary=:all:", "--implementation", "cp", "--python-version", python_version]
    for tag in platform_tags(arch):
        flags += ["--platform", tag]
    return flags


def requirement_lines(requirements: Path = REQUIREMENTS) -> list[str]:
    """The requirement lines, comments and blank lines dropped."""
    lines = (raw.split("#", 1)[0].strip() for raw in requirements.read_text().splitlines())
    return [line for line in lines if line]


def source_digest(requirements: Path = REQUIREMENTS) -> str:
    """What the lock was resolved from; a comment edit does not make it stale."""
    return hashlib.sha256("\n".join(requirement_lines(requirements)).encode()).hexdigest()


@dataclass(frozen=True)
class Lock:
    """What ``requirements-lambda.lock`` says: its source's digest, targets and pins."""

    source_sha256: str
    targets: tuple[tuple[str, str], ...]
    versions: dict[str, str]
    """Normalized name to exact version, bundled distributions only."""


def read_lock(path: Path = LOCK) -> Lock:
    source = ""
    targets: list[tuple[str, str]] = []
    versions: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if m := _SOURCE_LINE.match(line):
            source = m.group(1)
        elif m := _TARGET_LINE.match(line):
            targets.append((m.group(1), m.group(2)))
        elif m := _PIN_LINE.match(line):
            versions[normalize(m.group(1))] = m.group(2)
    return Lock(source_sha256=source, targets=tuple(targets), versions=versions)


def read_constraints(path: Path = CONSTRAINTS) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if m := _PIN_LINE.match(line):
            pins[normalize(m.group(1))] = m.group(2)
    return pins


@dataclass(frozen=True)
class Resolved:
    version: str
    sha256: str
    filename: str


def resolve(
    requirements: Path, arch: Arch, python_version: str, constraints: Path | None = None
) -> dict[str, Resolved]:
    """What pip would install for one target, without installing or downloading it all."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--quiet",
            "--disable-pip-version-check",
            "--ignore-installed",
            "--target",
            str(Path(tmp) / "target"),
            "--report",
            str(report),
            *target_flags(arch, python_version),
            "-r",
            str(requirements),
        ]
        if constraints is not None:
            command += ["-c", str(constraints)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"pip could not resolve {requirements.name} for {arch}/cp{python_version}:\n"
                f"{done.stderr[-4000:]}"
            )
        installs = json.loads(report.read_text())["install"]
    resolved = {}
    for item in installs:
        info = item["download_info"]
        resolved[normalize(item["metadata"]["name"])] = Resolved(
            version=item["metadata"]["version"],
            sha256=info["archive_info"]["hashes"]["sha256"],
            filename=info["url"].rsplit("/", 1)[-1],
        )
    return resolved


def render_lock(
    source_sha256: str, targets: Sequence[tuple[Arch, str]], per_target: Sequence[dict[str, Resolved]]
) -> str:
    lines = [
        "# Generated by `python -m stacks.lock` from requirements.txt: do not edit.",
        "# The Lambda bundle is installed from this file with --require-hashes.",
        f"# source: requirements.txt sha256={source_sha256}",
        *(f"# target: {arch} cp{version}" for arch, version in targets),
    ]
    names = sorted(set(per_target[0]) - PROVIDED_BY_RUNTIME)
    for name in names:
        hashes = sorted({resolved[name].sha256 for resolved in per_target})
        lines.append(f"{name}=={per_target[0][name].version} \\")
        lines += [f"    --hash=sha256:{h} \\" for h in hashes[:-1]]
        lines.append(f"    --hash=sha256:{hashes[-1]}")
    return "\n".join(lines) + "\n"


def render_constraints(pins: dict[str, Resolved]) -> str:
    lines = [
        "# Generated by `python -m stacks.lock` with requirements-lambda.lock: do not edit.",
        "# The dev/test venv installs these versions (make setup: -c constraints.txt), the",
        "# bundle's plus the boto3 family the Lambda runtime provides.",
        *(f"{name}=={pins[name].version}" for name in sorted(pins)),
    ]
    return "\n".join(lines) + "\n"


def generate(
    requirements: Path = REQUIREMENTS, lock: Path = LOCK, constraints: Path = CONSTRAINTS
) -> tuple[str, str]:
    """Resolve once for the first target, then every target under those pins; returns
    the (lock, constraints) texts after writing them."""
    first_arch, first_version = TARGETS[0]
    pins = resolve(requirements, first_arch, first_version)
    constraints_text = render_constraints(pins)
    per_target = [pins]
    with tempfile.TemporaryDirectory() as tmp:
        pinned = Path(tmp) / "constraints.txt"
        pinned.write_text(constraints_text)
        for arch, version in TARGETS[1:]:
            resolved = resolve(requirements, arch, version, constraints=pinned)
            if set(resolved) != set(pins):
                raise RuntimeError(
                    f"{arch}/cp{version} needs other distributions than {first_arch}/cp{first_version} "
                    f"({sorted(set(resolved) ^ set(pins))}); one lock cannot serve both"
                )
            per_target.append(resolved)
    lock_text = render_lock(source_digest(requirements), TARGETS, per_target)
    lock.write_text(lock_text)
    constraints.write_text(constraints_text)
    return lock_text, constraints_text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stacks.lock", description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    lock_text, _ = generate()
    count = sum(1 for line in lock_text.splitlines() if _PIN_LINE.match(line))
    print(f"{LOCK.name}: {count} pins for {len(TARGETS)} targets; {CONSTRAINTS.name} written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
