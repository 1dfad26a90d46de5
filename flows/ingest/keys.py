"""The natural keys an extract has landed, held exactly in about 8 bytes each.

The extract drops a record that reappears on a later page (ranks shift between fetches) by its natural key, and
its paging guard (`flows/ingest/extract.py`) tells a page that brings new records from one that repeats old ones.
Both need a set of keys that stays small as the data grows: `LandedKeys` numbers each key column's distinct
strings, packs a key's numbers into one 64-bit integer and keeps them in a sorted numpy array; `PageKeys` is one
page's keys, encoded once and shared by both.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np


@dataclass
class PageKeys:
    """The natural keys of one page's records, encoded by `LandedKeys.encode`."""

    codes: np.ndarray  # uint64: the key packed into 64 bits, where `packed`
    packed: np.ndarray  # bool: the record's key is all strings and its numbers fit 64 bits
    wide: dict[int, tuple[int, ...]]  # row -> numbers of an all-string key that does not fit 64 bits

    def key(self, row: int) -> int | tuple[int, ...] | None:
        """The row's key as stored (packed code or wide tuple); None when it is not all strings."""
        if self.packed[row]:
            return int(self.codes[row])
        return self.wide.get(row)


class LandedKeys:
    """The natural keys already landed, exactly, in about 8 bytes per key instead of ~290 for a tuple of strings.

    Each key column numbers its distinct strings the first time it sees them (few: exchanges, assets, quotes),
    a key's numbers are packed into one 64-bit integer, and landed keys live in a sorted numpy array (recent
    ones in a set, merged in batches). A key whose numbers do not fit in 64 bits is kept as a tuple instead.
    """

    _MERGE_AT = 1 << 16

    def __init__(self, key: tuple[str, ...]) -> None:
        self._key = key
        self._numbers: list[dict[str, int]] = [{} for _ in key]
        self._bits = 64 // len(key)
        self._sorted = np.empty(0, dtype=np.uint64)
        self._recent: set[int] = set()
        self._wide: set[tuple[int, ...]] = set()
        # `encode` and `has` run in the fetching thread, `contains` and `add` in the validating one; the
        # numbering is touched by `encode` alone
        self._lock = threading.Lock()

    def encode(self, records: list[Any]) -> PageKeys:
        """Encode the key of every raw record; a record that is not an object, or whose key fields are not all
        strings, has no key (as it cannot have landed: landed keys come from valid rows)."""
        n = len(records)
        packed = np.ones(n, dtype=bool)
        codes = np.zeros(n, dtype=np.uint64)
        shift = np.uint64(self._bits % 64)  # a one-column key uses all 64 bits and is never shifted
        numbered = []
        for values, numbers in zip(key_values(self._key, records), self._numbers, strict=True):
            try:  # the usual case, every part already numbered: one pass in C
                ids = np.fromiter(map(numbers.__getitem__, values), np.int64, count=n)
            except (KeyError, TypeError):  # new strings (numbered now), or parts that are not strings
                ids = np.fromiter(
                    (numbers.setdefault(v, len(numbers)) if type(v) is str else -1 for v in values), np.int64, count=n
                )
            packed &= ids >= 0
            if self._bits < 64:
                packed &= ids < (1 << self._bits)
            codes = (codes << shift) | ids.clip(min=0).astype(np.uint64)
            numbered.append(ids)
        wide: dict[int, tuple[int, ...]] = {}
        if not packed.all():
            for row in np.flatnonzero(~packed).tolist():
                numbers_of_row = tuple(int(ids[row]) for ids in numbered)
                if min(numbers_of_row) >= 0:
                    wide[row] = numbers_of_row
        return PageKeys(codes, packed, wide)

    def has(self, key: int | tuple[int, ...]) -> bool:
        with self._lock:
            if isinstance(key, tuple):
                return key in self._wide
            if key in self._recent:
                return True
            at = int(np.searchsorted(self._sorted, np.uint64(key)))
            return at < len(self._sorted) and int(self._sorted[at]) == key

    def contains(self, keys: PageKeys) -> list[bool]:
        """For each record of a page: has its key landed?"""
        with self._lock:
            return self._contains(keys)

    def _contains(self, keys: PageKeys) -> list[bool]:
        n = len(keys.codes)
        if not (len(self._sorted) or self._recent or self._wide):
            return [False] * n
        found = np.zeros(n, dtype=bool)
        if len(self._sorted):
            at = np.searchsorted(self._sorted, keys.codes).clip(max=len(self._sorted) - 1)
            found = (self._sorted[at] == keys.codes) & keys.packed
        result = found.tolist()
        if self._recent:
            recent = self._recent
            result = [
                f or (ok and code in recent)
                for f, ok, code in zip(result, keys.packed.tolist(), keys.codes.tolist(), strict=True)
            ]
        for row, numbers in keys.wide.items():
            result[row] = numbers in self._wide
        return result

    def add(self, keys: PageKeys, rows: list[int]) -> None:
        """Remember the keys of these rows of a page (rows that landed: their keys are all strings)."""
        if not rows:
            return
        with self._lock:
            self._add(keys, rows)

    def _add(self, keys: PageKeys, rows: list[int]) -> None:
        chosen = np.asarray(rows, dtype=np.int64)
        fits = keys.packed[chosen]
        self._recent.update(keys.codes[chosen[fits]].tolist())
        if not fits.all():
            self._wide.update(keys.wide[row] for row in chosen[~fits].tolist())
        if len(self._recent) >= max(self._MERGE_AT, len(self._sorted) >> 4):
            fresh = np.fromiter(self._recent, dtype=np.uint64, count=len(self._recent))
            # two sorted runs: numpy's stable sort (timsort) merges them in linear time
            self._sorted = np.sort(np.concatenate([self._sorted, np.sort(fresh)]), kind="stable")
            self._recent = set()


def key_values(key: tuple[str, ...], records: list[Any]) -> list[Sequence[Any]]:
    """Each key field's values, record by record (None where a record is not an object or lacks the field)."""
    if not records:
        return [[] for _ in key]
    try:  # every record an object with every key field: one pass in C
        if len(key) == 1:
            return [list(map(itemgetter(key[0]), records))]
        return list(zip(*map(itemgetter(*key), records), strict=True))
    except (KeyError, TypeError, IndexError):
        return [[r.get(k) if isinstance(r, dict) else None for r in records] for k in key]
