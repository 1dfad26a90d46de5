"""The paging guard: a listing's pages must make progress, and a top-N scope lands N records at most.

A listing whose full pages stop bringing records it has not served before (by natural key, whatever their values,
valid or not; a record without a key is never progress) is a server that ignores `offset`: the extract stops with
one line instead of paging, and paying, forever. Records a server sends past a top-N scope (COINCAP_ASSETS_LIMIT)
were not asked for and are not landed.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np

from flows.coincap.client import Page
from flows.coincap.endpoints import Endpoint
from flows.coincap.paging import STALLED_PAGES, ignores_offset
from flows.errors import ApiError
from flows.ingest.keys import LandedKeys, PageKeys

log = logging.getLogger(__name__)


class PagingGuard:
    """Watches one listing at a time (an endpoint with its parameters) for the two ways a server can make paging
    unbounded or over-full:

    - it ignores `offset`: every full page is the first one again, or pages whose records were all served before
      (by natural key, whatever their values; valid or not) or have no key at all. `STALLED_PAGES` such pages in
      a row stop the extract with one line;
    - it over-delivers on a top-N scope (`Endpoint.max_records`): records past the N-th new one are not landed.

    The keys served live in a `LandedKeys` used as plain storage: the codes come from the extract's own encoder.
    """

    def __init__(self, dataset: str, key: tuple[str, ...]) -> None:
        self._dataset = dataset
        self._key = key
        self._endpoint: Endpoint | None = None
        self._start(None)

    def _start(self, endpoint: Endpoint | None) -> None:
        self._endpoint = endpoint
        self._served = LandedKeys(self._key)
        self._taken = 0  # records taken from this listing: new keys, and records without one
        self._stalled = 0  # full pages in a row without a new key
        self._last_full: list[Any] | None = None
        self._warned = False

    def check(self, endpoint: Endpoint, page: Page, keys: PageKeys, encoder: LandedKeys) -> tuple[Page, PageKeys]:
        """The page as it should be landed (trimmed to a top-N scope), or ApiError when paging makes no progress."""
        if endpoint is not self._endpoint:
            self._start(endpoint)
        new, keyless = self._new_rows(keys)
        if endpoint.max_records is not None:
            page, keys, new = self._trim(endpoint.max_records, page, keys, new, keyless, encoder)
        full = page.limit is not None and len(page.records) >= page.limit > 0
        if full and page.records == self._last_full:
            raise ApiError(
                f"CoinCap sent the same full page of {self._dataset} twice (offset {page.offset}): the server "
                "ignores offset.",
                "Check COINCAP_API_BASE_URL points at CoinCap's v3 API.",
            )
        self._last_full = page.records if full else None
        fresh = np.flatnonzero(new).tolist()
        # a top-N listing with every record it wants has nothing left to bring: its last pages are repeats
        complete = endpoint.max_records is not None and self._taken >= endpoint.max_records
        self._stalled = self._stalled + 1 if full and not fresh and not complete else 0
        if self._stalled >= STALLED_PAGES:
            raise ignores_offset(self._dataset, self._stalled, page.offset)
        self._served.add(keys, fresh)
        return page, keys

    def _new_rows(self, keys: PageKeys) -> tuple[np.ndarray, np.ndarray]:
        """Per record: whether its key is new to this listing (and first on the page); whether it has no key."""
        n = len(keys.codes)
        keyless = ~keys.packed
        first = np.zeros(n, dtype=bool)
        packed = np.flatnonzero(keys.packed)
        first[packed[np.unique(keys.codes[packed], return_index=True)[1]]] = True
        seen_wide: set[tuple[int, ...]] = set()
        for row in sorted(keys.wide):  # keys too wide to pack: rare, row by row
            keyless[row] = False
            first[row] = keys.wide[row] not in seen_wide
            seen_wide.add(keys.wide[row])
        new = first & ~np.asarray(self._served.contains(keys), dtype=bool)
        return new, keyless

    def _trim(
        self, wanted: int, page: Page, keys: PageKeys, new: np.ndarray, keyless: np.ndarray, encoder: LandedKeys
    ) -> tuple[Page, PageKeys, np.ndarray]:
        """Keep the page up to the record that makes `wanted` taken (records with a new key, or without a key);
        repeats before it are harmless (deduplicated later), anything after it was not asked for."""
        taken = np.cumsum(new | keyless)
        room = wanted - self._taken
        cut = int(np.searchsorted(taken, room + 1)) if room >= 0 else 0  # the first record beyond the room
        self._taken += int(taken[cut - 1]) if cut else 0
        if cut >= len(page.records):
            return page, keys, new
        if not self._warned:
            self._warned = True
            log.warning(
                "CoinCap sent %d %s records beyond the %d asked for (offset %d); they are not landed.",
                len(page.records) - cut, self._dataset, wanted, page.offset,
            )  # fmt: skip
        records = page.records[:cut]
        return replace(page, records=records), encoder.encode(records), new[:cut]
