"""What the dashboard reads from the local DuckDB warehouse: the `marts.rpt_*` report marts and the `ops` tables.

Every section loads on its own and comes back either with data or as `Unavailable(reason)`, one line saying
what is missing and what to run, so a fresh checkout, a half-built warehouse or a mart from an older build
shows a panel instead of a crash. The connection is read-only and closed before any page is rendered.

The market pages' sections are here; the health page's are in `health_queries`, the connection in `reader`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from flows.dashboard.health_queries import Health, load_health
from flows.dashboard.reader import (
    ASSET_DAILY,
    EXCHANGE_DAILY,
    MARKET_OVERVIEW,
    MARKET_PAIRS,
    PIPELINE_RUNS,
    RUN_HINT,
    Reader,
    Row,
    Unavailable,
    empty,
    missing,
    open_reader,
    snapshot_time,
)


@dataclass
class Overview:
    report_date: date
    snapshot_id: str | None
    assets: list[Row]  # the latest day's rows, by market cap (largest first)
    totals: list[Row]  # report_date, total_market_cap_usd, total_volume_usd_24h, asset_count per day
    spark_days: list[date] = field(default_factory=list)
    sparks: dict[str, list[float | None]] = field(default_factory=dict)  # asset_id -> closes on spark_days


@dataclass
class AssetHistory:
    asset_id: str
    symbol: str | None
    name: str | None
    rank: int | None
    rows: list[Row]  # one per report_date, oldest first


@dataclass
class Assets:
    report_date: date
    listing: list[AssetHistory]  # every asset, largest first; `rows` holds only the latest day
    histories: dict[str, AssetHistory]  # the full history of the assets loaded (the largest `asset_pages`)

    def find(self, asset_id: str) -> AssetHistory | None:
        return next((a for a in self.listing if a.asset_id == asset_id), None)


@dataclass
class Exchanges:
    report_date: date
    exchanges: list[Row]  # latest day, by volume
    history: list[Row]  # report_date, exchange_id, exchange_name, volume_usd_24h, volume_share_pct
    pairs: list[Row] | Unavailable  # latest day, the largest 1,000 by volume
    pairs_date: date | None = None
    pairs_total: Row = field(default_factory=dict)  # markets, volume_usd_24h: the whole latest day


@dataclass
class DashboardData:
    warehouse: Path
    loaded_at: datetime
    overview: Overview | Unavailable
    assets: Assets | Unavailable
    exchanges: Exchanges | Unavailable
    health: Health | Unavailable

    @property
    def as_of(self) -> datetime | None:
        """The moment of the latest snapshot the market pages show."""
        if isinstance(self.overview, Overview) and self.overview.snapshot_id:
            return snapshot_time(self.overview.snapshot_id)
        return None


def _section(table: str, load: Any, reader: Reader) -> Any:
    """Run one section's loader; a missing table or an unreadable mart becomes an `Unavailable` panel."""
    if not reader.has(table):
        return missing(table)
    try:
        return load(reader)
    except duckdb.Error as exc:
        first = str(exc).splitlines()[0]
        return Unavailable(f"Cannot read {table} ({first}); rebuild the marts: {RUN_HINT}.")


def load_dashboard_data(
    warehouse: Path, *, history_days: int = 365, asset_pages: int | None = None, now: datetime | None = None
) -> DashboardData:
    """Read everything the pages show. `history_days` bounds the time series (days before the latest day);
    the full history is loaded for the largest `asset_pages` assets (None: all), the others are only listed."""
    loaded_at = now or datetime.now(UTC)
    with open_reader(warehouse) as reader:
        if reader is None:
            nothing = Unavailable(f"There is no warehouse at {warehouse} yet: {RUN_HINT} to take a first snapshot.")
            return DashboardData(warehouse, loaded_at, nothing, nothing, nothing, nothing)
        return DashboardData(
            warehouse=warehouse,
            loaded_at=loaded_at,
            overview=_section(MARKET_OVERVIEW, lambda r: _overview(r, history_days), reader),
            assets=_section(ASSET_DAILY, lambda r: _assets(r, history_days, asset_pages), reader),
            exchanges=_section(EXCHANGE_DAILY, lambda r: _exchanges(r, history_days), reader),
            health=_section(PIPELINE_RUNS, lambda r: load_health(r, loaded_at), reader),
        )


