"""Lake storage: the interface every backend implements, and the local-folder backend.

Object keys are POSIX paths relative to the lake root (`coincap/assets/dt=2026-11-21/20261121T053000Z.parquet`).
A backend guarantees that `put_file` is atomic (readers see the old object or the new one, never a part) and
that putting the same key twice replaces it (idempotent re-runs).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import stat
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from flows.errors import NotWritable, StorageError

# OS errors that waiting does not cure: retrying them only delays the one line saying which path to fix.
_PERMANENT = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large",
    errno.ENOTDIR: "not a directory (a file is in its path)",
}
# The same, as libraries that lose the errno word them (DuckDB, Arrow): lower-case fragments of strerror.
_PERMANENT_WORDS = {
    "permission denied": "permission denied",
    "operation not permitted": "permission denied",
    "read-only file system": "read-only file system",
    "no space left": "no space left on device",
    "disk quota exceeded": "disk quota exceeded",
    "not a directory": "not a directory (a file is in its path)",
}


def permanent_reason(exc: BaseException) -> str | None:
    """Why `exc` is a file-system failure no retry can fix (permissions, read-only or full disk, a file where a
    folder should be), in a few words; None for anything else."""
    if isinstance(exc, NotWritable):
        return exc.reason
    if isinstance(exc, OSError) and exc.errno in _PERMANENT:
        return _PERMANENT[exc.errno]
    module = type(exc).__module__
    # Arrow's IO errors carry the words, not the errno; so do DuckDB's. Network errors are never file-system ones.
    worded = isinstance(exc, OSError) and exc.errno is None and not module.startswith(("requests", "urllib3"))
    if worded or module.lstrip("_") == "duckdb":
        text = str(exc).lower()
        return next((reason for words, reason in _PERMANENT_WORDS.items() if words in text), None)
    return None


def not_writable(exc: BaseException, path: Path | str) -> NotWritable | None:
    """`exc` as one line naming `path` when it is a permanent file-system failure (see `permanent_reason`)."""
    if isinstance(exc, NotWritable):
        return exc
    reason = permanent_reason(exc)
    return NotWritable(path, reason) if reason else None


def ensure_writable(folder: Path) -> None:
    """Create `folder` if needed and prove a file can be created in it, or raise `NotWritable` naming it: a run
    checks this before it spends credits, instead of failing at its first write (or its last, the publish)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check.", suffix=".tmp"):
            pass
    except OSError as exc:
        raise not_writable(exc, folder) or StorageError(
            f"Cannot use {folder} ({exc.strerror or exc}).", "Check that PIPELINE_DATA_DIR is a local folder."
        ) from None


@dataclass(frozen=True)
class ObjectInfo:
    """One lake object as a listing sees it: `version` changes whenever its content may have (the local inode and
    mtime, a GCS generation), so `(key, size, version)` identifies the bytes without reading them."""

    key: str
    size: int
    version: str


@runtime_checkable
class LakeStorage(Protocol):
    """What the pipeline needs from a lake. The GCS backend implements the same methods."""

    @property
    def root_uri(self) -> str:
        """Where the lake lives, as a URI or path readers (DuckDB, BigQuery) understand."""
        ...

    def put_file(self, local_path: Path, key: str) -> None:
        """Publish a finished local file at `key`, atomically replacing any existing object."""
        ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> list[str]:
        """Keys under `prefix`, sorted; in-flight temporary objects are never listed."""
        ...

    def delete(self, key: str) -> None:
        """Remove `key` if present (no error when absent)."""
        ...

    def read_bytes(self, key: str) -> bytes: ...


