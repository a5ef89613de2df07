"""Build the Lambda bundle with pip alone: no Docker engine, here or on a user's laptop.

One recipe, used three ways: CDK's *local* bundling (``LocalPipBundler``, the image
is never pulled), ``bench/package.py`` (sizes and cold imports) and the bundle test
(which builds it for this machine's Python and runs the handlers from it alone).

The recipe: ``pip install --target --require-hashes`` of ``requirements-lambda.lock``
(``stacks.lock`` resolves ``requirements.txt`` into it, with the sha256 of each
target's wheels) for the Lambda platform, with explicit ``manylinux_2_*`` tags (pip
picks current wheels for another platform only when it is told every tag the
platform accepts) and ``--only-binary=:all:`` (nothing is compiled here for a
machine it cannot run on); then the deployed packages from ``lambdas/`` are copied in and the result is
trimmed of what no import needs (tests, caches, headers, stubs, most dist-info).
``.so`` files are never touched: numpy fails to load once they are stripped.

Bytecode: Lambda's /var/task is read-only, so a bundle without ``.pyc`` files is
compiled from source on every cold start (about 0.4 s of a stage's import and 2.5 s
of the first Parquet write's, measured by ``bench/package.py``). When an interpreter
of the target version is at hand (``python3.14`` on PATH), the recipe compiles the
bundle with it (``unchecked-hash`` pycs, valid whatever the zip does to mtimes);
otherwise it ships sources only and says so in its report.

Packages the Lambda Python runtime already provides (boto3 and its own
dependencies) are not in the lock; what ``requests`` needs (urllib3, certifi, idna,
charset-normalizer) stays, and so does ``python-dateutil``, pinned ``<3`` in
requirements.txt because the runtime's botocore imports the bundle's copy.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_

from fanout_core.api_description import BUILTIN_DIR, ApiDescription, builtin
from stacks.lock import LOCK, PROVIDED_BY_RUNTIME, Arch, normalize, read_lock, target_flags

ROOT = Path(__file__).resolve().parent.parent
LAMBDAS_DIR = ROOT / "lambdas"
DEPLOYED_PACKAGES: tuple[str, ...] = ("fanout_core", "fanout_aws")
"""The project's own packages under ``lambdas/`` that go into the bundle."""

LAMBDA_PYTHON_VERSION = "3.14"
"""The Lambda runtime's Python; ``stacks.constructs.stage_function.RUNTIME`` matches it.
pip resolves cp314 manylinux aarch64 wheels for every dependency (numpy, pandas,
cramjam, fastparquet), so the newest runtime is usable."""

API_DIR = "api"
"""Bundle folder of the environment's API description, as JSON (``bundled_api_path``)."""

RECIPE_VERSION = "3"
"""Bump when the recipe changes in a way the hashed inputs do not show."""


_TRIM_DIRS = frozenset({"__pycache__", "tests", "test", "include", "bin"})
"""Directory names removed anywhere in the bundle (``include`` holds C headers)."""
_TRIM_SUFFIXES = (".pyc", ".pyo", ".pyi", ".h", ".hpp", ".c", ".cpp", ".pyx", ".pxd")
_DIST_INFO_KEEP = frozenset({"METADATA", "entry_points.txt", "top_level.txt"})
"""What stays of a ``*.dist-info``: ``importlib.metadata`` versions and entry points
(fsspec registers implementations through them); license files stay too."""


def host_arch() -> Arch:
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return "aarch64"
    if machine in ("x86_64", "amd64"):
        return "x86_64"
    raise RuntimeError(f"no manylinux wheels for this machine ({machine})")


def host_python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def pip_command(target: Path, lock_file: Path, *, arch: Arch, python_version: str) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",
        "--target",
        str(target),
        "--require-hashes",
        *target_flags(arch, python_version),
        "-r",
        str(lock_file),
    ]
    return command


