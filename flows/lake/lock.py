"""One writer per data dir and kind of job: a file lock held for a whole run.

Two runs on one data dir would collide on DuckDB's single-writer lock (and on staged files) halfway through, with
an error that blames the model or the data. The second run instead waits up to `LOCK_WAIT_S` for the first, then
stops with one line naming the data dir, what the holder is doing and its pid.

Each kind of job has its own lock, so that jobs which do not collide still run side by side:
- `pipeline` (`<data dir>/.pipeline.lock`): what writes the warehouse and the snapshot files (snapshot and dataset
  runs, the dbt build, maintenance);
- `backfill` (`.backfill.lock`): a history backfill writes only history files, alongside hourly snapshots;
- `stream` (`.stream.lock`): a price stream runs for most of an hour, alongside hourly snapshots.

The CLI takes the lock before Prefect is imported (a second run fails in a second, not after Prefect's temporary
server started), and the flows take it again for deployments, where no CLI runs.

`fcntl.flock` is released by the kernel when its holder dies, however it dies (`kill -9` included): a crashed run
never blocks the next one, and the lock file left behind holds no lock. The file keeps the last holder's pid and
job ("<pid> <job>"), for the message only. Within one process the lock is re-entrant for the thread holding it (the
CLI that then calls the flow, which Prefect 3 runs in the caller's thread; a flow that calls another flow's body),
and another thread of the same process is refused like another process.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from flows.errors import DataDirBusy, StorageError
from flows.lake.storage import not_writable

LockKind = Literal["pipeline", "backfill", "stream"]
LOCK_NAMES: dict[str, str] = {"pipeline": ".pipeline.lock", "backfill": ".backfill.lock", "stream": ".stream.lock"}
LOCK_NAME = LOCK_NAMES["pipeline"]
# What a holder is called in the message when it did not say (or its file predates the job field).
_DEFAULT_JOBS: dict[str, str] = {"pipeline": "run", "backfill": "backfill", "stream": "price stream"}
# How long a second run waits for the first before giving up with one line. A module constant, meant to become a
# setting (e.g. PIPELINE_LOCK_WAIT_S) if deployments ever need to queue runs: 0 fails at once.
LOCK_WAIT_S = 0.0
_POLL_S = 0.2

_held: dict[tuple[Path, str], tuple[int, int, int]] = {}  # (data dir, kind) -> (holding thread id, depth, fd)
_held_lock = threading.Lock()


@contextlib.contextmanager
def data_dir_lock(
    data_dir: Path, wait_s: float | None = None, *, kind: LockKind = "pipeline", job: str | None = None
) -> Iterator[None]:
    """Hold `data_dir`'s `kind` lock for the block, as `job` (what others' message calls this holder, e.g.
    "snapshot run"); `DataDirBusy` when another job holds it past `wait_s` seconds (default `LOCK_WAIT_S`),
    `NotWritable` when the data dir cannot be written at all."""
    if kind not in LOCK_NAMES:
        raise ValueError(f"unknown lock kind {kind!r}; one of {', '.join(LOCK_NAMES)}")
    key = (data_dir.resolve(), kind)
    me = threading.get_ident()
    with _held_lock:
        holder = _held.get(key)
        if holder is not None and holder[0] == me:
            _held[key] = (me, holder[1] + 1, holder[2])
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _held_lock:
                thread, depth, fd = _held[key]
                _held[key] = (thread, depth - 1, fd)
        return

    fd = _acquire(key[0], kind, job or _DEFAULT_JOBS[kind], LOCK_WAIT_S if wait_s is None else wait_s)
    with _held_lock:
        _held[key] = (me, 1, fd)
    try:
        yield
    finally:
        with _held_lock:
            _held.pop(key, None)
        _release(fd)


def _acquire(folder: Path, kind: str, job: str, wait_s: float) -> int:
    path = folder / LOCK_NAMES[kind]
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
                pid, their_job = _read_holder(fd)
                os.close(fd)
                raise DataDirBusy(folder, pid, their_job or _DEFAULT_JOBS[kind]) from None
            time.sleep(min(_POLL_S, max(0.0, deadline - time.monotonic())))
        except OSError as exc:  # a file system without locks (some network mounts)
            os.close(fd)
            raise StorageError(
                f"Cannot lock {path} ({exc.strerror or exc}).", "Put PIPELINE_DATA_DIR on a local disk."
            ) from None
    with contextlib.suppress(OSError):  # a full disk: the lock holds, only the holder's line for others is missing
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {' '.join(job.split())}\n".encode(), 0)
    return fd


def _release(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    with contextlib.suppress(OSError):
        os.close(fd)


def _read_holder(fd: int) -> tuple[int | None, str | None]:
    """The pid and job a lock file records ("<pid> <job>"; older files hold the pid alone)."""
    try:
        text = os.pread(fd, 256, 0).decode("utf-8", "replace").strip()
    except OSError:
        return None, None
    pid, _, job = text.partition(" ")
    return (int(pid) if pid.isdigit() else None), (job.strip() or None)


def holder_pid(data_dir: Path, kind: LockKind = "pipeline") -> int | None:
    """The pid of the job holding `data_dir`'s `kind` lock; None when none holds it (or its pid is not written yet)."""
    path = data_dir.resolve() / LOCK_NAMES[kind]
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd)[0]
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
