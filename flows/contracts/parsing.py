"""Parsing raw CoinCap values into typed Arrow columns, exactly, explaining every value that does not fit.

Per column, vectorised: numeric strings go through Arrow's exact string->decimal cast; only a column that fails
the fast cast is re-parsed value by value to find and explain the bad rows.

Numbers are accepted only in plain ASCII form (digits, one '.', a leading '-', an exponent): Python's int() and
Decimal() also take " 1 ", "1_000", full-width and Arabic-Indic digits, and Arrow's cast takes "0x10". A negative
that rounds to 0 at 18 decimals is still below a `ge=0`.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from functools import partial
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from flows.contracts.columns import DECIMAL_PRECISION, DECIMAL_SCALE, DECIMAL_TYPE, Column, Kind
from flows.contracts.jsontext import is_text, json_text, json_type, short_text

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


def parse_column(col: Column, values: list[Any]) -> tuple[pa.Array, dict[int, str]]:
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
            errors[i] = f"{col.name}: {exc} (got {short_text(value)})"
    return pa.array(parsed, col.arrow_type), errors


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
        if not is_text(value):
            raise _Bad("not valid Unicode text (a lone surrogate escape such as \\ud800)")
        return value
    raise _Bad(f"expected a string, not a JSON {json_type(value)}")


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
        raise _Bad(f"expected a numeric string, not a JSON {json_type(value)}")
    if isinstance(value, int):
        number = Decimal(value)  # exact, and no str() (which refuses ints of more than 4,300 digits)
    else:
        # repr() of a float is its shortest round-trip form, so 0.1 stays 0.1, not 0.1000000000000000055.
        # a JSON number keeps its own text (flows.coincap.answers.JsonNumber); repr() of a plain float is its
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
        raise _Bad(f"expected an integer, not a JSON {json_type(value)}")
    if abs(result) > _INT64_MAX:
        raise _Bad("integer out of range")
    return result


def _slow_boolean(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise _Bad(f"expected a boolean, not a JSON {json_type(value)}")


def _slow_json(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):
        return json_text(value, sort_keys=True, separators=(",", ":"))
    raise _Bad(f"expected a JSON object, not a JSON {json_type(value)}")


_SLOW = {
    Kind.string: _slow_string,
    Kind.decimal: parse_decimal,
    Kind.integer: _slow_integer,
    Kind.boolean: _slow_boolean,
    Kind.json: _slow_json,
}