def _overview(r: Reader, history_days: int) -> Overview | Unavailable:
    latest = r.scalar(f"select max(report_date) from {MARKET_OVERVIEW}")
    if latest is None:
        return empty(MARKET_OVERVIEW)
    assets = r.rows(
        f"""
        select asset_id, asset_symbol, asset_name, asset_rank, price_usd, market_cap_usd, volume_usd_24h,
               change_percent_24h, dominance_pct, total_market_cap_usd, total_volume_usd_24h, snapshot_id
        from {MARKET_OVERVIEW}
        where report_date = ?
        order by market_cap_usd desc nulls last, asset_rank nulls last, asset_id
        """,
        [latest],
    )
    totals = r.rows(
        f"""
        select report_date, max(total_market_cap_usd) as total_market_cap_usd,
               max(total_volume_usd_24h) as total_volume_usd_24h, count(*) as asset_count
        from {MARKET_OVERVIEW}
        where report_date >= ?
        group by report_date
        order by report_date
        """,
        [latest - timedelta(days=history_days)],
    )
    overview = Overview(latest, assets[0]["snapshot_id"] if assets else None, assets, totals)
    if r.has(ASSET_DAILY):
        spark_from = latest - timedelta(days=29)
        ids = [a["asset_id"] for a in assets[:100]]
        rows = r.rows(
            f"""
            select asset_id, report_date, close_price_usd
            from {ASSET_DAILY}
            where report_date between ? and ? and list_contains(?, asset_id)
            order by report_date
            """,
            [spark_from, latest, ids],
        )
        overview.spark_days = sorted({row["report_date"] for row in rows})
        index = {d: i for i, d in enumerate(overview.spark_days)}
        for row in rows:
            line = overview.sparks.setdefault(row["asset_id"], [None] * len(index))
            line[index[row["report_date"]]] = row["close_price_usd"]
    return overview


_ASSET_COLUMNS = (
    "report_date, asset_id, asset_symbol, asset_name, open_price_usd, high_price_usd, low_price_usd, "
    "close_price_usd, moving_avg_7d, moving_avg_30d, volatility_30d, volatility_30d_annualised, volume_usd_24h, "
    "market_cap_usd, pct_change_1d, pct_change_7d, pct_change_30d, price_source, snapshot_count"
)


def _assets(r: Reader, history_days: int, asset_pages: int | None) -> Assets | Unavailable:
    latest = r.scalar(f"select max(report_date) from {ASSET_DAILY}")
    if latest is None:
        return empty(ASSET_DAILY)
    # every asset's latest day (an asset delisted today keeps its last day), ranked by the latest overview
    rank_join, rank_col = "", "cast(null as bigint)"
    if r.has(MARKET_OVERVIEW):
        rank_join = f"""
            left join (
                select asset_id, asset_rank from {MARKET_OVERVIEW}
                where report_date = (select max(report_date) from {MARKET_OVERVIEW})
            ) as o using (asset_id)
        """
        rank_col = "o.asset_rank"
    listing_rows = r.rows(
        f"""
        with last_day as (
            select * from {ASSET_DAILY}
            qualify row_number() over (partition by asset_id order by report_date desc) = 1
        )
        select {", ".join(f"d.{c.strip()}" for c in _ASSET_COLUMNS.split(","))}, {rank_col} as asset_rank
        from last_day as d
        {rank_join}
        order by d.report_date = ? desc, {rank_col} nulls last, d.market_cap_usd desc nulls last, d.asset_id
        """,
        [latest],
    )
    listing = [
        AssetHistory(
            row["asset_id"], row["asset_symbol"], row["asset_name"],
            None if row["asset_rank"] is None else int(row["asset_rank"]), [row],
        )
        for row in listing_rows
    ]  # fmt: skip
    wanted = [a.asset_id for a in (listing if asset_pages is None else listing[:asset_pages])]
    histories = _histories(r, wanted, latest, history_days)
    for entry in listing:
        if entry.asset_id in histories:
            histories[entry.asset_id] = AssetHistory(
                entry.asset_id, entry.symbol, entry.name, entry.rank, histories[entry.asset_id].rows
            )
    return Assets(latest, listing, histories)


