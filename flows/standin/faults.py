"""Failure modes the local CoinCap v3 stand-in can inject, all off by default, reproducible through `seed`."""

from __future__ import annotations

import functools
import math
import random
import threading
import zlib
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

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
    # Counted faults: requests are numbered from 1 as they arrive (assigning a new `Faults` restarts the count).
    storm_after: int = 0  # with storm_requests > 0: requests storm_after+1 .. storm_after+storm_requests answer 5xx
    storm_requests: int = 0
    quota_after_calls: int = 0  # > 0: the monthly quota runs out after this many requests (see quota_status)
    hang_after: int = 0  # > 0: hold every later request, unanswered, until this is set back to 0 (a stuck upstream)
    rate_limit: int = 0  # > 0: at most this many requests per rate_window_s; the rest get 429 + Retry-After
    rate_window_s: float = 60.0  # the rate limit's fixed window; Retry-After says when the current one ends
    p_slow: float = 0.0  # hold a response slow_s seconds (past a client's read timeout, it gives up)
    slow_s: float = 3.0
    # Schema drift, decided per record (the same record drifts the same way on every page and every retry).
    drift_new_fields: float = 0.0  # share of records carrying fields the v3 docs do not list
    drift_missing_optional: float = 0.0  # share of records whose nullable fields are absent, not null
    drift_wrong_type: float = 0.0  # share of records with one numeric field of the wrong JSON type
    # Hostile mode: what no honest CoinCap does, for the client's and the extract's bounds.
    ignore_offset: bool = False  # every listing page is the first one, whatever `offset` asks for
    drift_values: bool = False  # decimal values change on every answer, as live prices do (keys never change)
    over_deliver: int = 0  # listing pages carry this many rows beyond `limit` (the rows that follow)
    trickle_s: float = 0.0  # > 0: every answer (status line, headers, body) trickles out in small pieces, one
    # piece every trickle_s seconds (a slowloris: each read gets a few bytes, so no read timeout ever trips)
    redirect: str = ""  # "same-host" or "other-host": answer 307 to the same URL on this host (127.0.0.1) or on
    # "localhost" (a host name of its own, served by this very server, so a client that follows gets data)
    gzip_bomb_mb: int = 0  # > 0: 200 answers are a gzip body that inflates to this many MB of valid JSON
    # Billing: every answer costs at least this many credits, above the byte rule (one report saw history calls
    # cost ~12 credits each); `billing_header` names the header that says what each answer cost ("" sends none).
    bill_floor: int = 0
    billing_header: str = ""


@dataclass(frozen=True)
class Draw:
    """The fault decisions of one request, drawn together so one fault's setting never shifts another's."""

    fail_first: bool = False
    drop: bool = False
    rate_limited: bool = False
    server_error: int = 0  # 0, or 500/502/503
    garbage: bool = False
    truncate: bool = False
    seq: int = 0  # this request's number, from 1
    slow: bool = False
    storm: int = 0  # 0, or the 5xx status of a storm answer
    quota_spent: bool = False  # quota_after_calls is reached


