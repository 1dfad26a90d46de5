"""The lake in a Google Cloud Storage bucket: the same object keys as the local lake, under `gs://<bucket>/`.

Writes carry generation preconditions, so a replayed snapshot replaces exactly the version it saw and a
concurrent writer's version is never clobbered unseen. Credentials are Application Default Credentials; with
`STORAGE_EMULATOR_HOST` set, the official client talks to that emulator anonymously instead.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar

from flows.errors import StorageError
from flows.lake.storage import ObjectInfo

if TYPE_CHECKING:
    from google.api_core.retry import Retry
    from google.cloud import storage

T = TypeVar("T")

# Above this size an upload goes in resumable chunks, so a dropped connection resends one chunk, not the file.
RESUMABLE_THRESHOLD = 8 * 1024 * 1024
CHUNK_SIZE = 8 * 1024 * 1024  # GCS requires a multiple of 256 KiB
PRECONDITION_ATTEMPTS = 5  # each one re-reads the generation; more than a few means a writer is racing us
RETRY_DEADLINE_S = 120.0  # total time google's retry may spend on transient errors (429, 5xx, resets) per call
REQUEST_TIMEOUT = (10.0, 120.0)  # connect, read (seconds) for each HTTP request

READ_ROLE = "roles/storage.objectViewer"
WRITE_ROLE = "roles/storage.objectAdmin"  # replacing an object needs delete as well as create


class GcsStorage:
    """A lake in a GCS bucket (optionally under `prefix`), implementing `LakeStorage`."""

    def __init__(
        self,
        bucket: str,
        *,
        client: storage.Client | None = None,
        project: str | None = None,
        prefix: str = "",
        retry_deadline_s: float = RETRY_DEADLINE_S,
        retry_initial_delay_s: float = 1.0,
        resumable_threshold: int = RESUMABLE_THRESHOLD,
        chunk_size: int = CHUNK_SIZE,
        precondition_attempts: int = PRECONDITION_ATTEMPTS,
    ) -> None:
        if chunk_size <= 0 or chunk_size % (256 * 1024):
            raise ValueError(f"chunk_size must be a positive multiple of 256 KiB, got {chunk_size}")
        if precondition_attempts < 1:
            raise ValueError("precondition_attempts must be at least 1")
        self.bucket_name = bucket
        self.prefix = prefix.strip("/")
        self.project = project
        self.retry_deadline_s = retry_deadline_s
        self.retry_initial_delay_s = retry_initial_delay_s
        self.resumable_threshold = resumable_threshold
        self.chunk_size = chunk_size
        self.precondition_attempts = precondition_attempts
        self._client = client
        self._bucket: storage.Bucket | None = None

    def __repr__(self) -> str:
        return f"GcsStorage({self.root_uri!r})"

    @property
    def root_uri(self) -> str:
        return f"gs://{self.bucket_name}" + (f"/{self.prefix}" if self.prefix else "")

    @property
    def client(self) -> storage.Client:
        """The storage client, created on first use (so importing or configuring never needs credentials)."""
        if self._client is None:
            import google.auth.exceptions
            from google.cloud import storage

            try:
                # With STORAGE_EMULATOR_HOST set the client itself switches to the emulator and anonymous
                # credentials; otherwise it resolves Application Default Credentials.
                self._client = storage.Client(project=self.project) if self.project else storage.Client()
            except google.auth.exceptions.DefaultCredentialsError as exc:
                raise StorageError(
                    "No Google credentials found for the GCS lake.",
                    "Run `gcloud auth application-default login` (on Cloud Run the job's service account is used).",
                ) from exc
        return self._client

    @property
    def retry(self) -> Retry:
        """google's default retry for storage (429, 5xx, connection errors), bounded by `retry_deadline_s`."""
        from google.cloud.storage.retry import DEFAULT_RETRY

        return DEFAULT_RETRY.with_timeout(self.retry_deadline_s).with_delay(initial=self.retry_initial_delay_s)

    def _bucket_handle(self) -> storage.Bucket:
        if self._bucket is None:
            self._bucket = self.client.bucket(self.bucket_name)
        return self._bucket

    def _name(self, key: str) -> str:
        """The object name of a lake key; refuses keys that would not map one to one onto the local layout."""
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise StorageError(f"Refusing lake key {key!r}.", "This is a bug; please report it.")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _key(self, name: str) -> str:
        return name[len(self.prefix) + 1 :] if self.prefix else name

    def _uri(self, key: str) -> str:
        return f"{self.root_uri}/{key}"

    # -- LakeStorage -------------------------------------------------------------------------------------------

    def put_file(self, local_path: Path, key: str) -> None:
        """Upload `local_path` as `key`, replacing only the version read just before; the local file is consumed."""
        name = self._name(key)
        try:
            size = local_path.stat().st_size
            crc32c = _crc32c(local_path)
        except OSError as exc:
            raise StorageError(f"Cannot read staged file {local_path} ({exc.strerror or exc}).",
                               "Check that PIPELINE_DATA_DIR is readable and has free space.") from exc  # fmt: skip
        resumable = size > self.resumable_threshold

        def attempt(generation: int) -> None:
            blob = self._bucket_handle().blob(name, chunk_size=self.chunk_size if resumable else None)
            with open(local_path, "rb") as handle:
                # size=None streams in resumable chunks; a known size goes in one multipart request.
                blob.upload_from_file(handle, size=None if resumable else size, if_generation_match=generation,
                                      retry=self.retry, timeout=REQUEST_TIMEOUT)  # fmt: skip

        self._guarded(key, "write", attempt, landed=lambda blob: blob is not None and blob.crc32c == crc32c)
        local_path.unlink(missing_ok=True)  # as the local backend moves it: a published file leaves staging

    def exists(self, key: str) -> bool:
        name = self._name(key)
        blob = self._bucket_handle().blob(name)
        return self._call(key, "read", lambda: bool(blob.exists(retry=self.retry, timeout=REQUEST_TIMEOUT)))

    def list(self, prefix: str) -> list[str]:
        """Keys under the folder `prefix` (or `[prefix]` when it is an object itself), sorted, as the local lake."""
        folder = prefix.strip("/")
        base = self._name(folder) if folder else self.prefix
        query = f"{base}/" if base else ""

        def names() -> list[str]:
            found = self.client.list_blobs(self.bucket_name, prefix=base or None, retry=self.retry,
                                           timeout=REQUEST_TIMEOUT)  # fmt: skip
            return [b.name for b in found if b.name == base or b.name.startswith(query)]

        keys = [self._key(n) for n in self._call(prefix or "", "list", names) if not n.endswith("/")]
        return sorted(k for k in keys if not PurePosixPath(k).name.startswith("."))

    def delete(self, key: str) -> None:
        """Remove `key` if present, but only the version just read (no error when absent)."""
        from google.api_core import exceptions as gexc

        name = self._name(key)

        def attempt(generation: int) -> None:
            if not generation:
                return
            # NotFound means gone already: a retried delete whose first try landed, or another run removed it.
            with contextlib.suppress(gexc.NotFound):
                self._bucket_handle().blob(name).delete(if_generation_match=generation, retry=self.retry,
                                                        timeout=REQUEST_TIMEOUT)  # fmt: skip

        self._guarded(key, "delete", attempt, landed=lambda blob: blob is None)

    def read_bytes(self, key: str) -> bytes:
        """The object's bytes; `FileNotFoundError` when it does not exist (as the local backend)."""
        from google.api_core import exceptions as gexc

        blob = self._bucket_handle().blob(self._name(key))

        def download() -> bytes:
            return bytes(blob.download_as_bytes(retry=self.retry, timeout=REQUEST_TIMEOUT))

        try:
            return self._call(key, "read", download)
        except StorageError as exc:
            if isinstance(exc.__cause__, gexc.NotFound) and self.bucket_exists():
                raise FileNotFoundError(f"No lake object {self._uri(key)}") from None
            raise

    # -- for the integrity check (flows/lake/integrity.py) ---------------------------------------------------

    def list_info(self, prefix: str) -> list[ObjectInfo]:
        """`list(prefix)` with each object's size and generation, from the same listing requests."""
        folder = prefix.strip("/")
        base = self._name(folder) if folder else self.prefix
        query = f"{base}/" if base else ""

        def blobs() -> list[tuple[str, int, int]]:
            found = self.client.list_blobs(self.bucket_name, prefix=base or None, retry=self.retry,
                                           timeout=REQUEST_TIMEOUT,
                                           fields="items(name,size,generation),nextPageToken")  # fmt: skip
            return [(b.name, int(b.size or 0), int(b.generation or 0)) for b in found
                    if (b.name == base or b.name.startswith(query)) and not b.name.endswith("/")]  # fmt: skip

        infos = [ObjectInfo(self._key(n), size, str(g)) for n, size, g in self._call(prefix or "", "list", blobs)]
        return sorted((i for i in infos if not PurePosixPath(i.key).name.startswith(".")), key=lambda i: i.key)

    def read_range(self, key: str, start: int, length: int, version: str | None = None) -> bytes:
        """`length` bytes of `key` from `start` (fewer at its end), of generation `version` when given;
        `FileNotFoundError` when it (or that generation) is gone."""
        from google.api_core import exceptions as gexc

        if length <= 0:
            return b""
        blob = self._bucket_handle().blob(self._name(key), generation=int(version) if version else None)

        def download() -> bytes:
            # checksum=None: GCS's hashes cover the whole object, never a range of it
            return bytes(blob.download_as_bytes(start=start, end=start + length - 1, checksum=None,
                                                retry=self.retry, timeout=REQUEST_TIMEOUT))  # fmt: skip

        try:
            return self._call(key, "read", download)
        except StorageError as exc:
            if isinstance(exc.__cause__, gexc.NotFound) and self.bucket_exists():
                raise FileNotFoundError(f"No lake object {self._uri(key)}") from None
            if isinstance(exc.__cause__, gexc.RequestRangeNotSatisfiable):  # past the end (the object shrank)
                return b""
            raise

    def move(self, key: str, dest: str, version: str | None = None) -> bool:
        """Copy `key` (generation `version`, else the live one) to `dest`, then delete exactly that generation.

        GCS has no rename: between the two calls both objects exist, never neither. False, leaving `key` alone and
        taking back the copy, when `key` is gone or was replaced meanwhile."""
        from google.api_core import exceptions as gexc

        generation = int(version) if version else self.generation(key)
        if not generation:
            return False
        bucket = self._bucket_handle()
        source = bucket.blob(self._name(key))

        def copy() -> None:
            bucket.copy_blob(source, bucket, self._name(dest), source_generation=generation,
                             if_source_generation_match=generation, retry=self.retry,
                             timeout=REQUEST_TIMEOUT)  # fmt: skip

        def delete() -> None:
            with contextlib.suppress(gexc.NotFound):  # a retried delete whose first try landed
                source.delete(if_generation_match=generation, retry=self.retry, timeout=REQUEST_TIMEOUT)

        for step in (copy, delete):
            try:
                self._call(key, "move", step)
            except StorageError as exc:
                if not isinstance(exc.__cause__, gexc.PreconditionFailed | gexc.NotFound) or not self.bucket_exists():
                    raise
                if step is delete:  # replaced after the copy: the copy goes, the new version stays
                    with contextlib.suppress(StorageError):
                        self.delete(dest)
                return False
        return True

    # -- helpers -----------------------------------------------------------------------------------------------

    def bucket_exists(self) -> bool:
        """Whether the bucket is there, asked with the object-list permission the pipeline already needs."""
        from google.api_core import exceptions as gexc

        def first() -> list[Any]:
            return list(self.client.list_blobs(self.bucket_name, max_results=1, retry=self.retry,
                                               timeout=REQUEST_TIMEOUT))  # fmt: skip

        try:
            self._call("", "list", first)
        except StorageError as exc:
            if isinstance(exc.__cause__, gexc.NotFound):
                return False
            raise
        return True

    def generation(self, key: str, *, action: str = "read") -> int:
        """The live generation of `key`, 0 when absent (the value `if_generation_match` uses for "must not exist")."""
        blob = self._current(key, action)
        return int(blob.generation) if blob is not None and blob.generation else 0

    def _current(self, key: str, action: str = "read") -> storage.Blob | None:
        name = self._name(key)

        def get() -> storage.Blob | None:
            return self._bucket_handle().get_blob(name, retry=self.retry, timeout=REQUEST_TIMEOUT)

        return self._call(key, action, get)

    def _guarded(self, key: str, action: str, attempt: Callable[[int], None], landed: Callable[[Any], bool]) -> None:
        """Run `attempt(generation)` with the generation just read; on a precondition failure, re-read and retry.

        `landed(blob)` says whether the live object already is what we wanted (our earlier attempt did land but
        its response was lost, or an identical replay raced us): then there is nothing left to do.
        """
        from google.api_core import exceptions as gexc

        for _ in range(self.precondition_attempts):
            try:
                self._call(key, action, lambda: attempt(self.generation(key, action=action)))
                return
            except StorageError as exc:
                if not isinstance(exc.__cause__, gexc.PreconditionFailed):
                    raise
            if landed(self._current(key, action)):
                return
        raise StorageError(
            f"{self._uri(key)} kept changing while we tried to {action} it "
            f"({self.precondition_attempts} attempts): another run is writing the same snapshot.",
            "Let the other run finish, then re-run this snapshot id if needed.",
        )

    def _call(self, key: str, action: str, fn: Callable[[], T]) -> T:
        """Run one storage call, turning Google's errors into one-line `StorageError`s (cause kept)."""
        import google.auth.exceptions
        from google.api_core import exceptions as gexc
        from google.cloud.storage.exceptions import DataCorruption

        where = self._uri(key) if key else self.root_uri
        try:
            return fn()
        except StorageError:
            raise
        except gexc.PreconditionFailed as exc:
            raise StorageError(f"{where} changed while we tried to {action} it.", "Re-run the snapshot.") from exc
        except gexc.NotFound as exc:
            raise _missing_bucket(self.bucket_name) from exc
        except gexc.Forbidden as exc:
            role = READ_ROLE if action in ("read", "list") else WRITE_ROLE
            raise StorageError(
                f"These Google credentials may not {action} {where} (missing {role} on gs://{self.bucket_name}).",
                f"Grant {role} on the bucket to the service account the pipeline runs as "
                "(`terraform apply` in terraform/envs/prod does), or log in as someone who has it.",
            ) from exc
        except (gexc.Unauthorized, google.auth.exceptions.RefreshError) as exc:
            raise StorageError(
                f"Google rejected the credentials used for {where}.",
                "Run `gcloud auth application-default login` (or fix the Cloud Run job's service account).",
            ) from exc
        except gexc.RetryError as exc:
            raise StorageError(
                f"GCS kept failing for {self.retry_deadline_s:g}s while trying to {action} {where} "
                f"({_short(exc.cause)}).",
                "Google Cloud Storage is unreachable or overloaded; re-run later with the same snapshot id.",
            ) from exc
        except DataCorruption as exc:
            raise StorageError(f"The upload of {where} was corrupted in transit.", "Re-run the snapshot.") from exc
        except gexc.GoogleAPICallError as exc:
            raise StorageError(
                f"GCS refused to {action} {where} ({_short(exc)}).",
                "Check the bucket's retention policy and object holds, and the credentials in use.",
            ) from exc
        except (google.auth.exceptions.TransportError, OSError) as exc:
            raise StorageError(
                f"Could not reach GCS to {action} {where} ({_short(exc)}).",
                "Check the network, then re-run with the same snapshot id.",
            ) from exc


def _missing_bucket(bucket: str) -> StorageError:
    return StorageError(
        f"GCS bucket {bucket} does not exist or is not visible to these credentials.",
        "Run `terraform apply` (terraform/envs/prod) or set GCS_BUCKET.",
    )


def _short(exc: BaseException | None) -> str:
    if exc is None:
        return "no response"
    code = getattr(exc, "code", None)
    message = getattr(exc, "message", None) or str(exc)
    text = f"{int(code)} {message}" if isinstance(code, int) else f"{type(exc).__name__}: {message}"
    return " ".join(text.split())[:200]


def _crc32c(path: Path) -> str:
    """Base64 CRC32C of a file, as GCS reports it in object metadata."""
    import google_crc32c

    checksum = google_crc32c.Checksum()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            checksum.update(block)
    return base64.b64encode(checksum.digest()).decode("ascii")
