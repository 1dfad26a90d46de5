"""Local lake: atomic, idempotent publishing; staged files vanish on failure."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.errors import StorageError
from flows.lake.parquet import StagedParquet, snapshot_key
from flows.lake.storage import LakeStorage, LocalStorage

SCHEMA = pa.schema([("x", pa.int64())])


def test_snapshot_key_layout():
    day = datetime(2026, 11, 21, 5, 30, tzinfo=UTC)
    assert snapshot_key("coincap", "assets", "20261121T053000Z", day) == (
        "coincap/assets/dt=2026-11-21/20261121T053000Z.parquet"
    )


def test_publish_replaces_never_adds(tmp_path):
    storage = LocalStorage(tmp_path / "lake")
    assert isinstance(storage, LakeStorage)
    key = "coincap/assets/dt=2026-11-21/s.parquet"
    for rows in ([1, 2, 3], [4, 5]):
        staged = StagedParquet(SCHEMA, tmp_path / "staging")
        staged.write(pa.table({"x": rows}))
        staged.publish(storage, key)
    assert storage.list("coincap") == [key]
    assert pq.read_table(tmp_path / "lake" / key).column("x").to_pylist() == [4, 5]
    assert list((tmp_path / "staging").iterdir()) == []


def test_empty_file_keeps_schema(tmp_path):
    storage = LocalStorage(tmp_path)
    staged = StagedParquet(SCHEMA, tmp_path / "st")
    staged.publish(storage, "a/b.parquet")
    assert pq.read_schema(tmp_path / "a/b.parquet").names == ["x"]


def test_failure_inside_block_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), StagedParquet(SCHEMA, tmp_path / "st") as staged:
        staged.write(pa.table({"x": [1]}))
        raise RuntimeError("boom")
    assert list((tmp_path / "st").iterdir()) == []


def test_keys_cannot_escape_the_lake(tmp_path):
    with pytest.raises(StorageError):
        LocalStorage(tmp_path / "lake").exists("../outside")


def test_unwritable_lake_is_one_clear_error(tmp_path):
    (tmp_path / "lake").write_text("not a folder")
    staged = StagedParquet(SCHEMA, tmp_path / "st")
    with pytest.raises(StorageError, match="PIPELINE_DATA_DIR"):
        staged.publish(LocalStorage(tmp_path / "lake"), "k/x.parquet")
