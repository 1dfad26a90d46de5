"""BigQuery schemas: derived from the contracts, and the committed Terraform schema files never drift from them."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from flows.contracts.bigquery import (
    REGENERATE,
    SCHEMA_DIR,
    bigquery_schema,
    bigquery_type,
    lake_tables,
    main,
    schema_json,
)
from flows.contracts.columns import DECIMAL_TYPE, TIMESTAMP_TYPE
from flows.contracts.datasets import ASSETS, CONTRACTS, EXCHANGES


def test_types_follow_the_lake_schema() -> None:
    assert bigquery_type(DECIMAL_TYPE) == "BIGNUMERIC"
    assert bigquery_type(pa.int64()) == "INT64"
    assert bigquery_type(pa.string()) == "STRING"
    assert bigquery_type(pa.bool_()) == "BOOL"
    assert bigquery_type(TIMESTAMP_TYPE) == "TIMESTAMP"
    with pytest.raises(ValueError, match="decimal"):
        bigquery_type(pa.decimal128(38, 9))  # NUMERIC-sized: not what the lake writes
    with pytest.raises(ValueError, match="no BigQuery type"):
        bigquery_type(pa.float64())


def test_assets_schema_columns_modes_and_descriptions() -> None:
    fields = {f["name"]: f for f in bigquery_schema(ASSETS)}
    assert list(fields)[: len(ASSETS.columns)] == [c.name for c in ASSETS.columns]
    assert fields["priceUsd"] == {
        "name": "priceUsd",
        "type": "BIGNUMERIC",
        "mode": "REQUIRED",
        "description": "Volume-weighted price in USD",
    }
    assert fields["maxSupply"]["mode"] == "NULLABLE"
    assert fields["rank"]["type"] == "INT64"
    assert fields["tokens"]["type"] == "STRING"  # JSON text
    assert fields["snapshot_id"]["mode"] == "REQUIRED"
    assert (fields["snapshot_ts"]["type"], fields["snapshot_ts"]["mode"]) == ("TIMESTAMP", "REQUIRED")
    assert fields["api_timestamp"]["mode"] == "NULLABLE"
    assert fields["extra_fields"]["type"] == "STRING"
    assert "dt" not in fields  # the hive partition: BigQuery adds it from the path
    assert all(f["description"] for f in fields.values())
    assert bigquery_schema(EXCHANGES)[[c.name for c in EXCHANGES.columns].index("socket")]["type"] == "BOOL"


def test_every_lake_column_is_in_the_schema() -> None:
    for contract in CONTRACTS.values():
        assert [f["name"] for f in bigquery_schema(contract)] == contract.arrow_schema().names


def test_committed_schema_files_match_the_contracts() -> None:
    committed = {p.stem for p in SCHEMA_DIR.glob("*.json")}
    fix = f"regenerate them with `{REGENERATE}` and commit terraform/modules/bigquery/schemas/"
    tables = lake_tables()
    assert set(CONTRACTS) | {"prices_stream", "asset_history"} == set(tables)
    assert committed == set(tables), f"schema files {sorted(committed)} != lake tables {sorted(tables)}: {fix}"
    for name, schema in tables.items():
        path = SCHEMA_DIR / f"{name}.json"
        assert path.read_text(encoding="utf-8") == schema_json(schema), f"{path.name} drifted from the contract: {fix}"


def test_regenerate_command_writes_the_files_and_drops_stale_ones(tmp_path: Path) -> None:
    (tmp_path / "retired.json").write_text("[]")
    main(["--dir", str(tmp_path)])
    assert {p.name for p in tmp_path.iterdir()} == {f"{name}.json" for name in lake_tables()}
    assert json.loads((tmp_path / "rates.json").read_text()) == bigquery_schema(CONTRACTS["rates"])
