"""Failure modes the local CoinCap v3 stand-in can inject, all off by default, reproducible through `seed`."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

# Bodies CoinCap (or the proxy in front of it) sends; the client tells them apart by status and wording.
INTERNAL_ERROR_BODY = b'{"error":"Internal server error"}'
BAD_GATEWAY_BODY = b"<html><head><title>502 Bad Gateway</title></head><body>502 Bad Gateway</body></html>"
UNAVAILABLE_BODY = b'{"error":"Service unavailable"}'
RATE_LIMIT_BODY = b'{"error":"Rate limit exceeded: 600 requests per minute"}'
QUOTA_403_BODY = b'{"error":"Forbidden: Monthly usage limit exceeded"}'
QUOTA_429_BODY = b'{"error":"Monthly usage limit exceeded"}'
UNAUTHORIZED_BODY = b'{"error":"Unauthorized: invalid API key"}'
GARBAGE_BODY = b"<html><body>upstream hiccup: this is not JSON</body></html>"
DEPRECATION_MESSAGE = (
    "We are deprecating this version of the CoinCap API on March 31, 2025. "
    "Sign up for our new V3 API at https://pro.coincap.io/dashboard"
)


@dataclass
class Faults:
    """What to break. Probabilities are per request; everything defaults to off.

    Mutate fields of a running server's `faults` freely; assign a new `Faults` to reseed the random stream.
    """

    p_5xx: float = 0.0  # 500 (60%), 502 HTML from a proxy (20%) or 503 (20%)
    p_429: float = 0.0  # per-minute rate limit, with Retry-After
    retry_after_s: float = 1.0  # Retry-After value of p_429 answers; fractions allowed so tests stay fast
    p_drop: float = 0.0  # close the connection without any response
    p_truncate: float = 0.0  # 200 with the full Content-Length but only half the body
    p_garbage: float = 0.0  # 200 whose body is not JSON
    delay_s: float = 0.0  # sleep before answering every request
    quota_exhausted: bool = False  # every call answers the monthly-quota error
    quota_status: int = 403  # 403 Forbidden body, or 429 with a body and no Retry-After
    deprecated: bool = False  # every call answers v2's HTTP 200 deprecation notice
    rank_shift: int = 0  # listings drift by this many rows per page: rows repeat across pages, none is lost
    duplicate_rows: int = 0  # each page after the first also repeats this many rows of the previous page
    fail_first_n: int = 0  # the next N requests answer 503, then service resumes
    seed: int = 0  # seed of the random draws for the p_* faults


@dataclass(frozen=True)
class Draw:
    """The fault decisions of one request, drawn together so one fault's setting never shifts another's."""

    fail_first: bool = False
    drop: bool = False
    rate_limited: bool = False
    server_error: int = 0  # 0, or 500/502/503
    garbage: bool = False
    truncate: bool = False


class FaultDice:
    """Seeded, thread-safe random decisions; always consumes the same number of draws per request."""

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._failed_first = 0

    def roll(self, faults: Faults) -> Draw:
        """Decide which faults hit this request."""
        with self._lock:
            u_drop, u_429, u_5xx, u_kind, u_garbage, u_truncate = (self._rng.random() for _ in range(6))
            fail_first = self._failed_first < faults.fail_first_n
            if fail_first:
                self._failed_first += 1
        server_error = 0
        if u_5xx < faults.p_5xx:
            server_error = 500 if u_kind < 0.6 else 502 if u_kind < 0.8 else 503
        return Draw(
            fail_first=fail_first,
            drop=u_drop < faults.p_drop,
            rate_limited=u_429 < faults.p_429,
            server_error=server_error,
            garbage=u_garbage < faults.p_garbage,
            truncate=u_truncate < faults.p_truncate,
        )


def page_rows(offset: int, limit: int, total: int, faults: Faults) -> list[int]:
    """Indexes (into the full listing of `total` rows) of the rows one page serves, in order.

    Without faults: offset .. offset+limit-1. `rank_shift` s starts page k (k = offset // limit) k*s rows
    early, as if rows had climbed the ranking between requests, and swaps the s repeated rows with the next s,
    so the last rows of each page come again near the top of the next one. The shift depends on the offset
    alone (not on timing or request order), so a full pagination with a fixed limit, advancing offset by limit
    until a short page, still serves every row. `duplicate_rows` d prepends the d rows before the page: a page
    may then hold up to limit + d rows.
    """
    shift = min(max(0, faults.rank_shift), max(0, limit - 1))
    page = offset // limit if limit > 0 else 0
    start = min(total, max(0, offset - shift * page))
    stop = min(total, start + limit)
    rows = list(range(start, stop))
    if shift and page and len(rows) > shift:
        rows[: 2 * shift] = rows[shift : 2 * shift] + rows[:shift]
    if faults.duplicate_rows > 0 and offset > 0 and rows:
        rows[:0] = range(max(0, start - faults.duplicate_rows), start)
    return rows