def _histories(r: Reader, asset_ids: list[str], latest: date, history_days: int) -> dict[str, AssetHistory]:
    if not asset_ids:
        return {}
    rows = r.rows(
        f"""
        select {_ASSET_COLUMNS} from {ASSET_DAILY}
        where report_date >= ? and list_contains(?, asset_id)
        order by asset_id, report_date
        """,
        [latest - timedelta(days=history_days), asset_ids],
    )
    grouped: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        grouped[row["asset_id"]].append(row)
    return {k: AssetHistory(k, v[-1]["asset_symbol"], v[-1]["asset_name"], None, v) for k, v in grouped.items()}


def load_asset_history(warehouse: Path, asset_id: str, *, history_days: int = 365) -> AssetHistory | None:
    """One asset's daily history (for a page rendered on demand); None if the asset has none."""
    with open_reader(warehouse) as reader:
        if reader is None or not reader.has(ASSET_DAILY):
            return None
        latest = reader.scalar(f"select max(report_date) from {ASSET_DAILY}")
        if latest is None:
            return None
        return _histories(reader, [asset_id], latest, history_days).get(asset_id)


def _exchanges(r: Reader, history_days: int) -> Exchanges | Unavailable:
    latest = r.scalar(f"select max(report_date) from {EXCHANGE_DAILY}")
    if latest is None:
        return empty(EXCHANGE_DAILY)
    exchanges = r.rows(
        f"""
        select exchange_id, exchange_name, exchange_rank, volume_usd_24h, volume_share_pct, trading_pairs,
               markets_count, markets_volume_usd_24h
        from {EXCHANGE_DAILY}
        where report_date = ?
        order by volume_usd_24h desc nulls last, exchange_rank nulls last, exchange_id
        """,
        [latest],
    )
    history = r.rows(
        f"""
        select report_date, exchange_id, exchange_name, volume_usd_24h, volume_share_pct
        from {EXCHANGE_DAILY}
        where report_date >= ?
        order by report_date, exchange_id
        """,
        [latest - timedelta(days=min(history_days, 90))],
    )
    result = Exchanges(latest, exchanges, history, pairs=missing(MARKET_PAIRS))
    if r.has(MARKET_PAIRS):
        pairs_date = r.scalar(f"select max(report_date) from {MARKET_PAIRS}")
        if pairs_date is None:
            result.pairs = empty(MARKET_PAIRS)
        else:
            result.pairs_date = pairs_date
            result.pairs_total = r.rows(
                f"select count(*) as markets, sum(volume_usd_24h) as volume_usd_24h from {MARKET_PAIRS} "
                "where report_date = ?",
                [pairs_date],
            )[0]
            result.pairs = r.rows(
                f"""
                select p.exchange_id, coalesce(e.exchange_name, p.exchange_id) as exchange_name, p.base_asset_id,
                       p.quote_asset_id, p.base_symbol, p.quote_symbol, p.pair, p.price_usd, p.volume_usd_24h,
                       p.volume_share_of_exchange_pct, p.asset_price_usd, p.price_deviation_pct
                from {MARKET_PAIRS} as p
                left join {EXCHANGE_DAILY} as e
                    on e.exchange_id = p.exchange_id and e.report_date = p.report_date
                where p.report_date = ?
                order by p.volume_usd_24h desc nulls last, p.exchange_id, p.pair
                limit 1000
                """,
                [pairs_date],
            )
    return result
