"""A CoinCap-v3-compatible HTTP server on 127.0.0.1 that serves a `Catalog` and injects `Faults` on demand.

One piece of code for the offline demo (bundled samples through the real client), fault-injection tests and
benchmarks (a large synthetic snapshot served from another process, see `serve_in_subprocess`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import re
import select
import selectors
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from flows.coincap.credits import credits_for
from flows.paths import PROJECT_ROOT
from flows.standin.catalog import DATASETS, HISTORY_INTERVALS_MS, NATURAL_KEYS, Catalog, RawRecord, Record
from flows.standin.faults import (
    BAD_GATEWAY_BODY,
    DEPRECATION_MESSAGE,
    GARBAGE_BODY,
    GZIP_BOMB_ENCODING,
    INTERNAL_ERROR_BODY,
    QUOTA_403_BODY,
    QUOTA_429_BODY,
    RATE_LIMIT_BODY,
    UNAUTHORIZED_BODY,
    UNAVAILABLE_BODY,
    FaultDice,
    Faults,
    drift_record,
    drift_values,
    drifts,
    gzip_bomb,
    page_rows,
)

API_PREFIX = "/v3"
STATS_PATH = "/_stub/stats"  # outside /v3: never faulted, never counted, no key needed
MAX_LIMIT = 2000
# Page size when `limit` is absent: 100 per the docs for assets, 10 per the v3 OAS for exchanges and markets.
DEFAULT_LIMITS = {"assets": 100, "asset_markets": 100, "exchanges": 10, "markets": 10}
_MARKET_FILTERS = ("exchangeId", "baseId", "quoteId", "baseSymbol", "quoteSymbol", "assetId", "assetSymbol")
_JSON = "application/json"
# a 502 comes from the proxy in front of the API, hence HTML
_SERVER_ERRORS = {
    500: (INTERNAL_ERROR_BODY, _JSON),
    502: (BAD_GATEWAY_BODY, "text/html"),
    503: (UNAVAILABLE_BODY, _JSON),
}
_DIGITS = re.compile(r"\d+")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _encode(value: Any) -> bytes:
    """Compact JSON, UTF-8 as the real API sends it; a `RawRecord` (alone or in a list) is sent as its exact text."""
    if isinstance(value, RawRecord):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, list) and any(isinstance(v, RawRecord) for v in value):
        return b"[" + b",".join(_encode(v) for v in value) + b"]"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


_ENVELOPE_TIMESTAMP = b',"timestamp":'


def _restamp(body: bytes, timestamp: Any) -> bytes:
    """An `_envelope` body whose `timestamp` (always its last member) is `timestamp` instead (any JSON value, or a
    `RawRecord`'s exact text)."""
    head, sep, _ = body.rpartition(_ENVELOPE_TIMESTAMP)
    return head + sep + _encode(timestamp) + b"}"


def _error(message: str, *, timestamp: bool = False) -> bytes:
    body: dict[str, Any] = {"error": message}
    if timestamp:
        body["timestamp"] = _now_ms()
    return _encode(body)


@dataclass
class _Reply:
    """One HTTP answer, plus which records it carries (counted as served only if sent whole with 200)."""

    status: int
    body: bytes
    content_type: str = _JSON
    headers: dict[str, str] = field(default_factory=dict)
    dataset: str | None = None
    records: Sequence[Record] = ()


class _Reject(Exception):
    """Stops routing with an error reply."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status)
        self.reply = _Reply(status, body)


_INVALID_QUERY = (400, _error("Invalid query parameters"))


class ServerStats:
    """Thread-safe record of what the server answered; updated before the bytes go out, so never behind."""

    def __init__(self, *, keep_records: bool = True) -> None:
        self._lock = threading.Lock()
        # a long-running CLI server keeps counts only: record lists would grow with every snapshot served
        self.keep_records = keep_records
        self.reset()

    def reset(self) -> None:
        """Forget everything counted so far."""
        with self._lock:
            self.requests: Counter[str] = Counter()  # URL path -> requests received
            self.statuses: Counter[int] = Counter()  # status -> responses sent (drops excluded)
            self.bytes_served = 0  # body bytes actually written (a truncated body counts what was sent)
            self.credits = 0  # sum of credits_for(Content-Length) over every response with a body
            self.drops = 0
            self.truncations = 0
            self.injected: Counter[str] = Counter()  # fault kind -> answers (or records, for drift) it hit
            self.last_fault_at: float | None = None  # time.time() of the latest injected fault
            self.abandoned = 0  # held answers (slow, hang) never sent: the client had given up
            # dataset -> every record sent whole in a 200 listing/detail answer, repeats included
            self.served: dict[str, list[Record]] = {}
            self.served_counts: Counter[str] = Counter()  # dataset -> len(served[dataset]), kept in any case

    def count_request(self, path: str) -> None:
        """Count one request received on this URL path."""
        with self._lock:
            self.requests[path] += 1

    def count_fault(self, kind: str, n: int = 1) -> None:
        """Count `n` hits of one injected fault (the kinds are free text, e.g. "5xx storm", "drift: wrong_type")."""
        if n <= 0:
            return
        with self._lock:
            self.injected[kind] += n
            self.last_fault_at = time.time()

    def count_abandoned(self) -> None:
        """Count one held answer the client left before it was sent."""
        with self._lock:
            self.abandoned += 1

    def count_response(
        self,
        reply: _Reply | None,
        sent_bytes: int,
        *,
        truncated: bool = False,
        billed: int | None = None,
        records_later: bool = False,
    ) -> None:
        """Count one answer (None: a dropped connection) before it is written; `billed`: its credits, when not
        the byte rule's. `records_later`: its records count as served only once `count_served` says it was sent
        whole (a trickled answer the client may leave before its end)."""
        with self._lock:
            if reply is None:
                self.drops += 1
                return
            self.statuses[reply.status] += 1
            self.bytes_served += sent_bytes
            if reply.body:
                self.credits += billed if billed is not None else credits_for(len(reply.body))
            if truncated:
                self.truncations += 1
            elif not records_later:
                self._served(reply)

    def count_served(self, reply: _Reply) -> None:
        """Count the records of an answer counted with `records_later`, now written whole."""
        with self._lock:
            self._served(reply)

    def _served(self, reply: _Reply) -> None:
        if reply.status == 200 and reply.dataset is not None:
            self.served_counts[reply.dataset] += len(reply.records)
            if self.keep_records:
                self.served.setdefault(reply.dataset, []).extend(reply.records)

    @property
    def total_requests(self) -> int:
        """Requests received on every path."""
        with self._lock:
            return sum(self.requests.values())

    def served_keys(self, dataset: str) -> set[tuple[Any, ...]]:
        """Distinct natural keys of the records served for "assets", "rates", "exchanges" or "markets"."""
        key = NATURAL_KEYS[dataset]
        with self._lock:
            return {tuple(r.get(k) for k in key) for r in self.served.get(dataset, ()) if isinstance(r, dict)}

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (record counts instead of records)."""
        with self._lock:
            return {
                "requests": dict(self.requests),
                "total_requests": sum(self.requests.values()),
                "statuses": {str(k): v for k, v in self.statuses.items()},
                "bytes_served": self.bytes_served,
                "credits": self.credits,
                "drops": self.drops,
                "truncations": self.truncations,
                "served_records": dict(self.served_counts),
                "injected": dict(self.injected),
                "last_fault_at": self.last_fault_at,
                "abandoned": self.abandoned,
            }


class _CatalogIndex:
    """Lookups and caches over one catalog; rebuilt whenever the server's catalog is replaced."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.by_id: dict[str, dict[str, int]] = {}
        for dataset in DATASETS:
            key = NATURAL_KEYS[dataset][0]
            positions: dict[str, int] = {}
            for i, record in enumerate(catalog.records(dataset)):
                value = record.get(key) if isinstance(record, dict) else None
                if isinstance(value, str):
                    positions.setdefault(value, i)
            self.by_id[dataset] = positions
        # Per-record encoded JSON: pages are joins of these, so faults that reorder pages stay cheap.
        self._encoded: dict[str, list[bytes | None]] = {d: [None] * len(catalog.records(d)) for d in DATASETS}
        self._filtered: dict[tuple[str, tuple[tuple[str, str], ...]], list[int]] = {}
        self._asset_markets: dict[str, list[Record]] = {}
        self._lock = threading.Lock()

    def encoded(self, dataset: str, positions: Iterable[int]) -> list[bytes]:
        """Encoded records at these positions, encoding each at most once (benign races just redo work)."""
        cache = self._encoded[dataset]
        records = self.catalog.records(dataset)
        out = []
        for i in positions:
            blob = cache[i]
            if blob is None:
                blob = cache[i] = _encode(records[i])
            out.append(blob)
        return out

    def filtered(self, dataset: str, filters: dict[str, str]) -> list[int] | None:
        """Positions of the records matching the filters, in catalog order; None when nothing filters."""
        if not filters:
            return None
        key = (dataset, tuple(sorted(filters.items())))
        with self._lock:
            cached = self._filtered.get(key)
        if cached is not None:
            return cached
        records = self.catalog.records(dataset)
        match = _asset_matcher(filters) if dataset == "assets" else _market_matcher(filters)
        positions = [i for i, r in enumerate(records) if isinstance(r, dict) and match(r)]
        with self._lock:
            if len(self._filtered) > 512:  # bounded: a benchmark may filter by thousands of ids
                self._filtered.clear()
            self._filtered[key] = positions
        return positions

    def asset_markets(self, slug: str) -> list[Record]:
        """`/assets/{slug}/markets` rows: markets of this base by volume, exchange shown by display name."""
        with self._lock:
            cached = self._asset_markets.get(slug)
        if cached is not None:
            return cached
        names = {
            e.get("exchangeId"): e.get("name") or e.get("exchangeId")
            for e in self.catalog.exchanges
            if isinstance(e, dict)
        }
        rows = [m for m in self.catalog.markets if isinstance(m, dict) and m.get("baseId") == slug]
        total = sum(_to_float(m.get("volumeUsd24Hr")) for m in rows)
        out = [
            {
                "exchangeId": names.get(m.get("exchangeId"), m.get("exchangeId")),
                "baseId": m.get("baseId"),
                "quoteId": m.get("quoteId"),
                "baseSymbol": m.get("baseSymbol"),
                "quoteSymbol": m.get("quoteSymbol"),
                "volumeUsd24Hr": m.get("volumeUsd24Hr"),
                "priceUsd": m.get("priceUsd"),
                "volumePercent": f"{_to_float(m.get('volumeUsd24Hr')) / total * 100 if total else 0.0:.18f}",
            }
            for m in rows
        ]
        out.sort(key=lambda r: -_to_float(r["volumeUsd24Hr"]))
        with self._lock:
            self._asset_markets[slug] = out
        return out


def _to_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _asset_matcher(filters: dict[str, str]) -> Any:
    ids = {s.strip() for s in filters["ids"].split(",") if s.strip()} if "ids" in filters else None
    needle = filters.get("search", "").strip().lower()

    def match(record: Record) -> bool:
        if ids is not None and record.get("id") not in ids:
            return False
        if needle:
            fields_ = (record.get("id"), record.get("symbol"), record.get("name"))
            return any(isinstance(v, str) and needle in v.lower() for v in fields_)
        return True

    return match


def _market_matcher(filters: dict[str, str]) -> Any:
    def same_symbol(value: Any, wanted: str) -> bool:
        return isinstance(value, str) and value.lower() == wanted.lower()

    def match(r: Record) -> bool:
        for name, wanted in filters.items():
            if name == "assetId":
                ok = wanted in (r.get("baseId"), r.get("quoteId"))
            elif name == "assetSymbol":
                ok = same_symbol(r.get("baseSymbol"), wanted) or same_symbol(r.get("quoteSymbol"), wanted)
            elif name in ("baseSymbol", "quoteSymbol"):
                ok = same_symbol(r.get(name), wanted)
            else:
                ok = r.get(name) == wanted
            if not ok:
                return False
        return True

    return match


def _paging(query: dict[str, str], default_limit: int) -> tuple[int, int]:
    """Validated (limit, offset): limit 1..2000, offset >= 0, both plain integers."""
    raw_limit, raw_offset = query.get("limit"), query.get("offset")
    if raw_limit is None:
        limit = default_limit
    elif _DIGITS.fullmatch(raw_limit) and 1 <= int(raw_limit) <= MAX_LIMIT:
        limit = int(raw_limit)
    else:
        raise _Reject(*_INVALID_QUERY)
    if raw_offset is None:
        offset = 0
    elif _DIGITS.fullmatch(raw_offset):
        offset = int(raw_offset)
    else:
        raise _Reject(*_INVALID_QUERY)
    return limit, offset


def _envelope(data: bytes) -> bytes:
    return b'{"data":' + data + b',"timestamp":' + str(_now_ms()).encode() + b"}"


class StubServer(ThreadingHTTPServer):
    """CoinCap v3 stand-in bound to 127.0.0.1, served from a daemon thread.

    `with StubServer(Catalog.demo(), faults=Faults(p_5xx=0.1), api_keys={"test-key"}) as srv: srv.base_url`
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        catalog: Catalog | None = None,
        *,
        faults: Faults | None = None,
        api_keys: Collection[str] | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
        keep_served_records: bool = True,
    ) -> None:
        self.api_keys: set[str] = set(api_keys or ())
        self.stats = ServerStats(keep_records=keep_served_records)
        self._faults = faults or Faults()
        self._dice = FaultDice(self._faults.seed)
        self._index = _CatalogIndex(Catalog.demo() if catalog is None else catalog)
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._closing = threading.Event()  # ends held answers (slow, hang, trickle) when the server stops
        self._ticks = itertools.count(1)  # drift_values: one tick per listing answered
        # Hostile tests: when not None, the `timestamp` of every data answer (listing, detail, history) is this JSON
        # value instead of now in ms (0, seconds, year 9999, 2**63 - 1, a string, a `RawRecord` such as "-0").
        self.envelope_timestamp: Any = None
        super().__init__((host, port), _Handler)

    @property
    def catalog(self) -> Catalog:
        """The catalog served; assign a new one to swap it (caches are rebuilt)."""
        return self._index.catalog

    @catalog.setter
    def catalog(self, catalog: Catalog) -> None:
        self._index = _CatalogIndex(catalog)

    @property
    def faults(self) -> Faults:
        """Faults in force: mutate fields in place, or assign a new `Faults` to also restart the dice."""
        return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._faults = faults
        self._dice = FaultDice(faults.seed)

    @property
    def port(self) -> int:
        """The bound TCP port."""
        return int(self.server_address[1])

    @property
    def base_url(self) -> str:
        """e.g. http://127.0.0.1:PORT/v3"""
        return f"http://127.0.0.1:{self.port}{API_PREFIX}"

    def start(self) -> StubServer:
        """Serve from a daemon thread; returns self."""
        if self._thread is None:
            # a short poll interval makes stop() quick (shutdown waits for the loop's next poll)
            self._thread = threading.Thread(
                target=self.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"stub-coincap-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the listening socket and cut every open keep-alive connection."""
        self._closing.set()
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        with self._connections_lock:
            open_connections = list(self._connections)
        for conn in open_connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.server_close()

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-answer (killed, timed out) is routine for a fault server: not worth a trace."""
        if isinstance(sys.exc_info()[1], ConnectionResetError | BrokenPipeError):
            return
        super().handle_error(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve one connection (socketserver hook)."""
        # tracked so stop() can cut idle keep-alive connections that would otherwise still be served
        with self._connections_lock:
            self._connections.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.discard(request)

    # ---- request handling -------------------------------------------------------------------------------

    def _answer(self, handler: _Handler) -> None:
        """Apply faults in order (hold, outage, storm, drop, v2 notice, auth, quota, 429s, 5xx, garbage), then route."""
        parts = urlsplit(handler.path)
        path = unquote(parts.path).rstrip("/") or "/"
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        if path == STATS_PATH:
            handler.send(_Reply(200, _encode(self.stats.as_dict())), count=False)
            return
        self.stats.count_request(path)
        faults = self._faults
        draw = self._dice.roll(faults)
        if faults.delay_s > 0:
            time.sleep(faults.delay_s)
        if not self._held(handler, draw.seq, draw.slow):
            return
        stats = self.stats
        if faults.redirect and query.get("redirected") != "1":
            # a proxy in front of the API moves every call once; "other-host" names this server by another name
            host = "localhost" if faults.redirect == "other-host" else "127.0.0.1"
            target = f"http://{host}:{self.port}{parts.path}?{parts.query}{'&' if parts.query else ''}redirected=1"
            stats.count_fault(f"redirect ({'other' if host == 'localhost' else 'same'} host)")
            handler.send(_Reply(307, _error("Temporary redirect"), headers={"Location": target}))
            return
        if draw.fail_first:
            stats.count_fault("503 outage")
            handler.send(_Reply(503, UNAVAILABLE_BODY))
        elif draw.storm:
            stats.count_fault("5xx storm")
            body, content_type = _SERVER_ERRORS[draw.storm]
            handler.send(_Reply(draw.storm, body, content_type=content_type))
        elif draw.drop:
            stats.count_fault("dropped connection")
            handler.drop()
        elif faults.deprecated:  # v2 answered this to every call, key or not
            handler.send(_Reply(200, _envelope(_encode({"message": DEPRECATION_MESSAGE}))))
        elif self.api_keys and not self._authorized(handler, query):
            handler.send(_Reply(401, UNAUTHORIZED_BODY))
        elif faults.quota_exhausted or draw.quota_spent:
            stats.count_fault("quota exhausted")
            body = QUOTA_429_BODY if faults.quota_status == 429 else QUOTA_403_BODY
            handler.send(_Reply(429 if faults.quota_status == 429 else 403, body))
        elif (wait := self._dice.over_rate_limit(faults, time.monotonic())) is not None:
            stats.count_fault("429 rate-limit window")
            # whole milliseconds, rounded up, so a client that waits exactly this long lands in the next window
            retry_after = f"{math.ceil(wait * 1000) / 1000:g}"
            handler.send(_Reply(429, RATE_LIMIT_BODY, headers={"Retry-After": retry_after}))
        elif draw.rate_limited:
            stats.count_fault("429 rate limit")
            handler.send(_Reply(429, RATE_LIMIT_BODY, headers={"Retry-After": f"{faults.retry_after_s:g}"}))
        elif draw.server_error:
            stats.count_fault("5xx")
            body, content_type = _SERVER_ERRORS[draw.server_error]
            handler.send(_Reply(draw.server_error, body, content_type=content_type))
        elif draw.garbage:
            stats.count_fault("not JSON")
            handler.send(_Reply(200, GARBAGE_BODY))  # still claims JSON, as a misbehaving proxy would
        else:
            try:
                reply = self._route(path, query)
            except _Reject as reject:
                reply = reject.reply
            if self.envelope_timestamp is not None and reply.status == 200 and reply.dataset is not None:
                reply = replace(reply, body=_restamp(reply.body, self.envelope_timestamp))
            if faults.gzip_bomb_mb > 0 and reply.status == 200:
                stats.count_fault("gzip bomb")
                headers = {**reply.headers, "Content-Encoding": GZIP_BOMB_ENCODING}
                reply = _Reply(200, gzip_bomb(faults.gzip_bomb_mb), headers=headers)
            truncate = draw.truncate and reply.status == 200
            if truncate:
                stats.count_fault("truncated body")
            handler.send(reply, truncate=truncate)

    def _held(self, handler: _Handler, seq: int, slow: bool) -> bool:
        """Hold a slow or hung answer; False when the client left meanwhile (the answer is then never sent)."""
        faults = self._faults
        hung = 0 < faults.hang_after < seq
        if not (slow or hung):
            return True
        self.stats.count_fault("hung request" if hung else "slow response")
        deadline = time.monotonic() + faults.slow_s
        while not self._closing.is_set():
            current = self._faults  # a hang ends when the test sets hang_after back to 0 (or swaps the faults)
            if hung and not 0 < current.hang_after < seq:
                break
            if not hung and time.monotonic() >= deadline:
                break
            if _client_gone(handler.connection):
                break
            self._closing.wait(0.02)
        if _client_gone(handler.connection) or self._closing.is_set():
            self.stats.count_abandoned()
            handler.close_connection = True
            return False
        return True

    def _authorized(self, handler: _Handler, query: dict[str, str]) -> bool:
        header = handler.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip() in self.api_keys:
            return True
        return query.get("apiKey") in self.api_keys

    def _route(self, path: str, query: dict[str, str]) -> _Reply:
        if not path.startswith(API_PREFIX + "/"):
            raise _Reject(404, _error("Not found"))
        parts = path[len(API_PREFIX) + 1 :].split("/")
        match parts:
            case ["assets"]:
                filters = {k: query[k] for k in ("ids", "search") if k in query}
                return self._listing("assets", query, filters)
            case ["assets", slug]:
                return self._detail("assets", slug, _error(f"{slug} not found", timestamp=True))
            case ["assets", slug, "markets"]:
                return self._asset_markets(slug, query)
            case ["assets", slug, "history"]:
                return self._history(slug, query)
            case ["exchanges"]:
                return self._listing("exchanges", query, {})
            case ["exchanges", exchange_id]:
                return self._detail("exchanges", exchange_id, _error("Exchange not found"))
            case ["markets"]:
                filters = {k: query[k] for k in _MARKET_FILTERS if k in query}
                return self._listing("markets", query, filters)
            case ["rates"]:
                return self._rates(query)
            case ["rates", slug]:
                return self._detail("rates", slug, _error("Conversion rate not found"))
        raise _Reject(404, _error("Not found"))

    def _listing(self, dataset: str, query: dict[str, str], filters: dict[str, str]) -> _Reply:
        limit, offset = _paging(query, DEFAULT_LIMITS[dataset])
        index = self._index
        matching = index.filtered(dataset, filters)
        total = len(index.catalog.records(dataset)) if matching is None else len(matching)
        faults = self._faults
        rows = page_rows(offset, limit, total, faults)
        self.stats.count_fault("rows repeated across pages", sum(1 for r in rows if r < offset))
        if faults.over_deliver > 0:
            self.stats.count_fault("rows beyond the limit", len(rows) - limit)
        positions = rows if matching is None else [matching[i] for i in rows]
        records = index.catalog.records(dataset)
        page = [records[i] for i in positions]
        if faults.drift_values:
            tick, keep = next(self._ticks), NATURAL_KEYS[dataset]
            page = [drift_values(r, tick, keep) for r in page]
        if drifts(faults):
            page = self._drift(dataset, positions, page)
        if drifts(faults) or faults.drift_values:
            return _Reply(200, _envelope(_encode(page)), dataset=dataset, records=page)
        data = b"[" + b",".join(index.encoded(dataset, positions)) + b"]"
        return _Reply(200, _envelope(data), dataset=dataset, records=page)

    def _drift(self, dataset: str, idents: Sequence[object], records: Sequence[Record]) -> list[Record]:
        """Records as a drifting API sends them (see `Faults.drift_*`), each drift counted."""
        out = []
        for ident, record in zip(idents, records, strict=True):
            drifted, kinds = drift_record(dataset, ident, record, self._faults)
            for kind in kinds:
                self.stats.count_fault(f"drift: {kind}")
            out.append(drifted)
        return out

    def _detail(self, dataset: str, key: str, not_found: bytes) -> _Reply:
        position = self._index.by_id[dataset].get(key)
        if position is None:
            raise _Reject(404, not_found)
        record = self._index.catalog.records(dataset)[position]
        if drifts(self._faults):
            (record,) = self._drift(dataset, [position], [record])
            return _Reply(200, _envelope(_encode(record)), dataset=dataset, records=[record])
        return _Reply(200, _envelope(self._index.encoded(dataset, [position])[0]), dataset=dataset, records=[record])

    def _asset_markets(self, slug: str, query: dict[str, str]) -> _Reply:
        limit, offset = _paging(query, DEFAULT_LIMITS["asset_markets"])
        if slug not in self._index.by_id["assets"]:
            raise _Reject(404, _error(f"{slug} not found", timestamp=True))
        rows = self._index.asset_markets(slug)
        page = [rows[i] for i in page_rows(offset, limit, len(rows), self._faults)]
        return _Reply(200, _envelope(_encode(page)), dataset="asset_markets", records=page)

    def _history(self, slug: str, query: dict[str, str]) -> _Reply:
        step = HISTORY_INTERVALS_MS.get(query.get("interval", ""))
        start, end = query.get("start"), query.get("end")
        if step is None or (start is None) != (end is None):  # v3: start and end come together
            raise _Reject(*_INVALID_QUERY)
        if start is not None and not (_DIGITS.fullmatch(start) and _DIGITS.fullmatch(end or "")):
            raise _Reject(*_INVALID_QUERY)
        history = self._index.catalog.history
        if slug not in history and slug not in self._index.by_id["assets"]:
            raise _Reject(404, _error("Asset history not found"))
        window = (int(start), int(end)) if start is not None and end is not None else None
        # one point per interval: stored points off the interval's grid are skipped
        points = [
            p
            for p in history.get(slug, ())
            if isinstance(p.get("time"), int)
            and p["time"] % step == 0
            and (window is None or window[0] <= p["time"] <= window[1])
        ]
        if drifts(self._faults):
            points = self._drift("history", [f"{slug}/{p['time']}" for p in points], points)
        return _Reply(200, _envelope(_encode(points)), dataset=f"history/{slug}", records=points)

    def _rates(self, query: dict[str, str]) -> _Reply:
        records = self._index.catalog.rates
        if "ids" in query:
            wanted = [s.strip() for s in query["ids"].split(",") if s.strip()]
            by_id = self._index.by_id["rates"]
            positions = sorted({by_id[s] for s in wanted if s in by_id})
            if not positions:
                raise _Reject(404, _error("Conversion rate not found"))
        else:
            positions = list(range(len(records)))
        page = [records[i] for i in positions]
        if drifts(self._faults):
            page = self._drift("rates", positions, page)
            return _Reply(200, _envelope(_encode(page)), dataset="rates", records=page)
        data = b"[" + b",".join(self._index.encoded("rates", positions)) + b"]"
        return _Reply(200, _envelope(data), dataset="rates", records=page)


class _Handler(BaseHTTPRequestHandler):
    """Hands every GET to the server; writes replies with an exact Content-Length over keep-alive HTTP/1.1."""

    server: StubServer
    protocol_version = "HTTP/1.1"
    server_version = "coincap-stub/1"
    timeout = 120  # idle keep-alive connections end eventually
    disable_nagle_algorithm = True  # headers and body go out in two writes: Nagle would add ~40 ms each

    def do_GET(self) -> None:
        self.server._answer(self)

    def _not_found(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.stats.count_request(urlsplit(self.path).path)
        self.send(_Reply(404, _error("Not found")))

    do_POST = do_PUT = do_DELETE = do_PATCH = _not_found

    def send(self, reply: _Reply, *, truncate: bool = False, count: bool = True) -> None:
        """Write the reply; with `truncate`, announce the full length, send half the body, close."""
        body = reply.body[: len(reply.body) // 2] if truncate else reply.body
        faults = self.server.faults
        trickle_s = faults.trickle_s if count else 0.0
        if count:
            # billed for the whole answer, as computed, however much of it is sent
            billed = max(credits_for(len(reply.body)), faults.bill_floor)
            if billed > credits_for(len(reply.body)):
                self.server.stats.count_fault("billed above the byte rule")
            self.server.stats.count_response(
                reply, len(body), truncated=truncate, billed=billed, records_later=trickle_s > 0
            )
            if faults.billing_header:
                reply = replace(reply, headers={**reply.headers, faults.billing_header: str(billed)})
        if trickle_s > 0:
            self.server.stats.count_fault("trickled answer")
            self._trickle(reply, body, trickle_s, count_records=count and not truncate)
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
        if truncate:
            self.wfile.flush()
            self.close_connection = True

    def _trickle(self, reply: _Reply, body: bytes, every_s: float, *, count_records: bool = False) -> None:
        """Write the whole answer, status line included, 16 bytes every `every_s` seconds, until it is sent, the
        client leaves or the server stops; then close the connection. With `count_records`, its records count as
        served when the last piece goes out (before it, so a client that read it never sees them uncounted)."""
        self.close_connection = True
        lines = [f"{self.protocol_version} {reply.status} {self.responses.get(reply.status, ('',))[0]}"]
        lines += [f"Content-Type: {reply.content_type}", f"Content-Length: {len(reply.body)}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in reply.headers.items()]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        closing = self.server._closing
        for start in range(0, len(data), 16):
            if closing.is_set() or _client_gone(self.connection):
                self.server.stats.count_abandoned()
                return
            if count_records and start + 16 >= len(data):
                self.server.stats.count_served(reply)
            try:
                self.wfile.write(data[start : start + 16])
                self.wfile.flush()
            except OSError:
                self.server.stats.count_abandoned()
                return
            closing.wait(every_s)

    def drop(self) -> None:
        """Close the connection without writing a byte."""
        self.server.stats.count_response(None, 0)
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests and benchmarks would drown in access logs


def _client_gone(conn: socket.socket) -> bool:
    """Whether the client closed its side (a read timeout, a killed process): a peek then reads end-of-stream."""
    try:
        # select first: the handler's socket has a timeout, and a recv on it would wait that long for data
        readable, _, _ = select.select([conn], [], [], 0)
        return bool(readable) and conn.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):  # ValueError: the socket is already closed
        return True


_PROJECT_ROOT = PROJECT_ROOT


def serve_in_subprocess(
    catalog: str = "synthetic",
    *,
    assets: int = 3000,
    exchanges: int = 200,
    markets: int = 100_000,
    rates: int | None = None,
    seed: int = 0,
    history_days: int = 0,
    history_assets: int | None = None,
    history_interval: str | None = None,
    invalid_fraction: float = 0.0,
    api_key: str | None = None,
    faults: Faults | None = None,
    port: int = 0,
    timeout_s: float = 60.0,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start `python -m flows.standin` in its own process; return (process, base_url) once it answers.

    The caller owns the process: `proc.terminate(); proc.wait()`. GET `<root>/_stub/stats` for its counters.
    """
    options = {
        "--port": port,
        "--catalog": catalog,
        "--assets": assets,
        "--exchanges": exchanges,
        "--markets": markets,
        "--rates": rates,
        "--catalog-seed": seed,
        "--history-days": history_days,
        "--history-assets": history_assets,
        "--history-interval": history_interval,
        "--invalid-fraction": invalid_fraction,
        "--api-key": api_key,
    }
    args = [sys.executable, "-m", "flows.standin"]
    for flag, option in options.items():
        if option is not None:
            args += [flag, str(option)]
    for f in fields(Faults):
        value = getattr(faults or Faults(), f.name)
        if value != f.default:
            flag = "--" + f.name.replace("_", "-")
            args += [flag] if isinstance(value, bool) else [flag, str(value)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(_PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, env=env)
    try:
        base_url = _read_base_url(proc, timeout_s)
        _wait_until_answering(base_url, timeout_s)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, base_url


def _read_base_url(proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    """The URL from the server's one-line banner (it picks its own port when asked for port 0)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if selector.select(timeout=0.1):
                line = proc.stdout.readline().decode().strip()
                found = re.search(r"http://\S+/v3", line)
                if found:
                    return found.group(0)
                if not line and proc.poll() is not None:
                    break
            elif proc.poll() is not None:
                break
    raise RuntimeError(f"stand-in server did not start (exit code {proc.poll()}); see its stderr above")


def _wait_until_answering(base_url: str, timeout_s: float) -> None:
    stats_url = base_url[: -len(API_PREFIX)] + STATS_PATH
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(stats_url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
