"""What the local CoinCap v3 stand-in serves: bundled real samples or a large, deterministic synthetic one.

Records are shaped as CoinCap v3 returns them (see `records.py`); the synthetic catalog is generated in
`synthetic.py`, its price history in `history.py`. Here: the catalog itself, the bundled samples, and the copy
with values that are wrong on purpose (`Catalog.with_bad_values`).
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flows.standin.records import DATASETS, DEFAULT_AS_OF_MS, HISTORY_INTERVALS_MS, Record, dec, short
from flows.standin.synthetic import SyntheticBuilder, default_n_rates

SAMPLES_DIR = Path(__file__).with_name("samples")


@dataclass
class Catalog:
    """The records one stand-in server serves, per dataset, in the order the listing endpoints return them."""

    assets: list[Record] = field(default_factory=list)
    rates: list[Record] = field(default_factory=list)
    exchanges: list[Record] = field(default_factory=list)
    markets: list[Record] = field(default_factory=list)
    # slug -> points; synthetic catalogs generate each series on first access (see SyntheticHistory)
    history: MutableMapping[str, list[Record]] = field(default_factory=dict)
    # dataset -> sorted indexes (into that dataset's list) of records made invalid on purpose
    invalid_keys: dict[str, list[int]] = field(default_factory=lambda: {d: [] for d in DATASETS})
    # dataset -> {index: kind} for the same records, e.g. {"assets": {7: "negative_price"}}
    invalid_kinds: dict[str, dict[int, str]] = field(default_factory=lambda: {d: {} for d in DATASETS})
    # kind -> the record `with_bad_values` made wrong on purpose, e.g. {"market_cap_off": "ethereum"}
    bad_values: dict[str, str] = field(default_factory=dict)

    def records(self, dataset: str) -> list[Record]:
        """The list of one dataset ("assets", "rates", "exchanges" or "markets")."""
        if dataset not in DATASETS:
            raise KeyError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
        return getattr(self, dataset)

    def with_bad_values(self, *, as_of_ms: int | None = None) -> Catalog:
        """A copy whose records all pass their contracts but are wrong, the way data-quality checks look for.

        `bad_values` on the copy names the record behind each kind (asset ids unless said otherwise):
        market_cap_off (market cap x3), supply_above_max (supply 1.5 x max supply, market cap still price x
        supply), market_price_off (every market of the asset 50% above its price, updated at `as_of_ms`),
        rate_off (its crypto rate 20% off), price_jump (+80% with its markets and rate, a real-looking move: serve
        the original catalog first so there is a previous snapshot), volume_spike (volume x50), rank_gap (a ranked
        asset removed: "rank N (id)"), symbol_collision (takes the top asset's symbol), vwap_off (VWAP x3),
        change_out_of_range (24-hour change of +25000%), exchange_share_off (an exchange's volume share +25
        points), market_in_future (a market updated two days after `as_of_ms`), unknown_exchange (2% of the
        markets, at least 2, moved to an exchange /exchanges does not list). `as_of_ms` defaults to now.
        """
        return _BadValues(self, as_of_ms).build()

    @classmethod
    def load(cls, directory: str | Path) -> Catalog:
        """Read `<dataset>.json` lists and a `history.json` mapping from a folder (missing files: empty)."""
        directory = Path(directory)

        def read(name: str, empty: Any) -> Any:
            path = directory / f"{name}.json"
            return json.loads(path.read_text(encoding="utf-8")) if path.exists() else empty

        return cls(**{d: read(d, []) for d in DATASETS}, history=read("history", {}))

    @classmethod
    def demo(cls) -> Catalog:
        """The bundled real samples (100 assets, 169 rates, 55 exchanges, 80 markets, bitcoin history).

        The recorded rates are from 2018 and the assets from 2025, whereas CoinCap prices a crypto rate and its
        asset from one feed: the crypto rates of listed assets are served at those assets' prices, so the demo is
        one consistent moment (the data-quality checks compare them). Markets are re-priced the same way: each
        base asset's markets are scaled so that their median is the asset's price, keeping the 2018 spread between
        exchanges, and `priceQuote` follows from the quote's price. They keep their 2018 `updated` times, so the
        data-quality checks (which skip markets that stale) do not compare them.
        """
        catalog = cls.load(SAMPLES_DIR)
        prices = {a["id"]: a["priceUsd"] for a in catalog.assets}
        for rate in catalog.rates:
            if rate.get("type") == "crypto" and rate.get("id") in prices:
                rate["rateUsd"] = prices[rate["id"]]
        usd = {r["id"]: float(r["rateUsd"]) for r in catalog.rates if r.get("rateUsd")}
        usd.update({k: float(v) for k, v in prices.items() if v})
        by_base: dict[str, list[float]] = {}
        for market in catalog.markets:
            if market.get("priceUsd"):
                by_base.setdefault(market["baseId"], []).append(float(market["priceUsd"]))
        for market in catalog.markets:
            base, quote = market.get("baseId"), market.get("quoteId")
            if base not in usd or base not in by_base or not market.get("priceUsd"):
                continue
            factor = usd[base] / statistics.median(by_base[base])
            price_usd = float(market["priceUsd"]) * factor
            market["priceUsd"] = dec(price_usd)
            if market.get("priceQuote"):
                quote_usd = usd.get(quote)
                quote_price = price_usd / quote_usd if quote_usd else float(market["priceQuote"]) * factor
                market["priceQuote"] = dec(quote_price)
        return catalog

    @classmethod
    def synthetic(
        cls,
        n_assets: int = 3000,
        n_exchanges: int = 200,
        n_markets: int = 100_000,
        n_rates: int | None = None,
        seed: int = 0,
        history_days: int = 0,
        invalid_fraction: float = 0.0,
        *,
        history_assets: int = 10,
        history_interval: str = "h1",
        as_of_ms: int = DEFAULT_AS_OF_MS,
    ) -> Catalog:
        """A deterministic v3-shaped snapshot; the same arguments always give identical records.

        Referential integrity holds for valid records: market `baseId` is an asset, `quoteId` an asset or a
        fiat rate, `exchangeId` an exchange. `history_days` > 0 adds `history_days` days of points every
        `history_interval` (hourly by default) for the top `history_assets` assets, generated lazily per asset.
        `invalid_fraction` corrupts that share of each dataset (see `invalid_keys`).
        `n_rates` defaults to 170 (fiat first, then crypto rates of the top assets), fewer for tiny catalogs.
        """
        if n_rates is None:
            n_rates = default_n_rates(n_assets)
        if history_interval not in HISTORY_INTERVALS_MS:
            raise ValueError(f"history_interval must be one of {', '.join(HISTORY_INTERVALS_MS)}")
        fields_ = SyntheticBuilder(seed, as_of_ms).build(
            n_assets,
            n_exchanges,
            n_markets,
            n_rates,
            history_days,
            history_assets,
            invalid_fraction,
            history_interval=history_interval,
        )
        return cls(**fields_)


def _num(record: Record, key: str) -> float | None:
    value = record.get(key)
    try:
        return float(value) if isinstance(value, str) and value else None
    except ValueError:
        return None


class _BadValues:
    """Builds `Catalog.with_bad_values`: every change keeps records contract-valid and touches its own record."""

    def __init__(self, source: Catalog, as_of_ms: int | None) -> None:
        self.source = source
        self.as_of_ms = as_of_ms if as_of_ms is not None else int(datetime.now(UTC).timestamp() * 1000)
        records = {d: [dict(r) for r in source.records(d)] for d in DATASETS}
        self.cat = Catalog(**records, history=source.history)  # type: ignore[arg-type]
        self.used: set[str] = set()
        invalid = {d: set(source.invalid_keys.get(d, [])) for d in DATASETS}
        self.valid = {d: [i for i in range(len(records[d])) if i not in invalid[d]] for d in DATASETS}
        # valid assets by rank
        self.ranked = sorted(self.valid["assets"], key=lambda i: int(records["assets"][i]["rank"]))

    def pick(self, wanted: Any) -> Record:
        """The best-ranked valid asset not changed yet that satisfies `wanted`."""
        for i in self.ranked:
            asset = self.cat.assets[i]
            if asset["id"] not in self.used and wanted(asset):
                self.used.add(asset["id"])
                return asset
        raise ValueError("the catalog has too few assets for with_bad_values (about 15 needed)")

    def markets_of(self, asset_id: str) -> list[Record]:
        return [self.cat.markets[i] for i in self.valid["markets"] if self.cat.markets[i]["baseId"] == asset_id]

    def crypto_rate(self, asset_id: str) -> Record | None:
        return next(
            (self.cat.rates[i] for i in self.valid["rates"]
             if self.cat.rates[i]["id"] == asset_id and self.cat.rates[i].get("type") == "crypto"),
            None,
        )  # fmt: skip

    def build(self) -> Catalog:
        cat, bad = self.cat, self.cat.bad_values
        if not self.valid["markets"]:
            raise ValueError("with_bad_values needs markets")
        rates_of = {r["id"] for r in cat.rates if r.get("type") == "crypto"}
        positive = lambda key: lambda a: (_num(a, key) or 0) > 0  # noqa: E731

        # markets first: the asset with the most markets makes the clearest median
        counts: dict[str, int] = {}
        for i in self.valid["markets"]:
            counts[cat.markets[i]["baseId"]] = counts.get(cat.markets[i]["baseId"], 0) + 1
        most = max((counts.get(a["id"], 0) for a in cat.assets if positive("priceUsd")(a)), default=0)
        if not most:
            raise ValueError("with_bad_values needs markets of listed assets")
        asset = self.pick(lambda a: positive("priceUsd")(a) and counts.get(a["id"], 0) == most)
        for market in self.markets_of(asset["id"]):
            market["priceUsd"] = dec(float(asset["priceUsd"]) * 1.5)
            if _num(market, "priceQuote") is not None:
                market["priceQuote"] = dec(float(market["priceQuote"]) * 1.5)
            market["updated"] = self.as_of_ms
        bad["market_price_off"] = asset["id"]

        asset = self.pick(lambda a: a["id"] in rates_of and positive("priceUsd")(a))
        rate = self.crypto_rate(asset["id"])
        assert rate is not None
        rate["rateUsd"] = dec(float(asset["priceUsd"]) * 1.2)
        bad["rate_off"] = asset["id"]

        asset = self.pick(lambda a: positive("priceUsd")(a) and positive("supply")(a))
        self._jump(asset, 1.8)
        bad["price_jump"] = asset["id"]

        asset = self.pick(lambda a: positive("maxSupply")(a) and positive("priceUsd")(a))
        supply = float(asset["maxSupply"]) * 1.5
        asset["supply"] = dec(supply)
        asset["marketCapUsd"] = dec(supply * float(asset["priceUsd"]))
        bad["supply_above_max"] = asset["id"]

        asset = self.pick(lambda a: positive("supply")(a) and positive("marketCapUsd")(a))
        asset["marketCapUsd"] = dec(float(asset["marketCapUsd"]) * 3)
        bad["market_cap_off"] = asset["id"]

        asset = self.pick(lambda a: (_num(a, "volumeUsd24Hr") or 0) >= 20_000)
        asset["volumeUsd24Hr"] = dec(float(asset["volumeUsd24Hr"]) * 50)
        bad["volume_spike"] = asset["id"]

        asset = self.pick(lambda a: positive("vwap24Hr")(a))
        asset["vwap24Hr"] = short(float(asset["vwap24Hr"]) * 3)
        bad["vwap_off"] = asset["id"]

        asset = self.pick(lambda a: True)
        asset["changePercent24Hr"] = "25000"
        bad["change_out_of_range"] = asset["id"]

        top = cat.assets[self.ranked[0]]
        asset = self.pick(lambda a: a["id"] != top["id"])
        asset["symbol"] = top["symbol"]
        bad["symbol_collision"] = asset["id"]

        exchange = next(
            (cat.exchanges[i] for i in sorted(self.valid["exchanges"], key=lambda i: int(cat.exchanges[i]["rank"]))
             if (_num(cat.exchanges[i], "percentTotalVolume") or 0) > 0 and (_num(cat.exchanges[i], "volumeUsd") or 0)),
            None,
        )  # fmt: skip
        if exchange is None:
            raise ValueError("with_bad_values needs an exchange with a volume share")
        exchange["percentTotalVolume"] = dec(float(exchange["percentTotalVolume"]) + 25)
        bad["exchange_share_off"] = exchange["exchangeId"]

        self._markets_elsewhere(bad)

        # last, so the indexes above stay valid: a ranked asset in the middle of the ranking disappears
        middle = [i for i in self.ranked[1:-1] if cat.assets[i]["id"] not in self.used]
        if not middle:
            raise ValueError("the catalog has too few assets for with_bad_values (about 15 needed)")
        gone = middle[len(middle) // 2]
        bad["rank_gap"] = f"rank {cat.assets[gone]['rank']} ({cat.assets[gone]['id']})"
        del cat.assets[gone]
        cat.invalid_keys = {d: list(self.source.invalid_keys.get(d, [])) for d in DATASETS}
        cat.invalid_kinds = {d: dict(self.source.invalid_kinds.get(d, {})) for d in DATASETS}
        cat.invalid_keys["assets"] = [i - (i > gone) for i in cat.invalid_keys["assets"]]
        cat.invalid_kinds["assets"] = {i - (i > gone): k for i, k in cat.invalid_kinds["assets"].items()}
        return cat

    def _jump(self, asset: Record, factor: float) -> None:
        """The asset's price moves by `factor` in 24 hours, coherently: market cap, VWAP, change, markets, rate."""
        price = float(asset["priceUsd"])
        change = _num(asset, "changePercent24Hr") or 0.0
        price_24h_ago = price / (1 + change / 100) if change > -100 else price
        new_price = price * factor
        asset["priceUsd"] = dec(new_price)
        asset["marketCapUsd"] = dec(new_price * float(asset["supply"]))
        asset["changePercent24Hr"] = short((new_price / price_24h_ago - 1) * 100)
        if asset.get("vwap24Hr") is not None:
            asset["vwap24Hr"] = short((price_24h_ago + new_price) / 2)
        for market in self.markets_of(asset["id"]):
            market["priceUsd"] = dec(float(market["priceUsd"]) * factor)
            if _num(market, "priceQuote") is not None:
                market["priceQuote"] = dec(float(market["priceQuote"]) * factor)
        rate = self.crypto_rate(asset["id"])
        if rate is not None:
            rate["rateUsd"] = dec(float(rate["rateUsd"]) * factor)

    def _markets_elsewhere(self, bad: dict[str, str]) -> None:
        """One market updated in the future; 2% of the markets (at least 2) on an exchange nobody lists."""
        cat = self.cat
        skip = {bad["market_price_off"], bad["price_jump"]}
        candidates = [i for i in self.valid["markets"] if cat.markets[i]["baseId"] not in skip]
        if len(candidates) < 3:
            raise ValueError("with_bad_values needs at least 3 markets of other assets")
        future = cat.markets[candidates[0]]
        # six hours ahead: past the quality check's slack, within the contract's plausible range (now + 1 day)
        future["updated"] = self.as_of_ms + 6 * 3_600_000
        # priced like its asset, so only its time is wrong (a stale recorded price would also read as fresh)
        base = next((a for a in cat.assets if a["id"] == future["baseId"]), None)
        old_price, new_price = _num(future, "priceUsd"), _num(base, "priceUsd") if base else None
        if old_price and new_price:
            future["priceUsd"] = base["priceUsd"]  # type: ignore[index]
            if _num(future, "priceQuote") is not None:
                future["priceQuote"] = dec(float(future["priceQuote"]) * new_price / old_price)
        bad["market_in_future"] = f"{future['exchangeId']}/{future['baseId']}/{future['quoteId']}"

        known = {e["exchangeId"] for e in cat.exchanges}
        ghost = next(f"ghost-exchange-{n}" if n else "ghost-exchange" for n in itertools.count()
                     if (f"ghost-exchange-{n}" if n else "ghost-exchange") not in known)  # fmt: skip
        wanted = max(2, math.ceil(0.02 * len(cat.markets)))
        moved: list[Record] = []
        pairs: set[tuple[str, str]] = set()
        for i in candidates[1:]:
            market = cat.markets[i]
            pair = (market["baseId"], market["quoteId"])
            if pair not in pairs:
                pairs.add(pair)
                moved.append(market)
                if len(moved) == wanted:
                    break
        total = sum(_num(m, "volumeUsd24Hr") or 0.0 for m in moved)
        for rank, market in enumerate(sorted(moved, key=lambda m: -(_num(m, "volumeUsd24Hr") or 0.0)), start=1):
            market["exchangeId"] = ghost
            market["rank"] = str(rank)
            if total > 0 and _num(market, "volumeUsd24Hr") is not None:
                market["percentExchangeVolume"] = dec(float(market["volumeUsd24Hr"]) / total * 100)
        bad["unknown_exchange"] = ghost