class FaultDice:
    """Seeded, thread-safe random decisions; always consumes the same number of draws per request."""

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        # a stream of its own, so turning p_slow on never shifts the other faults' draws
        self._slow_rng = random.Random(f"{seed}/slow")
        self._failed_first = 0
        self._seq = 0
        self._window_start: float | None = None
        self._window_count = 0

    def roll(self, faults: Faults) -> Draw:
        """Decide which faults hit this request."""
        with self._lock:
            u_drop, u_429, u_5xx, u_kind, u_garbage, u_truncate = (self._rng.random() for _ in range(6))
            u_slow = self._slow_rng.random()
            fail_first = self._failed_first < faults.fail_first_n
            if fail_first:
                self._failed_first += 1
            self._seq += 1
            seq = self._seq
        server_error = 0
        if u_5xx < faults.p_5xx:
            server_error = 500 if u_kind < 0.6 else 502 if u_kind < 0.8 else 503
        storm = 0
        if faults.storm_requests > 0 and faults.storm_after < seq <= faults.storm_after + faults.storm_requests:
            storm = (500, 502, 503)[seq % 3]  # a storm mixes what the API and its proxy answer
        return Draw(
            fail_first=fail_first,
            drop=u_drop < faults.p_drop,
            rate_limited=u_429 < faults.p_429,
            server_error=server_error,
            garbage=u_garbage < faults.p_garbage,
            truncate=u_truncate < faults.p_truncate,
            seq=seq,
            slow=u_slow < faults.p_slow,
            storm=storm,
            quota_spent=0 < faults.quota_after_calls < seq,
        )

    def over_rate_limit(self, faults: Faults, now: float) -> float | None:
        """Count one request in the rate limit's window: None when it fits, else seconds until the window ends."""
        if faults.rate_limit <= 0:
            return None
        window = max(faults.rate_window_s, 1e-3)
        with self._lock:
            if self._window_start is None or now >= self._window_start + window:
                # fixed windows on a grid from the first request, as a per-minute counter resets on the minute
                start = now if self._window_start is None else now - (now - self._window_start) % window
                self._window_start, self._window_count = start, 0
            self._window_count += 1
            if self._window_count <= faults.rate_limit:
                return None
            return self._window_start + window - now


def page_rows(offset: int, limit: int, total: int, faults: Faults) -> list[int]:
    """Indexes (into the full listing of `total` rows) of the rows one page serves, in order.

    Without faults: offset .. offset+limit-1. `rank_shift` s starts page k (k = offset // limit) k*s rows
    early, as if rows had climbed the ranking between requests, and swaps the s repeated rows with the next s,
    so the last rows of each page come again near the top of the next one. The shift depends on the offset
    alone (not on timing or request order), so a full pagination with a fixed limit, advancing offset by limit
    until a short page, still serves every row. `duplicate_rows` d prepends the d rows before the page: a page
    may then hold up to limit + d rows. Hostile mode: `ignore_offset` serves offset 0 whatever was asked, and
    `over_deliver` n serves n rows beyond the limit.
    """
    if faults.ignore_offset:
        offset = 0
    shift = min(max(0, faults.rank_shift), max(0, limit - 1))
    page = offset // limit if limit > 0 else 0
    start = min(total, max(0, offset - shift * page))
    stop = min(total, start + limit + max(0, faults.over_deliver))
    rows = list(range(start, stop))
    if shift and page and len(rows) > shift:
        rows[: 2 * shift] = rows[shift : 2 * shift] + rows[:shift]
    if faults.duplicate_rows > 0 and offset > 0 and rows:
        rows[:0] = range(max(0, start - faults.duplicate_rows), start)
    return rows


# ---- schema drift ----------------------------------------------------------------------------------------

# Fields CoinCap may add to a record one day: a string, a nested object and a list, as v3's own fields are.
NEW_FIELDS: dict[str, object] = {
    "launchDate": "2021-05-04",
    "links": {"website": "https://example.org/"},
    "tags": ["drift"],
}
# Per dataset: the fields v3 documents as nullable (a drifted record leaves them out altogether), and the numeric
# field a drifted record sends with the wrong JSON type. Never a natural-key field: drifted records stay traceable.
OPTIONAL_FIELDS: dict[str, tuple[str, ...]] = {
    "assets": ("supply", "maxSupply", "marketCapUsd", "volumeUsd24Hr", "changePercent24Hr", "vwap24Hr", "explorer",
               "tokens"),
    "rates": ("currencySymbol",),
    "exchanges": ("percentTotalVolume", "volumeUsd", "tradingPairs", "socket", "exchangeUrl", "updated"),
    "markets": ("rank", "priceQuote", "volumeUsd24Hr", "percentExchangeVolume", "tradesCount24Hr", "updated"),
    "history": ("date", "circulatingSupply"),
}  # fmt: skip
WRONG_TYPE_FIELDS: dict[str, str] = {
    "assets": "priceUsd",
    "rates": "rateUsd",
    "exchanges": "volumeUsd",
    "markets": "priceUsd",
    "history": "priceUsd",
}
DRIFT_KINDS = ("new_fields", "missing_optional", "wrong_type")


