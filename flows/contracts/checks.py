"""The contract's checks as Pandera schemas (required, ranges, plausibility, allowed values, a unique key), and
the reasons their failures give a quarantined record.

Pandera runs lazily on the parsed frame, so every failing row gets every reason and valid rows are never held
back by invalid ones.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import Any

import pandas as pd
import pandera.pandas as pa_schema
from pandera.errors import SchemaErrors

from flows.contracts.columns import Contract, Kind, epoch_ms_bounds
from flows.contracts.jsontext import short_text

PAGE_COLUMN = "__page__"  # numbers the pages of a batch in the frame Pandera checks


@cache
def pandera_schema(contract: Contract) -> pa_schema.DataFrameSchema:
    """The Pandera schema of a contract, over the parsed (Arrow-backed) frame."""
    columns = {}
    for col in contract.columns:
        checks = []
        if col.ge is not None:
            bound = Decimal(col.ge) if col.kind is Kind.decimal else col.ge
            checks.append(pa_schema.Check.ge(bound))
        if col.max_abs is not None:
            limit = Decimal(col.max_abs) if col.kind is Kind.decimal else col.max_abs
            checks.append(pa_schema.Check.lt(limit))
            if col.ge is None or col.ge < -limit:
                checks.append(pa_schema.Check.gt(-limit))
        if col.epoch_ms:
            checks.append(_epoch_ms_check(col.unknown_ms))
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


_EPOCH_MS_CHECK = "plausible_epoch_ms"


def _epoch_ms_check(unknown_ms: int | None) -> pa_schema.Check:
    """Unix milliseconds between 2009 and now + 1 day (the bounds are taken when a batch is checked)."""

    def plausible(values: pd.Series) -> pd.Series:
        low, high = epoch_ms_bounds()
        ok = (values >= low) & (values <= high)
        if unknown_ms is not None:
            ok = ok | (values == unknown_ms)
        return ok.fillna(True)

    return pa_schema.Check(plausible, name=_EPOCH_MS_CHECK)


@cache
def paged_schema(contract: Contract) -> pa_schema.DataFrameSchema:
    """The contract's Pandera schema with the key unique within each page (the `PAGE_COLUMN` column) of a batch."""
    full = pandera_schema(contract)
    return pa_schema.DataFrameSchema(
        full.columns,
        name=full.name,
        strict=full.strict,
        unique=[PAGE_COLUMN, *contract.key],
        report_duplicates=full.report_duplicates,
    )


def run_pandera(
    contract: Contract,
    schema: pa_schema.DataFrameSchema,
    frame: pd.DataFrame,
    records: list[dict[str, Any]],
    reasons: dict[int, list[str]],
) -> None:
    """Check the parsed frame lazily; add each failing row's reasons to `reasons` (a value whose parse error is
    there already is not explained twice)."""
    try:
        schema.validate(frame, lazy=True)
    except SchemaErrors as err:
        cases = err.failure_cases
        for row in cases.itertuples(index=False):
            index = row.index
            if index is None or pd.isna(index):
                continue  # schema-level failures (dtype) cannot happen: columns are built from the contract
            column = row.column
            if column == PAGE_COLUMN:
                continue  # the page number is part of the uniqueness check, not of the record
            i = int(index)
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
    got = short_text(record.get(column, value))
    if check == _EPOCH_MS_CHECK:
        return f"{column}: {_implausible_ms(value)} (got {got})"
    if check.startswith(("less_than", "greater_than(")):
        bound = contract.by_name[column].max_abs
        return f"{column}: magnitude not below {bound:.0e}, beyond what the warehouse can sum (got {got})"
    return f"{column}: failed {check} (got {got})"


def _implausible_ms(value: Any) -> str:
    """Why a Unix-millisecond value is implausible, with a guess at the unit it was sent in."""
    low, high = epoch_ms_bounds()
    ms = int(value)
    expected = "Unix ms between 2009-01-01 and now + 1 day expected"
    if low <= ms * 1000 <= high:
        return f"seconds, not milliseconds? ({expected})"
    if low <= ms // 1000 <= high:
        return f"microseconds, not milliseconds? ({expected})"
    if low <= ms // 1_000_000 <= high:
        return f"nanoseconds, not milliseconds? ({expected})"
    when = "before 2009-01-01" if ms < low else "later than now + 1 day"
    try:
        moment = datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):
        moment = "a time beyond year 9999" if ms > 0 else "a time before year 1"
    return f"{moment} is {when} ({expected})"
