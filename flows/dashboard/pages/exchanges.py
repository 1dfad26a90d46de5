"""The exchanges and markets page: volume shares, the top pairs, the leaders over time, and both tables."""

from __future__ import annotations

from flows.dashboard import charts
from flows.dashboard import formatting as fmt
from flows.dashboard.charts import Bar, Series
from flows.dashboard.pages.components import Col, card, chart_or_empty, empty, heading, kpi, kpis, sort_key, table
from flows.dashboard.pages.layout import Nav, asset_href, esc, frame
from flows.dashboard.queries import DashboardData
from flows.dashboard.reader import Row, Unavailable


def exchanges_page(data: DashboardData, nav: Nav, asset_pages: set[str]) -> str:
    ex = data.exchanges
    if isinstance(ex, Unavailable):
        body = heading("Exchanges & markets") + empty(ex.reason, "exchanges")
        return frame(title="Exchanges & markets", active="exchanges", body=body, data=data, nav=nav)
    exchanges = ex.exchanges
    total = sum(e["volume_usd_24h"] or 0 for e in exchanges)
    leader = exchanges[0] if exchanges else None
    pairs = ex.pairs if isinstance(ex.pairs, list) else []
    tiles = [
        kpi(
            "Exchanges",
            fmt.integer(len(exchanges)),
            f"{sum(1 for e in exchanges if e['volume_usd_24h']):,} report a volume",
            name="exchanges",
        ),
        kpi("24h volume", fmt.usd_compact(total, 2), "sum over exchanges", name="exchange_volume"),
        kpi(
            "Largest exchange",
            leader["exchange_name"] or leader["exchange_id"] if leader else fmt.DASH,
            f"{fmt.pct(leader['volume_share_pct'], 1)} of volume" if leader else "",
            name="leader",
        ),
        kpi(
            "Markets",
            fmt.integer(ex.pairs_total.get("markets")) if isinstance(ex.pairs, list) else fmt.DASH,
            f"{fmt.usd_compact(ex.pairs_total.get('volume_usd_24h'), 2)} 24h volume",
            name="markets",
        ),
    ]
    top = [e for e in exchanges if e["volume_share_pct"]][:12]
    rest = sum(e["volume_share_pct"] or 0 for e in exchanges if e not in top)
    bars = [
        Bar(
            e["exchange_name"] or e["exchange_id"],
            e["volume_share_pct"],
            charts.PALETTE[0],
            note=fmt.usd_compact(e["volume_usd_24h"], 2),
        )
        for e in top
    ]
    if rest > 0.05:
        bars.append(Bar(f"Others ({len(exchanges) - len(top)})", rest, charts.OTHERS))
    share_chart = charts.bar_chart(
        "volume-share", bars, label="Share of 24-hour volume by exchange", value_format=lambda v: fmt.pct(v, 1)
    )
    pair_bars = [
        Bar(
            f"{p['pair'] or str(p['base_symbol']) + '/' + str(p['quote_symbol'])} · {p['exchange_name']}",
            p["volume_usd_24h"],
            charts.PALETTE[3],
            note=f"price {fmt.price(p['price_usd'])}",
        )
        for p in pairs[:15]
        if p["volume_usd_24h"]
    ]
    pairs_chart = charts.bar_chart(
        "top-pairs",
        pair_bars,
        label="Top pairs by 24-hour volume",
        value_format=lambda v: fmt.usd_compact(v, 1),
        label_width=190,
    )

    # volume share over time for the exchanges that lead today
    leaders = [e["exchange_id"] for e in top[:6]]
    days = sorted({h["report_date"] for h in ex.history})
    by_key = {(h["report_date"], h["exchange_id"]): h["volume_share_pct"] for h in ex.history}
    names = {e["exchange_id"]: e["exchange_name"] or e["exchange_id"] for e in exchanges}
    trend = (
        charts.time_chart(
            "share-trend",
            days,
            [
                Series(names[x], [by_key.get((d, x)) for d in days], charts.PALETTE[i % 9])
                for i, x in enumerate(leaders)
            ],
            label="Volume share of the leading exchanges per day",
            suffix="%",
            value_format=lambda v: fmt.pct(v, 2),
            width=1180,
            height=260,
        )
        if len(days) > 1
        else ""
    )

    ex_cols = [
        Col(
            "#",
            lambda r: esc(r["exchange_rank"] if r["exchange_rank"] is not None else fmt.DASH),
            True,
            sort_key("exchange_rank"),
        ),
        Col(
            "Exchange",
            lambda r: f'<span class="asset-name">{esc(r["exchange_name"] or r["exchange_id"])}</span>',
            sort=lambda r: r["exchange_name"] or r["exchange_id"],
        ),
        Col("Volume (24h)", lambda r: esc(fmt.usd_compact(r["volume_usd_24h"], 2)), True, sort_key("volume_usd_24h")),
        Col(
            "Share",
            lambda r: (
                charts.meter(
                    (r["volume_share_pct"] or 0) / 100, color=charts.PALETTE[0], label=fmt.pct(r["volume_share_pct"], 2)
                )
                + f" {esc(fmt.pct(r['volume_share_pct'], 1))}"
            ),
            True,
            sort_key("volume_share_pct"),
        ),
        Col("Trading pairs", lambda r: esc(fmt.integer(r["trading_pairs"])), True, sort_key("trading_pairs")),
        Col("Markets seen", lambda r: esc(fmt.integer(r["markets_count"])), True, sort_key("markets_count")),
        Col(
            "Markets volume",
            lambda r: esc(fmt.usd_compact(r["markets_volume_usd_24h"], 2)),
            True,
            sort_key("markets_volume_usd_24h"),
        ),
    ]

    def base(r: Row) -> str:
        pair = esc(r["pair"] or f"{r['base_symbol']}/{r['quote_symbol']}")
        if r["base_asset_id"] in asset_pages:
            return f'<a href="{esc(asset_href(r["base_asset_id"]))}">{pair}</a>'
        return pair

    def deviation(r: Row) -> str:
        value = r["price_deviation_pct"]
        if value is None:
            return fmt.DASH
        tone = "bad" if abs(value) >= 5 else "warn" if abs(value) >= 1 else "ok"
        return f'<span class="dev dev-{tone}">{esc(fmt.pct(value, 2, signed=True))}</span>'

    pair_cols = [
        Col("Exchange", lambda r: esc(r["exchange_name"]), sort=lambda r: r["exchange_name"]),
        Col("Pair", base, sort=lambda r: r["pair"]),
        Col("Price", lambda r: esc(fmt.price(r["price_usd"])), True, sort_key("price_usd")),
        Col("Asset price", lambda r: esc(fmt.price(r["asset_price_usd"])), True, sort_key("asset_price_usd")),
        Col("Deviation", deviation, True, sort_key("price_deviation_pct")),
        Col("Volume (24h)", lambda r: esc(fmt.usd_compact(r["volume_usd_24h"], 2)), True, sort_key("volume_usd_24h")),
        Col(
            "Share of exchange",
            lambda r: esc(fmt.pct(r["volume_share_of_exchange_pct"], 1)),
            True,
            sort_key("volume_share_of_exchange_pct"),
        ),
    ]
    pairs_block = (
        empty(ex.pairs.reason, "pairs")
        if isinstance(ex.pairs, Unavailable)
        else table(
            pair_cols,
            pairs[:300],
            name="pairs",
            filterable=True,
            caption=_shown_of(min(300, len(pairs)), ex.pairs_total.get("markets") or 0, "markets")
            + " by 24h volume · deviation: the pair's "
            "USD price against the asset's price in the closest assets snapshot",
        )
    )
    subtitle = f"{esc(fmt.day(ex.report_date))} · from the day's latest exchanges and markets snapshots"
    body = "".join(
        [
            heading("Exchanges & markets", subtitle),
            kpis(tiles),
            '<div class="grid">',
            card(
                "Volume share by exchange",
                chart_or_empty(share_chart),
                subtitle="Share of the 24h volume of all exchanges",
                name="volume-share",
            ),
            card(
                "Top pairs by volume",
                chart_or_empty(pairs_chart, "No markets in the latest snapshot."),
                subtitle="24h volume (USD) of the largest markets",
                name="top-pairs",
            ),
            card(
                "Volume share over time",
                trend,
                subtitle="Leading exchanges, per UTC day",
                wide=True,
                name="share-trend",
            )
            if trend
            else "",
            card(
                "Exchanges", table(ex_cols, exchanges, name="exchanges", filterable=True), wide=True, name="exchanges"
            ),
            card("Markets", pairs_block, wide=True, name="pairs"),
            "</div>",
        ]
    )
    return frame(title="Exchanges & markets", active="exchanges", body=body, data=data, nav=nav)


def _shown_of(shown: int, total: int, what: str) -> str:
    return f"All {total:,} {what}" if shown >= total else f"The {shown:,} largest of {total:,} {what}"
