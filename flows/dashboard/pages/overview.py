"""The market overview page: totals, dominance, the day's movers, the market's history and the top assets."""

from __future__ import annotations

from flows.dashboard import charts
from flows.dashboard import formatting as fmt
from flows.dashboard.charts import Bar, Series
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
from flows.dashboard.pages.layout import Nav, asset_href, asset_label, esc, frame
from flows.dashboard.queries import DashboardData
from flows.dashboard.reader import Row, Unavailable, snapshot_time

TOP_ASSETS = 50
DOMINANCE_SLICES = 10
MOVERS = 15


def overview_page(data: DashboardData, nav: Nav, asset_pages: set[str]) -> str:
    ov = data.overview
    if isinstance(ov, Unavailable):
        body = heading("Market overview") + empty(ov.reason, "overview")
        return frame(title="Market overview", active="overview", body=body, data=data, nav=nav)
    assets = ov.assets
    total_cap = assets[0]["total_market_cap_usd"] if assets else None
    total_vol = assets[0]["total_volume_usd_24h"] if assets else None
    previous = ov.totals[-2] if len(ov.totals) > 1 else None
    cap_change = None
    if previous and previous["total_market_cap_usd"] and total_cap is not None:
        cap_change = (total_cap / previous["total_market_cap_usd"] - 1) * 100
    up = sum(1 for a in assets if (a["change_percent_24h"] or 0) > 0)
    down = sum(1 for a in assets if (a["change_percent_24h"] or 0) < 0)
    leader = assets[0] if assets else None
    stamp = snapshot_time(ov.snapshot_id)
    tiles = [
        kpi(
            "Total market cap",
            fmt.usd_compact(total_cap, 2),
            f"{fmt.pct(cap_change, 1, signed=True)} vs {fmt.day(previous['report_date'])}"
            if cap_change is not None
            else f"{len(assets):,} assets",
            "up" if (cap_change or 0) > 0 else "down" if (cap_change or 0) < 0 else "",
            "total_market_cap",
        ),
        kpi(
            "24h volume",
            fmt.usd_compact(total_vol, 2),
            f"{fmt.pct(total_vol / total_cap * 100 if total_cap and total_vol else None, 1)} of market cap",
            name="total_volume",
        ),
        kpi(
            f"{leader['asset_symbol'] or leader['asset_id']} dominance" if leader else "Dominance",
            fmt.pct(leader["dominance_pct"] if leader else None, 1),
            f"{leader['asset_name'] or leader['asset_id']} market cap share" if leader else "",
            name="dominance",
        ),
        kpi("Assets", fmt.integer(len(assets)), f"{up:,} up · {down:,} down in 24h", name="assets"),
    ]

    # dominance: the top slices and everything else
    top = assets[:DOMINANCE_SLICES]
    rest = sum(a["market_cap_usd"] or 0 for a in assets[DOMINANCE_SLICES:])
    slices = [
        (
            asset_label(a["asset_symbol"], a["asset_name"], a["asset_id"]),
            a["market_cap_usd"] or 0,
            charts.PALETTE[i % 9],
        )
        for i, a in enumerate(top)
    ]
    if rest > 0:
        slices.append((f"Others ({len(assets) - len(top):,})", rest, charts.OTHERS))
    dominance = charts.donut(
        "dominance",
        slices,
        label="Share of total market cap",
        value_format=fmt.usd_compact,
        center_title="Total market cap",
        center_value=fmt.usd_compact(total_cap),
    )

    movers = [
        Bar(
            a["asset_symbol"] or a["asset_id"],
            a["change_percent_24h"] or 0.0,
            charts.UP if (a["change_percent_24h"] or 0) >= 0 else charts.DOWN,
            note=a["asset_name"] or "",
            href=asset_href(a["asset_id"]) if a["asset_id"] in asset_pages else None,
        )
        for a in assets[:MOVERS]
        if a["change_percent_24h"] is not None
    ]
    change_chart = charts.bar_chart(
        "change-24h",
        movers,
        label="24-hour change of the largest assets",
        value_format=lambda v: fmt.pct(v, 2, signed=True),
        label_width=70,
        row=21,
    )

    days = [t["report_date"] for t in ov.totals]
    cap_chart = charts.time_chart(
        "total-market-cap",
        days,
        [Series("Total market cap", [t["total_market_cap_usd"] for t in ov.totals], charts.PRIMARY, "area")],
        label="Total market cap per day",
        prefix="$",
        value_format=lambda v: fmt.usd_compact(v, 2),
        height=210,
    )
    vol_chart = charts.time_chart(
        "total-volume",
        days,
        [Series("24h volume", [t["total_volume_usd_24h"] for t in ov.totals], charts.ACCENT, "bar")],
        label="Total 24-hour volume per day",
        prefix="$",
        value_format=lambda v: fmt.usd_compact(v, 2),
        height=210,
    )

    def name_cell(r: Row) -> str:
        label = f'<span class="asset-name">{esc(r["asset_name"] or r["asset_id"])}</span>'
        symbol = f'<span class="symbol">{esc(r["asset_symbol"] or "")}</span>'
        if r["asset_id"] in asset_pages:
            return f'<a href="{esc(asset_href(r["asset_id"]))}">{label}</a> {symbol}'
        return f"{label} {symbol}"

    def spark(r: Row) -> str:
        line = ov.sparks.get(r["asset_id"], [])
        return charts.sparkline(line, label=f"{r['asset_symbol'] or r['asset_id']}, last 30 days") or fmt.DASH

    cols = [
        Col(
            "#",
            lambda r: esc(r["asset_rank"] if r["asset_rank"] is not None else fmt.DASH),
            True,
            sort_key("asset_rank"),
        ),
        Col("Asset", name_cell, sort=lambda r: r["asset_name"] or r["asset_id"]),
        Col("Price", lambda r: esc(fmt.price(r["price_usd"])), True, sort_key("price_usd")),
        Col("24h", lambda r: change(r["change_percent_24h"]), True, sort_key("change_percent_24h")),
        Col("Market cap", lambda r: esc(fmt.usd_compact(r["market_cap_usd"], 2)), True, sort_key("market_cap_usd")),
        Col("Volume (24h)", lambda r: esc(fmt.usd_compact(r["volume_usd_24h"], 2)), True, sort_key("volume_usd_24h")),
        Col("Dominance", lambda r: esc(fmt.pct(r["dominance_pct"], 2)), True, sort_key("dominance_pct")),
        Col("30 days", spark),
    ]
    subtitle = (
        f"{esc(fmt.day(ov.report_date))} · latest snapshot <code>{esc(ov.snapshot_id or '')}</code> "
        f"({esc(fmt.utc(stamp))})"
    )
    body = "".join(
        [
            heading("Market overview", subtitle),
            kpis(tiles),
            '<div class="grid">',
            card(
                "Market dominance",
                chart_or_empty(dominance),
                subtitle="Share of total market cap, top 10 and the rest",
                name="dominance",
            ),
            card(
                f"24h change, {min(MOVERS, len(assets))} largest assets",
                chart_or_empty(change_chart),
                subtitle="Price change over the last 24 hours",
                name="change-24h",
            ),
            card(
                "Total market cap",
                chart_or_empty(cap_chart, "One day so far: the history grows with every run."),
                subtitle="Per UTC day, from the day's latest snapshot",
                name="total-market-cap",
            ),
            card(
                "Total 24h volume",
                chart_or_empty(vol_chart, "One day so far: the history grows with every run."),
                subtitle="Per UTC day, from the day's latest snapshot",
                name="total-volume",
            ),
            card(
                f"Top {min(TOP_ASSETS, len(assets))} assets by market cap",
                table(cols, assets[:TOP_ASSETS], name="top-assets"),
                wide=True,
                name="top-assets",
            ),
            "</div>",
        ]
    )
    return frame(title="Market overview", active="overview", body=body, data=data, nav=nav)
