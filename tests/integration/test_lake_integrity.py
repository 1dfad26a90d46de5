"""One corrupt lake file can no longer break every build (issue "no value can break the build").

Before the marts are built, every lake data file not verified before is checked (Parquet footer, schema against
the dataset's, hive path); a bad one moves to `corrupt/<its key>` with a `.json` record and a warning, and the
build goes on. The oracle for "the lake reads again" is DuckDB's `read_parquet` over each dataset, as dbt's
sources call it; one real dbt build closes the loop. Both backends: a local folder and fake-gcs-server.
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.contracts.datasets import ASSET_HISTORY, CONTRACTS
from flows.contracts.stream import GAP_SCHEMA, TICK_SCHEMA
from flows.lake.integrity import FOOTER_READ, MANIFEST_KEY, ZONE_CORRUPT, corrupt_records, verify_lake
from flows.lake.parquet import PLACEHOLDER_DAY, PLACEHOLDER_ID, ZONE_DATA, snapshot_key
from flows.lake.storage import LocalStorage, StorageWrapper
from tests.gcs_server import PROJECT
from tests.lake_fixtures import generate_history, write_history

SCHEMAS: dict[str, pa.Schema] = {name: contract.arrow_schema() for name, contract in CONTRACTS.items()}
SCHEMAS.update(prices_stream=TICK_SCHEMA, prices_stream_gaps=GAP_SCHEMA, asset_history=ASSET_HISTORY.arrow_schema())
DAY = "dt=2026-10-03"  # after the fixture lake's two days


def parquet(table: pa.Table, **options: object) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, **options)  # type: ignore[arg-type]
    return sink.getvalue()


def retyped(table: pa.Table, column: str, new_type: pa.DataType) -> pa.Table:
    return table.set_column(table.schema.get_field_index(column), column, table[column].cast(new_type))


def resnap(table: pa.Table, snapshot_id: str) -> pa.Table:
    """The rows as another snapshot's (the id names the file; a lake holds each snapshot once)."""
    ts = datetime.strptime(snapshot_id, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    n = table.num_rows
    table = table.set_column(table.schema.get_field_index("snapshot_id"), "snapshot_id", pa.array([snapshot_id] * n))
    index = table.schema.get_field_index("snapshot_ts")
    return table.set_column(index, "snapshot_ts", pa.array([ts] * n, table.schema.field(index).type))


def history_table(price_type: pa.DataType | None = None) -> pa.Table:
    schema = ASSET_HISTORY.arrow_schema()
    row = {"asset_id": "bitcoin", "history_interval": "d1", "priceUsd": 80000, "time": 1_759_190_400_000,
           "snapshot_id": "20261003T000000Z", "snapshot_ts": 1_759_449_600_000_000}  # fmt: skip
    table = pa.Table.from_pylist([row], schema=schema)
    return retyped(table, "priceUsd", price_type) if price_type else table


def tick_table(**extra: pa.Array) -> pa.Table:
    row = {"asset_id": "bitcoin", "price_usd": 80000, "tick_ts": 1_759_449_600_000_000, "message_seq": 1,
           "connection_id": "s-c1", "batch_id": "20261003T000000000000Z-s"}  # fmt: skip
    table = pa.Table.from_pylist([row], schema=TICK_SCHEMA)
    for name, values in extra.items():
        table = table.append_column(name, values)
    return table


@dataclass(frozen=True)
class Bad:
    """A corrupt file, the reason it must be moved with, and whether DuckDB's glob sees the harm (the others break
    BigQuery's external tables, which read every object under the prefix and type columns by the schema)."""

    name: str
    dataset: str
    key: str
    data: bytes
    reason: str
    breaks_duckdb: bool


@dataclass(frozen=True)
class Lake:
    base: dict[str, bytes]  # a clean lake: two days of snapshots
    bad: list[Bad]
    good: dict[str, bytes]  # unusual but readable files: never moved


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    seed = tmp_path_factory.mktemp("seed")
    write_history(seed, generate_history(range(2)))
    base = {p.relative_to(seed).as_posix(): p.read_bytes() for p in sorted(seed.rglob("*.parquet"))}
    sample = {d: next(v for k, v in base.items() if k.startswith(f"coincap/{d}/")) for d in CONTRACTS}
    table = {d: pq.read_table(io.BytesIO(data)) for d, data in sample.items()}
    garbage_footer = b"PAR1" + b"\x00" * 100 + (50).to_bytes(4, "little") + b"PAR1"
    bad = [
        Bad("zero bytes", "assets", f"coincap/assets/{DAY}/20261003T000000Z.parquet", b"",
            "empty object (0 bytes)", True),
        Bad("truncated", "markets", f"coincap/markets/{DAY}/20261003T000000Z.parquet",
            sample["markets"][: len(sample["markets"]) // 2], "no Parquet footer at its end", True),
        Bad("truncated, footer kept", "rates", f"coincap/rates/{DAY}/20261003T000000Z.parquet",
            sample["rates"][:200] + sample["rates"][-8:], "its footer claims", True),
        Bad("garbage footer", "prices_stream_gaps", f"coincap/prices_stream_gaps/{DAY}/s-c1.parquet",
            garbage_footer, "unreadable Parquet footer (", True),
        Bad("CSV named .parquet", "exchanges", f"coincap/exchanges/{DAY}/20261003T000000Z.parquet",
            b"exchangeId,name\nbinance,Binance\n", "no Parquet footer at its end", True),
        Bad("JSON export", "rates", f"coincap/rates/{DAY}/export.json",
            b'[{"id": "euro", "rateUsd": "1.1571"}]\n', "no Parquet footer at its end", False),
        Bad("outside the partitions", "assets", "coincap/assets/20261003T080000Z.parquet",
            sample["assets"], "not in the dt=…/ folder layout", False),
        Bad("not a date", "assets", "coincap/assets/dt=2026-13-45/20261003T080000Z.parquet",
            sample["assets"], "dt=2026-13-45 is not a date", True),
        Bad("price as text", "assets", f"coincap/assets/{DAY}/20261003T160000Z.parquet",
            parquet(retyped(table["assets"], "priceUsd", pa.string())),
            "column 'priceUsd' is string, the assets schema says decimal128(38, 18)", True),
        Bad("naive timestamp", "markets", f"coincap/markets/{DAY}/20261003T080000Z.parquet",
            parquet(retyped(table["markets"], "snapshot_ts", pa.timestamp("us"))),
            "column 'snapshot_ts' is timestamp[us]", False),
        Bad("key column missing", "exchanges", f"coincap/exchanges/{DAY}/20261003T080000Z.parquet",
            parquet(table["exchanges"].drop_columns(["exchangeId"])), "lacks the required column 'exchangeId'",
            False),
        Bad("history price as float", "asset_history",
            "coincap/asset_history/interval=d1/asset=bitcoin/1759104000000_1759708800000.parquet",
            parquet(history_table(pa.float64())), "column 'priceUsd' is double", True),
        Bad("partition key as a column", "prices_stream",
            f"coincap/prices_stream/{DAY}/20261003T000000000000Z-s.parquet",
            parquet(tick_table(dt=pa.array(["2026-10-03"]))), "repeats the hive partition key 'dt'", False),
    ]  # fmt: skip
    n_rates = 400
    many_groups = pa.Table.from_pylist(
        [{"id": f"rate-{i}", "symbol": f"R{i}", "type": "crypto", "rateUsd": 1, "snapshot_id": "x", "snapshot_ts": 0}
         for i in range(n_rates)], schema=SCHEMAS["rates"],
    )  # fmt: skip
    good = {  # each its own snapshot, so a dbt build over them finds no duplicate keys
        f"coincap/assets/{DAY}/20261003T120000Z.parquet": parquet(SCHEMAS["assets"].empty_table()),  # 0-row group
        f"coincap/assets/{DAY}/20261003T200000Z.parquet": parquet(  # older: a nullable column missing
            resnap(table["assets"].drop_columns(["tokens"]), "20261003T200000Z")
        ),
        f"coincap/assets/{DAY}/20261003T210000Z.parquet": parquet(  # newer: a column the contract lacks
            resnap(table["assets"], "20261003T210000Z").append_column("newField", pa.nulls(table["assets"].num_rows))
        ),
        f"coincap/exchanges/{DAY}/20261003T120000Z.parquet": parquet(
            resnap(retyped(table["exchanges"], "rank", pa.int32()), "20261003T120000Z")
        ),
        f"coincap/markets/{DAY}/20261003T120000Z.parquet": duckdb_copy(  # another writer
            parquet(resnap(table["markets"], "20261003T120000Z")), tmp_path_factory
        ),
        # a footer above the 64 KiB read at once (one row group per row): read with a second request
        f"coincap/rates/{DAY}/20261003T120000Z.parquet": parquet(
            resnap(many_groups, "20261003T120000Z"), row_group_size=1
        ),
        "coincap/asset_history/interval=d1/asset=bitcoin/1758499200000_1759104000000.parquet": parquet(history_table()),
        f"coincap/prices_stream/{DAY}/20261003T010000000000Z-s.parquet": parquet(tick_table()),
        f"coincap/prices_stream_gaps/{DAY}/s-c0.parquet": parquet(GAP_SCHEMA.empty_table()),
    }
    big_footer = pq.read_metadata(io.BytesIO(good[f"coincap/rates/{DAY}/20261003T120000Z.parquet"])).serialized_size
    assert big_footer > FOOTER_READ
    return Lake(base, bad, good)


def duckdb_copy(data: bytes, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The same rows written by another Parquet writer (DuckDB's)."""
    folder = tmp_path_factory.mktemp("duckdb-writer")
    (folder / "in.parquet").write_bytes(data)
    duckdb.sql(f"copy (select * from read_parquet('{folder}/in.parquet')) to '{folder}/out.parquet' (format parquet)")
    return (folder / "out.parquet").read_bytes()


# ------------------------------------------------------------------------------------------ lakes, oracle


@pytest.fixture(params=["local", "gcs"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> LocalStorage:
    if request.param == "local":
        return LocalStorage(tmp_path / "lake")
    from flows.lake.gcs import GcsStorage

    emulator = request.getfixturevalue("gcs_emulator")
    return GcsStorage(emulator.create_bucket(), project=PROJECT, retry_deadline_s=5, retry_initial_delay_s=0.01)  # type: ignore[return-value]


def put(storage: LocalStorage, key: str, data: bytes, tmp_path: Path) -> None:
    path = tmp_path / "upload" / key.replace("/", "_")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    storage.put_file(path, key)


def populate(storage: LocalStorage, tmp_path: Path, *groups: dict[str, bytes]) -> None:
    for group in groups:
        for key, data in group.items():
            put(storage, key, data, tmp_path)


def snapshot(storage: LocalStorage) -> dict[str, bytes]:
    return {key: storage.read_bytes(key) for key in storage.list("")}


def mirror(storage: LocalStorage, folder: Path) -> Path:
    """The lake's objects as a local folder, for DuckDB to read (it has no GCS access offline)."""
    for key, data in snapshot(storage).items():
        (folder / key).parent.mkdir(parents=True, exist_ok=True)
        (folder / key).write_bytes(data)
    return folder


def glob(lake: Path, dataset: str) -> str:
    depth = "*/*/*.parquet" if dataset == "asset_history" else "*/*.parquet"  # as dbt's sources read them
    return f"{lake.as_posix()}/coincap/{dataset}/{depth}"


def read_types(files: str | list[str]) -> dict[str, str]:
    """Column -> DuckDB type of the files read as dbt's sources read them; raises when DuckDB cannot."""
    source = f"read_parquet({files!r}, hive_partitioning = true, union_by_name = true)"
    with duckdb.connect() as con:
        con.execute(f"select count(*) from {source}").fetchall()
        return {row[0]: row[1] for row in con.execute(f"describe select * from {source}").fetchall()}


def duckdb_reads(files: str | list[str], expected: dict[str, str]) -> bool:
    """Whether DuckDB reads the files with every column of `expected` at its expected type."""
    try:
        types = read_types(files)
    except duckdb.Error:
        return False
    return all(types.get(column) == kind for column, kind in expected.items())


def clean_file(files: Lake, dataset: str) -> tuple[str, bytes]:
    """A readable file of the dataset: a fixture snapshot, else one of the unusual good files."""
    return next((k, v) for k, v in {**files.base, **files.good}.items() if k.startswith(f"coincap/{dataset}/"))


def expected_types(folder: Path, files: Lake, dataset: str) -> dict[str, str]:
    """The types a clean file of the dataset reads as (its hive partitions included)."""
    key, data = clean_file(files, dataset)
    (folder / key).parent.mkdir(parents=True, exist_ok=True)
    (folder / key).write_bytes(data)
    return read_types(str(folder / key))


# ------------------------------------------------------------------------------------------------ tests


def test_each_planted_file_breaks_a_reader_before_the_check(files: Lake, tmp_path: Path) -> None:
    """The planted files are real breakers: with each beside a good file, DuckDB's read of the dataset (as dbt's
    source) fails or reads another type; the rest are objects BigQuery's external tables read and reject (every
    object under the prefix, typed by the table's schema, partitions parsed from the path)."""
    for i, bad in enumerate(files.bad):
        lake = tmp_path / f"lake-{i}"
        expected = expected_types(lake, files, bad.dataset)
        assert duckdb_reads(glob(lake, bad.dataset), expected), bad.name
        (lake / bad.key).parent.mkdir(parents=True, exist_ok=True)
        (lake / bad.key).write_bytes(bad.data)
        assert duckdb_reads(glob(lake, bad.dataset), expected) is not bad.breaks_duckdb, bad.name


def test_corrupt_files_are_moved_with_their_reason_and_good_files_stay(
    files: Lake, storage: LocalStorage, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    populate(storage, tmp_path, files.base, files.good, {b.key: b.data for b in files.bad})
    before = snapshot(storage)
    folder = mirror(storage, tmp_path / "before")
    assert not all(duckdb_reads(glob(folder, dataset), {}) for dataset in SCHEMAS), "the planted files break reads"

    with caplog.at_level(logging.WARNING, logger="flows.lake.integrity"):
        report = verify_lake(storage, SCHEMAS, tmp_path / "staging")

    assert sorted(c.key for c in report.corrupt) == sorted(b.key for b in files.bad)
    assert report.verified == len(files.base) + len(files.good) and not report.unchecked
    after = snapshot(storage)
    records = {r["original_key"]: r for r in corrupt_records(storage)}
    for bad in files.bad:
        assert bad.key not in after, bad.name
        assert after[f"{ZONE_CORRUPT}/{bad.key}"] == bad.data, f"{bad.name}: moved byte for byte"
        record = records[bad.key]
        assert bad.reason in record["reason"] and "\n" not in record["reason"], (bad.name, record["reason"])
        assert record["size_bytes"] == len(bad.data) and record["dataset"] == bad.dataset
        assert record["corrupt_key"] == f"{ZONE_CORRUPT}/{bad.key}" and record["moved_at"].startswith("20")
        warned = [r.getMessage() for r in caplog.records if f"{storage.root_uri}/{bad.key} " in r.getMessage()]
        assert len(warned) == 1 and "README: A corrupt lake file" in warned[0], (bad.name, warned)
    for key in [*files.base, *files.good]:
        assert after[key] == before[key], f"a good file moved or changed: {key}"
    # the queryable record: DuckDB over the corrupt zone's JSON
    folder = mirror(storage, tmp_path / "after")
    rows = duckdb.sql(
        f"select original_key, reason from read_json('{folder}/{ZONE_CORRUPT}/**/*.reason.json')"
    ).fetchall()
    assert sorted(k for k, _ in rows) == sorted(b.key for b in files.bad)
    # what dbt reads now reads, with every contract column at its clean type
    for dataset in SCHEMAS:
        expected = expected_types(tmp_path / "types", files, dataset)
        assert duckdb_reads(glob(folder, dataset), expected), dataset


class Counting(StorageWrapper):
    """Counts the footer reads (ranged reads) of the check, per key."""

    def __init__(self, inner: LocalStorage) -> None:
        super().__init__(inner)
        self.reads: Counter[str] = Counter()

    def read_range(self, key: str, start: int, length: int, version: str | None = None) -> bytes:
        self.reads[key] += 1
        return super().read_range(key, start, length, version)


def test_a_second_run_reads_nothing_and_a_new_or_replaced_file_alone_is_read(
    files: Lake, storage: LocalStorage, tmp_path: Path
) -> None:
    populate(storage, tmp_path, files.base, files.good)
    lake = Counting(storage)
    first = verify_lake(lake, SCHEMAS, tmp_path / "staging")  # type: ignore[arg-type]
    assert first.verified == len(files.base) + len(files.good) and not first.corrupt
    assert set(lake.reads) == set(files.base) | set(files.good)
    assert storage.exists(MANIFEST_KEY)

    lake.reads.clear()
    second = verify_lake(lake, SCHEMAS, tmp_path / "staging")  # type: ignore[arg-type]
    assert not lake.reads, "a warm run reads no footer"
    assert (second.verified, second.remembered) == (0, first.verified)

    replaced = next(iter(files.base))  # a re-run rewrites a snapshot: same key, new version
    put(storage, replaced, files.base[replaced], tmp_path)
    bad = files.bad[0]
    put(storage, bad.key, bad.data, tmp_path)
    third = verify_lake(lake, SCHEMAS, tmp_path / "staging")  # type: ignore[arg-type]
    assert set(lake.reads) == {replaced}, "only the replaced file is read (the empty one needs no read)"
    assert [c.key for c in third.corrupt] == [bad.key] and third.verified == 1


def test_a_file_replaced_after_the_check_is_not_moved(files: Lake, storage: LocalStorage, tmp_path: Path) -> None:
    bad = files.bad[1]
    put(storage, bad.key, bad.data, tmp_path)
    (stale,) = storage.list_info(f"coincap/{bad.dataset}/")
    good = files.base[next(k for k in files.base if k.startswith(f"coincap/{bad.dataset}/"))]
    put(storage, bad.key, good, tmp_path)  # a re-run replaced it with a good file meanwhile
    assert storage.move(bad.key, f"{ZONE_CORRUPT}/{bad.key}", stale.version) is False
    assert storage.read_bytes(bad.key) == good and not storage.exists(f"{ZONE_CORRUPT}/{bad.key}")
    (fresh,) = storage.list_info(f"coincap/{bad.dataset}/")
    assert storage.move(bad.key, f"{ZONE_CORRUPT}/{bad.key}", fresh.version) is True
    assert not storage.exists(bad.key) and storage.read_bytes(f"{ZONE_CORRUPT}/{bad.key}") == good


def test_gcs_a_file_replaced_between_copy_and_delete_stays_and_its_copy_goes(
    files: Lake, gcs_emulator: object, tmp_path: Path
) -> None:
    """The delete is pinned to the judged generation; when GCS refuses it (412: a writer replaced the object after
    the copy, as in a versioned bucket), the copy is taken back. fake-gcs-server ignores preconditions on deletes,
    so the 412 is scripted; the request is checked to carry the generation."""
    from tests.integration.test_gcs_lake import ScriptedSession, scripted_lake

    session = ScriptedSession(fail=1, status=412, message="conditionNotMet", only="DELETE")
    storage = scripted_lake(gcs_emulator.create_bucket(versioning=True), session)  # type: ignore[attr-defined]
    bad = files.bad[1]
    put(storage, bad.key, bad.data, tmp_path)
    (info,) = storage.list_info(f"coincap/{bad.dataset}/")

    assert storage.move(bad.key, f"{ZONE_CORRUPT}/{bad.key}", info.version) is False
    deletes = [url for method, url in session.calls if method == "DELETE"]
    assert f"ifGenerationMatch={info.version}" in deletes[0]
    assert storage.read_bytes(bad.key) == bad.data and not storage.exists(f"{ZONE_CORRUPT}/{bad.key}")
    assert storage.move(bad.key, f"{ZONE_CORRUPT}/{bad.key}", info.version) is True  # no writer this time
    assert not storage.exists(bad.key) and storage.read_bytes(f"{ZONE_CORRUPT}/{bad.key}") == bad.data


def test_storage_trouble_is_no_verdict(files: Lake, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    storage = LocalStorage(tmp_path / "lake")
    bad = files.bad[1]
    populate(storage, tmp_path, {bad.key: bad.data})

    class Failing(StorageWrapper):
        def read_range(self, key: str, start: int, length: int, version: str | None = None) -> bytes:
            raise OSError(5, "Input/output error")

    with caplog.at_level(logging.WARNING, logger="flows.lake.integrity"):
        report = verify_lake(Failing(storage), SCHEMAS, tmp_path / "staging")  # type: ignore[arg-type]
    assert report.unchecked == [bad.key] and not report.corrupt and storage.exists(bad.key)
    assert "checked again on the next run" in caplog.text
    assert [c.key for c in verify_lake(storage, SCHEMAS, tmp_path / "staging").corrupt] == [bad.key]


def test_a_restored_file_is_checked_again_and_kept(files: Lake, tmp_path: Path) -> None:
    """The README's steps: fix the file, move it back to its original key, delete the record."""
    storage = LocalStorage(tmp_path / "lake")
    bad = next(b for b in files.bad if b.name == "price as text")
    populate(storage, tmp_path, {bad.key: bad.data})
    assert [c.key for c in verify_lake(storage, SCHEMAS, tmp_path / "staging").corrupt] == [bad.key]

    moved = storage.root / ZONE_CORRUPT / bad.key
    fixed = retyped(pq.read_table(moved), "priceUsd", SCHEMAS["assets"].field("priceUsd").type)
    pq.write_table(fixed, moved)
    moved.rename(storage.root / bad.key)
    (storage.root / ZONE_CORRUPT / f"{bad.key}.reason.json").unlink()

    report = verify_lake(storage, SCHEMAS, tmp_path / "staging")
    assert (report.verified, report.corrupt) == (1, []) and storage.exists(bad.key)
    assert corrupt_records(storage) == []


@pytest.mark.slow
def test_build_marts_moves_corrupt_files_and_the_dbt_build_succeeds(files: Lake, tmp_path: Path) -> None:
    from flows.dbt_build import build_marts
    from flows.settings import Settings

    settings = Settings(_env_file=None, PIPELINE_DATA_DIR=tmp_path / "data", PIPELINE_TARGET="local")  # type: ignore[call-arg]
    storage = LocalStorage(settings.lake_dir)
    # every good file, but of the stream only a corrupt one: once it is moved the build needs a placeholder
    good = {k: v for k, v in files.good.items() if not k.startswith("coincap/prices_stream/")}
    populate(storage, tmp_path, files.base, good, {b.key: b.data for b in files.bad})

    outcome = build_marts(settings)

    assert outcome.ok, outcome.failures
    assert {r["original_key"] for r in corrupt_records(storage)} == {b.key for b in files.bad}
    assert storage.list("coincap/prices_stream/") == [
        snapshot_key(ZONE_DATA, "prices_stream", PLACEHOLDER_ID, PLACEHOLDER_DAY)
    ]
    with duckdb.connect(str(settings.duckdb_path)) as con:
        ids = {row[0] for row in con.execute("select distinct snapshot_id from staging.stg_coincap__assets").fetchall()}
    assert len(ids) == 6 + 2 and {"20261003T200000Z", "20261003T210000Z"} <= ids, "every good snapshot was built"
