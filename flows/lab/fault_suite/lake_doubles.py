"""A failing lake for the fault suite: a `StorageWrapper` whose n-th write misbehaves once.

The suite puts it between the flows and the real lake through the factory's seam,
`with storage_wrapper(faulty.around): ...` (`flows/lake/factory.py`), so every `lake_storage(settings)` call of
every module, in every thread, counts towards the same n-th write.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from flows.errors import StorageError
from flows.lake.storage import LakeStorage, StorageWrapper


@dataclass
class _Count:
    """The writes a fault has seen, shared by every view of it (`FaultyStorage.around`)."""

    writes: int = 0  # writes under the prefix attempted, the faulty one included
    fired: int = 0
    fired_at: float | None = None  # time.time() of the faulty write
    lock: threading.Lock = field(default_factory=threading.Lock)  # the backfill writes from several threads


class FaultyStorage(StorageWrapper):
    """A `LakeStorage` around a real lake whose `at`-th write (counting writes under `prefix`) misbehaves once.

    - `fail`: raise `StorageError` without writing (a failed upload: the lake keeps the old object or none);
    - `fail_after_write`: write, then raise (the object landed but the acknowledgement was lost);
    - `pause`: block before writing, after touching `marker` (a process to be SIGKILLed mid-publish).
    """

    def __init__(
        self,
        inner: LakeStorage,
        *,
        at: int,
        action: Literal["fail", "fail_after_write", "pause"] = "fail",
        prefix: str = "",
        marker: Path | None = None,
        pause_limit_s: float = 120.0,
    ) -> None:
        if at < 1:
            raise ValueError("at counts writes from 1")
        if action == "pause" and marker is None:
            raise ValueError("a pausing storage needs a marker file to touch")
        super().__init__(inner)
        self.at = at
        self.action = action
        self.prefix = prefix
        self.marker = marker
        self.pause_limit_s = pause_limit_s
        self._count = _Count()

    def around(self, inner: LakeStorage) -> FaultyStorage:
        """The same fault around another lake, its writes counted with this one's: a `storage_wrapper` function."""
        view = FaultyStorage(
            inner, at=self.at, action=self.action, prefix=self.prefix, marker=self.marker,
            pause_limit_s=self.pause_limit_s,
        )  # fmt: skip
        view._count = self._count
        return view

    @property
    def writes(self) -> int:
        """Writes under `prefix` attempted, the faulty one included."""
        return self._count.writes

    @property
    def fired(self) -> int:
        return self._count.fired

    @property
    def fired_at(self) -> float | None:
        """`time.time()` of the faulty write."""
        return self._count.fired_at

    def put_file(self, local_path: Path, key: str) -> None:
        if key.startswith(self.prefix):
            count = self._count
            with count.lock:
                count.writes += 1
                hit = count.writes == self.at
                if hit:
                    count.fired += 1
                    count.fired_at = time.time()
            if hit and self.action == "fail":
                raise StorageError(f"Injected failure writing {key}.", "Re-run: the lake keeps whole objects only.")
            if hit and self.action == "pause":
                assert self.marker is not None
                self.marker.write_text(key)
                time.sleep(self.pause_limit_s)  # the suite kills the process long before
                os._exit(3)  # never resume a write the suite meant to interrupt
            self.inner.put_file(local_path, key)
            if hit:
                raise StorageError(f"Injected failure after writing {key}.", "Re-run: the write may have landed.")
            return
        self.inner.put_file(local_path, key)
