"""One writer per data dir: a file lock (`<data dir>/.pipeline.lock`) held for a whole run.

Two runs on one data dir would collide on DuckDB's single-writer lock (and on staged files) halfway through, with
an error that blames the model or the data. The second run instead waits up to `LOCK_WAIT_S` for the first, then
stops with one line naming the data dir and the holder's pid.

`fcntl.flock` is released by the kernel when its holder dies, however it dies (`kill -9` included): a crashed run
never blocks the next one, and the lock file left behind holds no lock. The file keeps the last holder's pid, for
the message only. Within one process the lock is re-entrant for the thread holding it (a flow that calls another
flow's body), and another thread of the same process is refused like another process.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from flows.errors import DataDirBusy, StorageError
from flows.lake.storage import not_writable

LOCK_NAME = ".pipeline.lock"
# How long a second run waits for the first before giving up with one line. A module constant, meant to become a
# setting (e.g. PIPELINE_LOCK_WAIT_S) if deployments ever need to queue runs: 0 fails at once.
LOCK_WAIT_S = 0.0
_POLL_S = 0.2

_held: dict[Path, tuple[int, int, int]] = {}  # data dir -> (holding thread id, depth, fd)
_held_lock = threading.Lock()


@contextlib.contextmanager
def data_dir_lock(data_dir: Path, wait_s: float | None = None) -> Iterator[None]:
    """Hold `data_dir`'s run lock for the block; `DataDirBusy` when another run holds it past `wait_s` seconds
    (default `LOCK_WAIT_S`), `NotWritable` when the data dir cannot be written at all."""
    folder = data_dir.resolve()
    me = threading.get_ident()
    with _held_lock:
        holder = _held.get(folder)
        if holder is not None and holder[0] == me:
            _held[folder] = (me, holder[1] + 1, holder[2])
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _held_lock:
                thread, depth, fd = _held[folder]
                _held[folder] = (thread, depth - 1, fd)
        return

    fd = _acquire(folder, LOCK_WAIT_S if wait_s is None else wait_s)
    with _held_lock:
        _held[folder] = (me, 1, fd)
    try:
        yield
    finally:
        with _held_lock:
            _held.pop(folder, None)
        _release(fd)


def _acquire(folder: Path, wait_s: float) -> int:
    path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by child processes (PEP 446)
    except OSError as exc:
        raise not_writable(exc, folder) or StorageError(
            f"Cannot create the run lock {path} ({exc.strerror or exc}).", "Check that PIPELINE_DATA_DIR is a folder."
        ) from None
    deadline = time.monotonic() + max(0.0, wait_s)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                pid = _read_pid(fd)
                os.close(fd)
                raise DataDirBusy(folder, pid) from None
            time.sleep(min(_POLL_S, max(0.0, deadline - time.monotonic())))
        except OSError as exc:  # a file system without locks (some network mounts)
            os.close(fd)
            raise StorageError(
                f"Cannot lock {path} ({exc.strerror or exc}).", "Put PIPELINE_DATA_DIR on a local disk."
            ) from None
    with contextlib.suppress(OSError):  # a full disk: the lock holds, only the pid for others' message is missing
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _release(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    with contextlib.suppress(OSError):
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def holder_pid(data_dir: Path) -> int | None:
    """The pid of the run holding `data_dir`'s lock; None when no run holds it (or its pid is not written yet)."""
    path = data_dir.resolve() / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
