"""An asset's page: price and moving averages, volatility, volume, market cap and its daily values; and the
page shown when no asset has daily data yet."""

from __future__ import annotations

from datetime import date

from flows.dashboard import charts
from flows.dashboard import formatting as fmt
from flows.dashboard.charts import Series
from flows.dashboard.pages.components import (
    Col,
    card,
    change,
    chart_or_empty,
    empty,
    heading,
    kpi,
    kpis,
    sort_key,
    table,
)
from flows.dashboard.pages.layout import Nav, asset_label, asset_slug, esc, frame
from flows.dashboard.queries import AssetHistory, DashboardData
from flows.dashboard.reader import Unavailable


def asset_page(data: DashboardData, nav: Nav, history: AssetHistory, latest_day: date) -> str:
    """One asset's page; `latest_day` is the latest day of any asset (an asset missing from it is flagged)."""
    rows = history.rows
    last = rows[-1]
    days = [r["report_date"] for r in rows]
    title = history.name or history.asset_id
    slug = esc(asset_slug(history.asset_id))
    picker = (
        '<label class="picker">Asset <select id="asset-picker" aria-label="Choose an asset" '
        f'data-current="{slug}"><option value="{slug}" selected>'
        f"{esc(asset_label(history.symbol, history.name, history.asset_id))}</option></select></label>"
    )
    rank = f'<span class="pill pill-muted">rank {history.rank}</span> ' if history.rank else ""
    stale = ""
    if last["report_date"] != latest_day:
        stale = f' · <span class="tone-warn">not listed on the latest day ({esc(fmt.day(latest_day))})</span>'
    subtitle = (
        f"{rank}<span class=symbol>{esc(history.symbol or '')}</span> · "
        f"{len(rows):,} day{'s' if len(rows) != 1 else ''}"
        f" from {esc(fmt.day(days[0]))} to {esc(fmt.day(days[-1]))}{stale}"
    )
    tiles = [
        kpi(
            "Price (close)",
            fmt.price(last["close_price_usd"]),
            f"{fmt.pct(last['pct_change_1d'], 2, signed=True)} in 1 day"
            if last["pct_change_1d"] is not None
            else "no close a day earlier",
            _tone(last["pct_change_1d"]),
            "price",
        ),
        kpi(
            "7-day change",
            fmt.pct(last["pct_change_7d"], 2, signed=True),
            f"MA7 {fmt.price(last['moving_avg_7d'])}",
            _tone(last["pct_change_7d"]),
            "change_7d",
        ),
        kpi(
            "30-day change",
            fmt.pct(last["pct_change_30d"], 2, signed=True),
            f"MA30 {fmt.price(last['moving_avg_30d'])}",
            _tone(last["pct_change_30d"]),
            "change_30d",
        ),
        kpi(
            "Market cap",
            fmt.usd_compact(last["market_cap_usd"], 2),
            f"volume {fmt.usd_compact(last['volume_usd_24h'], 2)} in 24h",
            name="market_cap",
        ),
        kpi(
            "Volatility (30d, annualised)",
            fmt.ratio_pct(last["volatility_30d_annualised"], 1),
            f"daily {fmt.ratio_pct(last['volatility_30d'], 2)}",
            name="volatility",
        ),
    ]
    price_chart = charts.time_chart(
        "price",
        days,
        [
            Series("Close", [r["close_price_usd"] for r in rows], charts.PRIMARY, "line", width=2.2),
            Series("7-day average", [r["moving_avg_7d"] for r in rows], charts.ACCENT, "line", dashed=True, width=1.8),
            Series("30-day average", [r["moving_avg_30d"] for r in rows], charts.VIOLET, "line", width=1.8),
        ],
        label=f"{title} price with 7- and 30-day moving averages",
        prefix="$",
        value_format=fmt.price,
        width=1180,
        height=330,
    )
    vol_chart = charts.time_chart(
        "volatility",
        days,
        [
            Series(
                "Volatility (annualised)",
                [_times100(r["volatility_30d_annualised"]) for r in rows],
                charts.DOWN,
                "area",
            )
        ],
        label=f"{title} 30-day volatility, annualised",
        suffix="%",
        value_format=lambda v: fmt.pct(v, 1),
        width=480,
        height=250,
    )
    volume_chart = charts.time_chart(
        "volume",
        days,
        [Series("Volume (24h)", [r["volume_usd_24h"] for r in rows], charts.PALETTE[3], "bar")],
        label=f"{title} 24-hour volume",
        prefix="$",
        value_format=lambda v: fmt.usd_compact(v, 2),
        width=480,
        height=250,
    )
    cap_chart = charts.time_chart(
        "market-cap",
        days,
        [Series("Market cap", [r["market_cap_usd"] for r in rows], charts.PALETTE[4], "area")],
        label=f"{title} market cap",
        prefix="$",
        value_format=lambda v: fmt.usd_compact(v, 2),
        width=480,
        height=250,
    )
    cols = [
        Col("Day", lambda r: esc(fmt.day(r["report_date"])), sort=lambda r: r["report_date"].isoformat()),
        Col("Open", lambda r: esc(fmt.price(r["open_price_usd"])), True, sort_key("open_price_usd")),
        Col("High", lambda r: esc(fmt.price(r["high_price_usd"])), True, sort_key("high_price_usd")),
        Col("Low", lambda r: esc(fmt.price(r["low_price_usd"])), True, sort_key("low_price_usd")),
        Col("Close", lambda r: esc(fmt.price(r["close_price_usd"])), True, sort_key("close_price_usd")),
        Col("1d", lambda r: change(r["pct_change_1d"]), True, sort_key("pct_change_1d")),
        Col("Volume (24h)", lambda r: esc(fmt.usd_compact(r["volume_usd_24h"], 2)), True, sort_key("volume_usd_24h")),
        Col("Market cap", lambda r: esc(fmt.usd_compact(r["market_cap_usd"], 2)), True, sort_key("market_cap_usd")),
        Col("Source", lambda r: esc(r["price_source"] or fmt.DASH)),
        Col("Snapshots", lambda r: esc(fmt.integer(r["snapshot_count"])), True, sort_key("snapshot_count")),
    ]
    one_day = "One day so far: moving averages and volatility need more days of snapshots."
    body = "".join(
        [
            heading(asset_label(history.symbol, history.name, history.asset_id), subtitle, picker),
            kpis(tiles),
            '<div class="grid">',
            card(
                "Price and moving averages",
                chart_or_empty(price_chart, one_day),
                wide=True,
                subtitle="Daily close (USD) with its 7- and 30-day moving averages",
                name="price",
            ),
            '<div class="row3">',
            card(
                "Volatility",
                chart_or_empty(vol_chart, one_day),
                subtitle="Standard deviation of 30 daily log returns, annualised",
                name="volatility",
            ),
            card(
                "Volume",
                chart_or_empty(volume_chart),
                subtitle="24-hour trading volume (USD) at the day's close",
                name="volume",
            ),
            card("Market cap", chart_or_empty(cap_chart), subtitle="At the day's close (USD)", name="market-cap"),
            "</div>",
            card(
                "Daily values",
                table(cols, rows[::-1][:60], name="asset-days"),
                subtitle="Newest first, up to 60 days",
                wide=True,
                name="asset-days",
            ),
            "</div>",
        ]
    )
    return frame(title=title, active="asset", body=body, data=data, nav=nav, depth=1, scripts=["assets/asset-list.js"])


def assets_empty_page(data: DashboardData, nav: Nav) -> str:
    reason = data.assets.reason if isinstance(data.assets, Unavailable) else "No asset has daily data yet."
    body = heading("Assets") + empty(reason, "asset")
    return frame(title="Assets", active="asset", body=body, data=data, nav=nav, depth=1)


def _tone(value: float | None) -> str:
    if value is None:
        return ""
    return "up" if value > 0 else "down" if value < 0 else ""


def _times100(value: float | None) -> float | None:
    return None if value is None else value * 100