class StorageWrapper:
    """A `LakeStorage` that passes every call to `inner`: subclass it to change one method (fault injection)."""

    def __init__(self, inner: LakeStorage) -> None:
        self.inner = inner

    @property
    def root_uri(self) -> str:
        return self.inner.root_uri

    def put_file(self, local_path: Path, key: str) -> None:
        self.inner.put_file(local_path, key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def list(self, prefix: str) -> list[str]:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def read_bytes(self, key: str) -> bytes:
        return self.inner.read_bytes(key)

    # Used by the lake integrity check (flows/lake/integrity.py); not part of `LakeStorage`.
    def list_info(self, prefix: str) -> list[ObjectInfo]:
        return self.inner.list_info(prefix)  # type: ignore[attr-defined]

    def read_range(self, key: str, start: int, length: int, version: str | None = None) -> bytes:
        return self.inner.read_range(key, start, length, version)  # type: ignore[attr-defined]

    def move(self, key: str, dest: str, version: str | None = None) -> bool:
        return self.inner.move(key, dest, version)  # type: ignore[attr-defined]


class LocalStorage:
    """A lake in a local folder. Atomic by `os.replace` of a hidden sibling temporary file."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    @property
    def root_uri(self) -> str:
        return self.root.as_posix()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise StorageError(f"Refusing lake key outside the lake: {key!r}.", "This is a bug; please report it.")
        return path

    def put_file(self, local_path: Path, key: str) -> None:
        dest = self._path(key)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.{os.getpid()}@{_HOST}.tmp")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(local_path, tmp)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, dest)
            _fsync_dir(dest.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            permanent = not_writable(exc, dest.parent)
            if permanent is not None:  # not retried: one line naming the folder
                raise permanent from None
            raise StorageError(
                f"Could not write {dest} ({exc.strerror or exc}).",
                "Check free disk space and that PIPELINE_DATA_DIR is writable.",
            ) from exc
        _remove_dead_writers_temps(dest.parent)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix.strip("/") else self.root
        if base.is_file():
            return [prefix]
        if not base.exists():
            return []
        return sorted(
            p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file() and not p.name.startswith(".")
        )

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def read_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    # -- for the integrity check (flows/lake/integrity.py) ---------------------------------------------------

    def list_info(self, prefix: str) -> list[ObjectInfo]:
        """`list(prefix)` with each file's size and version (inode and mtime: a replaced or rewritten file changes)."""
        base = self._path(prefix) if prefix.strip("/") else self.root
        if base.is_file():
            return [ObjectInfo(prefix, (st := base.stat()).st_size, _version(st))]
        infos = []
        for folder, _dirs, names in os.walk(base):  # one stat per file; `list` + stat would take two
            rel = Path(folder).relative_to(self.root).as_posix()
            under = "" if rel == "." else f"{rel}/"
            for name in names:
                if name.startswith("."):
                    continue
                try:
                    st = os.stat(os.path.join(folder, name))
                except FileNotFoundError:  # removed since the folder was read (a compaction)
                    continue
                if stat.S_ISREG(st.st_mode):
                    infos.append(ObjectInfo(f"{under}{name}", st.st_size, _version(st)))
        return sorted(infos, key=lambda info: info.key)

    def read_range(self, key: str, start: int, length: int, version: str | None = None) -> bytes:
        """`length` bytes of `key` from `start` (fewer at its end); `FileNotFoundError` when it (or, with `version`,
        that version of it) is gone."""
        with open(self._path(key), "rb") as handle:
            if version is not None and _version(os.fstat(handle.fileno())) != version:
                raise FileNotFoundError(f"{self._path(key)} was replaced")
            handle.seek(start)
            return handle.read(length)

    def move(self, key: str, dest: str, version: str | None = None) -> bool:
        """Rename `key` to `dest` (atomic: one lake, one file system), replacing `dest`; False, leaving both alone,
        when `key` is gone or no longer the `version` given."""
        src, target = self._path(key), self._path(dest)
        try:
            if version is not None and _version(src.stat()) != version:
                return False
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, target)
        except FileNotFoundError:
            return False
        _fsync_dir(target.parent)
        _fsync_dir(src.parent)
        return True


def _version(st: os.stat_result) -> str:
    return f"{st.st_ino}:{st.st_mtime_ns}"


# A temporary object is named after its writer (`.<name>.<uuid>.<pid>@<host>.tmp`): a process killed between its
# copy and its rename (SIGKILL runs no cleanup) leaves one behind, which the next write into the folder removes once
# that process is gone. Readers never see them (hidden, not *.parquet); this keeps them from piling up.
_HOST = socket.gethostname()
_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{32}\.(?P<pid>\d+)@(?P<host>.+)\.tmp$")


def _remove_dead_writers_temps(folder: Path) -> None:
    try:
        names = [entry.name for entry in os.scandir(folder) if entry.name.startswith(".")]
    except OSError:
        return
    for name in names:
        match = _TEMP_NAME.match(name)
        if match and match["host"] == _HOST and not _process_alive(int(match["pid"])):
            with contextlib.suppress(OSError):
                (folder / name).unlink()


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _fsync_dir(path: Path) -> None:
    # Make the rename itself durable; not every platform lets a directory be opened.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
