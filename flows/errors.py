"""Errors meant for people: each carries one line saying what happened and what to do."""

from __future__ import annotations


class PipelineError(Exception):
    """A failure the user can act on. `str(err)` is the one line the CLI prints."""

    exit_code = 1

    def __init__(self, what: str, todo: str) -> None:
        self.what = what
        self.todo = todo
        super().__init__(f"{what} {todo}".strip())


class ConfigError(PipelineError):
    exit_code = 2


class ApiError(PipelineError):
    """CoinCap refused or could not serve a request after the retries allowed."""

    exit_code = 3


class ApiUnavailable(ApiError):
    """CoinCap kept failing transiently (5xx, timeouts, dropped or truncated responses): worth a later retry."""


class AuthError(ApiError):
    """Rejected key: never retried."""


class QuotaExhausted(ApiError):
    """The monthly credit quota is spent: never retried, since rejected calls may still cost credits."""


class StorageError(PipelineError):
    exit_code = 4


class TransformError(PipelineError):
    exit_code = 5


class DataQualityError(PipelineError):
    """Data-quality checks failed (`coincap-pipeline quality`); the data stays landed, flagged."""

    exit_code = 6


class SqlCheckError(PipelineError):
    """Google's SQL analyzer rejected a statement BigQuery would run (`coincap-pipeline check-sql`)."""

    exit_code = 7


class SnapshotIdError(ConfigError, ValueError):
    """A snapshot id that is not a real, past UTC time (`--snapshot-id`, a deployment's parameter).

    Also a ValueError, so callers that validated ids with `Snapshot.parse` keep catching it.
    """


class NotWritable(StorageError):
    """A path the run must write to refuses it for good (permissions, read-only or full disk, not a directory):
    never retried, since waiting does not change it. One line naming the path."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"Cannot write to {path}: {reason};",
            "make it writable (or free space) or set PIPELINE_DATA_DIR to a directory this user can write.",
        )


class DataDirBusy(PipelineError):
    """Another job holds the data dir's lock (flows/lake/lock.py): two writers would collide on the warehouse (a
    snapshot run), on the history files (a backfill) or on the stream's files (a price stream)."""

    def __init__(self, data_dir: object, pid: int | None, job: str = "run") -> None:
        self.data_dir = data_dir
        self.pid = pid
        self.job = job
        holder = f"pid {pid}" if pid else "pid unknown"
        super().__init__(
            f"Another {job} is writing to {data_dir} ({holder});", "wait for it or use another PIPELINE_DATA_DIR."
        )
