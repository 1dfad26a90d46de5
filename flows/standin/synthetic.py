"""A large, deterministic synthetic catalog: assets, rates, exchanges and markets generated from one seed.

Referential integrity holds for valid records (a market's base is an asset, its quote an asset or a fiat rate,
its exchange an exchange); a requested share of each dataset can be made invalid on purpose.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import MutableMapping
from typing import Any

from flows.standin.history import SyntheticHistory
from flows.standin.records import DATASETS, HISTORY_INTERVALS_MS, Record, dec, short

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


def default_n_rates(n_assets: int) -> int:
    """Rates of a synthetic catalog when not given: 170 (fiat first, then crypto rates of the top assets), fewer
    for tiny catalogs."""
    return min(170, len(_FIAT) + n_assets)


def _nonzero_number(value: Any) -> bool:
    try:
        return isinstance(value, str) and float(value) != 0
    except ValueError:
        return False


class SyntheticBuilder:
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
    ) -> dict[str, Any]:
        """Generate every dataset, then corrupt the requested share: the fields of a `Catalog`."""
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
        catalog: dict[str, Any] = {
            "assets": assets,
            "rates": rates,
            "exchanges": exchanges,
            "markets": markets,
            "history": history,
            "invalid_keys": {d: [] for d in DATASETS},
            "invalid_kinds": {d: {} for d in DATASETS},
        }
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
                        "supply": dec(supply),
                        "maxSupply": None if max_supply is None else dec(max_supply),
                        "marketCapUsd": dec(market_cap),
                        "volumeUsd24Hr": dec(volume),
                        "priceUsd": dec(price),
                        "changePercent24Hr": short(change),
                        "vwap24Hr": None if vwap is None else short(vwap),
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
                    "rateUsd": dec(rate),
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
                        "priceQuote": dec(price / quote_price),
                        "priceUsd": dec(price),
                        "volumeUsd24Hr": dec(volume),
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
            record["percentExchangeVolume"] = dec(volume / ex_total[ex_id] * 100 if ex_total[ex_id] else 0.0)
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
                record["volumeUsd"] = dec(volume)
                # v3 prints this one with 36 decimals, half of them padding
                record["percentTotalVolume"] = dec(volume / grand_total * 100) + "0" * 18
                record["tradingPairs"] = str(ex_count.get(record["exchangeId"], 0))
            rows.append((weight > 0, volume, weight, record))
        rows.sort(key=lambda row: (not row[0], -row[1], -row[2]))
        exchanges = [row[3] for row in rows]
        for rank, record in enumerate(exchanges, start=1):
            record["rank"] = str(rank)
        return exchanges

    def _corrupt(self, catalog: dict[str, Any], fraction: float) -> None:
        """Replace `fraction` of each dataset with invalid records, every kind used in turn."""
        rng = self.rng
        for dataset in DATASETS:
            records = catalog[dataset]
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
                catalog["invalid_kinds"][dataset][index] = kind
            catalog["invalid_keys"][dataset] = picked
