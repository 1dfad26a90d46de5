"""Reading a CoinCap answer: its body as JSON with exact numbers, its error message, the headers that bill or
pace it."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import requests


class JsonNumber(float):
    """A JSON number with a fraction or exponent, as a float that keeps the text it was written as, so the contracts
    parse it exactly (`99999999999999.999999999999` is not rounded to 1e14, `-1e-400` is not read as -0.0)."""

    text: str

    def __new__(cls, text: str) -> JsonNumber:
        number = super().__new__(cls, text)
        number.text = text
        return number


def _big_int(text: str) -> int | JsonNumber:
    """A JSON integer; past Python's 4,300-digit limit, a `JsonNumber`, so its record is refused by the contract
    ("more than 20 integer digits") instead of the whole page failing to parse."""
    return int(text) if len(text) <= 4000 else JsonNumber(text)


def loads_exact(body: bytes) -> Any:
    """JSON with exact numbers. CoinCap sends numbers as strings, so the hooks rarely run; the integer hook (a call
    per integer) only on a body with an integer Python cannot read."""
    try:
        return json.loads(body, parse_float=JsonNumber)
    except ValueError as exc:
        if "digits" not in str(exc):
            raise
    return json.loads(body, parse_float=JsonNumber, parse_int=_big_int)


def content_length(response: requests.Response) -> int | None:
    value = response.headers.get("Content-Length", "")
    return int(value) if value.isascii() and value.isdigit() else None


def billed_credits(headers: Mapping[str, str], name: str) -> int | None:
    """The credits a billing header says this answer cost; None when there is no such header or it is not a
    plain count."""
    value = headers.get(name, "").strip() if name else ""
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 9 else None


def retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def error_message(body: bytes) -> str:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return body[:120].decode("utf-8", "replace").strip()
    if isinstance(payload, dict):
        for key in ("error", "message", "detail"):
            if isinstance(payload.get(key), str):
                return payload[key]
    return str(payload)[:120]
