"""The stand-in's answers as bytes: CoinCap v3's envelope, its error bodies and status codes, its paging rules.

Every record is encoded once per catalog (see `catalog_index.py`); a page is a join of those encodings put in the
envelope here.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from flows.standin.faults import BAD_GATEWAY_BODY, INTERNAL_ERROR_BODY, UNAVAILABLE_BODY
from flows.standin.records import RawRecord, Record

API_PREFIX = "/v3"
STATS_PATH = "/_stub/stats"  # outside /v3: never faulted, never counted, no key needed
MAX_LIMIT = 2000
# Page size when `limit` is absent: 100 per the docs for assets, 10 per the v3 OAS for exchanges and markets.
DEFAULT_LIMITS = {"assets": 100, "asset_markets": 100, "exchanges": 10, "markets": 10}
JSON_TYPE = "application/json"
# a 502 comes from the proxy in front of the API, hence HTML
SERVER_ERRORS = {
    500: (INTERNAL_ERROR_BODY, JSON_TYPE),
    502: (BAD_GATEWAY_BODY, "text/html"),
    503: (UNAVAILABLE_BODY, JSON_TYPE),
}
DIGITS = re.compile(r"\d+")


def now_ms() -> int:
    return int(time.time() * 1000)


def encode(value: Any) -> bytes:
    """Compact JSON, UTF-8 as the real API sends it; a `RawRecord` (alone or in a list) is sent as its exact text."""
    if isinstance(value, RawRecord):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, list) and any(isinstance(v, RawRecord) for v in value):
        return b"[" + b",".join(encode(v) for v in value) + b"]"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


_ENVELOPE_TIMESTAMP = b',"timestamp":'


def restamp(body: bytes, timestamp: Any) -> bytes:
    """An `envelope` body whose `timestamp` (always its last member) is `timestamp` instead (any JSON value, or a
    `RawRecord`'s exact text)."""
    head, sep, _ = body.rpartition(_ENVELOPE_TIMESTAMP)
    return head + sep + encode(timestamp) + b"}"


def error_body(message: str, *, timestamp: bool = False) -> bytes:
    body: dict[str, Any] = {"error": message}
    if timestamp:
        body["timestamp"] = now_ms()
    return encode(body)


@dataclass
class Reply:
    """One HTTP answer, plus which records it carries (counted as served only if sent whole with 200)."""

    status: int
    body: bytes
    content_type: str = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)
    dataset: str | None = None
    records: Sequence[Record] = ()


class Reject(Exception):
    """Stops routing with an error reply."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status)
        self.reply = Reply(status, body)


INVALID_QUERY = (400, error_body("Invalid query parameters"))


def paging(query: dict[str, str], default_limit: int) -> tuple[int, int]:
    """Validated (limit, offset): limit 1..2000, offset >= 0, both plain integers."""
    raw_limit, raw_offset = query.get("limit"), query.get("offset")
    if raw_limit is None:
        limit = default_limit
    elif DIGITS.fullmatch(raw_limit) and 1 <= int(raw_limit) <= MAX_LIMIT:
        limit = int(raw_limit)
    else:
        raise Reject(*INVALID_QUERY)
    if raw_offset is None:
        offset = 0
    elif DIGITS.fullmatch(raw_offset):
        offset = int(raw_offset)
    else:
        raise Reject(*INVALID_QUERY)
    return limit, offset


def envelope(data: bytes) -> bytes:
    return b'{"data":' + data + b',"timestamp":' + str(now_ms()).encode() + b"}"
