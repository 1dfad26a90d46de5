"""Synthetic price history for the stand-in's `/assets/{slug}/history`: one seeded random walk per asset."""

from __future__ import annotations

import math
import random
import threading
from collections import OrderedDict
from collections.abc import Iterator, MutableMapping
from datetime import UTC, datetime, timedelta

from flows.standin.records import Record, dec

_HOUR_MS = 3_600_000


class SyntheticHistory(MutableMapping[str, list[Record]]):
    """Price points per asset, generated on first access from (seed, slug, interval), so years of points for
    thousands of assets cost nothing until served. Assign a new list to replace a series, `del` to delist it."""

    def __init__(
        self,
        prices: dict[str, float],
        *,
        seed: int,
        step_ms: int,
        n_points: int,
        end_ms: int,
        cache_size: int = 64,
    ) -> None:
        self._prices = dict(prices)  # slug -> price of the latest point
        self._seed = seed
        self.step_ms = step_ms
        self.n_points = n_points
        self.end_ms = end_ms - end_ms % step_ms
        self._overrides: dict[str, list[Record]] = {}
        self._removed: set[str] = set()
        self._cache: OrderedDict[str, list[Record]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()  # the stand-in server reads from many threads

    def __getitem__(self, slug: str) -> list[Record]:
        if slug in self._overrides:
            return self._overrides[slug]
        if slug in self._removed or slug not in self._prices:
            raise KeyError(slug)
        with self._lock:
            cached = self._cache.get(slug)
            if cached is not None:
                self._cache.move_to_end(slug)
                return cached
        points = self._generate(slug)
        with self._lock:
            self._cache[slug] = points
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return points

    def __setitem__(self, slug: str, points: list[Record]) -> None:
        self._overrides[slug] = points
        self._removed.discard(slug)

    def __delitem__(self, slug: str) -> None:
        if slug not in self:
            raise KeyError(slug)
        self._overrides.pop(slug, None)
        self._removed.add(slug)

    def __contains__(self, slug: object) -> bool:
        return slug in self._overrides or (slug in self._prices and slug not in self._removed)

    def __iter__(self) -> Iterator[str]:
        yield from self._overrides
        yield from (s for s in self._prices if s not in self._overrides and s not in self._removed)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def _generate(self, slug: str) -> list[Record]:
        """A random walk back from the asset's current price; volatility scales with the step."""
        rng = random.Random(f"{self._seed}/{slug}/{self.step_ms}")
        sigma = 0.004 * math.sqrt(self.step_ms / _HOUR_MS)
        n, step = self.n_points, self.step_ms
        walk = [self._prices[slug]]
        for _ in range(n - 1):
            walk.append(walk[-1] / math.exp(rng.gauss(0, sigma)))
        walk.reverse()
        start = self.end_ms - (n - 1) * step
        start_dt = datetime.fromtimestamp(start / 1000, tz=UTC)
        return [
            {
                "priceUsd": dec(price),
                "time": start + i * step,
                "date": (start_dt + timedelta(milliseconds=i * step)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            }
            for i, price in enumerate(walk)
        ]
