"""Lake integrity: no single corrupt file can wedge every later build.

dbt reads each dataset as one glob (DuckDB's `read_parquet`, BigQuery's hive-partitioned external tables): one
object there that is not a readable Parquet file of the dataset's schema (zero bytes, truncated, another format,
a column of the wrong type) fails the read, and so every build after it. `verify_lake` runs before the marts are
built: it proves every data file it has not seen before readable (its Parquet footer parses, its columns fit the
dataset's Arrow schema, its hive path is one the readers understand) and moves any that is not out of the data
zone, to `corrupt/<original key>`, beside a `<that key>.reason.json` record of why and when. The build goes on
without it, and the run logs one warning line naming it.

Only footers are read: the last 64 KiB of an object (one ranged read; a second when the footer is bigger), never
its data pages. Verified files are remembered in the lake (`integrity/verified.parquet`: key, size, version,
where the version is the local inode and mtime or the GCS generation), so a run re-reads only what was written or
replaced since the last one; a warm run costs one listing per dataset and one small read.
"""

from __future__ import annotations

import io
import json
import logging
import re
import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from flows.errors import StorageError
from flows.lake.parquet import ZONE_DATA, StagedParquet
from flows.lake.storage import LakeStorage, ObjectInfo

_log = logging.getLogger(__name__)  # engine code logs plainly; the flows show it in their runs

ZONE_CORRUPT = "corrupt"
MANIFEST_KEY = "integrity/verified.parquet"
RECORD_SUFFIX = ".reason.json"  # distinct from any moved file's own name (a stray export.json)
FOOTER_READ = 64 * 1024  # what Arrow reads first too: one request holds the footer of nearly every lake file
WORKERS = 8  # concurrent footer reads on GCS, where each is a round trip; a local lake reads them in turn (faster)
MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("size", pa.int64(), nullable=False),
        pa.field("version", pa.string(), nullable=False),
        pa.field("verified_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ],
    metadata={"description": "Lake data files whose footer and schema were verified (flows/lake/integrity.py)."},
)
_MAGIC = b"PAR1"


class CheckableLake(LakeStorage, Protocol):
    """What the check needs beyond `LakeStorage` (LocalStorage, GcsStorage and StorageWrapper have it)."""

    def list_info(self, prefix: str) -> list[ObjectInfo]: ...

    def read_range(self, key: str, start: int, length: int, version: str | None = None) -> bytes: ...

    def move(self, key: str, dest: str, version: str | None = None) -> bool: ...


@dataclass
class CorruptFile:
    """A data file moved out of the lake's data zone, and why."""

    dataset: str
    key: str
    corrupt_key: str
    size: int
    version: str
    reason: str
    moved_at: datetime

    @property
    def record_key(self) -> str:
        return self.corrupt_key + RECORD_SUFFIX

    def record(self) -> dict[str, Any]:
        return {
            "original_key": self.key,
            "corrupt_key": self.corrupt_key,
            "dataset": self.dataset,
            "size_bytes": self.size,
            "version": self.version,
            "reason": self.reason,
            "moved_at": self.moved_at.isoformat(),
        }


@dataclass
class IntegrityReport:
    """What one check did: files listed, footers read, files moved, files it could not read this time."""

    files: int = 0
    verified: int = 0  # footers read (and found good) this run
    remembered: int = 0  # unchanged since an earlier run verified them: not read
    corrupt: list[CorruptFile] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)  # unreadable for now (storage trouble): checked next run
    seconds: float = 0.0

    def line(self) -> str:
        return (
            f"lake integrity: {self.files} data files, {self.verified} verified now, {self.remembered} "
            f"remembered, {len(self.corrupt)} moved to {ZONE_CORRUPT}/, {len(self.unchecked)} unchecked, "
            f"{self.seconds:.2f}s"
        )


class _Unreadable(Exception):
    """The object could not be read now (gone, replaced meanwhile, storage trouble): not a verdict on it."""


def hive_partitions(dataset: str) -> tuple[str, ...]:
    """The hive partition keys in a dataset's paths, as the readers declare them (flows/contracts/bigquery.py)."""
    from flows.contracts.bigquery import DEFAULT_HIVE_PARTITION_KEYS, HIVE_PARTITION_KEYS

    return tuple(name for name, _ in HIVE_PARTITION_KEYS.get(dataset, DEFAULT_HIVE_PARTITION_KEYS))


