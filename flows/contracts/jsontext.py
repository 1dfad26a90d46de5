"""Raw JSON values as text, never an exception: for quarantined records and for the reasons that quote them."""

from __future__ import annotations

import json
from typing import Any


def json_text(value: Any, **options: Any) -> str:
    """JSON text of a raw value, never an exception: integers Python will not print (more than 4,300 digits;
    `json.loads` refuses them, but a record may come from elsewhere) are written as a note of their size."""
    try:
        text = json.dumps(value, default=str, ensure_ascii=False, **options)
    except ValueError:
        value = _printable(value)
        text = json.dumps(value, default=str, ensure_ascii=False, **options)
    if is_text(text):
        return text
    # a lone surrogate (valid JSON as "\ud800", not valid Unicode text): kept as the escape it came as
    return json.dumps(value, default=str, ensure_ascii=True, **options)


def is_text(value: str) -> bool:
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


def short_text(value: Any) -> str:
    """A raw value as JSON text of at most 60 characters, for a reason."""
    text = json_text(value)
    return text if len(text) <= 60 else text[:57] + "..."


def json_type(value: Any) -> str:
    """The JSON type name of a parsed value ("object", "number", ...), for a reason."""
    return {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "number",
        float: "number",
    }.get(type(value), type(value).__name__)
