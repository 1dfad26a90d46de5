"""Pick the lake backend for the configured target, and the one seam where a test wraps the lake every caller gets.

Every flow and engine asks `lake_storage(settings)` for its lake. A fault-injection suite or a test that needs a
failing or counting lake wraps it here, for the length of a `with storage_wrapper(fn):` block, instead of
rebinding `lake_storage` in the modules that imported it: a module that imports the factory another way cannot
escape the wrapper.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from flows.errors import ConfigError
from flows.lake.storage import LakeStorage, LocalStorage
from flows.settings import Settings, Target

StorageWrap = Callable[[LakeStorage], LakeStorage]
"""Given the lake the factory built, return the one callers get (usually a `StorageWrapper` around it)."""

# Process-wide, not per thread: flows call the factory from Prefect's task threads and their own worker pools.
_wrappers: list[StorageWrap] = []
_wrappers_lock = threading.Lock()


@contextlib.contextmanager
def storage_wrapper(wrap: StorageWrap) -> Iterator[None]:
    """While the block runs, every `lake_storage(settings)` call, from any thread, returns `wrap(lake)`.

    `wrap` is called on each `lake_storage` call with that call's lake. Blocks nest: the innermost wrapper is
    applied last (outermost around the lake). Leaving a block removes its wrapper only, whatever the order the
    blocks end in. Meant for tests and the fault suite (`flows/lab/fault_suite`); production code never wraps.
    """
    with _wrappers_lock:
        _wrappers.append(wrap)
    try:
        yield
    finally:
        with _wrappers_lock:
            for i in range(len(_wrappers) - 1, -1, -1):  # by identity: the same function may be in twice
                if _wrappers[i] is wrap:
                    del _wrappers[i]
                    break


def lake_storage(settings: Settings) -> LakeStorage:
    """The lake for `settings.target`: a local folder, or the GCS bucket `GCS_BUCKET` (client created on first use);
    wrapped by the `storage_wrapper` blocks in force, if any."""
    storage = _backend(settings)
    with _wrappers_lock:
        wrappers = list(_wrappers)
    for wrap in wrappers:
        storage = wrap(storage)
    return storage


def _backend(settings: Settings) -> LakeStorage:
    if settings.target is Target.local:
        return LocalStorage(settings.lake_dir)
    if settings.target is Target.gcp:
        from flows.lake.gcs import GcsStorage

        bucket = (settings.gcs_bucket or "").strip().removeprefix("gs://").strip("/")
        if not bucket:
            raise ConfigError(
                "GCS_BUCKET is not set, so the gcp target has no lake.",
                "Set GCS_BUCKET to the lake bucket's name (a Terraform output of terraform/envs/prod).",
            )
        if "/" in bucket:
            raise ConfigError(
                f"GCS_BUCKET must be a bucket name, not a path (got {settings.gcs_bucket!r}).",
                "Set GCS_BUCKET to the bare bucket name, e.g. example-project-coincap-lake.",
            )
        return GcsStorage(bucket, project=settings.gcp_project)
    raise ConfigError(
        f"The {settings.target.value} lake is not available in this version.",
        "Set PIPELINE_TARGET to local or gcp.",
    )