def verify_lake(
    storage: CheckableLake,
    schemas: Mapping[str, pa.Schema],
    staging_dir: Path,
    *,
    logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    workers: int | None = None,
) -> IntegrityReport:
    """Verify every file under `coincap/<dataset>/` of the given datasets not verified before; move each corrupt
    one to `corrupt/<its key>` with a record; remember the good ones. Never raises on a file's content."""
    log = logger or _log
    started = time.perf_counter()
    report = IntegrityReport()
    known = _load_manifest(storage, log)
    listed = {name: storage.list_info(f"{ZONE_DATA}/{name}/") for name in schemas}
    report.files = sum(len(infos) for infos in listed.values())
    good: dict[str, tuple[int, str, datetime]] = {}
    todo: list[tuple[str, ObjectInfo]] = []
    for name, infos in listed.items():
        for info in infos:
            seen = known.get(info.key)
            if seen is not None and seen[:2] == (info.size, info.version):
                good[info.key] = seen
            else:
                todo.append((name, info))
    report.remembered = len(good)

    def check(item: tuple[str, ObjectInfo]) -> str | None | _Unreadable:
        name, info = item
        try:
            return inspect_file(storage, info, schemas[name], name)
        except _Unreadable as exc:
            return exc

    now = datetime.now(UTC)
    if workers is None:
        workers = WORKERS if "://" in storage.root_uri else 1
    if workers > 1 and len(todo) > 1:
        with ThreadPoolExecutor(max_workers=min(workers, len(todo))) as pool:
            verdicts = list(pool.map(check, todo))
    else:
        verdicts = [check(item) for item in todo]
    for (name, info), verdict in zip(todo, verdicts, strict=True):
        if verdict is None:
            good[info.key] = (info.size, info.version, now)
            report.verified += 1
        elif isinstance(verdict, _Unreadable):
            if str(verdict):  # gone since the listing needs no word
                report.unchecked.append(info.key)
                log.warning("could not check lake file %s (%s); it is checked again on the next run.",
                            _uri(storage, info.key), verdict)  # fmt: skip
        else:
            moved = _quarantine(storage, name, info, verdict, staging_dir)
            if moved is None:
                report.unchecked.append(info.key)  # replaced or removed meanwhile: the new one is checked next run
                continue
            report.corrupt.append(moved)
            log.warning(
                "corrupt lake file %s (%s): moved to %s, its record beside it (.reason.json); the build goes on "
                "without it. To restore it, repair it, move it back, delete the record (README: A corrupt lake file).",
                _uri(storage, info.key), verdict, _uri(storage, moved.corrupt_key),
            )  # fmt: skip
    if set(good) != set(known) or report.verified:
        _save_manifest(storage, good, staging_dir)
    report.seconds = time.perf_counter() - started
    log.info("%s", report.line())
    return report


# ------------------------------------------------------------------------------------------------ one file


def inspect_file(storage: CheckableLake, info: ObjectInfo, schema: pa.Schema, dataset: str) -> str | None:
    """Why `info` cannot be read as a file of `dataset` (one line), or None when it can. Reads its footer only.
    Raises `_Unreadable` when the object cannot be read now (gone, replaced, storage trouble)."""
    layout = _layout_problem(info.key, dataset)
    if layout:
        return layout
    if info.size == 0:
        return "empty object (0 bytes)"
    if info.size < 2 * len(_MAGIC) + 4:
        return f"{info.size} bytes: too small to be a Parquet file"
    tail = _read(storage, info, info.size - min(info.size, FOOTER_READ), min(info.size, FOOTER_READ))
    if tail[-4:] == b"PARE":
        return "its Parquet footer is encrypted, which the warehouse cannot read"
    if tail[-4:] != _MAGIC:
        return "no Parquet footer at its end (truncated, or not a Parquet file)"
    footer = int.from_bytes(tail[-8:-4], "little")
    if footer + 8 + len(_MAGIC) > info.size:
        return f"its footer claims {footer} bytes, more than the file holds (truncated)"
    if len(tail) == info.size and tail[:4] != _MAGIC:
        return "no Parquet header (not a Parquet file)"
    if footer + 8 > len(tail):
        tail = _read(storage, info, info.size - footer - 8, footer + 8)
    handle = _TailFile(storage, info, tail)
    try:
        parquet = pq.ParquetFile(handle)
        actual = parquet.schema_arrow
    except (pa.ArrowException, OSError, ValueError) as exc:
        if handle.error is not None:  # the storage failed under Arrow, not the file
            raise handle.error from None
        return f"unreadable Parquet footer ({_one_line(exc)})"
    return schema_problem(actual, schema, dataset)


