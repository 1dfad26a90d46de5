"""What the local CoinCap v3 stand-in serves: bundled real samples or a large, deterministic synthetic one.

Records are plain dicts shaped exactly as CoinCap v3 returns them: numbers as decimal strings (up to 18
decimals, with the binary-float artifacts v3 shows), `rank` as a string, `updated`/`time` as int ms, nullable
fields as None.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import random
import statistics
import threading
from collections import OrderedDict
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flows.datasets import SNAPSHOT_DATASETS

SAMPLES_DIR = Path(__file__).with_name("samples")
DATASETS: tuple[str, ...] = SNAPSHOT_DATASETS
NATURAL_KEYS: dict[str, tuple[str, ...]] = {
    "assets": ("id",),
    "rates": ("id",),
    "exchanges": ("exchangeId",),
    "markets": ("exchangeId", "baseId", "quoteId"),
}
# Fixed "now" of synthetic snapshots, so the same seed yields byte-identical records (2025-11-21T18:00Z).
DEFAULT_AS_OF_MS = 1_763_748_000_000
_HOUR_MS = 3_600_000
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


def _nonzero_number(value: Any) -> bool:
    try:
        return isinstance(value, str) and float(value) != 0
    except ValueError:
        return False


def _dec(x: float) -> str:
    """Format like late-2025 v3: 18 decimals of the exact binary float ("87711.199999999997089617")."""
    return f"{x:.18f}"


def _short(x: float) -> str:
    """Format like v3's short fields (changePercent24Hr, vwap24Hr): a JS Number.toString()."""
    text = repr(x)
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent):+d}" if int(exponent) > 0 else f"{mantissa}e{int(exponent)}"
    return text


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
            market["priceUsd"] = _dec(price_usd)
            if market.get("priceQuote"):
                quote_usd = usd.get(quote)
                quote_price = price_usd / quote_usd if quote_usd else float(market["priceQuote"]) * factor
                market["priceQuote"] = _dec(quote_price)
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
            n_rates = min(170, len(_FIAT) + n_assets)
        if history_interval not in HISTORY_INTERVALS_MS:
            raise ValueError(f"history_interval must be one of {', '.join(HISTORY_INTERVALS_MS)}")
        return _SyntheticBuilder(seed, as_of_ms).build(
            n_assets,
            n_exchanges,
            n_markets,
            n_rates,
            history_days,
            history_assets,
            invalid_fraction,
            history_interval=history_interval,
        )


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
                "priceUsd": _dec(price),
                "time": start + i * step,
                "date": (start_dt + timedelta(milliseconds=i * step)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            }
            for i, price in enumerate(walk)
        ]


