"""Validate a page of raw CoinCap records against a contract: valid rows out as Arrow, rejects out with reasons.

Two steps, both per column (vectorised) rather than per row:
1. parsing: JSON values to typed Arrow arrays. Numeric strings go through Arrow's exact string->decimal cast;
   only a column that fails the fast cast is re-parsed value by value to find and explain the bad rows;
2. Pandera: the contract's checks (required, ranges, allowed values) on the parsed frame, lazily, so every
   failing row gets every reason and valid rows are never held back by invalid ones.

Numbers are accepted only in plain ASCII form (digits, one '.', a leading '-', an exponent): Python's int() and
Decimal() also take " 1 ", "1_000", full-width and Arabic-Indic digits, and Arrow's cast takes "0x10". Ranges
include plausibility (see `columns.py`): amounts the warehouse can sum, timestamps in milliseconds between 2009
and now + 1 day, and a negative that rounds to 0 at 18 decimals is still below a `ge=0`.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from functools import cache, partial
from itertools import groupby
from operator import itemgetter
from typing import Any

import numpy as np
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
    epoch_ms_bounds,
)

_MAX_INTEGER_DIGITS = DECIMAL_PRECISION - DECIMAL_SCALE
_QUANTUM = Decimal(1).scaleb(-DECIMAL_SCALE)
_ONE = Decimal(1)
_WIDE_CONTEXT = Context(prec=200)
_INT64_MAX = 2**63 - 1
_INT64_DIGITS = len(str(_INT64_MAX))

# The only spellings of numbers accepted (ASCII only: `[0-9]`, never `\d`, which matches any Unicode digit).
# A JSON number reaches the decimal parser as its repr(), e.g. 1e-07 or 1e+20, which the first pattern covers.
_DECIMAL_PATTERN = r"^-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$"
_INTEGER_PATTERN = r"^-?[0-9]+$"
_DECIMAL_RE = re.compile(_DECIMAL_PATTERN)
_INTEGER_RE = re.compile(_INTEGER_PATTERN)
# What Arrow's vectorised casts may see. Arrow's string->decimal cast wraps around silently when the digits
# do not fit the target's precision after rescaling to its scale (23 integer digits into decimal(38, 18), or
# 19 + 20 digits, can come out as another number, 1,000 nines as -1): so the narrow cast only sees at most 20
# integer and 18 decimal digits (38 in all), the wide decimal256(58, 38) one at most 19 and 38 (57 in all).
# Every other string (exponents, long ones) takes the exact, per-value Decimal path.
_NARROW_DECIMAL_PATTERN = r"^-?[0-9]{1,20}(?:\.[0-9]{1,18})?$"
_WIDE_DECIMAL_PATTERN = r"^-?[0-9]{1,19}(?:\.[0-9]{1,38})?$"
_FAST_INTEGER_PATTERN = r"^-?[0-9]{1,18}$"  # 18 digits always fit an int64
_NON_FINITE = frozenset({"nan", "snan", "inf", "infinity"})


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
        array, errors = _parse_column(col, values)
        arrays[col.name] = array
        for i, msg in errors.items():
            reasons[i].append(msg)

    parsed = pa.table(arrays)
    frame = parsed.to_pandas(types_mapper=pd.ArrowDtype)
    schema = pandera_schema(contract)
    if page_sizes is not None and len(page_sizes) > 1:
        if sum(page_sizes) != len(records):
            raise ValueError(f"page sizes add up to {sum(page_sizes)}, not to the {len(records)} records")
        frame[_PAGE] = np.repeat(np.arange(len(page_sizes)), page_sizes)
        schema = _paged_schema(contract)
    _run_pandera(contract, schema, frame, safe, reasons)

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
        return _json({k: rec[k] for k in sorted(fields)})


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
    return _json(record, separators=(",", ":"))


def _json(value: Any, **options: Any) -> str:
    """JSON text of a raw value, never an exception: integers Python will not print (more than 4,300 digits;
    `json.loads` refuses them, but a record may come from elsewhere) are written as a note of their size."""
    try:
        text = json.dumps(value, default=str, ensure_ascii=False, **options)
    except ValueError:
        value = _printable(value)
        text = json.dumps(value, default=str, ensure_ascii=False, **options)
    if _is_text(text):
        return text
    # a lone surrogate (valid JSON as "\ud800", not valid Unicode text): kept as the escape it came as
    return json.dumps(value, default=str, ensure_ascii=True, **options)


def _is_text(value: str) -> bool:
    """Whether a str is valid Unicode text (no lone surrogate, which JSON's "\ud800" escape can carry and which
    neither UTF-8, Parquet nor a warehouse can hold)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_printable(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 4000:
        return f"<an integer of {value.bit_length()} bits>"
    return value


# ---------------------------------------------------------------------------------------------- parsing


def _parse_column(col: Column, values: list[Any]) -> tuple[pa.Array, dict[int, str]]:
    """Parse one column; the fast path is a vectorised Arrow conversion, the slow path explains failures."""
    floor = Decimal(col.ge) if col.kind is Kind.decimal and col.ge is not None else None
    fast = _FAST.get(col.kind)
    if fast is not None:
        try:
            return (_fast_decimal(values, floor) if col.kind is Kind.decimal else fast(values)), {}
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, ValueError):
            pass
    parse_one = _SLOW[col.kind] if floor is None else partial(_parse_decimal, floor=floor)
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
    text = _json(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _blank_to_null(strings: pa.Array) -> pa.Array:
    return pc.if_else(pc.equal(strings, ""), pa.scalar(None, pa.string()), strings)


def _fast_string(values: list[Any]) -> pa.Array:
    return pa.array(values, pa.string())


# 19 integer digits (_WIDE_DECIMAL_PATTERN) and 38 decimals: the difference of two still fits a decimal256
_WIDE_DECIMAL = pa.decimal256(58, 38)
_HALF_QUANTUM = pa.scalar(_QUANTUM / 2, _WIDE_DECIMAL)


def _all_match(strings: pa.Array, pattern: str) -> bool:
    """Whether every non-null string matches `pattern` (vectorised)."""
    return strings.null_count == len(strings) or bool(pc.all(pc.match_substring_regex(strings, pattern)).as_py())


def _fast_decimal(values: list[Any], floor: Decimal | None = None) -> pa.Array:
    # Arrow's string->decimal cast is exact on the shapes _NARROW/_WIDE_DECIMAL_PATTERN allow (and only on
    # those). Up to 18 decimals: one cast. Up to 38 (CoinCap sends up to 36 for volume shares): parse wide,
    # round half-to-even at the 18th decimal, and narrow. Anything else: the slow path, exact and explained.
    strings = _blank_to_null(pa.array(values, pa.string()))
    if _all_match(strings, _NARROW_DECIMAL_PATTERN):
        return pc.cast(strings, DECIMAL_TYPE)
    if not _all_match(strings, _WIDE_DECIMAL_PATTERN):
        raise ValueError("not a plain ASCII number of the common shapes")
    exact = pc.cast(strings, _WIDE_DECIMAL)
    wide = pc.round(exact, ndigits=DECIMAL_SCALE, round_mode="half_to_even")
    # Arrow's round can go the wrong way when the carry runs through every decimal (x.999...9|6 comes out as
    # x.999...9, and ties too): a batch with a result half a unit of the 18th decimal or more away from the
    # exact value (every tie, which is rare) takes the slow path
    if pc.any(pc.greater_equal(pc.abs(pc.subtract(exact, wide)), _HALF_QUANTUM)).as_py():
        raise ValueError("rounded the wrong way")
    if floor is not None:
        # below the floor, yet rounded up to it (-0.0000000000000000000001 -> 0 against ge=0): the slow path
        # refuses it, since negatives stay negative
        bound = pa.scalar(floor, _WIDE_DECIMAL)
        if pc.any(pc.and_(pc.less(exact, bound), pc.greater_equal(wide, bound))).as_py():
            raise ValueError("a value below the floor rounds up to it")
    return pc.cast(wide, DECIMAL_TYPE)


def _fast_integer(values: list[Any]) -> pa.Array:
    try:
        strings = _blank_to_null(pa.array(values, pa.string()))
        if not _all_match(strings, _FAST_INTEGER_PATTERN):
            raise ValueError("not a plain ASCII integer of at most 18 digits")
        return pc.cast(strings, pa.int64())
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
    if value is None:
        return value
    if isinstance(value, str):
        if not _is_text(value):
            raise _Bad("not valid Unicode text (a lone surrogate escape such as \\ud800)")
        return value
    raise _Bad(f"expected a string, not a JSON {_json_type(value)}")


def parse_decimal(value: Any, floor: Decimal | None = None) -> Decimal | None:
    """Parse a CoinCap numeric value (string, or JSON number) exactly; '' and null are null.

    Digits past the 18th decimal (CoinCap sends up to 36 for volume shares) are rounded half-to-even.
    Strings must be plain ASCII numbers: no spaces, underscores, '+' or digits of other scripts. A value below
    `floor` that rounds up to it (-1e-30 against 0) is refused, not rounded.
    """
    return _parse_decimal(value, floor)


def _parse_decimal(value: Any, floor: Decimal | None) -> Decimal | None:
    """`parse_decimal`; a value below `floor` that rounds up to it (-1e-30 against 0) is refused, not rounded."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _Bad(f"expected a numeric string, not a JSON {_json_type(value)}")
    if isinstance(value, int):
        number = Decimal(value)  # exact, and no str() (which refuses ints of more than 4,300 digits)
    else:
        # repr() of a float is its shortest round-trip form, so 0.1 stays 0.1, not 0.1000000000000000055.
        # a JSON number keeps its own text (flows.coincap.client.JsonNumber); repr() of a plain float is its
        # shortest round-trip form, so 0.1 stays 0.1
        text = value if isinstance(value, str) else getattr(value, "text", None) or repr(value)
        if not _DECIMAL_RE.fullmatch(text):
            if text.strip().lstrip("+-").lower() in _NON_FINITE:
                raise _Bad("not a finite number")
            raise _Bad("not a number (plain ASCII digits expected)")
        try:
            number = Decimal(text)
        except (InvalidOperation, ValueError):
            raise _Bad("not a number") from None
    if not number.is_finite():
        raise _Bad("not a finite number")
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)
    exact = number
    if number != 0 and number.adjusted() >= _MAX_INTEGER_DIGITS:
        raise _Bad(f"more than {_MAX_INTEGER_DIGITS} integer digits")
    if exponent < -DECIMAL_SCALE:
        number = number.quantize(_QUANTUM, rounding=ROUND_HALF_EVEN, context=_WIDE_CONTEXT)
        if number.adjusted() >= _MAX_INTEGER_DIGITS and number != 0:
            raise _Bad(f"more than {_MAX_INTEGER_DIGITS} integer digits")
    elif exponent > 0:
        number = number.quantize(_ONE, context=_WIDE_CONTEXT)  # exact; Arrow refuses 0E+30 as a decimal(38, 18)
    if floor is not None and exact < floor <= number:
        raise _Bad(f"below {floor}, though it rounds to {number.normalize()} at {DECIMAL_SCALE} decimals")
    return number


def _slow_integer(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise _Bad("expected an integer, not a JSON boolean")
    if isinstance(value, int):
        result = value
    elif isinstance(value, str):
        if not _INTEGER_RE.fullmatch(value):
            raise _Bad("not an integer (plain ASCII digits expected)")
        if len(value.lstrip("-").lstrip("0")) > _INT64_DIGITS:
            raise _Bad("integer out of range")  # before int(), which refuses more than 4,300 digits
        result = int(value, 10)
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
        return _json(value, sort_keys=True, separators=(",", ":"))
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


_PAGE = "__page__"  # numbers the pages of a batch in the frame Pandera checks


@cache
def _paged_schema(contract: Contract) -> pa_schema.DataFrameSchema:
    """The contract's Pandera schema with the key unique within each page (the `_PAGE` column) of a batch."""
    full = pandera_schema(contract)
    return pa_schema.DataFrameSchema(
        full.columns,
        name=full.name,
        strict=full.strict,
        unique=[_PAGE, *contract.key],
        report_duplicates=full.report_duplicates,
    )


def _run_pandera(
    contract: Contract,
    schema: pa_schema.DataFrameSchema,
    frame: pd.DataFrame,
    records: list[dict[str, Any]],
    reasons: dict[int, list[str]],
) -> None:
    try:
        schema.validate(frame, lazy=True)
    except SchemaErrors as err:
        cases = err.failure_cases
        for row in cases.itertuples(index=False):
            index = row.index
            if index is None or pd.isna(index):
                continue  # schema-level failures (dtype) cannot happen: columns are built from the contract
            column = row.column
            if column == _PAGE:
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
    got = _short(record.get(column, value))
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