def schema_problem(actual: pa.Schema, expected: pa.Schema, dataset: str) -> str | None:
    """Why a file of schema `actual` cannot be read as `dataset` (whose lake schema is `expected`), or None.

    Columns match by name, without case (as DuckDB and BigQuery match them). A nullable column may be missing
    (files from before a contract gained it are read with `union_by_name`); a required one may not. A column may
    be narrower than the contract's (int32 for int64, decimal(10, 2) for decimal(38, 18), any string or UTC
    timestamp flavour), never of another kind. Columns the contract does not know are left to the readers.
    """
    by_lower: dict[str, str] = {}
    for name in actual.names:
        if name.lower() in by_lower:
            return f"columns {by_lower[name.lower()]!r} and {name!r} clash (the warehouse ignores case)"
        by_lower[name.lower()] = name
    for key in hive_partitions(dataset):
        if key.lower() in by_lower:
            return f"its column {by_lower[key.lower()]!r} repeats the hive partition key {key!r}"
    for want in expected:
        name = by_lower.get(want.name.lower())
        if name is None:
            if not want.nullable:
                return f"lacks the required column {want.name!r}"
            continue
        got = actual.field(name).type
        if not _fits(got, want.type):
            return f"column {name!r} is {got}, the {dataset} schema says {want.type}"
    return None


def _fits(got: pa.DataType, want: pa.DataType) -> bool:
    """Whether both readers take a `got` column where the dataset has `want`."""
    t = pa.types
    if t.is_dictionary(got):  # dictionary-encoded in Arrow's metadata (a pandas category): read as its values
        got = got.value_type
    if got.equals(want):
        return True
    if t.is_string(want) or t.is_large_string(want):
        return t.is_string(got) or t.is_large_string(got) or t.is_string_view(got)
    if t.is_integer(want):
        if t.is_signed_integer(got):
            return got.bit_width <= want.bit_width
        return t.is_unsigned_integer(got) and got.bit_width < want.bit_width
    if t.is_floating(want):
        return t.is_floating(got) and got.bit_width <= want.bit_width
    if t.is_decimal(want):
        return (
            t.is_decimal(got)
            and got.precision <= 38
            and got.scale <= want.scale
            and got.precision - got.scale <= want.precision - want.scale
        )
    if t.is_timestamp(want):  # a naive timestamp in a UTC column reads as another type (DATETIME on BigQuery)
        return t.is_timestamp(got) and (got.tz is None) == (want.tz is None)
    return False


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _layout_problem(key: str, dataset: str) -> str | None:
    """Why `key` is not at a path the dataset's readers expect (`coincap/<dataset>/dt=YYYY-MM-DD/<file>`)."""
    keys = hive_partitions(dataset)
    folders = key.split("/")[2:-1]
    expected = "/".join(f"{k}=…" for k in keys)
    values = [f.partition("=") for f in folders]
    if len(folders) != len(keys) or any(
        k != name or not sep or not v for (name, sep, v), k in zip(values, keys, strict=True)
    ):
        return f"not in the {expected}/ folder layout the warehouse reads"
    for (name, _, value), k in zip(values, keys, strict=True):
        if k == "dt" and not _is_date(value):
            return f"its folder {name}={value} is not a date (YYYY-MM-DD)"
    return None


def _is_date(text: str) -> bool:
    if not _DATE.match(text):
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _read(storage: CheckableLake, info: ObjectInfo, start: int, length: int) -> bytes:
    try:
        data = storage.read_range(info.key, start, length, info.version)
    except FileNotFoundError:
        raise _Unreadable("") from None  # removed since the listing (a compaction, another run's move)
    except (StorageError, OSError) as exc:
        raise _Unreadable(_one_line(exc)) from exc
    if len(data) != length:
        raise _Unreadable("it changed while being checked")
    return data


