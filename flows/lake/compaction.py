"""Merge the stream's small micro-batch files into large ones, without losing or duplicating a tick.

The stream writes a file every few seconds (`coincap/prices_stream/dt=D/<batch_id>.parquet`, batch ids start with
the UTC time of their first tick: `20261121T053000123456Z-...`). `compact` rewrites the files of a finished day,
or of the finished hours of the current day, as `dt=D/compacted-<unit>-<digest>-<part>.parquet`, about
`target_bytes` each, then deletes the inputs.

Why it cannot lose or duplicate a tick, even when it crashes or runs twice:
- Outputs are written (each atomically) before any input is deleted: a crash leaves extra copies, never a hole.
- Every copy of a tick is identical (same connection_id, message_seq, asset_id, and the same values), so merging
  is `select distinct` over the inputs, after checking that no tick key has two different copies.
- Output names are a function of the content (`digest` hashes the batch ids and their tick counts), not of the
  run: a re-run after a crash computes the same digest, rewrites the same names with the same bytes, and then
  deletes what the crashed run did not. A unit whose only files are its own outputs is left alone.
- Between writing the outputs and deleting the inputs, a raw glob over the lake sees those ticks twice. Readers
  go through `stg_coincap__prices_stream`, which keeps one row per tick key, so they never do. We chose that over
  a manifest or name-based exclusion because it needs no engine-specific file-name column (DuckDB's `filename`,
  BigQuery's `_FILE_NAME`), holds however long a crashed run leaves the copies, and also absorbs any other
  duplicate (a re-published batch). A raw reader that cannot dedup should skip partitions being compacted.
Deleting an input can fail a DuckDB query that listed it a moment before; re-running the query is enough.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from flows.errors import StorageError
from flows.lake.parquet import ZONE_DATA, StagedParquet
from flows.lake.storage import LakeStorage

COMPACTED_PREFIX = "compacted-"
DEFAULT_TARGET_BYTES = 64 * 1024 * 1024
# A batch is published up to `batch_seconds` (plus storage retries) after its hour ends: leave late files time.
DEFAULT_GRACE = timedelta(minutes=5)
_ROWS_PER_GROUP = 128 * 1024
_MICRO_HOUR = re.compile(r"^(\d{8}T\d{2})")
_COMPACTED = re.compile(r"^compacted-(\d{8}(?:T\d{2})?)-([0-9a-f]+)-(\d{4})\.parquet$")


@dataclass(frozen=True)
class Layout:
    """What compaction needs to know about a dataset's rows."""

    key: tuple[str, ...]  # identifies a row; copies of a key must be identical
    order_by: tuple[str, ...]  # total order of the output (ends with the key)
    batch_column: str  # groups rows by the file that first published them (for the digest)


LAYOUTS: dict[str, Layout] = {
    "prices_stream": Layout(
        key=("connection_id", "message_seq", "asset_id"),
        order_by=("tick_ts", "connection_id", "message_seq", "asset_id"),
        batch_column="batch_id",
    ),
}


@dataclass
class UnitReport:
    """One compacted unit: a whole day (`20261121`) or one hour (`20261121T05`)."""

    unit: str
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    rows_in: int = 0
    rows_out: int = 0
    skipped: str | None = None  # why nothing was written

    @property
    def duplicates_dropped(self) -> int:
        return self.rows_in - self.rows_out


@dataclass
class CompactionReport:
    """What `compact` did for one day of one dataset."""

    dataset: str
    day: date
    units: list[UnitReport] = field(default_factory=list)

    @property
    def written(self) -> list[str]:
        return [k for u in self.units for k in u.outputs]

    @property
    def deleted(self) -> list[str]:
        return [k for u in self.units for k in u.deleted]

    @property
    def rows_out(self) -> int:
        return sum(u.rows_out for u in self.units)


def compact(
    storage: LakeStorage,
    dataset: str = "prices_stream",
    *,
    day: date,
    target_bytes: int = DEFAULT_TARGET_BYTES,
    now: datetime | None = None,
    grace: timedelta = DEFAULT_GRACE,
    zone: str = ZONE_DATA,
    staging_dir: Path | None = None,
) -> CompactionReport:
    """Merge the small files of `day` (whole if finished, else its finished hours) into ~`target_bytes` files."""
    layout = LAYOUTS.get(dataset)
    if layout is None:
        raise ValueError(f"compaction knows {sorted(LAYOUTS)}, not {dataset!r}")
    if target_bytes < 1:
        raise ValueError("target_bytes must be positive")
    now = (now or datetime.now(UTC)).astimezone(UTC)
    prefix = f"{zone}/{dataset}/dt={day:%Y-%m-%d}/"
    report = CompactionReport(dataset=dataset, day=day)
    for unit, inputs in _units(storage.list(prefix), prefix, day, now, grace):
        with tempfile.TemporaryDirectory(dir=staging_dir, prefix="compact-") as tmp:
            report.units.append(_compact_unit(storage, layout, prefix, unit, inputs, target_bytes, Path(tmp)))
    return report


def _units(keys: list[str], prefix: str, day: date, now: datetime, grace: timedelta) -> Iterator[tuple[str, list[str]]]:
    """(unit, input keys) of the finished units: the whole day once it is over, else each finished hour."""
    files = [k for k in keys if k.endswith(".parquet") and "/" not in k[len(prefix) :]]
    start = datetime.combine(day, time(), tzinfo=UTC)
    if now >= start + timedelta(days=1) + grace:
        if files:
            yield f"{day:%Y%m%d}", files
        return
    by_hour: dict[str, list[str]] = {}
    for key in files:
        hour = _hour_of(key[len(prefix) :])
        if hour is not None:
            by_hour.setdefault(hour, []).append(key)
    for hour, inputs in sorted(by_hour.items()):
        hour_end = start + timedelta(hours=int(hour[9:11]) + 1)
        if hour.startswith(f"{day:%Y%m%d}") and now >= hour_end + grace:
            yield hour, inputs


