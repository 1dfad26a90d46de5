"""The contracts of the four reference datasets, as CoinCap v3 documents them.

Required fields are the natural key and the measure a row exists for; every other documented field is
optional because CoinCap sends `null` for it in real responses (maxSupply, vwap24Hr, explorer, ...).
Numbers carry plausibility ranges (see `columns.py`): USD amounts below MAX_USD and counts below MAX_COUNT, so the
warehouse can sum them, and Unix-millisecond times between 2009 and now + 1 day.
"""

from __future__ import annotations

from flows.contracts.columns import MAX_COUNT, MAX_USD, Column, Contract, Kind

ASSETS = Contract(
    dataset="assets",
    key=("id",),
    description="One row per asset per snapshot, from GET /assets.",
    columns=(
        Column("id", Kind.string, required=True, description="Asset slug, e.g. bitcoin"),
        Column("rank", Kind.integer, required=True, ge=1, description="Rank by market cap", max_abs=MAX_COUNT),
        Column("symbol", Kind.string, required=True, description="Ticker, e.g. BTC"),
        Column("name", Kind.string, required=True, description="Display name"),
        Column("supply", Kind.decimal, ge=0, description="Circulating supply"),
        Column("maxSupply", Kind.decimal, ge=0, description="Maximum supply; null when unlimited"),
        Column("marketCapUsd", Kind.decimal, ge=0, description="supply x price, in USD", max_abs=MAX_USD),
        Column("volumeUsd24Hr", Kind.decimal, ge=0, description="Traded volume over 24 hours, in USD", max_abs=MAX_USD),
        Column(
            "priceUsd", Kind.decimal, required=True, ge=0, description="Volume-weighted price in USD", max_abs=MAX_USD
        ),
        Column("changePercent24Hr", Kind.decimal, description="Price change over 24 hours, in percent"),
        Column(
            "vwap24Hr", Kind.decimal, ge=0, description="Volume-weighted average price over 24 hours", max_abs=MAX_USD
        ),
        Column("explorer", Kind.string, description="Block explorer URL"),
        Column("tokens", Kind.json, description="Chain id -> contract addresses, as JSON text"),
    ),
)

RATES = Contract(
    dataset="rates",
    key=("id",),
    description="USD conversion rates of fiat and crypto currencies, from GET /rates (not paginated).",
    columns=(
        Column("id", Kind.string, required=True, description="Rate slug, e.g. euro"),
        Column("symbol", Kind.string, required=True, description="Currency code, e.g. EUR"),
        Column("currencySymbol", Kind.string, description="Sign, e.g. EUR sign; null for some fiat"),
        Column("type", Kind.string, required=True, isin=("crypto", "fiat"), description="crypto or fiat"),
        Column("rateUsd", Kind.decimal, required=True, ge=0, description="Value of one unit in USD", max_abs=MAX_USD),
    ),
)

EXCHANGES = Contract(
    dataset="exchanges",
    key=("exchangeId",),
    description="One row per exchange per snapshot, from GET /exchanges.",
    columns=(
        Column("exchangeId", Kind.string, required=True, description="Exchange slug, e.g. kraken"),
        Column("name", Kind.string, required=True, description="Display name"),
        Column("rank", Kind.integer, required=True, ge=1, description="Rank by volume", max_abs=MAX_COUNT),
        Column("percentTotalVolume", Kind.decimal, ge=0, description="Share of total volume, percent"),
        Column("volumeUsd", Kind.decimal, ge=0, description="Volume over 24 hours, USD", max_abs=MAX_USD),
        Column("tradingPairs", Kind.integer, ge=0, description="Number of markets listed", max_abs=MAX_COUNT),
        Column("socket", Kind.boolean, description="Whether CoinCap streams its trades"),
        Column("exchangeUrl", Kind.string, description="Exchange web site"),
        Column(
            "updated", Kind.integer, epoch_ms=True, unknown_ms=0, description="Last update, Unix ms; 0 when unknown"
        ),
    ),
)