def drifts(faults: Faults) -> bool:
    """Whether any schema drift is on."""
    return max(faults.drift_new_fields, faults.drift_missing_optional, faults.drift_wrong_type) > 0


def drift_record(dataset: str, ident: object, record: Any, faults: Faults) -> tuple[Any, tuple[str, ...]]:
    """The record as a drifted API would send it, and the kinds of drift applied (`DRIFT_KINDS`).

    `dataset` is "assets", "rates", "exchanges", "markets" or "history"; `ident` names the record within it (its
    position, or "slug/time" for history), so the decision is the same on every page and every retry.
    """
    if not isinstance(record, dict) or not drifts(faults):
        return record, ()
    rng = random.Random(f"{faults.seed}/drift/{dataset}/{ident}")
    u_new, u_missing, u_wrong, u_kind = (rng.random() for _ in range(4))
    out = dict(record)
    kinds: list[str] = []
    if u_new < faults.drift_new_fields:
        out.update(NEW_FIELDS)
        kinds.append("new_fields")
    optional = [f for f in OPTIONAL_FIELDS.get(dataset, ()) if f in out]
    if u_missing < faults.drift_missing_optional and optional:
        for name in optional:
            del out[name]
        kinds.append("missing_optional")
    target = WRONG_TYPE_FIELDS.get(dataset)
    if u_wrong < faults.drift_wrong_type and target is not None:
        value = out.get(target)
        # an array, an object or a boolean where a numeric string belongs
        out[target] = [value] if u_kind < 1 / 3 else {"value": value} if u_kind < 2 / 3 else True
        kinds.append("wrong_type")
    return (out, tuple(kinds)) if kinds else (record, ())


def has_wrong_type(dataset: str, record: Any) -> bool:
    """Whether a served record carries `drift_record`'s wrong-type drift."""
    target = WRONG_TYPE_FIELDS.get(dataset)
    if not isinstance(record, dict) or target is None:
        return False
    value = record.get(target)
    return isinstance(value, list | dict | bool)


# ---- hostile mode ----------------------------------------------------------------------------------------


def drift_values(record: Any, tick: int, keep: Collection[str]) -> Any:
    """The record with every decimal string (a "." in it: prices, volumes, supplies) changed by a factor that depends
    on `tick`, as live values move between two calls; fields in `keep` (the natural key) never change."""
    if not isinstance(record, dict):
        return record
    factor = 1 + (tick % 997 + 1) * 1e-6
    out = dict(record)
    for name, value in record.items():
        if name in keep or not isinstance(value, str) or "." not in value:
            continue
        try:
            number = float(value)
        except ValueError:
            continue
        if math.isfinite(number):
            out[name] = f"{number * factor:.18f}"
    return out


GZIP_BOMB_ENCODING = "gzip, gzip"  # the Content-Encoding of `gzip_bomb`: compressed twice


@functools.lru_cache(maxsize=2)
def gzip_bomb(megabytes: int) -> bytes:
    """A body, gzip inside gzip (`GZIP_BOMB_ENCODING`), that inflates to `megabytes` MB of a valid CoinCap envelope
    (an empty list padded with spaces): under 1 KB for 200 MB. Cached: building 500 MB takes a second or two."""
    inner = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # 16+: the gzip container
    spaces = b" " * (1 << 20)
    parts = [inner.compress(b'{"data":[')]
    parts += [inner.compress(spaces) for _ in range(megabytes)]
    parts += [inner.compress(b'],"timestamp":1763700000000}'), inner.flush()]
    outer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return outer.compress(b"".join(parts)) + outer.flush()
