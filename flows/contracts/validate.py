"""Validate a page of raw CoinCap records against a contract: valid rows out as Arrow, rejects out with reasons.

Two steps, both per column (vectorised) rather than per row:
1. parsing (`parsing.py`): JSON values to typed Arrow arrays. Numeric strings go through Arrow's exact
   string->decimal cast; only a column that fails the fast cast is re-parsed value by value to find and explain
   the bad rows;
2. Pandera (`checks.py`): the contract's checks (required, ranges, allowed values) on the parsed frame, lazily, so
   every failing row gets every reason and valid rows are never held back by invalid ones.

Here: the two steps run over a batch, and the selected rows come out as the lake's valid rows and its quarantine
records. Ranges include plausibility (see `columns.py`): amounts the warehouse can sum, timestamps in
milliseconds between 2009 and now + 1 day.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import groupby
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from flows.contracts.checks import PAGE_COLUMN, paged_schema, pandera_schema, run_pandera
from flows.contracts.columns import (
    API_TIMESTAMP,
    EXTRA_FIELDS,
    QUARANTINE_SCHEMA,
    SNAPSHOT_ID,
    SNAPSHOT_TS,
    TIMESTAMP_TYPE,
    Contract,
    epoch_ms_bounds,
)
from flows.contracts.jsontext import json_text
from flows.contracts.parsing import parse_column


@dataclass
class ValidationResult:
    """The outcome for one batch of records."""

    valid: pa.Table
    quarantine: pa.Table
    new_fields: set[str] = field(default_factory=set)

    @property
    def n_valid(self) -> int:
        return self.valid.num_rows

    @property
    def n_quarantined(self) -> int:
        return self.quarantine.num_rows


def plausible_api_timestamp(value: int | datetime | None, now: datetime | None = None) -> datetime | None:
    """A response's `timestamp` (Unix ms, or a datetime already) as a UTC datetime; None when implausible.

    The API timestamp describes the answer, not a record: an implausible one (year 9999, seconds instead of
    milliseconds, 2**63 - 1) is dropped rather than quarantining the page, and never raises.
    """
    if value is None:
        return None
    low, high = epoch_ms_bounds(now)
    if isinstance(value, datetime):
        ms = (value.replace(tzinfo=value.tzinfo or UTC) - _EPOCH).total_seconds() * 1000  # naive: UTC, as Arrow
        return value if low <= ms <= high else None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return None
    return datetime.fromtimestamp(value / 1000, UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def validate_records(
    contract: Contract,
    records: Sequence[dict[str, Any]],
    *,
    snapshot_id: str,
    snapshot_ts: datetime,
    api_timestamp: datetime | None = None,
) -> ValidationResult:
    """Split `records` into contract-valid rows (lake schema) and quarantined rows with their reasons."""
    return check_records(contract, records).select(
        None, snapshot_id=snapshot_id, snapshot_ts=snapshot_ts, api_timestamp=api_timestamp
    )


def check_records(
    contract: Contract, records: Sequence[Any], *, page_sizes: Sequence[int] | None = None
) -> CheckedRecords:
    """Parse and check raw records against the contract: every row, and the key unique within each page.

    `page_sizes` splits `records` into consecutive pages (default: one page). Pandera costs ~8 ms a call
    whatever the size, so a caller checks many pages at once and then `select`s rows: each page's verdicts are
    exactly those `validate_records` gives that page on its own.
    """
    records = list(records)
    reasons: dict[int, list[str]] = defaultdict(list)
    # A record that is not even a JSON object cannot be parsed field by field.
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            reasons[i].append(f"record is a JSON {type(rec).__name__}, not an object")
    safe = [rec if isinstance(rec, dict) else {} for rec in records]

    columns, complete = _field_values([col.name for col in contract.columns], safe)
    arrays: dict[str, pa.Array] = {}
    for col, values in zip(contract.columns, columns, strict=True):
        array, errors = parse_column(col, values)
        arrays[col.name] = array
        for i, msg in errors.items():
            reasons[i].append(msg)

    parsed = pa.table(arrays)
    frame = parsed.to_pandas(types_mapper=pd.ArrowDtype)
    schema = pandera_schema(contract)
    if page_sizes is not None and len(page_sizes) > 1:
        if sum(page_sizes) != len(records):
            raise ValueError(f"page sizes add up to {sum(page_sizes)}, not to the {len(records)} records")
        frame[PAGE_COLUMN] = np.repeat(np.arange(len(page_sizes)), page_sizes)
        schema = paged_schema(contract)
    run_pandera(contract, schema, frame, safe, reasons)

    known = contract.field_names
    if complete:  # every record has every contract field: only a longer one can carry more
        unknown = {i: rec.keys() - known for i, rec in enumerate(safe) if len(rec) > len(known)}
    else:
        unknown = {i: rec.keys() - known for i, rec in enumerate(safe) if not known.issuperset(rec)}
    return CheckedRecords(contract, records, safe, parsed, dict(reasons), unknown)


@dataclass
class CheckedRecords:
    """Raw records, parsed and checked; `select` turns some of its rows into a `ValidationResult`."""

    contract: Contract
    records: list[Any]
    objects: list[dict[str, Any]]  # the records, with {} for any that is not a JSON object
    parsed: pa.Table
    reasons: dict[int, list[str]]  # row -> every reason it fails, in the order they were found
    unknown: dict[int, set[str]]  # row -> fields the contract does not know

    def passes(self, row: int) -> bool:
        """Whether the record at `row` meets the contract."""
        return row not in self.reasons

    def select(
        self,
        rows: Sequence[int] | None,
        *,
        snapshot_id: str,
        snapshot_ts: datetime,
        api_timestamp: datetime | None | Sequence[datetime | None] = None,
    ) -> ValidationResult:
        """Valid rows (lake schema) and quarantined rows among `rows` (ascending; None: all), in that order.

        `api_timestamp` is one value for every row, or one per row of `rows`.
        """
        contract = self.contract
        picked = range(len(self.records)) if rows is None else rows
        reasons = self.reasons
        good = [i for i in picked if i not in reasons]
        bad = [i for i in picked if i in reasons]
        stamps: Any = _plausible_stamps(api_timestamp)
        good_stamps = bad_stamps = stamps
        if isinstance(stamps, Sequence):
            if len(stamps) != len(picked):
                raise ValueError(f"{len(stamps)} API timestamps for {len(picked)} rows")
            good_stamps = [ts for i, ts in zip(picked, stamps, strict=True) if i not in reasons]
            bad_stamps = [ts for i, ts in zip(picked, stamps, strict=True) if i in reasons]
        new_fields: set[str] = set()
        if self.unknown:
            for i in picked:
                new_fields |= self.unknown.get(i, set())

        n = len(good)
        # rows are ascending and distinct: as many good rows as records means every record, in order
        parsed = self.parsed if n == len(self.records) else self.parsed.take(pa.array(good, pa.int64()))
        extra = pa.array([self._extra(i) for i in good], pa.string()) if self.unknown else pa.nulls(n, pa.string())
        meta = {
            SNAPSHOT_ID: pa.repeat(pa.scalar(snapshot_id, pa.string()), n),
            SNAPSHOT_TS: pa.repeat(pa.scalar(snapshot_ts, TIMESTAMP_TYPE), n),
            API_TIMESTAMP: _repeated(good_stamps, n, TIMESTAMP_TYPE),
            EXTRA_FIELDS: extra,
        }
        valid = pa.Table.from_arrays([*parsed.columns, *meta.values()], names=[*parsed.column_names, *meta]).cast(
            contract.arrow_schema()
        )

        m = len(bad)
        quarantine = pa.table(
            {
                "dataset": pa.repeat(pa.scalar(contract.dataset, pa.string()), m),
                SNAPSHOT_ID: pa.repeat(pa.scalar(snapshot_id, pa.string()), m),
                SNAPSHOT_TS: pa.repeat(pa.scalar(snapshot_ts, TIMESTAMP_TYPE), m),
                API_TIMESTAMP: _repeated(bad_stamps, m, TIMESTAMP_TYPE),
                "record_json": pa.array([_dump(self.records[i]) for i in bad], pa.string()),
                "reason": pa.array(["; ".join(dict.fromkeys(reasons[i])) for i in bad], pa.string()),
            },
            schema=QUARANTINE_SCHEMA,
        )
        return ValidationResult(valid=valid, quarantine=quarantine, new_fields=new_fields)

    def _extra(self, i: int) -> str | None:
        fields = self.unknown.get(i)
        if not fields:
            return None
        rec = self.objects[i]
        return json_text({k: rec[k] for k in sorted(fields)})


def _field_values(names: list[str], records: list[dict[str, Any]]) -> tuple[list[list[Any]], bool]:
    """Each field's values, record by record (None where absent), and whether every record had every field."""
    if not records:
        return [[] for _ in names], True
    if len(names) > 1:
        try:
            # one pass over the records (not one per field), in C when every record has every field
            return [list(values) for values in zip(*map(itemgetter(*names), records), strict=True)], True
        except KeyError:
            pass
    return [list(values) for values in zip(*[tuple(map(rec.get, names)) for rec in records], strict=True)], False


def _plausible_stamps(stamps: Any) -> Any:
    """API timestamps with implausible ones (before 2009, after now + 1 day) replaced by None."""
    if not isinstance(stamps, Sequence):
        return plausible_api_timestamp(stamps)
    now = datetime.now(UTC)
    kept: dict[datetime | None, datetime | None] = {}  # a batch repeats a few stamps many times
    out = []
    for ts in stamps:
        if ts not in kept:
            kept[ts] = plausible_api_timestamp(ts, now)
        out.append(kept[ts])
    return out


def _repeated(values: datetime | None | Sequence[datetime | None], n: int, type_: pa.DataType) -> pa.Array:
    """One value n times, or a list of values (runs of equal ones are cheap), as an Arrow array."""
    if not isinstance(values, Sequence):
        return pa.repeat(pa.scalar(values, type_), n)
    runs = [pa.repeat(pa.scalar(value, type_), len(list(group))) for value, group in groupby(values)]
    return pa.concat_arrays(runs) if runs else pa.array([], type_)


def _dump(record: Any) -> str:
    return json_text(record, separators=(",", ":"))
