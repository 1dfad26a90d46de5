"""Validate a page of raw CoinCap records against a contract: valid rows out as Arrow, rejects out with reasons.

Two steps, both per column (vectorised) rather than per row:
1. parsing: JSON values to typed Arrow arrays. Numeric strings go through Arrow's exact string->decimal cast;
   only a column that fails the fast cast is re-parsed value by value to find and explain the bad rows;
2. Pandera: the contract's checks (required, ranges, allowed values) on the parsed frame, lazily, so every
   failing row gets every reason and valid rows are never held back by invalid ones.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from functools import cache
from typing import Any

import pandas as pd
import pandera.pandas as pa_schema
import pyarrow as pa
import pyarrow.compute as pc
from pandera.errors import SchemaErrors

from flows.contracts.columns import (
    API_TIMESTAMP,
    DECIMAL_PRECISION,
    DECIMAL_SCALE,
    DECIMAL_TYPE,
    EXTRA_FIELDS,
    QUARANTINE_SCHEMA,
    SNAPSHOT_ID,
    SNAPSHOT_TS,
    TIMESTAMP_TYPE,
    Column,
    Contract,
    Kind,
)

_MAX_INTEGER_DIGITS = DECIMAL_PRECISION - DECIMAL_SCALE
_QUANTUM = Decimal(1).scaleb(-DECIMAL_SCALE)
_WIDE_CONTEXT = Context(prec=200)
_INT64_MAX = 2**63 - 1


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


@cache
def pandera_schema(contract: Contract) -> pa_schema.DataFrameSchema:
    """The Pandera schema of a contract, over the parsed (Arrow-backed) frame."""
    columns = {}
    for col in contract.columns:
        checks = []
        if col.ge is not None:
            bound = Decimal(col.ge) if col.kind is Kind.decimal else col.ge
            checks.append(pa_schema.Check.ge(bound))
        if col.isin is not None:
            checks.append(pa_schema.Check.isin(list(col.isin)))
        if col.required and col.kind is Kind.string:
            checks.append(pa_schema.Check.str_length(min_value=1))
        columns[col.name] = pa_schema.Column(
            pd.ArrowDtype(col.arrow_type), checks=checks, nullable=not col.required, coerce=False
        )
    return pa_schema.DataFrameSchema(
        columns,
        name=contract.dataset,
        strict=False,
        unique=list(contract.key),
        report_duplicates="exclude_first",
    )


def validate_records(
    contract: Contract,
    records: Sequence[dict[str, Any]],
    *,
    snapshot_id: str,
    snapshot_ts: datetime,
    api_timestamp: datetime | None = None,
) -> ValidationResult:
    """Split `records` into contract-valid rows (lake schema) and quarantined rows with their reasons."""
    reasons: dict[int, list[str]] = defaultdict(list)
    records = list(records)
    # A record that is not even a JSON object cannot be parsed field by field.
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            reasons[i].append(f"record is a JSON {type(rec).__name__}, not an object")
    safe = [rec if isinstance(rec, dict) else {} for rec in records]

    arrays: dict[str, pa.Array] = {}
    for col in contract.columns:
        values = [rec.get(col.name) for rec in safe]
        array, errors = _parse_column(col, values)
        arrays[col.name] = array
        for i, msg in errors.items():
            reasons[i].append(msg)

    parsed = pa.table(arrays)
    _run_pandera(contract, parsed, safe, reasons)

    known = contract.field_names
    new_fields: set[str] = set()
    extra: list[str | None] = []
    for rec in safe:
        unknown = rec.keys() - known
        if unknown:
            new_fields |= unknown
            extra.append(json.dumps({k: rec[k] for k in sorted(unknown)}, default=str, ensure_ascii=False))
        else:
            extra.append(None)

    n = len(records)
    bad = sorted(reasons)
    keep = pa.array([i not in reasons for i in range(n)], pa.bool_())
    meta = {
        SNAPSHOT_ID: pa.array([snapshot_id] * n, pa.string()),
        SNAPSHOT_TS: pa.array([snapshot_ts] * n, TIMESTAMP_TYPE),
        API_TIMESTAMP: pa.array([api_timestamp] * n, TIMESTAMP_TYPE),
        EXTRA_FIELDS: pa.array(extra, pa.string()),
    }
    full = pa.table({**arrays, **meta})
    valid = full.filter(keep).cast(contract.arrow_schema())

    quarantine = pa.table(
        {
            "dataset": pa.array([contract.dataset] * len(bad), pa.string()),
            SNAPSHOT_ID: pa.array([snapshot_id] * len(bad), pa.string()),
            SNAPSHOT_TS: pa.array([snapshot_ts] * len(bad), TIMESTAMP_TYPE),
            API_TIMESTAMP: pa.array([api_timestamp] * len(bad), TIMESTAMP_TYPE),
            "record_json": pa.array([_dump(records[i]) for i in bad], pa.string()),
            "reason": pa.array(["; ".join(dict.fromkeys(reasons[i])) for i in bad], pa.string()),
        },
        schema=QUARANTINE_SCHEMA,
    )
    return ValidationResult(valid=valid, quarantine=quarantine, new_fields=new_fields)


def _dump(record: Any) -> str:
    return json.dumps(record, default=str, ensure_ascii=False, separators=(",", ":"))


# ---------------------------------------------------------------------------------------------- parsing


def _parse_column(col: Column, values: list[Any]) -> tuple[pa.Array, dict[int, str]]:
    """Parse one column; the fast path is a vectorised Arrow conversion, the slow path explains failures."""
    fast = _FAST.get(col.kind)
    if fast is not None:
        try:
            return fast(values), {}
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, ValueError):
            pass
    parse_one = _SLOW[col.kind]
    parsed: list[Any] = []
    errors: dict[int, str] = {}
    for i, value in enumerate(values):
        try:
            parsed.append(parse_one(value))
        except _Bad as exc:
            parsed.append(None)
            errors[i] = f"{col.name}: {exc} (got {_short(value)})"
    return pa.array(parsed, col.arrow_type), errors


def _short(value: Any) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _blank_to_null(strings: pa.Array) -> pa.Array:
    return pc.if_else(pc.equal(strings, ""), pa.scalar(None, pa.string()), strings)


def _fast_string(values: list[Any]) -> pa.Array:
    return pa.array(values, pa.string())


_WIDE_DECIMAL = pa.decimal256(76, 38)


def _fast_decimal(values: list[Any]) -> pa.Array:
    # Arrow's string->decimal cast is exact. It raises when a value has more than 18 decimals (CoinCap sends
    # up to 36 for volume shares): then parse wide, round half-to-even at the 18th decimal, and narrow.
    strings = _blank_to_null(pa.array(values, pa.string()))
    try:
        return pc.cast(strings, DECIMAL_TYPE)
    except pa.ArrowInvalid:
        wide = pc.round(pc.cast(strings, _WIDE_DECIMAL), ndigits=DECIMAL_SCALE, round_mode="half_to_even")
        return pc.cast(wide, DECIMAL_TYPE)


def _fast_integer(values: list[Any]) -> pa.Array:
    try:
        return pc.cast(_blank_to_null(pa.array(values, pa.string())), pa.int64())
    except pa.ArrowTypeError:
        # JSON integers (e.g. `updated`): only accept real ints, not bools or floats.
        if any(type(v) is not int and v is not None for v in values):
            raise
        return pa.array(values, pa.int64())


def _fast_boolean(values: list[Any]) -> pa.Array:
    if any(type(v) is not bool and v is not None for v in values):
        raise pa.ArrowTypeError("not all booleans")
    return pa.array(values, pa.bool_())


_FAST = {
    Kind.string: _fast_string,
    Kind.decimal: _fast_decimal,
    Kind.integer: _fast_integer,
    Kind.boolean: _fast_boolean,
}


class _Bad(Exception):
    """A value that does not fit its column."""


def _slow_string(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise _Bad(f"expected a string, not a JSON {_json_type(value)}")


def parse_decimal(value: Any) -> Decimal | None:
    """Parse a CoinCap numeric value (string, or JSON number) exactly; '' and null are null.

    Digits past the 18th decimal (CoinCap sends up to 36 for volume shares) are rounded half-to-even.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _Bad(f"expected a numeric string, not a JSON {_json_type(value)}")
    try:
        # repr() of a float is its shortest round-trip form, so 0.1 stays 0.1, not 0.1000000000000000055.
        number = Decimal(value if isinstance(value, str) else repr(value))
    except InvalidOperation:
        raise _Bad("not a number") from None
    if not number.is_finite():
        raise _Bad("not a finite number")
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)
    if exponent < -DECIMAL_SCALE:
        number = number.quantize(_QUANTUM, rounding=ROUND_HALF_EVEN, context=_WIDE_CONTEXT)
    if number != 0 and number.adjusted() >= _MAX_INTEGER_DIGITS:
        raise _Bad(f"more than {_MAX_INTEGER_DIGITS} integer digits")
    return number