MARKETS = Contract(
    dataset="markets",
    key=("exchangeId", "baseId", "quoteId"),
    description="One row per exchange x base x quote per snapshot, from GET /markets.",
    columns=(
        Column("exchangeId", Kind.string, required=True, description="Exchange slug"),
        Column("rank", Kind.integer, ge=1, description="Rank of the market on its exchange", max_abs=MAX_COUNT),
        Column("baseSymbol", Kind.string, required=True, description="Base asset ticker"),
        Column("baseId", Kind.string, required=True, description="Base asset slug"),
        Column("quoteSymbol", Kind.string, required=True, description="Quote asset ticker"),
        Column("quoteId", Kind.string, required=True, description="Quote asset slug"),
        Column("priceQuote", Kind.decimal, ge=0, description="Price of the base in the quote asset"),
        Column("priceUsd", Kind.decimal, required=True, ge=0, description="Price of the base in USD", max_abs=MAX_USD),
        Column("volumeUsd24Hr", Kind.decimal, ge=0, description="Volume over 24 hours, USD", max_abs=MAX_USD),
        Column("percentExchangeVolume", Kind.decimal, ge=0, description="Share of the exchange volume"),
        Column("tradesCount24Hr", Kind.integer, ge=0, description="Trades over 24 hours", max_abs=MAX_COUNT),
        Column("updated", Kind.integer, epoch_ms=True, unknown_ms=0, description="Last update, Unix ms"),
    ),
)

CONTRACTS: dict[str, Contract] = {c.dataset: c for c in (ASSETS, RATES, EXCHANGES, MARKETS)}

# Not in CONTRACTS (which drives the snapshot): history is extracted by the backfill (flows/backfill.py).

ASSET_HISTORY = Contract(
    dataset="asset_history",
    key=("asset_id", "history_interval", "time"),
    description=(
        "One row per asset, interval and point time, from GET /assets/{slug}/history. asset_id and "
        "history_interval are added by the pipeline (CoinCap's points carry neither)."
    ),
    columns=(
        Column("asset_id", Kind.string, required=True, description="Asset slug, e.g. bitcoin (added by the pipeline)"),
        Column(
            "history_interval",
            Kind.string,
            required=True,
            isin=("m1", "m5", "m15", "m30", "h1", "h2", "h6", "h12", "d1"),
            description="CoinCap interval of the series, e.g. d1 (added by the pipeline)",
        ),
        Column(
            "priceUsd",
            Kind.decimal,
            required=True,
            ge=0,
            description="Price in USD; d1 is the UTC day's average",
            max_abs=MAX_USD,
        ),
        Column(
            "time",
            Kind.integer,
            required=True,
            epoch_ms=True,
            description="Start of the point's interval, Unix ms (UTC)",
        ),
        Column("date", Kind.string, description="The same instant as ISO 8601 text"),
        Column(
            "circulatingSupply",
            Kind.decimal,
            ge=0,
            description="Circulating supply (v2 sent it; v3 does not document it)",
        ),
    ),
)

# Not in CONTRACTS (which drives the snapshot): the price WebSocket's ticks, written by `flows/stream.py`.
PRICES_STREAM = Contract(
    dataset="prices_stream",
    key=("asset_id",),  # unique within one message; a tick's identity is (connection_id, message_seq, asset_id)
    description=(
        "One row per price tick from the price WebSocket (wss://wss.coincap.io/prices): each message maps asset "
        "ids to price strings. flows/stream.py adds tick_ts, message_seq, connection_id and batch_id."
    ),
    columns=(
        Column("asset_id", Kind.string, required=True, description="Asset slug, a key of the message"),
        Column(
            "price_usd", Kind.decimal, required=True, ge=0, description="Price in USD, the key's value", max_abs=MAX_USD
        ),
    ),
)
