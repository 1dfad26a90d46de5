"""Lookups and caches over the catalog a stand-in server serves: positions by id, filters, encoded records."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from flows.standin.catalog import Catalog
from flows.standin.records import DATASETS, NATURAL_KEYS, Record
from flows.standin.replies import encode


class CatalogIndex:
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
                blob = cache[i] = encode(records[i])
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