def _slow_integer(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise _Bad("expected an integer, not a JSON boolean")
    if isinstance(value, int):
        result = value
    elif isinstance(value, str):
        try:
            result = int(value.strip(), 10)
        except ValueError:
            raise _Bad("not an integer") from None
    else:
        raise _Bad(f"expected an integer, not a JSON {_json_type(value)}")
    if abs(result) > _INT64_MAX:
        raise _Bad("integer out of range")
    return result


def _slow_boolean(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise _Bad(f"expected a boolean, not a JSON {_json_type(value)}")


def _slow_json(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    raise _Bad(f"expected a JSON object, not a JSON {_json_type(value)}")


_SLOW = {
    Kind.string: _slow_string,
    Kind.decimal: parse_decimal,
    Kind.integer: _slow_integer,
    Kind.boolean: _slow_boolean,
    Kind.json: _slow_json,
}


def _json_type(value: Any) -> str:
    return {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "number",
        float: "number",
    }.get(type(value), type(value).__name__)


# ---------------------------------------------------------------------------------------------- checks


def _run_pandera(
    contract: Contract, parsed: pa.Table, records: list[dict[str, Any]], reasons: dict[int, list[str]]
) -> None:
    frame = parsed.to_pandas(types_mapper=pd.ArrowDtype)
    try:
        pandera_schema(contract).validate(frame, lazy=True)
    except SchemaErrors as err:
        cases = err.failure_cases
        for row in cases.itertuples(index=False):
            index = row.index
            if index is None or pd.isna(index):
                continue  # schema-level failures (dtype) cannot happen: columns are built from the contract
            i = int(index)
            column = row.column
            if any(msg.startswith(f"{column}: ") for msg in reasons.get(i, ())):
                continue  # the parse error already explains this value
            reasons[i].append(_explain(contract, str(column), str(row.check), row.failure_case, records[i]))


def _explain(contract: Contract, column: str, check: str, value: Any, record: dict[str, Any]) -> str:
    if check == "not_nullable":
        if column not in record:
            return f"{column}: missing required field"
        return f"{column}: required field is empty" if record[column] == "" else f"{column}: required field is null"
    if check.startswith("field_uniqueness") or check.startswith("multiple_fields_uniqueness"):
        return f"duplicate key {tuple(record.get(k) for k in contract.key)}"
    if check.startswith("str_length"):
        return f"{column}: required field is empty"
    return f"{column}: failed {check} (got {_short(record.get(column, value))})"
