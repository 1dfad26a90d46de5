"""BigQuery schemas derived from the contracts, in the JSON form that BigQuery and Terraform take.

The raw external tables (`terraform/modules/bigquery`) read their schemas from committed JSON files; regenerate
them after changing a contract with `python -m flows.contracts.bigquery`. The hive partition column `dt` is not
in these schemas: BigQuery adds it from the object path.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pyarrow as pa

from flows.contracts.columns import (
    API_TIMESTAMP,
    DECIMAL_PRECISION,
    DECIMAL_SCALE,
    EXTRA_FIELDS,
    SNAPSHOT_ID,
    SNAPSHOT_TS,
    Contract,
)
from flows.contracts.datasets import CONTRACTS
from flows.contracts.stream import TICK_SCHEMA
from flows.paths import PROJECT_ROOT

SCHEMA_DIR = PROJECT_ROOT / "terraform" / "modules" / "bigquery" / "schemas"
REGENERATE = "python -m flows.contracts.bigquery"

# The columns the pipeline adds to every row carry no description in the Arrow schema; these are theirs.
METADATA_DESCRIPTIONS: dict[str, str] = {
    SNAPSHOT_ID: "Snapshot id (UTC start time, e.g. 20261121T053000Z); shared by the datasets of one snapshot",
    SNAPSHOT_TS: "When the snapshot started, UTC",
    API_TIMESTAMP: "The timestamp CoinCap returned with the response, UTC; null when absent",
    EXTRA_FIELDS: "Fields CoinCap sent that the contract does not know yet, as JSON text; null when none",
}


def bigquery_type(arrow_type: pa.DataType) -> str:
    """The BigQuery column type of a lake column; raises on a type the contracts do not use."""
    if pa.types.is_decimal(arrow_type):
        # NUMERIC keeps only 9 decimals; BIGNUMERIC holds decimal(38, 18) exactly.
        if (arrow_type.precision, arrow_type.scale) != (DECIMAL_PRECISION, DECIMAL_SCALE):
            raise ValueError(f"unexpected decimal {arrow_type}: contracts use decimal({DECIMAL_PRECISION}, 18)")
        return "BIGNUMERIC"
    if pa.types.is_int64(arrow_type):
        return "INT64"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "STRING"
    if pa.types.is_boolean(arrow_type):
        return "BOOL"
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMP"
    raise ValueError(f"no BigQuery type for Arrow type {arrow_type}")


def bigquery_schema(contract: Contract) -> list[dict[str, str]]:
    """The BigQuery schema of a dataset's lake files: one `{name, type, mode, description}` per column."""
    return schema_fields(contract.arrow_schema())


def lake_tables() -> dict[str, pa.Schema]:
    """Every raw external table and the Parquet schema of its files: the four snapshot datasets, the price stream
    and the price history (partitioned by `interval`/`asset` instead of `dt`)."""
    from flows.contracts.datasets import ASSET_HISTORY

    tables = {name: contract.arrow_schema() for name, contract in CONTRACTS.items()}
    tables.update(prices_stream=TICK_SCHEMA, asset_history=ASSET_HISTORY.arrow_schema())
    return tables


# The hive partition keys of each raw external table, as Terraform's `source_uri_prefix` declares them: BigQuery
# adds them to the file columns (`dt` from `dt=YYYY-MM-DD/`; price history from `interval=<i>/asset=<slug>/`).
HIVE_PARTITION_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    "asset_history": (("interval", "STRING"), ("asset", "STRING")),
}
DEFAULT_HIVE_PARTITION_KEYS: tuple[tuple[str, str], ...] = (("dt", "DATE"),)


def hive_partition_columns(table: str) -> list[dict[str, str]]:
    """The columns BigQuery adds to a raw external table from its objects' paths, in JSON-schema form."""
    keys = HIVE_PARTITION_KEYS.get(table, DEFAULT_HIVE_PARTITION_KEYS)
    return [{"name": name, "type": kind, "mode": "NULLABLE"} for name, kind in keys]


def schema_fields(schema: pa.Schema) -> list[dict[str, str]]:
    """`{name, type, mode, description}` per column of a Parquet schema."""
    fields = []
    for arrow_field in schema:
        metadata = arrow_field.metadata or {}
        description = metadata.get(b"description", b"").decode() or METADATA_DESCRIPTIONS.get(arrow_field.name, "")
        fields.append(
            {
                "name": arrow_field.name,
                "type": bigquery_type(arrow_field.type),
                "mode": "NULLABLE" if arrow_field.nullable else "REQUIRED",
                "description": description,
            }
        )
    return fields


def schema_json(table: Contract | pa.Schema) -> str:
    """The committed file's exact text: two-space indented JSON with a trailing newline."""
    fields = bigquery_schema(table) if isinstance(table, Contract) else schema_fields(table)
    return json.dumps(fields, indent=2, ensure_ascii=False) + "\n"


def write_schema_files(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write `<table>.json` for every raw external table into `directory` and drop files of removed ones."""
    directory.mkdir(parents=True, exist_ok=True)
    tables = lake_tables()
    for stale in directory.glob("*.json"):
        if stale.stem not in tables:
            stale.unlink()  # Terraform makes one external table per file
    written = []
    for name, schema in sorted(tables.items()):
        path = directory / f"{name}.json"
        path.write_text(schema_json(schema), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Regenerate the BigQuery schema files from the contracts.")
    parser.add_argument("--dir", type=Path, default=SCHEMA_DIR, help=f"output folder (default: {SCHEMA_DIR})")
    args = parser.parse_args(argv)
    for path in write_schema_files(args.dir):
        print(path)


if __name__ == "__main__":
    main()
