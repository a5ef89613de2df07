"""The one small interface through which the core reaches the bucket.

Two adapters implement it: ``LocalDirStorage`` here (files mirror the bucket's keys
exactly, so ``ls`` shows the prefixes) and ``fanout_aws.s3_storage.S3Storage``.
``put_if_absent`` is the exactly-once primitive: S3's ``If-None-Match: *`` on the
bucket, an atomic ``link`` of a finished temp file on disk. A duplicate task that
loses the race learns so and triggers nothing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

from fanout_core.errors import StorageFault

T = TypeVar("T")


class NoSuchKey(KeyError):
    """The object does not exist."""


@runtime_checkable
class Storage(Protocol):
    def get(self, key: str) -> bytes:
        """The object's bytes; ``NoSuchKey`` if it does not exist."""
        ...

    def put(self, key: str, body: bytes) -> None:
        """Create or atomically replace the object."""
        ...

    def put_if_absent(self, key: str, body: bytes) -> bool:
        """Create the object unless it exists; True if this call created it."""
        ...

    def exists(self, key: str) -> bool: ...

    def last_modified(self, key: str) -> float | None:
        """Epoch seconds the object was last written; None if it does not exist."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; absent is fine."""
        ...

    def list(self, prefix: str) -> Iterator[str]:
        """Every key that starts with ``prefix``, in lexicographic order."""
        ...


_TMP_SUFFIX = ".fanout-tmp"
BUCKET_FAULTS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EFBIG,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.ENOTDIR,
        errno.EEXIST,
    }
)
"""OS errors that say the bucket directory itself cannot take a write (full, read-only, a
file in the way): no retry can help until someone acts, so they are a StorageFault."""
READ_FAULTS = frozenset({errno.EACCES, errno.EPERM})
"""OS errors that say the bucket directory cannot be read."""


class LocalDirStorage:
    """A directory standing in for the bucket: key ``a/b.json`` is file ``<root>/a/b.json``.

    Writes go to a temp file in the target folder and are then linked (create) or
    renamed (replace) into place, so a reader or a crash never sees half an object.
    """

    def __init__(self, root: str | os.PathLike[str]):
        # Created by the first write, not here: reading a bucket (status) leaves no trace.
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise StorageFault(f"the bucket directory {self.root} is a file, not a directory")

    def _guarded(self, verb: str, key: str, op: Callable[[], T], faults: frozenset[int] = BUCKET_FAULTS) -> T:
        """``op()``, with an OS error that says the bucket cannot be used made a StorageFault
        (one line naming the key, the directory and the cause)."""
        try:
            return op()
        except OSError as exc:
            if exc.errno not in faults:
                raise
            code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            raise StorageFault(
                f"cannot {verb} {key} in the bucket directory {self.root}: {exc.strerror} ({code})"
            ) from None

    def __repr__(self) -> str:
        return f"LocalDirStorage({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or key.endswith("/"):
            raise ValueError(f"invalid key {key!r}")
        parts = key.split("/")
        if any(p in ("", ".", "..") for p in parts) or key.endswith(_TMP_SUFFIX):
            raise ValueError(f"invalid key {key!r}")
        return self.root.joinpath(*parts)

    def _write_temp(self, path: Path, body: bytes) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=_TMP_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
        except BaseException:
            os.unlink(tmp)
            raise
        return tmp

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return self._guarded("read", key, path.read_bytes, READ_FAULTS)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NoSuchKey(key) from None

    def put(self, key: str, body: bytes) -> None:
        path = self._path(key)

        def write() -> None:
            tmp = self._write_temp(path, body)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise

        self._guarded("write", key, write)

    def put_if_absent(self, key: str, body: bytes) -> bool:
        path = self._path(key)
        if path.exists():
            return False

        def create() -> bool:
            tmp = self._write_temp(path, body)
            try:
                os.link(tmp, path)
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)

        return self._guarded("write", key, create)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def last_modified(self, key: str) -> float | None:
        try:
            return self._path(key).stat().st_mtime
        except (FileNotFoundError, NotADirectoryError):
            return None

    def delete(self, key: str) -> None:
        path = self._path(key)
        with contextlib.suppress(FileNotFoundError):
            self._guarded("delete", key, path.unlink)

    def list(self, prefix: str) -> Iterator[str]:
        # Walk only the folder the prefix names, then filter by the rest of it.
        folder, _, _ = prefix.rpartition("/")
        base = self.root.joinpath(*folder.split("/")) if folder else self.root
        if not base.is_dir():
            return iter(())
        found: list[str] = []
        for dirpath, _dirnames, filenames in os.walk(base):
            rel = os.path.relpath(dirpath, self.root)
            rel_key = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            for name in filenames:
                if name.endswith(_TMP_SUFFIX):
                    continue
                key = rel_key + name
                if key.startswith(prefix):
                    found.append(key)
        found.sort()
        return iter(found)
