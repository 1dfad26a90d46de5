"""What a stand-in record is: the datasets, their natural keys, and numbers written the way CoinCap v3 writes them.

Records are plain dicts shaped exactly as CoinCap v3 returns them: numbers as decimal strings (up to 18
decimals, with the binary-float artifacts v3 shows), `rank` as a string, `updated`/`time` as int ms, nullable
fields as None.
"""

from __future__ import annotations

from typing import Any

from flows.datasets import SNAPSHOT_DATASETS

DATASETS: tuple[str, ...] = SNAPSHOT_DATASETS
NATURAL_KEYS: dict[str, tuple[str, ...]] = {
    "assets": ("id",),
    "rates": ("id",),
    "exchanges": ("exchangeId",),
    "markets": ("exchangeId", "baseId", "quoteId"),
}
# Fixed "now" of synthetic snapshots, so the same seed yields byte-identical records (2025-11-21T18:00Z).
DEFAULT_AS_OF_MS = 1_763_748_000_000
# CoinCap v3's history intervals and their steps in ms.
HISTORY_INTERVALS_MS: dict[str, int] = {
    "m1": 60_000,
    "m5": 300_000,
    "m15": 900_000,
    "m30": 1_800_000,
    "h1": 3_600_000,
    "h2": 7_200_000,
    "h6": 21_600_000,
    "h12": 43_200_000,
    "d1": 86_400_000,
}

Record = dict[str, Any]


class RawRecord(str):
    """A record the stand-in serves as this exact JSON text (any JSON value, not only an object), for hostile tests:
    what a Python dict cannot say, such as numbers no float holds (`-0`, `1e400`, 30 significant digits), escaped
    lone surrogates (`"\\ud800"`) or a name given twice. The client sees `json.loads` of it; it never drifts."""


def dec(x: float) -> str:
    """Format like late-2025 v3: 18 decimals of the exact binary float ("87711.199999999997089617")."""
    return f"{x:.18f}"


def short(x: float) -> str:
    """Format like v3's short fields (changePercent24Hr, vwap24Hr): a JS Number.toString()."""
    text = repr(x)
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent):+d}" if int(exponent) > 0 else f"{mantissa}e{int(exponent)}"
    return text
