"""The building blocks of a data contract: typed columns, each mapping one CoinCap field to one lake column.

A `Contract` is defined once per dataset (see `datasets.py`); the Pandera schema, the Arrow/Parquet schema and
(later) the BigQuery schema are all derived from it, so they cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum

import pyarrow as pa

# CoinCap sends up to 18 decimals; 38 digits of precision leave 20 for the integer part
# (1e20 USD is far beyond any market cap). A value that does not fit is quarantined, never rounded.
DECIMAL_PRECISION = 38
DECIMAL_SCALE = 18
DECIMAL_TYPE = pa.decimal128(DECIMAL_PRECISION, DECIMAL_SCALE)
TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")

# ---------------------------------------------------------------------------------- plausibility ranges
# A value the types can hold is not necessarily one the warehouse can use: the contract quarantines, with a
# reason, what no real CoinCap answer carries, so one hostile value can never wedge a later dbt build.

# Amounts in USD (prices, market caps, volumes, rates) are summed by the marts: DuckDB sums a DECIMAL(38, 18)
# into a DECIMAL(38, 18) (20 integer digits) and fails, or wraps around, past ~1.7e20; BigQuery's BIGNUMERIC
# holds ~5.7e38, so DuckDB binds. Below 1e15 each, a sum over 100,000 rows stays below 1e20 (a snapshot holds
# a few thousand assets and ~10,000 markets; a 30-day window ~9,000 prices of one asset). 1e15 USD is about ten
# times the world's yearly GDP and hundreds of times the whole crypto market's capitalisation.
# dbt/macros/plausible_amount.sql repeats the bound (tests check they agree).
MAX_USD = Decimal("1e15")
# Counts and ranks: below 1e13 each, a sum over 100,000 rows stays below 1e18, inside INT64 on both engines.
MAX_COUNT = 10**13
# Unix milliseconds: nothing CoinCap reports predates Bitcoin (2009), and nothing is later than now plus a day
# of clock skew. A value between the same bounds in seconds is almost surely seconds (the reason says so).
# dbt/macros/cross_db/ms_to_timestamp.sql keeps the lower bound (tests check they agree).
EPOCH_MS_MIN = 1_230_768_000_000  # 2009-01-01T00:00:00Z
EPOCH_MS_FUTURE = timedelta(days=1)


def epoch_ms_bounds(now: datetime | None = None) -> tuple[int, int]:
    """The plausible range of a Unix-millisecond timestamp, both ends included: 2009-01-01 to now + 1 day."""
    now = now or datetime.now(UTC)
    return EPOCH_MS_MIN, int((now + EPOCH_MS_FUTURE).timestamp() * 1000)


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
    # |value| must be below this (MAX_USD, MAX_COUNT): what the warehouse can sum; decimals are always below 1e20
    max_abs: Decimal | int | None = None
    # an integer of Unix milliseconds, within `epoch_ms_bounds()`; `unknown_ms` is a sentinel accepted as is
    epoch_ms: bool = False
    unknown_ms: int | None = None

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