def _source_files(lambdas_dir: Path) -> Iterator[Path]:
    for package in DEPLOYED_PACKAGES:
        for path in sorted((lambdas_dir / package).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                yield path


def _is_builtin(api: ApiDescription) -> bool:
    return api.to_json() == builtin().to_json()


def bundled_api_path(api: ApiDescription) -> str:
    """Where the bundle carries ``api`` as JSON, relative to its root: the functions'
    ``FANOUT_API`` (JSON, so no Lambda imports a YAML parser). The built-in description
    is the package's own ``hermes.json``, there in the bundle and in ``lambdas/`` alike;
    another is written to ``api/<name>.json`` (``write_api``)."""
    if _is_builtin(api):
        return (BUILTIN_DIR / "hermes.json").relative_to(LAMBDAS_DIR).as_posix()
    return f"{API_DIR}/{api.name}.json"


def write_api(root: Path, api: ApiDescription) -> Path:
    """Put the description's canonical JSON where ``bundled_api_path`` says (the built-in
    one is already there, in ``fanout_core``)."""
    path = root / bundled_api_path(api)
    if not _is_builtin(api):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(api.to_json())
    return path


def bytecode_interpreter(python_version: str) -> str | None:
    """An interpreter that writes ``.pyc`` files the target Python accepts, if any."""
    if host_python_version() == python_version:
        return sys.executable
    return shutil.which(f"python{python_version}")


def compile_bytecode(root: Path, interpreter: str) -> None:
    """Compile every module once, at build time, for the target interpreter."""
    subprocess.run(
        [
            interpreter,
            "-m",
            "compileall",
            "-q",
            "-j",
            "0",
            "--invalidation-mode",
            "unchecked-hash",
            str(root),
        ],
        capture_output=True,
        check=False,  # a stray file with another version's syntax must not stop the build
    )


def asset_hash(
    *,
    arch: Arch,
    python_version: str,
    bytecode: bool = False,
    lambdas_dir: Path = LAMBDAS_DIR,
    lock: Path = LOCK,
    api: ApiDescription | None = None,
) -> str:
    """Stable hash of everything the bundle is made of, so CDK rebuilds exactly when
    the resolved pins (the lock's bytes: versions and wheel hashes), the deployed
    sources, the API description it carries, the target or the recipe change."""
    digest = hashlib.sha256()
    digest.update(f"recipe={RECIPE_VERSION};arch={arch};python={python_version};pyc={bytecode}\n".encode())
    digest.update(lock.read_bytes())
    if api is not None:
        digest.update(b"\0api\0" + bundled_api_path(api).encode() + b"\0" + api.to_json())
    for path in _source_files(lambdas_dir):
        digest.update(b"\0" + path.relative_to(lambdas_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def trim(root: Path) -> int:
    """Remove what no import needs; returns the bytes removed. ``.so`` files are kept."""
    removed = 0
    for dirpath, dirnames, filenames in os.walk(root, topdown=True):
        here = Path(dirpath)
        for name in list(dirnames):
            if name in _TRIM_DIRS:
                removed += _tree_size(here / name)
                shutil.rmtree(here / name)
                dirnames.remove(name)
        in_dist_info = here.name.endswith(".dist-info")
        for name in filenames:
            path = here / name
            drop = name.endswith(_TRIM_SUFFIXES) or (
                in_dist_info and name not in _DIST_INFO_KEEP and "LICEN" not in name.upper()
            )
            if drop:
                removed += path.stat().st_size
                path.unlink()
    return removed


def _tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def _installed(root: Path) -> dict[str, str]:
    found = {}
    for dist in root.glob("*.dist-info"):
        name, _, version = dist.name[: -len(".dist-info")].partition("-")
        found[normalize(name)] = version
    return dict(sorted(found.items()))


@dataclass(frozen=True, kw_only=True)
class BundleReport:
    """What a build produced; sizes in bytes."""

    path: Path
    arch: Arch
    python_version: str
    size_unzipped: int
    size_zipped: int | None
    bytecode: bool
    """Whether ``.pyc`` files were compiled in (see the module docstring)."""
    files: int
    trimmed: int
    packages: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "arch": self.arch,
            "python_version": self.python_version,
            "size_unzipped": self.size_unzipped,
            "size_zipped": self.size_zipped,
            "bytecode": self.bytecode,
            "files": self.files,
            "trimmed": self.trimmed,
            "packages": self.packages,
        }


def zipped_size(root: Path) -> int:
    """Size of the bundle zipped as CDK uploads it (deflate), measured in a temp file."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "bundle.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(root).as_posix())
        return archive.stat().st_size


def build_bundle(
    out_dir: str | os.PathLike[str],
    *,
    platform_arch: Literal["aarch64", "x86_64", "host"] = "aarch64",
    python_version: str | None = None,
    lambdas_dir: Path = LAMBDAS_DIR,
    lock: Path = LOCK,
    measure_zip: bool = False,
    bytecode: bool | None = None,
    api: ApiDescription | None = None,
) -> BundleReport:
    """Build the bundle into ``out_dir`` (created; must be empty if it exists).

    ``platform_arch="host"`` builds for this machine and, unless ``python_version``
    says otherwise, this interpreter, so the result can be imported here.
    ``bytecode``: compile ``.pyc`` files (True), don't (False), or do so when an
    interpreter of the target version is available (None).
    """
    out = Path(out_dir)
    arch: Arch = host_arch() if platform_arch == "host" else platform_arch
    version = python_version or (host_python_version() if platform_arch == "host" else LAMBDA_PYTHON_VERSION)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise FileExistsError(f"bundle directory {out} is not empty")
    if (arch, version) not in read_lock(lock).targets:
        raise RuntimeError(
            f"{lock.name} has no wheel hashes for {arch}/cp{version}; "
            "add the target to stacks.lock.TARGETS and run `python -m stacks.lock`"
        )
    done = subprocess.run(
        pip_command(out, lock, arch=arch, python_version=version), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"pip could not build the {arch}/cp{version} bundle "
            f"(exit {done.returncode}):\n{done.stderr[-4000:]}"
        )
    for name in PROVIDED_BY_RUNTIME:
        # Defensive: a dependency pulling boto3 in would be caught here, not in Lambda.
        for path in (out / name, *out.glob(f"{name}-*.dist-info")):
            if path.exists():
                shutil.rmtree(path)
    for package in DEPLOYED_PACKAGES:
        shutil.copytree(
            lambdas_dir / package,
            out / package,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
    trimmed = trim(out)
    if api is not None:
        write_api(out, api)
    interpreter = bytecode_interpreter(version) if bytecode is not False else None
    if bytecode and interpreter is None:
        raise RuntimeError(f"bytecode asked for, but no python{version} interpreter is on PATH")
    if interpreter is not None:
        compile_bytecode(out, interpreter)
    files = [p for p in out.rglob("*") if p.is_file()]
    return BundleReport(
        path=out,
        arch=arch,
        python_version=version,
        size_unzipped=sum(p.stat().st_size for p in files),
        size_zipped=zipped_size(out) if measure_zip else None,
        bytecode=interpreter is not None,
        files=len(files),
        trimmed=trimmed,
        packages=_installed(out),
    )


@jsii.implements(ILocalBundling)
class LocalPipBundler:
    """CDK local bundling: runs the recipe in-process instead of in a container."""

    def __init__(
        self, *, arch: Arch, python_version: str, bytecode: bool, api: ApiDescription | None = None
    ) -> None:
        self.arch: Arch = arch
        self.python_version = python_version
        self.bytecode = bytecode
        self.api = api

    def try_bundle(self, output_dir: str, *, image: DockerImage, **_options: Any) -> bool:
        """Always handles the bundling (there is no Docker fallback to defer to).

        jsii passes the ``BundlingOptions`` as keywords; the recipe needs none of them.
        """
        build_bundle(
            output_dir,
            platform_arch=self.arch,
            python_version=self.python_version,
            bytecode=self.bytecode,
            api=self.api,
        )
        return True


def lambda_code(
    *, arch: Arch = "aarch64", python_version: str = LAMBDA_PYTHON_VERSION, api: ApiDescription | None = None
) -> lambda_.Code:
    """The one asset every function of the stack shares (one upload, one hash), carrying
    ``api``, the environment's description, at ``bundled_api_path(api)``."""
    bytecode = bytecode_interpreter(python_version) is not None
    return lambda_.Code.from_asset(
        str(LAMBDAS_DIR),
        asset_hash=asset_hash(arch=arch, python_version=python_version, bytecode=bytecode, api=api),
        asset_hash_type=AssetHashType.CUSTOM,
        bundling=BundlingOptions(
            # Never pulled: local bundling always succeeds or raises.
            image=DockerImage.from_registry("none"),
            local=LocalPipBundler(arch=arch, python_version=python_version, bytecode=bytecode, api=api),
        ),
    )


def runtime_site(target: str | os.PathLike[str]) -> Path:
    """A directory holding only what the Lambda runtime adds after the bundle on
    ``sys.path`` (boto3 and its own dependencies), linked from this environment."""
    out = Path(target)
    out.mkdir(parents=True, exist_ok=True)
    for name in sorted(PROVIDED_BY_RUNTIME):
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise RuntimeError(f"{name} is not installed here; the runtime stand-in needs it")
        link = out / name
        if not link.exists():
            link.symlink_to(Path(spec.origin).parent, target_is_directory=True)
    return out


def isolated_python(script: str | os.PathLike[str], *args: str) -> list[str]:
    """Command running ``script`` in an interpreter that sees the standard library and
    nothing else (``-I``: no environment, no user site; ``-S``: no site-packages; ``-B``:
    writes no bytecode, as on Lambda's read-only /var/task). The script puts the
    bundle (and the runtime stand-in) on ``sys.path`` itself."""
    return [sys.executable, "-I", "-S", "-B", str(script), *args]


def iter_sizes(root: Path, depth: int = 1) -> Iterable[tuple[str, int]]:
    """Sizes of the bundle's top-level entries, largest first (for the benchmark)."""
    sizes = []
    for entry in root.iterdir():
        size = _tree_size(entry) if entry.is_dir() else entry.stat().st_size
        sizes.append((entry.name, size))
    return sorted(sizes, key=lambda item: -item[1])


__all__: Sequence[str] = (
    "LAMBDA_PYTHON_VERSION",
    "BundleReport",
    "LocalPipBundler",
    "asset_hash",
    "build_bundle",
    "bundled_api_path",
    "isolated_python",
    "lambda_code",
    "runtime_site",
)