class _TailFile(io.RawIOBase):
    """A read-only file of the object's full size whose tail is in memory: what Arrow needs to parse a footer.
    A read before the tail (Arrow does not make one for the footer) goes to the storage."""

    def __init__(self, storage: CheckableLake, info: ObjectInfo, tail: bytes) -> None:
        super().__init__()
        self.storage, self.info, self.tail = storage, info, tail
        self.size = info.size
        self.tail_start = info.size - len(tail)
        self.pos = 0
        self.error: _Unreadable | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.size - self.pos)
        if n <= 0:
            return 0
        if self.pos >= self.tail_start:
            data = self.tail[self.pos - self.tail_start : self.pos - self.tail_start + n]
        else:
            try:
                data = _read(self.storage, self.info, self.pos, n)
            except _Unreadable as exc:
                self.error = exc
                raise OSError(str(exc)) from exc
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)


# ------------------------------------------------------------------------------------------ moving, records


def _quarantine(
    storage: CheckableLake, dataset: str, info: ObjectInfo, reason: str, staging_dir: Path
) -> CorruptFile | None:
    """Record, then move, a corrupt file; None (and no record) when it was replaced or removed meanwhile."""
    moved = CorruptFile(
        dataset=dataset,
        key=info.key,
        corrupt_key=f"{ZONE_CORRUPT}/{info.key}",
        size=info.size,
        version=info.version,
        reason=reason,
        moved_at=datetime.now(UTC),
    )
    # The record goes first: a crash in between leaves a record of a file still in place (moved again next run),
    # never a moved file nobody can explain.
    _put_bytes(storage, moved.record_key, (json.dumps(moved.record(), ensure_ascii=False) + "\n").encode(), staging_dir)
    if not storage.move(info.key, moved.corrupt_key, info.version):
        storage.delete(moved.record_key)
        return None
    return moved


def corrupt_records(storage: LakeStorage) -> list[dict[str, Any]]:
    """Every record in the corrupt zone, oldest first (what `read_json('<lake>/corrupt/**/*.reason.json')` shows)."""
    keys = [k for k in storage.list(f"{ZONE_CORRUPT}/") if k.endswith(RECORD_SUFFIX)]
    records = [json.loads(storage.read_bytes(k)) for k in keys]
    records = [r for r in records if isinstance(r, dict) and "original_key" in r]
    return sorted(records, key=lambda r: (str(r.get("moved_at", "")), r["original_key"]))


def _put_bytes(storage: LakeStorage, key: str, data: bytes, staging_dir: Path) -> None:
    staging_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=staging_dir, suffix=".json", delete=False) as handle:
        handle.write(data)
    try:
        storage.put_file(Path(handle.name), key)
    finally:
        Path(handle.name).unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------ manifest


def _load_manifest(storage: LakeStorage, log: Any) -> dict[str, tuple[int, str, datetime]]:
    """Key -> (size, version, verified_at) of the files verified before; empty when there is no usable manifest."""
    try:
        data = storage.read_bytes(MANIFEST_KEY)
    except FileNotFoundError:
        return {}
    try:
        table = pq.read_table(pa.BufferReader(data)).cast(MANIFEST_SCHEMA)
    except (pa.ArrowException, OSError, ValueError) as exc:
        log.warning("the lake's list of verified files %s is unreadable (%s): every file is verified again.",
                    _uri(storage, MANIFEST_KEY), _one_line(exc))  # fmt: skip
        return {}
    columns = table.to_pydict()
    return {
        k: (s, v, at)
        for k, s, v, at in zip(columns["key"], columns["size"], columns["version"], columns["verified_at"], strict=True)
    }


def _save_manifest(storage: LakeStorage, good: Mapping[str, tuple[int, str, datetime]], staging_dir: Path) -> None:
    keys = sorted(good)
    table = pa.table(
        {
            "key": keys,
            "size": [good[k][0] for k in keys],
            "version": [good[k][1] for k in keys],
            "verified_at": [good[k][2] for k in keys],
        },
        schema=MANIFEST_SCHEMA,
    )
    with StagedParquet(MANIFEST_SCHEMA, staging_dir) as staged:
        staged.write(table)
        staged.publish(storage, MANIFEST_KEY)


# ------------------------------------------------------------------------------------------------ helpers


def _uri(storage: LakeStorage, key: str) -> str:
    return f"{storage.root_uri}/{key}"


def _one_line(exc: BaseException, limit: int = 200) -> str:
    return " ".join(str(exc).split())[:limit] or type(exc).__name__
