"""Where lake files go and how they are written: staged locally, then published atomically."""

from __future__ import annotations

import contextlib
import tempfile
from datetime import datetime
from pathlib import Path
from types import TracebackType

import pyarrow as pa
import pyarrow.parquet as pq

from flows.errors import NotWritable
from flows.lake.storage import LakeStorage, not_writable

ZONE_DATA = "coincap"
ZONE_QUARANTINE = "quarantine"
COMPRESSION = "zstd"


def snapshot_key(zone: str, dataset: str, snapshot_id: str, day: datetime) -> str:
    """`<zone>/<dataset>/dt=YYYY-MM-DD/<snapshot_id>.parquet`: one object per dataset per snapshot."""
    return f"{zone}/{dataset}/dt={day:%Y-%m-%d}/{snapshot_id}.parquet"


class StagedParquet:
    """Write record batches to a local temporary Parquet file; `publish` moves it into the lake atomically.

    Leaving the `with` block without publishing discards the file, so a failed run leaves nothing behind.
    """

    def __init__(self, schema: pa.Schema, staging_dir: Path) -> None:
        try:
            staging_dir.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(suffix=".parquet", dir=staging_dir)
        except OSError as exc:  # a read-only or full data dir: one line naming it, never retried
            _raise_permanent(exc, staging_dir)
            raise
        Path(name).touch()
        self.path = Path(name)
        self.schema = schema
        self.rows = 0
        self._handle = open(handle, "wb")  # noqa: SIM115 - closed in close()
        self._writer: pq.ParquetWriter | None = pq.ParquetWriter(
            self._handle,
            schema,
            compression=COMPRESSION,
            write_statistics=True,
            # Dictionary-encode text only: prices, volumes and counts are nearly all distinct, so a dictionary
            # there is built and thrown away (measured: writing 25% faster, files 17% smaller).
            use_dictionary=[f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)],
        )

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        assert self._writer is not None, "write after close"
        try:
            self._writer.write_table(table.cast(self.schema), row_group_size=128 * 1024)
        except OSError as exc:  # a full disk: one line naming the staging folder, never retried
            _raise_permanent(exc, self.path.parent)
            raise
        self.rows += table.num_rows

    def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            try:
                writer.close()  # an empty file still gets the schema, so readers' globs keep working
            except OSError as exc:
                _raise_permanent(exc, self.path.parent)
                raise
            finally:
                self._handle.close()

    def publish(self, storage: LakeStorage, key: str) -> None:
        self.close()
        storage.put_file(self.path, key)

    def discard(self) -> None:
        with contextlib.suppress(OSError, NotWritable):  # cleanup: the failure that led here is the one to report
            self.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> StagedParquet:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.discard()


def _raise_permanent(exc: OSError, folder: Path) -> None:
    """Raise `NotWritable` naming `folder` when `exc` is a failure no retry can fix; return otherwise."""
    permanent = not_writable(exc, folder)
    if permanent is not None:
        raise permanent from None


# A dataset that has never been extracted (say, the first run was `--dataset assets`) has no files, and
# readers of the lake (DuckDB's read_parquet glob, BigQuery external tables) fail on an empty glob. A
# zero-row file carrying the schema, in an epoch partition, keeps them working and adds no rows.
PLACEHOLDER_DAY = datetime(1970, 1, 1)
PLACEHOLDER_ID = "19700101T000000Z"


def ensure_readable(storage: LakeStorage, schemas: dict[str, pa.Schema], staging_dir: Path) -> list[str]:
    """Give every dataset without lake files an empty, schema-only file; return the keys written."""
    written = []
    for dataset, schema in schemas.items():
        if storage.list(f"{ZONE_DATA}/{dataset}/"):
            continue
        key = snapshot_key(ZONE_DATA, dataset, PLACEHOLDER_ID, PLACEHOLDER_DAY)
        StagedParquet(schema, staging_dir).publish(storage, key)
        written.append(key)
    return written
