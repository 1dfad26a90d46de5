"""The stand-in's v3 endpoints: a path and a query in, a `Reply` out.

Faults that reshape an answer's rows are applied here (rows repeated across pages or beyond the limit, drifting
records and values) and counted; faults that replace the answer (errors, drops, holds) are the server's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from flows.standin.catalog_index import CatalogIndex
from flows.standin.faults import Faults, drift_record, drift_values, drifts, page_rows
from flows.standin.records import HISTORY_INTERVALS_MS, NATURAL_KEYS, Record
from flows.standin.replies import (
    API_PREFIX,
    DEFAULT_LIMITS,
    DIGITS,
    INVALID_QUERY,
    Reject,
    Reply,
    encode,
    envelope,
    error_body,
    paging,
)
from flows.standin.stats import ServerStats

MARKET_FILTERS = ("exchangeId", "baseId", "quoteId", "baseSymbol", "quoteSymbol", "assetId", "assetSymbol")


@dataclass
class Router:
    """Answers one request from the catalog index with the faults in force, counting what it injects."""

    index: CatalogIndex
    faults: Faults
    stats: ServerStats
    ticks: Iterator[int]  # drift_values: one tick per listing answered

    def route(self, path: str, query: dict[str, str]) -> Reply:
        """The answer to a GET of `path` (percent-decoded, no trailing slash); raises `Reject` for an error."""
        if not path.startswith(API_PREFIX + "/"):
            raise Reject(404, error_body("Not found"))
        parts = path[len(API_PREFIX) + 1 :].split("/")
        match parts:
            case ["assets"]:
                filters = {k: query[k] for k in ("ids", "search") if k in query}
                return self._listing("assets", query, filters)
            case ["assets", slug]:
                return self._detail("assets", slug, error_body(f"{slug} not found", timestamp=True))
            case ["assets", slug, "markets"]:
                return self._asset_markets(slug, query)
            case ["assets", slug, "history"]:
                return self._history(slug, query)
            case ["exchanges"]:
                return self._listing("exchanges", query, {})
            case ["exchanges", exchange_id]:
                return self._detail("exchanges", exchange_id, error_body("Exchange not found"))
            case ["markets"]:
                filters = {k: query[k] for k in MARKET_FILTERS if k in query}
                return self._listing("markets", query, filters)
            case ["rates"]:
                return self._rates(query)
            case ["rates", slug]:
                return self._detail("rates", slug, error_body("Conversion rate not found"))
        raise Reject(404, error_body("Not found"))

    def _listing(self, dataset: str, query: dict[str, str], filters: dict[str, str]) -> Reply:
        limit, offset = paging(query, DEFAULT_LIMITS[dataset])
        index = self.index
        matching = index.filtered(dataset, filters)
        total = len(index.catalog.records(dataset)) if matching is None else len(matching)
        faults = self.faults
        rows = page_rows(offset, limit, total, faults)
        self.stats.count_fault("rows repeated across pages", sum(1 for r in rows if r < offset))
        if faults.over_deliver > 0:
            self.stats.count_fault("rows beyond the limit", len(rows) - limit)
        positions = rows if matching is None else [matching[i] for i in rows]
        records = index.catalog.records(dataset)
        page = [records[i] for i in positions]
        if faults.drift_values:
            tick, keep = next(self.ticks), NATURAL_KEYS[dataset]
            page = [drift_values(r, tick, keep) for r in page]
        if drifts(faults):
            page = self._drift(dataset, positions, page)
        if drifts(faults) or faults.drift_values:
            return Reply(200, envelope(encode(page)), dataset=dataset, records=page)
        data = b"[" + b",".join(index.encoded(dataset, positions)) + b"]"
        return Reply(200, envelope(data), dataset=dataset, records=page)

    def _drift(self, dataset: str, idents: Sequence[object], records: Sequence[Record]) -> list[Record]:
        """Records as a drifting API sends them (see `Faults.drift_*`), each drift counted."""
        out = []
        for ident, record in zip(idents, records, strict=True):
            drifted, kinds = drift_record(dataset, ident, record, self.faults)
            for kind in kinds:
                self.stats.count_fault(f"drift: {kind}")
            out.append(drifted)
        return out

    def _detail(self, dataset: str, key: str, not_found: bytes) -> Reply:
        position = self.index.by_id[dataset].get(key)
        if position is None:
            raise Reject(404, not_found)
        record = self.index.catalog.records(dataset)[position]
        if drifts(self.faults):
            (record,) = self._drift(dataset, [position], [record])
            return Reply(200, envelope(encode(record)), dataset=dataset, records=[record])
        return Reply(200, envelope(self.index.encoded(dataset, [position])[0]), dataset=dataset, records=[record])

    def _asset_markets(self, slug: str, query: dict[str, str]) -> Reply:
        limit, offset = paging(query, DEFAULT_LIMITS["asset_markets"])
        if slug not in self.index.by_id["assets"]:
            raise Reject(404, error_body(f"{slug} not found", timestamp=True))
        rows = self.index.asset_markets(slug)
        page = [rows[i] for i in page_rows(offset, limit, len(rows), self.faults)]
        return Reply(200, envelope(encode(page)), dataset="asset_markets", records=page)

    def _history(self, slug: str, query: dict[str, str]) -> Reply:
        step = HISTORY_INTERVALS_MS.get(query.get("interval", ""))
        start, end = query.get("start"), query.get("end")
        if step is None or (start is None) != (end is None):  # v3: start and end come together
            raise Reject(*INVALID_QUERY)
        if start is not None and not (DIGITS.fullmatch(start) and DIGITS.fullmatch(end or "")):
            raise Reject(*INVALID_QUERY)
        history = self.index.catalog.history
        if slug not in history and slug not in self.index.by_id["assets"]:
            raise Reject(404, error_body("Asset history not found"))
        window = (int(start), int(end)) if start is not None and end is not None else None
        # one point per interval: stored points off the interval's grid are skipped
        points = [
            p
            for p in history.get(slug, ())
            if isinstance(p.get("time"), int)
            and p["time"] % step == 0
            and (window is None or window[0] <= p["time"] <= window[1])
        ]
        if drifts(self.faults):
            points = self._drift("history", [f"{slug}/{p['time']}" for p in points], points)
        return Reply(200, envelope(encode(points)), dataset=f"history/{slug}", records=points)

    def _rates(self, query: dict[str, str]) -> Reply:
        records = self.index.catalog.rates
        if "ids" in query:
            wanted = [s.strip() for s in query["ids"].split(",") if s.strip()]
            by_id = self.index.by_id["rates"]
            positions = sorted({by_id[s] for s in wanted if s in by_id})
            if not positions:
                raise Reject(404, error_body("Conversion rate not found"))
        else:
            positions = list(range(len(records)))
        page = [records[i] for i in positions]
        if drifts(self.faults):
            page = self._drift("rates", positions, page)
            return Reply(200, envelope(encode(page)), dataset="rates", records=page)
        data = b"[" + b",".join(self.index.encoded("rates", positions)) + b"]"
        return Reply(200, envelope(data), dataset="rates", records=page)
