"""Numbers and times as analysts read them: $1.2B, 3.4%, $0.000123, 2 h 5 min. Every function accepts None."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

DASH = "–"
_SUFFIXES = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K"))


def _num(value: float | Decimal | int | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def compact(value: float | Decimal | int | None, digits: int = 1) -> str:
    """1234567 → 1.2M, 987 → 987, -2.5e9 → -2.5B."""
    number = _num(value)
    if number is None:
        return DASH
    sign, size = ("-" if number < 0 else ""), abs(number)
    for i, (threshold, suffix) in enumerate(_SUFFIXES):
        if size >= threshold:
            if i > 0 and round(size / threshold, digits) >= 1000:  # 999,960 → 1.0M, not 1000.0K
                threshold, suffix = _SUFFIXES[i - 1]
            return f"{sign}{size / threshold:.{digits}f}{suffix}"
    if size >= 100 or size == int(size):
        return f"{sign}{size:,.0f}"
    return f"{sign}{size:.{digits}f}"


def usd_compact(value: float | Decimal | int | None, digits: int = 1) -> str:
    """$1.2B; negative as -$3.4M."""
    text = compact(value, digits)
    if text == DASH:
        return text
    return f"-${text[1:]}" if text.startswith("-") else f"${text}"


def price(value: float | Decimal | int | None) -> str:
    """A USD price with the precision its size needs: $84,022.29, $91.03, $1.0004, $0.00001234."""
    number = _num(value)
    if number is None:
        return DASH
    size = abs(number)
    if size >= 10:
        text = f"{size:,.2f}"
    elif size >= 1:
        text = f"{size:.4f}"
    elif size == 0:
        text = "0.00"
    else:  # four significant digits
        text = f"{size:.{min(12, 3 - math.floor(math.log10(size)))}f}"
    return f"-${text}" if number < 0 else f"${text}"


def pct(value: float | Decimal | int | None, digits: int = 1, signed: bool = False) -> str:
    """3.4%; with signed=True, +3.4% / -3.4%."""
    number = _num(value)
    if number is None:
        return DASH
    if round(number, digits) == 0:
        number = 0.0  # never "-0.0%"
    return f"{number:+.{digits}f}%" if signed else f"{number:.{digits}f}%"


def integer(value: float | Decimal | int | None) -> str:
    """12,345."""
    number = _num(value)
    return DASH if number is None else f"{number:,.0f}"


def ratio_pct(value: float | None, digits: int = 1) -> str:
    """A fraction as a percentage: 0.612 → 61.2%."""
    number = _num(value)
    return DASH if number is None else pct(number * 100, digits)


def duration(delta: timedelta | float | None) -> str:
    """A duration for people: 45 s, 12 min, 2 h 5 min, 3 d 4 h."""
    if delta is None:
        return DASH
    seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 60:
        return f"{sign}{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 60:
        return f"{sign}{minutes:.0f} min"
    hours, minutes = divmod(int(round(minutes)), 60)
    if hours < 48:
        return f"{sign}{hours} h {minutes} min" if minutes else f"{sign}{hours} h"
    days, hours = divmod(hours, 24)
    return f"{sign}{days} d {hours} h" if hours else f"{sign}{days} d"


def utc(moment: datetime | None, with_seconds: bool = False) -> str:
    """2026-11-21 07:27 UTC."""
    if moment is None:
        return DASH
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC" if with_seconds else "%Y-%m-%d %H:%M UTC")


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def day(value: date | None) -> str:
    """Nov 21, 2026 (English month names whatever the locale)."""
    return DASH if value is None else f"{_MONTHS[value.month - 1]} {value.day}, {value.year}"


def short_day(value: date) -> str:
    """Nov 21 (axis labels)."""
    return f"{_MONTHS[value.month - 1]} {value.day}"