# (id, symbol, name, priceUsd, supply, maxSupply, explorer): the head of the ranking, for realistic demos.
_KNOWN_ASSETS: tuple[tuple[str, str, str, float, float, float | None, str], ...] = (
    ("bitcoin", "BTC", "Bitcoin", 87711.2, 19_965_971, 21_000_000, "https://blockchain.info/"),
    ("ethereum", "ETH", "Ethereum", 2942.23, 120_694_996.48, None, "https://etherscan.io/"),
    ("tether", "USDT", "Tether USDt", 1.0004, 184_500_000_000, None, "https://tether.to/"),
    ("xrp", "XRP", "XRP", 2.05, 60_100_000_000, 100_000_000_000, "https://livenet.xrpl.org/"),
    ("binance-coin", "BNB", "BNB", 880.5, 139_180_000, None, "https://bscscan.com/"),
    ("solana", "SOL", "Solana", 137.4, 560_400_000, None, "https://explorer.solana.com/"),
    ("usd-coin", "USDC", "USDC", 0.9998, 76_000_000_000, None, "https://etherscan.io/"),
    ("tron", "TRX", "TRON", 0.281, 94_700_000_000, None, "https://tronscan.org/#/"),
    ("dogecoin", "DOGE", "Dogecoin", 0.152, 151_300_000_000, None, "http://dogechain.info/chain/Dogecoin"),
    ("cardano", "ADA", "Cardano", 0.42, 36_000_000_000, 45_000_000_000, "https://cardanoexplorer.com/"),
    ("chainlink", "LINK", "Chainlink", 13.1, 680_000_000, 1_000_000_000, "https://etherscan.io/"),
    ("stellar", "XLM", "Stellar", 0.24, 32_100_000_000, 50_001_806_812, "https://dashboard.stellar.org/"),
    ("litecoin", "LTC", "Litecoin", 82.3, 76_400_000, 84_000_000, "https://litecoinspace.org/"),
    ("avalanche", "AVAX", "Avalanche", 14.2, 430_000_000, 720_000_000, "https://avascan.info/"),
    ("polkadot", "DOT", "Polkadot", 2.31, 1_630_000_000, None, "https://polkascan.io/polkadot"),
)
# (id, symbol, currencySymbol, rateUsd): real fiat rows; some have no currency symbol, as in CoinCap.
_FIAT: tuple[tuple[str, str, str | None, float], ...] = (
    ("united-states-dollar", "USD", "$", 1.0),
    ("euro", "EUR", "€", 1.1561549062589602),
    ("british-pound-sterling", "GBP", "£", 1.3112),
    ("japanese-yen", "JPY", "¥", 0.0064),
    ("south-korean-won", "KRW", None, 0.00068),
    ("turkish-lira", "TRY", "₺", 0.0236),
    ("chinese-yuan-renminbi", "CNY", "¥", 0.1406),
    ("indian-rupee", "INR", "₹", 0.0112),
    ("canadian-dollar", "CAD", "$", 0.7104),
    ("australian-dollar", "AUD", "$", 0.6478),
    ("swiss-franc", "CHF", None, 1.2403),
    ("brazilian-real", "BRL", "R$", 0.1866),
    ("russian-ruble", "RUB", "₽", 0.0124),
    ("mexican-peso", "MXN", "$", 0.0543),
    ("singapore-dollar", "SGD", "$", 0.7671),
    ("hong-kong-dollar", "HKD", "$", 0.1285),
    ("polish-zloty", "PLN", "zł", 0.2734),
    ("ukrainian-hryvnia", "UAH", "₴", 0.0238),
    ("cfa-franc-beac", "XAF", None, 0.0017625469344657),
    ("argentine-peso", "ARS", "$", 0.00069),
)
# Quote currencies of synthetic markets: these assets (when present) and these fiat rates.
_QUOTE_ASSETS = ("tether", "usd-coin", "bitcoin", "ethereum", "binance-coin")
_QUOTE_FIAT = (
    "united-states-dollar",
    "euro",
    "south-korean-won",
    "japanese-yen",
    "turkish-lira",
    "british-pound-sterling",
)
# (exchangeId, name, exchangeUrl)
_KNOWN_EXCHANGES: tuple[tuple[str, str, str], ...] = (
    ("binance", "Binance", "https://www.binance.com/"),
    ("coinbase", "Coinbase", "https://www.coinbase.com/"),
    ("okx", "OKX", "https://www.okx.com/"),
    ("bybit", "Bybit", "https://www.bybit.com/"),
    ("kraken", "Kraken", "https://kraken.com"),
    ("crypto-com", "Crypto.com Exchange", "https://crypto.com/exchange"),
    ("kucoin", "KuCoin", "https://www.kucoin.com/"),
    ("gate", "Gate", "https://gate.io/"),
    ("bitfinex", "Bitfinex", "https://www.bitfinex.com/"),
    ("bitstamp", "Bitstamp", "https://www.bitstamp.net/"),
    ("huobi", "HTX", "https://www.htx.com/"),
    ("upbit", "Upbit", "https://upbit.com/"),
    ("bithumb", "Bithumb", "https://www.bithumb.com/"),
    ("gemini", "Gemini", "https://gemini.com/"),
    ("poloniex", "Poloniex", "https://poloniex.com/"),
)
_SYLLABLE_TEXT = "ka zen lo mir ta vex no qua ri sol dra pix um bel cor fin gal hex io jet lum mo nex or pra quo"
_SYLLABLES = tuple((_SYLLABLE_TEXT + " ryn sy tor vo wex xa yul zor ae bit chi del").split())
_WORD_SUFFIXES = (" Network", " Protocol", " Token", " Finance", " Chain", " Coin", " AI", " Swap", " DAO")
# empty suffixes repeated: most names are a single word
_ASSET_SUFFIXES = ("",) * 4 + _WORD_SUFFIXES
_EXCHANGE_SUFFIXES = ("", "", " Exchange", "EX", " Pro", " Markets", " Global")
# Kinds of invalid record, per dataset: (kind, field it breaks).
_INVALID_KINDS: dict[str, tuple[tuple[str, str], ...]] = {
    "assets": (
        ("negative_price", "priceUsd"),
        ("non_numeric_price", "priceUsd"),
        ("missing_id", "id"),
        ("missing_price", "priceUsd"),
        ("price_wrong_type", "priceUsd"),
        ("bad_rank", "rank"),
    ),
    "rates": (
        ("negative_rate", "rateUsd"),
        ("non_numeric_rate", "rateUsd"),
        ("missing_id", "id"),
        ("missing_rate", "rateUsd"),
        ("rate_wrong_type", "rateUsd"),
    ),
    "exchanges": (
        ("negative_volume", "volumeUsd"),
        ("non_numeric_volume", "volumeUsd"),
        ("missing_id", "exchangeId"),
        ("volume_wrong_type", "volumeUsd"),
        ("bad_rank", "rank"),
    ),
    "markets": (
        ("negative_price", "priceUsd"),
        ("non_numeric_price", "priceUsd"),
        ("missing_base_id", "baseId"),
        ("missing_price", "priceUsd"),
        ("price_wrong_type", "priceUsd"),
        ("bad_rank", "rank"),
    ),
}