def _hour_of(name: str) -> str | None:
    """`20261121T05` for a micro-batch file or an hour's compacted file; None for anything else."""
    compacted = _COMPACTED.match(name)
    if compacted:
        unit = compacted.group(1)
        return unit if len(unit) == 11 else None  # a day-level file of an unfinished day: a stray, left alone
    micro = _MICRO_HOUR.match(name)
    return micro.group(1) if micro else None


def _compact_unit(
    storage: LakeStorage,
    layout: Layout,
    prefix: str,
    unit: str,
    inputs: list[str],
    target_bytes: int,
    tmp: Path,
) -> UnitReport:
    report = UnitReport(unit=unit, inputs=sorted(inputs))
    names = [k[len(prefix) :] for k in report.inputs]
    generations = {(m.group(1), m.group(2)) for m in map(_COMPACTED.match, names) if m}
    if all(_COMPACTED.match(n) for n in names) and len(generations) == 1 and next(iter(generations))[0] == unit:
        report.skipped = "already compacted"
        return report

    local = []
    for i, key in enumerate(report.inputs):
        path = tmp / f"in-{i:06d}.parquet"
        path.write_bytes(storage.read_bytes(key))
        local.append(path)
    schema = pa.unify_schemas([pq.read_schema(p) for p in local])
    columns = ", ".join(_quote(f.name) for f in schema)
    key = ", ".join(_quote(c) for c in layout.key)

    con = duckdb.connect(config={"temp_directory": str(tmp / "spill")})  # sorts bigger than memory spill here
    try:
        con.execute("set TimeZone = 'UTC'")  # timestamps come back as UTC (a config key cannot load icu first)
        files = "[" + ", ".join(_literal(p.as_posix()) for p in local) + "]"
        con.execute(f"create view inputs as select {columns} from read_parquet({files}, union_by_name = true)")
        con.execute("create view ticks as select distinct * from inputs")
        report.rows_in = _scalar(con, "select count(*) from inputs")
        report.rows_out = _scalar(con, "select count(*) from ticks")
        if report.rows_out == 0:
            report.skipped = "no rows"  # e.g. the schema-only placeholder readers' globs rely on
            return report
        conflicts = _scalar(con, f"select count(*) from (select {key} from ticks group by {key} having count(*) > 1)")
        if conflicts:
            raise StorageError(
                f"Refusing to compact {prefix} ({unit}): {conflicts} tick keys have copies with different values.",
                "Two streams wrote the same connection ids; inspect the files before deleting any.",
            )
        digest = _digest(con, layout.batch_column)
        order = ", ".join(_quote(c) for c in layout.order_by)
        result = con.execute(f"select * from ticks order by {order}")
        # DuckDB 1.5 renamed fetch_record_batch (deprecated) to to_arrow_reader; 1.4 has only the old name
        fetch = getattr(result, "to_arrow_reader", None) or result.fetch_record_batch
        reader = fetch(_ROWS_PER_GROUP)
        staged = _write_parts(reader, schema, target_bytes, tmp / "out")
        report.outputs = [f"{prefix}{COMPACTED_PREFIX}{unit}-{digest}-{i:04d}.parquet" for i in range(len(staged))]
        for part, out_key in zip(staged, report.outputs, strict=True):
            part.publish(storage, out_key)  # every output lands before any input goes
    finally:
        con.close()
    keep = set(report.outputs)
    for input_key in report.inputs:
        if input_key not in keep:
            storage.delete(input_key)
            report.deleted.append(input_key)
    return report


def _write_parts(
    reader: pa.RecordBatchReader, schema: pa.Schema, target_bytes: int, staging: Path
) -> list[StagedParquet]:
    """Write the sorted rows in row groups of exactly _ROWS_PER_GROUP (whatever chunks DuckDB hands over, so the
    bytes depend on the rows only), closing a part once it reaches `target_bytes`."""
    parts: list[StagedParquet] = []
    current: StagedParquet | None = None

    def write(table: pa.Table) -> None:
        nonlocal current
        if current is None:
            current = StagedParquet(schema, staging)
            parts.append(current)
        current.write(table)
        if current.path.stat().st_size >= target_bytes:
            current.close()
            current = None

    pending: list[pa.RecordBatch] = []
    buffered = 0
    for batch in reader:
        pending.append(batch)
        buffered += batch.num_rows
        while buffered >= _ROWS_PER_GROUP:
            table = pa.Table.from_batches(pending)
            write(table.slice(0, _ROWS_PER_GROUP))
            rest = table.slice(_ROWS_PER_GROUP)
            pending, buffered = rest.to_batches(), rest.num_rows
    if buffered:
        write(pa.Table.from_batches(pending))
    if current is not None:
        current.close()
    return parts


def _digest(con: duckdb.DuckDBPyConnection, batch_column: str) -> str:
    """Names the outputs after their content: the batches they hold and how many rows each."""
    rows = con.execute(
        f"select {_quote(batch_column)}, count(*) from ticks group by 1 order by 1"
    ).fetchall()  # fmt: skip
    text = "\n".join(f"{batch}:{n}" for batch, n in rows)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = con.execute(sql).fetchone()
    return int(row[0]) if row else 0


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
