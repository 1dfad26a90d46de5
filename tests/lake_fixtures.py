"""Lake files for tests: CoinCap-shaped records → the real contracts → Parquet at the exact lake path.

Everything goes through `validate_records(...).valid`, so a fixture has exactly the schema a snapshot run
writes. Numbers are CoinCap-style strings ("87711.199999999997089617"), as the API sends them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from flows.contracts.datasets import CONTRACTS
from flows.contracts.validate import validate_records

Record = dict[str, Any]
DATASETS = ("assets", "rates", "exchanges", "markets")


def snapshot_id_of(snapshot_ts: datetime) -> str:
    """The id a snapshot run gives a snapshot: its UTC timestamp, e.g. 20261121T053000Z."""
    return snapshot_ts.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def lake_file(lake_dir: Path, dataset: str, snapshot_ts: datetime) -> Path:
    """`<lake>/coincap/<dataset>/dt=YYYY-MM-DD/<snapshot_id>.parquet`."""
    ts = snapshot_ts.astimezone(UTC)
    return lake_dir / "coincap" / dataset / f"dt={ts:%Y-%m-%d}" / f"{snapshot_id_of(ts)}.parquet"


def write_snapshot(
    lake_dir: Path,
    snapshot_ts: datetime,
    *,
    assets: Sequence[Record] = (),
    rates: Sequence[Record] = (),
    exchanges: Sequence[Record] = (),
    markets: Sequence[Record] = (),
    api_timestamp: datetime | None = None,
) -> str:
    """Write one snapshot: one file per dataset (possibly with 0 rows), replacing any earlier file of it."""
    snapshot_id = snapshot_id_of(snapshot_ts)
    records = {"assets": assets, "rates": rates, "exchanges": exchanges, "markets": markets}
    for dataset in DATASETS:
        contract = CONTRACTS[dataset]
        if records[dataset]:
            result = validate_records(
                contract,
                list(records[dataset]),
                snapshot_id=snapshot_id,
                snapshot_ts=snapshot_ts,
                api_timestamp=api_timestamp,
            )
            if result.n_quarantined:
                rejects = result.quarantine.to_pylist()
                raise ValueError(f"fixture {dataset} rows fail their contract: {rejects}")
            table = result.valid
        else:
            # validate_records([]) fails inside pyarrow (its keep-mask is a null-typed array), so an empty
            # file is written straight from the contract's schema, which is what .valid would hold.
            table = contract.arrow_schema().empty_table()
        path = lake_file(lake_dir, dataset, snapshot_ts)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
    return snapshot_id


def num(value: float) -> str:
    """A float as CoinCap sends numbers: a string with 18 decimals."""
    return f"{value:.18f}"


# ------------------------------------------------------------------------------------------ hand-made records


def asset(asset_id: str, rank: int, price: float, volume: float | None = 1.0e9, **fields: Any) -> Record:
    """One /assets record; supply is fixed per asset so market cap follows the price."""
    symbol = fields.pop("symbol", asset_id[:3].upper())
    supply = fields.pop("supply", 1_000_000.0 * rank)
    return {
        "id": asset_id,
        "rank": str(rank),
        "symbol": symbol,
        "name": asset_id.title(),
        "supply": num(supply),
        "maxSupply": None,
        "marketCapUsd": num(supply * price),
        "volumeUsd24Hr": None if volume is None else num(volume),
        "priceUsd": num(price),
        "changePercent24Hr": "-0.812345678901234567",
        "vwap24Hr": num(price * 1.001),
        "explorer": f"https://explorer.example/{asset_id}",
        "tokens": {},
        **fields,
    }


RATES: tuple[Record, ...] = (
    {"id": "euro", "symbol": "EUR", "currencySymbol": "€", "type": "fiat", "rateUsd": "1.157100000000000000"},
    {"id": "united-states-dollar", "symbol": "USD", "currencySymbol": "$", "type": "fiat", "rateUsd": "1"},
    {"id": "bitcoin", "symbol": "BTC", "currencySymbol": "₿", "type": "crypto", "rateUsd": "87711.1999999"},
)

EXCHANGES: tuple[Record, ...] = (
    {
        "exchangeId": "binance",
        "name": "Binance",
        "rank": "1",
        "percentTotalVolume": "30.123456789012345678",
        "volumeUsd": "12345678901.123456789012345678",
        "tradingPairs": "1500",
        "socket": True,
        "exchangeUrl": "https://www.binance.com/",
        "updated": 1763703000000,
    },
    {
        "exchangeId": "kraken",
        "name": "Kraken",
        "rank": "2",
        "percentTotalVolume": "5.5",
        "volumeUsd": "1234567890.5",
        "tradingPairs": "600",
        "socket": False,
        "exchangeUrl": "https://www.kraken.com/",
        "updated": 0,  # CoinCap's "unknown"
    },
)


def market(exchange_id: str, base_id: str, quote_id: str, price: float, rank: int = 1) -> Record:
    """One /markets record, priced in USD (quote price equal to the USD price for USD-like quotes)."""
    return {
        "exchangeId": exchange_id,
        "rank": str(rank),
        "baseSymbol": base_id[:3].upper(),
        "baseId": base_id,
        "quoteSymbol": quote_id[:3].upper(),
        "quoteId": quote_id,
        "priceQuote": num(price),
        "priceUsd": num(price),
        "volumeUsd24Hr": "1234567.123456789012345678",
        "percentExchangeVolume": "1.25",
        "tradesCount24Hr": "4321",
        "updated": 1763703000000,
    }


# ------------------------------------------------------------------------------------------ generated history

BASE_PRICES = {"bitcoin": 87711.2, "ethereum": 2950.5, "tether": 1.0004, "solana": 140.25, "dogecoin": 0.1523}
SNAPSHOT_HOURS = (0, 8, 16)
START_DAY = date(2026, 10, 1)
# (day index, snapshot index) whose markets file has 0 rows, as when a scope matches nothing
EMPTY_MARKETS_SNAPSHOT = (5, 1)


def asset_price(asset_id: str, day_index: int, snapshot_index: int) -> float:
    """A deterministic, wiggly price path (sines of the day and snapshot, no randomness)."""
    k = list(BASE_PRICES).index(asset_id) + 1
    wiggle = 0.04 * math.sin(0.7 * k * day_index + 0.3 * snapshot_index)
    wiggle += 0.01 * math.cos(1.3 * k * day_index)
    trend = 1 + 0.002 * k * day_index
    return round(BASE_PRICES[asset_id] * trend * (1 + wiggle), 10)


def asset_volume(asset_id: str, day_index: int, snapshot_index: int) -> float | None:
    """24-hour volume; unknown (null) now and then, which VWAP must skip."""
    if (day_index + snapshot_index + len(asset_id)) % 11 == 0:
        return None
    return round(1.0e6 * (len(asset_id) + day_index % 5 + snapshot_index), 4)


def listed_assets(day_index: int) -> list[str]:
    """Assets listed on a day: dogecoin joins on day 3, solana is missing on days 10 and 20 (gaps)."""
    ids = ["bitcoin", "ethereum", "tether"]
    if day_index not in (10, 20):
        ids.append("solana")
    if day_index >= 3:
        ids.append("dogecoin")
    return ids


@dataclass
class Snapshot:
    """One generated snapshot and its records."""

    ts: datetime
    day_index: int
    assets: list[Record] = field(default_factory=list)
    rates: list[Record] = field(default_factory=list)
    exchanges: list[Record] = field(default_factory=list)
    markets: list[Record] = field(default_factory=list)

    @property
    def snapshot_id(self) -> str:
        return snapshot_id_of(self.ts)

    def write(self, lake_dir: Path) -> str:
        return write_snapshot(
            lake_dir,
            self.ts,
            assets=self.assets,
            rates=self.rates,
            exchanges=self.exchanges,
            markets=self.markets,
            api_timestamp=self.ts + timedelta(seconds=2),
        )


def generate_history(days: Iterable[int], hours: Sequence[int] = SNAPSHOT_HOURS) -> list[Snapshot]:
    """Snapshots for the given day indexes (0 = START_DAY), `len(hours)` per day, deterministic prices."""
    snapshots = []
    for day_index in days:
        day = START_DAY + timedelta(days=day_index)
        for snap_index, hour in enumerate(hours):
            ts = datetime(day.year, day.month, day.day, hour, 0, tzinfo=UTC)
            ids = listed_assets(day_index)
            prices = {a: asset_price(a, day_index, snap_index) for a in ids}
            snapshots.append(
                Snapshot(
                    ts=ts,
                    day_index=day_index,
                    assets=[
                        asset(a, rank, prices[a], volume=asset_volume(a, day_index, snap_index))
                        for rank, a in enumerate(ids, start=1)
                    ],
                    rates=list(RATES),
                    exchanges=list(EXCHANGES),
                    markets=[]
                    if (day_index, snap_index) == EMPTY_MARKETS_SNAPSHOT
                    else [
                        market("binance", "bitcoin", "tether", prices["bitcoin"]),
                        market("kraken", "ethereum", "united-states-dollar", prices["ethereum"]),
                        # an exchange /exchanges did not return (markets scope): relationships only warn
                        market("coinbase", "bitcoin", "united-states-dollar", prices["bitcoin"], rank=2),
                    ],
                )
            )
    return snapshots


def write_history(lake_dir: Path, snapshots: Iterable[Snapshot]) -> list[str]:
    """Write generated snapshots into the lake; returns their ids."""
    return [s.write(lake_dir) for s in snapshots]
