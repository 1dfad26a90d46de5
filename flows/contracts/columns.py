"""The building blocks of a data contract: typed columns, each mapping one CoinCap field to one lake column.

A `Contract` is defined once per dataset (see `datasets.py`); the Pandera schema, the Arrow/Parquet schema and
(later) the BigQuery schema are all derived from it, so they cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

import pyarrow as pa

# CoinCap sends up to 18 decimals; 38 digits of precision leave 20 for the integer part
# (1e20 USD is far beyond any market cap). A value that does not fit is quarantined, never rounded.
DECIMAL_PRECISION = 38
DECIMAL_SCALE = 18
DECIMAL_TYPE = pa.decimal128(DECIMAL_PRECISION, DECIMAL_SCALE)
TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")


class Kind(StrEnum):
    """How a JSON field is parsed and stored."""

    string = "string"  # JSON string
    decimal = "decimal"  # numeric string (or JSON number), parsed exactly into decimal(38, 18)
    integer = "integer"  # integer string or JSON integer (rank, tradesCount24Hr, updated ms)
    boolean = "boolean"
    json = "json"  # JSON object kept as its canonical JSON text (e.g. asset `tokens`)


ARROW_TYPES: dict[Kind, pa.DataType] = {
    Kind.string: pa.string(),
    Kind.decimal: DECIMAL_TYPE,
    Kind.integer: pa.int64(),
    Kind.boolean: pa.bool_(),
    Kind.json: pa.string(),
}


@dataclass(frozen=True)
class Column:
    """One field of a CoinCap record. `required` means present, not null and (for strings) not empty."""

    name: str
    kind: Kind
    required: bool = False
    ge: Decimal | int | None = None
    isin: tuple[str, ...] | None = None
    description: str = ""

    @property
    def arrow_type(self) -> pa.DataType:
        return ARROW_TYPES[self.kind]


# Columns the pipeline adds to every lake row. `dt` is not stored: it is the hive partition in the path.
SNAPSHOT_ID = "snapshot_id"
SNAPSHOT_TS = "snapshot_ts"
API_TIMESTAMP = "api_timestamp"
EXTRA_FIELDS = "extra_fields"

METADATA_FIELDS: tuple[pa.Field, ...] = (
    pa.field(SNAPSHOT_ID, pa.string(), nullable=False),
    pa.field(SNAPSHOT_TS, TIMESTAMP_TYPE, nullable=False),
    pa.field(API_TIMESTAMP, TIMESTAMP_TYPE),
    pa.field(EXTRA_FIELDS, pa.string()),
)

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("dataset", pa.string(), nullable=False),
        pa.field(SNAPSHOT_ID, pa.string(), nullable=False),
        pa.field(SNAPSHOT_TS, TIMESTAMP_TYPE, nullable=False),
        pa.field(API_TIMESTAMP, TIMESTAMP_TYPE),
        pa.field("record_json", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
    ],
    metadata={"description": "Rows that failed their contract, with the raw record and every reason."},
)


@dataclass(frozen=True)
class Contract:
    """The agreed shape of one dataset: its columns and its natural key."""

    dataset: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    description: str = ""
    by_name: dict[str, Column] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {c.name: c for c in self.columns})
        missing = [k for k in self.key if k not in self.by_name or not self.by_name[k].required]
        if missing:
            raise ValueError(f"{self.dataset}: key columns must be required columns: {missing}")

    @property
    def field_names(self) -> frozenset[str]:
        return frozenset(self.by_name)

    def arrow_schema(self) -> pa.Schema:
        """The Parquet schema of the lake files for this dataset."""
        fields = [
            pa.field(c.name, c.arrow_type, nullable=not c.required, metadata={"description": c.description})
            for c in self.columns
        ]
        return pa.schema([*fields, *METADATA_FIELDS], metadata={"dataset": self.dataset})
