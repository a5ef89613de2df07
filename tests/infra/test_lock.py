"""The pins: one resolution of requirements.txt for the bundle and the test venv alike.

A lock left stale after requirements.txt changed, a constraints file that drifted
from the lock, or a test venv running other versions than the bundle ships (numpy
2.4 tested, 2.5 deployed) fails here; ``python -m stacks.lock`` and ``make setup``
are the fixes the messages point to.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from stacks import bundling, lock
from stacks.constructs.stage_function import ARCHITECTURE, RUNTIME

LOCKED = lock.read_lock()
CONSTRAINED = lock.read_constraints()


def test_lock_was_generated_from_the_current_requirements() -> None:
    assert LOCKED.source_sha256 == lock.source_digest(), "requirements.txt changed: run python -m stacks.lock"


def test_lock_pins_satisfy_every_bundled_requirement() -> None:
    for line in lock.requirement_lines():
        requirement = Requirement(line)
        name = lock.normalize(requirement.name)
        if name in lock.PROVIDED_BY_RUNTIME:
            assert name not in LOCKED.versions, name
        else:
            assert requirement.specifier.contains(LOCKED.versions[name], prereleases=True), name


def test_lock_source_digest_ignores_comments_but_not_requirements(tmp_path: Path) -> None:
    base = tmp_path / "base.txt"
    base.write_text("requests>=2.32,<3\nfastparquet>=2024.11\n")
    commented = tmp_path / "commented.txt"
    commented.write_text("# why\nrequests>=2.32,<3  # http\n\nfastparquet>=2024.11\n")
    changed = tmp_path / "changed.txt"
    changed.write_text("requests>=2.33,<3\nfastparquet>=2024.11\n")
    assert lock.source_digest(base) == lock.source_digest(commented)
    assert lock.source_digest(base) != lock.source_digest(changed)


def test_constraints_are_the_locks_versions_plus_the_runtime_provided() -> None:
    shared = {name: CONSTRAINED[name] for name in LOCKED.versions}
    assert shared == LOCKED.versions
    assert set(CONSTRAINED) - set(LOCKED.versions) == lock.PROVIDED_BY_RUNTIME


@pytest.mark.parametrize("name", sorted(CONSTRAINED))
def test_test_venv_runs_the_pinned_version(name: str) -> None:
    assert metadata.version(name) == CONSTRAINED[name], f"{name}: run make setup (pip -c constraints.txt)"


def test_lock_holds_wheel_hashes_for_the_stacks_runtime_and_this_python() -> None:
    arch = "aarch64" if ARCHITECTURE.name == "arm64" else "x86_64"
    runtime_version = RUNTIME.name.removeprefix("python")
    assert runtime_version == bundling.LAMBDA_PYTHON_VERSION
    assert (arch, runtime_version) in LOCKED.targets
    assert (bundling.host_arch(), bundling.host_python_version()) in LOCKED.targets
    pins = [line for line in lock.LOCK.read_text().splitlines() if "==" in line]
    assert len(pins) == len(LOCKED.versions)
    assert all(line.endswith(" \\") for line in pins), "every pin is followed by its hashes"


def test_lock_render_merges_each_targets_wheel_hash_and_leaves_out_the_runtimes() -> None:
    first = {
        "numpy": lock.Resolved("2.4.6", "a" * 64, "numpy-2.4.6-cp311.whl"),
        "boto3": lock.Resolved("1.44.8", "b" * 64, "boto3-1.44.8.whl"),
    }
    second = {
        "numpy": lock.Resolved("2.4.6", "c" * 64, "numpy-2.4.6-cp314.whl"),
        "boto3": lock.Resolved("1.44.8", "b" * 64, "boto3-1.44.8.whl"),
    }
    text = lock.render_lock("d" * 64, [("x86_64", "3.11"), ("aarch64", "3.14")], [first, second])
    assert text.splitlines()[-3:] == [
        "numpy==2.4.6 \\",
        f"    --hash=sha256:{'a' * 64} \\",
        f"    --hash=sha256:{'c' * 64}",
    ]
    assert "boto3" not in text
    assert "# target: aarch64 cp3.14" in text.splitlines()


def test_asset_hash_changes_with_the_locked_versions(tmp_path: Path) -> None:
    copy = tmp_path / "requirements-lambda.lock"
    copy.write_text(lock.LOCK.read_text())
    same = bundling.asset_hash(arch="aarch64", python_version="3.14", lock=copy)
    assert same == bundling.asset_hash(arch="aarch64", python_version="3.14")
    numpy = LOCKED.versions["numpy"]
    copy.write_text(lock.LOCK.read_text().replace(f"numpy=={numpy} ", "numpy==2.5.5 "))
    assert bundling.asset_hash(arch="aarch64", python_version="3.14", lock=copy) != same


def test_bundle_for_a_target_the_lock_lacks_fails_before_pip(tmp_path: Path) -> None:
    copy = tmp_path / "requirements-lambda.lock"
    copy.write_text(lock.LOCK.read_text().replace("# target: aarch64 cp3.14\n", ""))
    with pytest.raises(RuntimeError, match=r"no wheel hashes for aarch64/cp3\.14"):
        bundling.build_bundle(tmp_path / "out", python_version="3.14", lock=copy)
    assert not any((tmp_path / "out").iterdir())
