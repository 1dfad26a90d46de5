"""The CoinCap v3 endpoints the pipeline reads, as plain data. The HTTP mechanics live in `client.py`.

| dataset   | endpoint     | paging               | cost per full read (3k assets, 100k markets)       |
|-----------|--------------|----------------------|----------------------------------------------------|
| assets    | `/assets`    | limit=2000 + offset  | ~1.1 MB, ~450 credits                              |
| rates     | `/rates`     | none (one call)      | ~30 KB, ~13 credits                                |
| exchanges | `/exchanges` | limit=2000 + offset  | ~60 KB, ~25 credits                                |
| markets   | `/markets`   | limit=2000 + offset  | ~34 MB, ~13,900 credits: scope it (exchange/quote) |

All four are full refreshes: CoinCap has no "changed since" filter, so every snapshot reads the whole list.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from flows.datasets import SNAPSHOT_DATASETS
from flows.settings import Settings


@dataclass(frozen=True)
class Endpoint:
    """A list endpoint: its path, whether it pages, and fixed query parameters."""

    dataset: str
    path: str
    paginated: bool = True
    params: dict[str, Any] = field(default_factory=dict)
    max_records: int | None = None  # stop after this many (top-N by rank)


_UNPAGED = {"rates"}  # /rates answers every rate in one call
ENDPOINTS: dict[str, Endpoint] = {d: Endpoint(d, f"/{d}", paginated=d not in _UNPAGED) for d in SNAPSHOT_DATASETS}
DATASETS: tuple[str, ...] = SNAPSHOT_DATASETS


def scoped_requests(dataset: str, settings: Settings) -> Iterator[Endpoint]:
    """The requests one dataset needs under the configured scope (markets: one listing per exchange x quote)."""
    base = ENDPOINTS[dataset]
    if dataset == "assets" and settings.assets_limit:
        yield Endpoint(dataset, base.path, base.paginated, dict(base.params), max_records=settings.assets_limit)
        return
    if dataset != "markets":
        yield base
        return
    exchanges = settings.markets_exchange_ids or [None]
    quotes = settings.markets_quote_ids or [None]
    for exchange in exchanges:
        for quote in quotes:
            params = dict(base.params)
            if exchange:
                params["exchangeId"] = exchange
            if quote:
                params["quoteId"] = quote
            yield Endpoint(dataset, base.path, base.paginated, params)