class _SyntheticBuilder:
    """Builds a synthetic catalog from one seeded random stream (so call order is part of the output)."""

    def __init__(self, seed: int, as_of_ms: int) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.as_of_ms = as_of_ms
        # per-exchange (market volume total, market count), filled by _markets for _rank_exchanges
        self._market_totals: tuple[dict[str, float], dict[str, int]] = ({}, {})

    def build(
        self,
        n_assets: int,
        n_exchanges: int,
        n_markets: int,
        n_rates: int,
        history_days: int,
        history_assets: int,
        invalid_fraction: float,
        *,
        history_interval: str = "h1",
    ) -> Catalog:
        """Generate every dataset, then corrupt the requested share."""
        if min(n_assets, n_exchanges, n_markets, n_rates, history_days, history_assets) < 0:
            raise ValueError("sizes must be >= 0")
        if not 0.0 <= invalid_fraction <= 1.0:
            raise ValueError("invalid_fraction must be within [0, 1]")
        assets = self._assets(n_assets)
        rates = self._rates(n_rates, assets)
        weighted_exchanges = self._exchanges(n_exchanges)
        markets = self._markets(n_markets, assets, rates, weighted_exchanges)
        exchanges = self._rank_exchanges(weighted_exchanges)
        history: MutableMapping[str, list[Record]] = {}
        if history_days:
            step = HISTORY_INTERVALS_MS[history_interval]
            history = SyntheticHistory(
                {a["id"]: float(a["priceUsd"]) for a in assets[:history_assets]},
                seed=self.seed,
                step_ms=step,
                n_points=max(1, history_days * 86_400_000 // step),
                end_ms=self.as_of_ms,
            )
        catalog = Catalog(assets=assets, rates=rates, exchanges=exchanges, markets=markets, history=history)
        if invalid_fraction > 0:
            self._corrupt(catalog, invalid_fraction)
        return catalog

    def _unique_name(self, taken: set[str], suffixes: tuple[str, ...]) -> tuple[str, str]:
        """A made-up (slug, display name) pair whose slug is not in `taken`."""
        rng = self.rng
        while True:
            word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
            name = word + rng.choice(suffixes)
            slug = name.lower().replace(" ", "-")
            if slug not in taken:
                taken.add(slug)
                return slug, name

    def _assets(self, n: int) -> list[Record]:
        """Assets sorted by market cap, as `/assets` ranks them."""
        rng = self.rng
        taken = {a[0] for a in _KNOWN_ASSETS} | {f[0] for f in _FIAT}
        symbols = {a[1] for a in _KNOWN_ASSETS}
        rows: list[tuple[float, Record]] = []
        for i in range(n):
            if i < len(_KNOWN_ASSETS):
                slug, symbol, name, price, supply, max_supply, explorer = _KNOWN_ASSETS[i]
                price *= 1 + rng.gauss(0, 0.01)
                explorer_or_none: str | None = explorer
            else:
                slug, name = self._unique_name(taken, _ASSET_SUFFIXES)
                symbol = "".join(ch for ch in name.upper() if ch.isalpha())[: rng.randint(3, 5)]
                while symbol in symbols:
                    symbol += rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ23456789")
                # market cap falls roughly as a power of the rank, like the real long tail
                market_cap = 2.5e10 * (i + 1) ** -1.6 * rng.lognormvariate(0, 0.3)
                supply = 10 ** rng.uniform(6, 11)
                price = market_cap / supply
                max_supply = None if rng.random() < 0.55 else supply * rng.uniform(1.0, 3.0)
                explorer_or_none = None if rng.random() < 0.08 else f"https://explorer.{slug}.example/"
            symbols.add(symbol)
            market_cap = price * supply
            volume = market_cap * rng.lognormvariate(-3.2, 0.9)
            change = rng.gauss(0, 4)
            vwap = None if rng.random() < 0.05 else price * (1 + rng.gauss(0, 0.01))
            tokens: dict[str, list[str]] = {}
            if rng.random() < 0.3:
                chain = rng.choice(("1", "56", "137", "42161", "10", "8453"))
                tokens[chain] = ["0x" + f"{rng.getrandbits(160):040x}"]
            rows.append(
                (
                    market_cap,
                    {
                        "id": slug,
                        "rank": "",
                        "symbol": symbol,
                        "name": name,
                        "supply": _dec(supply),
                        "maxSupply": None if max_supply is None else _dec(max_supply),
                        "marketCapUsd": _dec(market_cap),
                        "volumeUsd24Hr": _dec(volume),
                        "priceUsd": _dec(price),
                        "changePercent24Hr": _short(change),
                        "vwap24Hr": None if vwap is None else _short(vwap),
                        "explorer": explorer_or_none,
                        "tokens": tokens,
                    },
                )
            )
        rows.sort(key=lambda row: -row[0])
        assets = [record for _, record in rows]
        for rank, record in enumerate(assets, start=1):
            record["rank"] = str(rank)
        return assets

    def _rates(self, n: int, assets: list[Record]) -> list[Record]:
        """Fiat rates first, then crypto rates of the top assets (same slugs as the assets)."""
        rng = self.rng
        rates: list[Record] = []
        for slug, symbol, currency_symbol, rate in _FIAT[:n]:
            if slug != "united-states-dollar":  # the dollar is the unit itself
                rate *= 1 + rng.gauss(0, 0.001)
            rates.append(
                {
                    "id": slug,
                    "symbol": symbol,
                    "currencySymbol": currency_symbol,
                    "type": "fiat",
                    "rateUsd": _dec(rate),
                }
            )
        for asset in assets[: max(0, n - len(rates))]:
            rates.append(
                {
                    "id": asset["id"],
                    "symbol": asset["symbol"],
                    "currencySymbol": None,
                    "type": "crypto",
                    "rateUsd": asset["priceUsd"],
                }
            )
        if len(rates) < n:
            raise ValueError(f"n_rates={n} needs at least {n - len(_FIAT)} assets")
        return rates

    def _exchanges(self, n: int) -> list[tuple[float, Record]]:
        """(activity weight, record) per exchange; about 8% are inactive (weight 0, v3's "unknown" values)."""
        rng = self.rng
        taken = {e[0] for e in _KNOWN_EXCHANGES}
        rows: list[tuple[float, Record]] = []
        for i in range(n):
            if i < len(_KNOWN_EXCHANGES):
                ex_id, name, url = _KNOWN_EXCHANGES[i]
            else:
                ex_id, name = self._unique_name(taken, _EXCHANGE_SUFFIXES)
                url = f"https://www.{ex_id}.example/"
            inactive = i >= len(_KNOWN_EXCHANGES) and rng.random() < 0.08
            weight = 0.0 if inactive else (i + 1) ** -1.4 * rng.lognormvariate(0, 0.4)
            rows.append(
                (
                    weight,
                    {
                        "exchangeId": ex_id,
                        "name": name,
                        "rank": "",
                        "percentTotalVolume": None,
                        "volumeUsd": None,
                        "tradingPairs": "0",
                        "socket": None if inactive else rng.random() < 0.4,
                        "exchangeUrl": url,
                        "updated": 0 if inactive else self.as_of_ms - rng.randint(0, 60_000),
                    },
                )
            )
        return rows

    def _markets(
        self,
        n: int,
        assets: list[Record],
        rates: list[Record],
        weighted_exchanges: list[tuple[float, Record]],
    ) -> list[Record]:
        """Unique (exchangeId, baseId, quoteId) markets, sorted by 24h volume, ranked within their exchange.

        Bigger exchanges list more pairs and more volume; an exchange lists only the top of the asset ranking.
        """
        rng = self.rng
        active = [(w, e) for w, e in weighted_exchanges if w > 0]
        if n == 0 or not active:
            if n:
                raise ValueError("n_markets > 0 needs at least one exchange")
            return []
        asset_pos = {a["id"]: i for i, a in enumerate(assets)}
        rate_by_id = {r["id"]: r for r in rates}
        # (quoteId, quoteSymbol, priceUsd, index in assets or -1)
        quotes: list[tuple[str, str, float, int]] = [
            (q, assets[asset_pos[q]]["symbol"], float(assets[asset_pos[q]]["priceUsd"]), asset_pos[q])
            for q in _QUOTE_ASSETS
            if q in asset_pos
        ] + [(q, rate_by_id[q]["symbol"], float(rate_by_id[q]["rateUsd"]), -1) for q in _QUOTE_FIAT if q in rate_by_id]
        n_bases = len(assets) - 1  # a market never quotes an asset in itself
        n_quotes = len(quotes)
        top_weight = max(w for w, _ in active)
        capacity = [max(1, round(n_bases * (0.15 + 0.85 * math.sqrt(w / top_weight)))) for w, _ in active]
        if n > sum(capacity) * n_quotes:
            # too many markets for a skewed listing: every exchange lists every asset
            capacity = [n_bases] * len(active)
        space = sum(capacity) * n_quotes
        if n_bases <= 0 or n > space:
            raise ValueError(f"n_markets={n} exceeds the {max(space, 0)} distinct market keys")
        starts = list(itertools.accumulate((c * n_quotes for c in capacity), initial=0))
        mean_weight = sum(w for w, _ in active) / len(active)
        volume_factor = [math.sqrt(w / mean_weight) for w, _ in active]
        prices = [float(a["priceUsd"]) for a in assets]
        drawn: list[tuple[int, int, int, float]] = []  # (exchange, base, quote, raw volume weight)
        base_weight = [0.0] * len(assets)
        # sampling combination numbers keeps keys unique without a retry loop
        for combo in rng.sample(range(space), n):
            ex_i = bisect.bisect_right(starts, combo) - 1
            base_i, quote_i = divmod(combo - starts[ex_i], n_quotes)
            if 0 <= quotes[quote_i][3] <= base_i:
                base_i += 1
            weight = volume_factor[ex_i] * rng.lognormvariate(0, 1.2)
            base_weight[base_i] += weight
            drawn.append((ex_i, base_i, quote_i, weight))
        rows: list[tuple[float, Record]] = []
        for ex_i, base_i, quote_i, weight in drawn:
            quote_id, quote_symbol, quote_price, _ = quotes[quote_i]
            base = assets[base_i]
            price = prices[base_i] * (1 + rng.gauss(0, 0.002))
            # an asset's markets share its 24h volume
            volume = float(base["volumeUsd24Hr"]) * weight / base_weight[base_i]
            trades = None if rng.random() < 0.15 else str(max(1, int(volume / rng.uniform(200, 5000))))
            rows.append(
                (
                    volume,
                    {
                        "exchangeId": active[ex_i][1]["exchangeId"],
                        "rank": "",
                        "baseSymbol": base["symbol"],
                        "baseId": base["id"],
                        "quoteSymbol": quote_symbol,
                        "quoteId": quote_id,
                        "priceQuote": _dec(price / quote_price),
                        "priceUsd": _dec(price),
                        "volumeUsd24Hr": _dec(volume),
                        "percentExchangeVolume": "",
                        "tradesCount24Hr": trades,
                        "updated": self.as_of_ms - rng.randint(0, 120_000),
                    },
                )
            )
        rows.sort(key=lambda row: -row[0])
        ex_total: dict[str, float] = {}
        for volume, record in rows:
            ex_total[record["exchangeId"]] = ex_total.get(record["exchangeId"], 0.0) + volume
        ex_count: dict[str, int] = {}
        markets = []
        for volume, record in rows:
            ex_id = record["exchangeId"]
            ex_count[ex_id] = ex_count.get(ex_id, 0) + 1
            record["rank"] = str(ex_count[ex_id])
            record["percentExchangeVolume"] = _dec(volume / ex_total[ex_id] * 100 if ex_total[ex_id] else 0.0)
            markets.append(record)
        self._market_totals = ex_total, ex_count
        return markets

    def _rank_exchanges(self, weighted_exchanges: list[tuple[float, Record]]) -> list[Record]:
        """Fill volume, share and pair count from the markets; rank by volume as `/exchanges` does."""
        ex_total, ex_count = self._market_totals
        grand_total = sum(ex_total.values()) or 1.0
        rows = []
        for weight, record in weighted_exchanges:
            volume = ex_total.get(record["exchangeId"], 0.0)
            if weight > 0:
                record["volumeUsd"] = _dec(volume)
                # v3 prints this one with 36 decimals, half of them padding
                record["percentTotalVolume"] = _dec(volume / grand_total * 100) + "0" * 18
                record["tradingPairs"] = str(ex_count.get(record["exchangeId"], 0))
            rows.append((weight > 0, volume, weight, record))
        rows.sort(key=lambda row: (not row[0], -row[1], -row[2]))
        exchanges = [row[3] for row in rows]
        for rank, record in enumerate(exchanges, start=1):
            record["rank"] = str(rank)
        return exchanges

    def _corrupt(self, catalog: Catalog, fraction: float) -> None:
        """Replace `fraction` of each dataset with invalid records, every kind used in turn."""
        rng = self.rng
        for dataset in DATASETS:
            records = catalog.records(dataset)
            if not records:
                continue
            count = min(len(records), max(1, round(len(records) * fraction)))
            kinds = _INVALID_KINDS[dataset]
            offset = rng.randrange(len(kinds))
            picked = sorted(rng.sample(range(len(records)), count))
            for n, index in enumerate(picked):
                kind, key = kinds[(n + offset) % len(kinds)]
                bad = dict(records[index])
                value = bad.get(key)
                if kind.startswith("negative"):
                    # "-0" would still be a valid number: negate a non-zero magnitude
                    bad[key] = "-" + (value if _nonzero_number(value) else "1.000000000000000000")
                elif kind.startswith("non_numeric"):
                    bad[key] = "abc"
                elif kind.startswith("missing"):
                    del bad[key]
                elif kind.endswith("wrong_type"):
                    bad[key] = [value]
                else:  # bad_rank
                    bad[key] = "x"
                records[index] = bad
                catalog.invalid_kinds[dataset][index] = kind
            catalog.invalid_keys[dataset] = picked


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
            market["priceUsd"] = _dec(float(asset["priceUsd"]) * 1.5)
            if _num(market, "priceQuote") is not None:
                market["priceQuote"] = _dec(float(market["priceQuote"]) * 1.5)
            market["updated"] = self.as_of_ms
        bad["market_price_off"] = asset["id"]

        asset = self.pick(lambda a: a["id"] in rates_of and positive("priceUsd")(a))
        rate = self.crypto_rate(asset["id"])
        assert rate is not None
        rate["rateUsd"] = _dec(float(asset["priceUsd"]) * 1.2)
        bad["rate_off"] = asset["id"]

        asset = self.pick(lambda a: positive("priceUsd")(a) and positive("supply")(a))
        self._jump(asset, 1.8)
        bad["price_jump"] = asset["id"]

        asset = self.pick(lambda a: positive("maxSupply")(a) and positive("priceUsd")(a))
        supply = float(asset["maxSupply"]) * 1.5
        asset["supply"] = _dec(supply)
        asset["marketCapUsd"] = _dec(supply * float(asset["priceUsd"]))
        bad["supply_above_max"] = asset["id"]

        asset = self.pick(lambda a: positive("supply")(a) and positive("marketCapUsd")(a))
        asset["marketCapUsd"] = _dec(float(asset["marketCapUsd"]) * 3)
        bad["market_cap_off"] = asset["id"]

        asset = self.pick(lambda a: (_num(a, "volumeUsd24Hr") or 0) >= 20_000)
        asset["volumeUsd24Hr"] = _dec(float(asset["volumeUsd24Hr"]) * 50)
        bad["volume_spike"] = asset["id"]

        asset = self.pick(lambda a: positive("vwap24Hr")(a))
        asset["vwap24Hr"] = _short(float(asset["vwap24Hr"]) * 3)
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
        exchange["percentTotalVolume"] = _dec(float(exchange["percentTotalVolume"]) + 25)
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
        asset["priceUsd"] = _dec(new_price)
        asset["marketCapUsd"] = _dec(new_price * float(asset["supply"]))
        asset["changePercent24Hr"] = _short((new_price / price_24h_ago - 1) * 100)
        if asset.get("vwap24Hr") is not None:
            asset["vwap24Hr"] = _short((price_24h_ago + new_price) / 2)
        for market in self.markets_of(asset["id"]):
            market["priceUsd"] = _dec(float(market["priceUsd"]) * factor)
            if _num(market, "priceQuote") is not None:
                market["priceQuote"] = _dec(float(market["priceQuote"]) * factor)
        rate = self.crypto_rate(asset["id"])
        if rate is not None:
            rate["rateUsd"] = _dec(float(rate["rateUsd"]) * factor)

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
                future["priceQuote"] = _dec(float(future["priceQuote"]) * new_price / old_price)
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
                market["percentExchangeVolume"] = _dec(float(market["volumeUsd24Hr"]) / total * 100)
        bad["unknown_exchange"] = ghost
