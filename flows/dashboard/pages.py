"""The dashboard's HTML pages: market overview, asset detail, exchanges and markets, pipeline health.

Pure functions from `queries` data to HTML strings. Every value that comes from the data (asset names come
from the API) goes through `_e` (HTML escaping, quotes included); no inline scripts or styles, so the server
can forbid both with its Content-Security-Policy.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from html import escape
from typing import Any
from urllib.parse import quote

from flows.dashboard import charts
from flows.dashboard import formatting as fmt
from flows.dashboard.charts import Bar, Series
from flows.dashboard.queries import (
    SNAPSHOT_DATASETS,
    AssetHistory,
    DashboardData,
    Quality,
    Row,
    Unavailable,
    snapshot_time,
)

TOP_ASSETS = 50
DOMINANCE_SLICES = 10
MOVERS = 15
STATUS_TONES = {"pass": "ok", "warn": "warn", "fail": "bad", "error": "bad", "completed": "ok", "failed": "bad"}
DATASET_COLORS = dict(zip((*SNAPSHOT_DATASETS, "dbt"), charts.PALETTE, strict=False))


def _e(text: object) -> str:
    return escape("" if text is None else str(text), quote=True)


# --------------------------------------------------------------------------------------------- page frame


@dataclass(frozen=True)
class Nav:
    """Where the pages are, relative to the site root."""

    default_asset_href: str | None

    def links(self) -> list[tuple[str, str, str]]:
        assets = self.default_asset_href or "assets/index.html"
        return [
            ("overview", "Market overview", "index.html"),
            ("asset", "Assets", assets),
            ("exchanges", "Exchanges & markets", "exchanges.html"),
            ("health", "Pipeline health", "health.html"),
        ]


def asset_slug(asset_id: str) -> str:
    """A file name for an asset page: the id if it is already safe, else a cleaned id plus a short hash."""
    clean = re.sub(r"[^a-z0-9-]+", "-", asset_id.lower()).strip("-")[:80] or "asset"
    if clean == asset_id:
        return clean
    return f"{clean}-{hashlib.sha1(asset_id.encode()).hexdigest()[:8]}"


def asset_href(asset_id: str) -> str:
    return f"assets/{quote(asset_slug(asset_id))}.html"


LOGO = (
    '<svg class="logo" viewBox="0 0 24 24" aria-hidden="true"><circle cx="12" cy="12" r="11" fill="#2f5d9e"/>'
    '<path d="M6 15.5l3.5-4 3 2.5L18 8" fill="none" stroke="#fff" stroke-width="2.2" stroke-linecap="round" '
    'stroke-linejoin="round"/></svg>'
)


def frame(
    *,
    title: str,
    active: str,
    body: str,
    data: DashboardData,
    nav: Nav,
    depth: int = 0,
    scripts: Sequence[str] = (),
) -> str:
    """A full page: header with navigation and the data's moment, the body, and a footer."""
    root = "../" * depth
    links = "".join(
        f'<a href="{_e(root + href)}"{" class=active aria-current=page" if key == active else ""}>{_e(label)}</a>'
        for key, label, href in nav.links()
    )
    as_of = data.as_of
    stamp = f"Data as of {fmt.utc(as_of)}" if as_of else "No snapshot yet"
    extra = "".join(f'<script src="{_e(root + s)}" defer></script>' for s in scripts)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)} · CoinCap pipeline</title>
<link rel="icon" href="{root}static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="{root}static/dashboard.css">
{extra}<script src="{root}static/dashboard.js" defer></script>
</head>
<body data-page="{_e(active)}">
<header class="topbar">
  <div class="topbar-inner">
    <a class="brand" href="{root}index.html">{LOGO}<span>CoinCap pipeline</span></a>
    <nav class="tabs">{links}</nav>
    <span class="stamp" title="{_e(data.warehouse)}">{_e(stamp)}</span>
  </div>
</header>
<main>
{body}
</main>
<footer>Built {_e(fmt.utc(data.loaded_at))} from {_e(data.warehouse.name)} · refresh with
<code>coincap-pipeline dashboard</code> after a run</footer>
</body>
</html>
"""


# ------------------------------------------------------------------------------------------------ components


def heading(title: str, subtitle: str = "", extra: str = "") -> str:
    sub = f'<p class="subtitle">{subtitle}</p>' if subtitle else ""
    return f'<div class="page-head"><div><h1>{_e(title)}</h1>{sub}</div>{extra}</div>'


def kpi(label: str, value: str, sub: str = "", tone: str = "", name: str = "") -> str:
    tone_class = f" tone-{tone}" if tone else ""
    sub_html = f'<div class="kpi-sub{tone_class}">{_e(sub)}</div>' if sub else ""
    key = f' data-kpi="{_e(name)}"' if name else ""
    return (
        f'<div class="kpi"{key}><div class="kpi-label">{_e(label)}</div>'
        f'<div class="kpi-value">{_e(value)}</div>{sub_html}</div>'
    )


def kpis(items: Iterable[str]) -> str:
    return f'<div class="kpis">{"".join(items)}</div>'


def card(title: str, body: str, *, subtitle: str = "", wide: bool = False, name: str = "") -> str:
    sub = f'<p class="card-sub">{subtitle}</p>' if subtitle else ""
    key = f' data-card="{_e(name)}"' if name else ""
    return (
        f'<section class="card{" wide" if wide else ""}"{key}><header><h2>{_e(title)}</h2>{sub}</header>'
        f"{body}</section>"
    )


def empty(reason: str, name: str = "") -> str:
    """The "no data yet" panel: what is missing and the command that fills it."""
    key = f' data-empty="{_e(name)}"' if name else ""
    return (
        f'<div class="empty"{key}><svg viewBox="0 0 24 24" aria-hidden="true"><circle cx="12" cy="12" r="10" '
        f'fill="none" stroke="#8a94a6" stroke-width="1.6"/><path d="M12 7v6M12 16.5v.5" stroke="#8a94a6" '
        f'stroke-width="1.8" stroke-linecap="round"/></svg><div><strong>No data yet</strong>'
        f"<p>{with_code(reason)}</p></div></div>"
    )


def with_code(text: str) -> str:
    """Escape `text`, then show its `backticked` parts as code."""
    parts = _e(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def chart_or_empty(chart_html: str, reason: str = "Not enough data for this chart yet.") -> str:
    return chart_html or f'<p class="muted">{_e(reason)}</p>'


def change(value: float | None, digits: int = 2) -> str:
    """A signed percentage, green up, red down."""
    if value is None:
        return f'<span class="chg">{fmt.DASH}</span>'
    tone = "up" if value > 0 else "down" if value < 0 else "flat"
    return f'<span class="chg {tone}">{_e(fmt.pct(value, digits, signed=True))}</span>'


def status_pill(status: str | None) -> str:
    tone = STATUS_TONES.get(status or "", "muted")
    return f'<span class="pill pill-{tone}">{_e(status or "unknown")}</span>'


@dataclass(frozen=True)
class Col:
    """A table column: header, how to render a row's cell (already-escaped HTML), and alignment."""

    title: str
    cell: Callable[[Row], str]
    num: bool = False
    sort: Callable[[Row], Any] | None = None  # a sort key for the page's click-to-sort


def table(cols: Sequence[Col], rows: Iterable[Row], *, name: str, filterable: bool = False, caption: str = "") -> str:
    head = "".join(f'<th{" class=num" if c.num else ""} scope="col">{_e(c.title)}</th>' for c in cols)
    body = []
    for row in rows:
        cells = []
        for c in cols:
            sort = ""
            if c.sort is not None:
                key = c.sort(row)
                sort = f' data-sort="{_e("" if key is None else key)}"'
            cells.append(f"<td{' class=num' if c.num else ''}{sort}>{c.cell(row)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    tools = ""
    if filterable:
        tools = (
            f'<div class="table-tools"><input type="search" placeholder="Filter…" aria-label="Filter rows" '
            f'data-filter="{_e(name)}"></div>'
        )
    cap = f'<p class="table-note">{_e(caption)}</p>' if caption else ""
    return (
        f'{tools}<div class="table-wrap"><table class="data" data-table="{_e(name)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>{cap}"
    )


def _num(key: str) -> Callable[[Row], Any]:
    return lambda r: r.get(key)


def asset_label(symbol: str | None, name: str | None, asset_id: str) -> str:
    return f"{name or asset_id} ({symbol})" if symbol else (name or asset_id)


# ------------------------------------------------------------------------------------------- market overview


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
        label = f'<span class="asset-name">{_e(r["asset_name"] or r["asset_id"])}</span>'
        symbol = f'<span class="symbol">{_e(r["asset_symbol"] or "")}</span>'
        if r["asset_id"] in asset_pages:
            return f'<a href="{_e(asset_href(r["asset_id"]))}">{label}</a> {symbol}'
        return f"{label} {symbol}"

    def spark(r: Row) -> str:
        line = ov.sparks.get(r["asset_id"], [])
        return charts.sparkline(line, label=f"{r['asset_symbol'] or r['asset_id']}, last 30 days") or fmt.DASH

    cols = [
        Col("#", lambda r: _e(r["asset_rank"] if r["asset_rank"] is not None else fmt.DASH), True, _num("asset_rank")),
        Col("Asset", name_cell, sort=lambda r: r["asset_name"] or r["asset_id"]),
        Col("Price", lambda r: _e(fmt.price(r["price_usd"])), True, _num("price_usd")),
        Col("24h", lambda r: change(r["change_percent_24h"]), True, _num("change_percent_24h")),
        Col("Market cap", lambda r: _e(fmt.usd_compact(r["market_cap_usd"], 2)), True, _num("market_cap_usd")),
        Col("Volume (24h)", lambda r: _e(fmt.usd_compact(r["volume_usd_24h"], 2)), True, _num("volume_usd_24h")),
        Col("Dominance", lambda r: _e(fmt.pct(r["dominance_pct"], 2)), True, _num("dominance_pct")),
        Col("30 days", spark),
    ]
    subtitle = (
        f"{_e(fmt.day(ov.report_date))} · latest snapshot <code>{_e(ov.snapshot_id or '')}</code> "
        f"({_e(fmt.utc(stamp))})"
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


# ----------------------------------------------------------------------------------------------- asset detail


def asset_page(data: DashboardData, nav: Nav, history: AssetHistory, latest_day: date) -> str:
    """One asset's page; `latest_day` is the latest day of any asset (an asset missing from it is flagged)."""
    rows = history.rows
    last = rows[-1]
    days = [r["report_date"] for r in rows]
    title = history.name or history.asset_id
    slug = _e(asset_slug(history.asset_id))
    picker = (
        '<label class="picker">Asset <select id="asset-picker" aria-label="Choose an asset" '
        f'data-current="{slug}"><option value="{slug}" selected>'
        f"{_e(asset_label(history.symbol, history.name, history.asset_id))}</option></select></label>"
    )
    rank = f'<span class="pill pill-muted">rank {history.rank}</span> ' if history.rank else ""
    stale = ""
    if last["report_date"] != latest_day:
        stale = f' · <span class="tone-warn">not listed on the latest day ({_e(fmt.day(latest_day))})</span>'
    subtitle = (
        f"{rank}<span class=symbol>{_e(history.symbol or '')}</span> · {len(rows):,} day{'s' if len(rows) != 1 else ''}"
        f" from {_e(fmt.day(days[0]))} to {_e(fmt.day(days[-1]))}{stale}"
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
        Col("Day", lambda r: _e(fmt.day(r["report_date"])), sort=lambda r: r["report_date"].isoformat()),
        Col("Open", lambda r: _e(fmt.price(r["open_price_usd"])), True, _num("open_price_usd")),
        Col("High", lambda r: _e(fmt.price(r["high_price_usd"])), True, _num("high_price_usd")),
        Col("Low", lambda r: _e(fmt.price(r["low_price_usd"])), True, _num("low_price_usd")),
        Col("Close", lambda r: _e(fmt.price(r["close_price_usd"])), True, _num("close_price_usd")),
        Col("1d", lambda r: change(r["pct_change_1d"]), True, _num("pct_change_1d")),
        Col("Volume (24h)", lambda r: _e(fmt.usd_compact(r["volume_usd_24h"], 2)), True, _num("volume_usd_24h")),
        Col("Market cap", lambda r: _e(fmt.usd_compact(r["market_cap_usd"], 2)), True, _num("market_cap_usd")),
        Col("Source", lambda r: _e(r["price_source"] or fmt.DASH)),
        Col("Snapshots", lambda r: _e(fmt.integer(r["snapshot_count"])), True, _num("snapshot_count")),
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


def _shown_of(shown: int, total: int, what: str) -> str:
    return f"All {total:,} {what}" if shown >= total else f"The {shown:,} largest of {total:,} {what}"


def _tone(value: float | None) -> str:
    if value is None:
        return ""
    return "up" if value > 0 else "down" if value < 0 else ""


def _times100(value: float | None) -> float | None:
    return None if value is None else value * 100


# ------------------------------------------------------------------------------------- exchanges and markets


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
            lambda r: _e(r["exchange_rank"] if r["exchange_rank"] is not None else fmt.DASH),
            True,
            _num("exchange_rank"),
        ),
        Col(
            "Exchange",
            lambda r: f'<span class="asset-name">{_e(r["exchange_name"] or r["exchange_id"])}</span>',
            sort=lambda r: r["exchange_name"] or r["exchange_id"],
        ),
        Col("Volume (24h)", lambda r: _e(fmt.usd_compact(r["volume_usd_24h"], 2)), True, _num("volume_usd_24h")),
        Col(
            "Share",
            lambda r: (
                charts.meter(
                    (r["volume_share_pct"] or 0) / 100, color=charts.PALETTE[0], label=fmt.pct(r["volume_share_pct"], 2)
                )
                + f" {_e(fmt.pct(r['volume_share_pct'], 1))}"
            ),
            True,
            _num("volume_share_pct"),
        ),
        Col("Trading pairs", lambda r: _e(fmt.integer(r["trading_pairs"])), True, _num("trading_pairs")),
        Col("Markets seen", lambda r: _e(fmt.integer(r["markets_count"])), True, _num("markets_count")),
        Col(
            "Markets volume",
            lambda r: _e(fmt.usd_compact(r["markets_volume_usd_24h"], 2)),
            True,
            _num("markets_volume_usd_24h"),
        ),
    ]

    def base(r: Row) -> str:
        pair = _e(r["pair"] or f"{r['base_symbol']}/{r['quote_symbol']}")
        if r["base_asset_id"] in asset_pages:
            return f'<a href="{_e(asset_href(r["base_asset_id"]))}">{pair}</a>'
        return pair

    def deviation(r: Row) -> str:
        value = r["price_deviation_pct"]
        if value is None:
            return fmt.DASH
        tone = "bad" if abs(value) >= 5 else "warn" if abs(value) >= 1 else "ok"
        return f'<span class="dev dev-{tone}">{_e(fmt.pct(value, 2, signed=True))}</span>'

    pair_cols = [
        Col("Exchange", lambda r: _e(r["exchange_name"]), sort=lambda r: r["exchange_name"]),
        Col("Pair", base, sort=lambda r: r["pair"]),
        Col("Price", lambda r: _e(fmt.price(r["price_usd"])), True, _num("price_usd")),
        Col("Asset price", lambda r: _e(fmt.price(r["asset_price_usd"])), True, _num("asset_price_usd")),
        Col("Deviation", deviation, True, _num("price_deviation_pct")),
        Col("Volume (24h)", lambda r: _e(fmt.usd_compact(r["volume_usd_24h"], 2)), True, _num("volume_usd_24h")),
        Col(
            "Share of exchange",
            lambda r: _e(fmt.pct(r["volume_share_of_exchange_pct"], 1)),
            True,
            _num("volume_share_of_exchange_pct"),
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
    subtitle = f"{_e(fmt.day(ex.report_date))} · from the day's latest exchanges and markets snapshots"
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


# -------------------------------------------------------------------------------------------- pipeline health


def health_page(data: DashboardData, nav: Nav) -> str:
    hl = data.health
    if isinstance(hl, Unavailable):
        body = heading("Pipeline health") + empty(hl.reason, "health")
        return frame(title="Pipeline health", active="health", body=body, data=data, nav=nav)
    totals = hl.totals
    last = hl.last_run
    valid, quarantined = totals["valid"] or 0, totals["quarantined"] or 0
    q = hl.quality
    if isinstance(q, Quality):
        counts = defaultdict(int)
        for c in q.latest:
            counts[c["status"]] += 1
        bad = counts["fail"] + counts["error"]
        dq_tile = kpi(
            "Data quality (latest run)",
            "failing" if bad else "warnings" if counts["warn"] else "all pass",
            f"{counts['pass']} pass · {counts['warn']} warn · {bad} fail",
            "down" if bad else "warn" if counts["warn"] else "up",
            "quality",
        )
    else:
        dq_tile = kpi("Data quality (latest run)", fmt.DASH, "no checks recorded yet", name="quality")
    tiles = [
        kpi(
            "Last run",
            "failed" if last and last["failed"] else "ok" if last else fmt.DASH,
            f"{fmt.duration(hl.now - last['started_at'])} ago · {len(last['steps'] or [])} steps" if last else "",
            "down" if last and last["failed"] else "up",
            "last_run",
        ),
        kpi(
            "Runs (30 days)",
            fmt.integer(totals["runs"]),
            f"{fmt.integer(totals['failed_runs'])} failed",
            "down" if totals["failed_runs"] else "",
            "runs",
        ),
        kpi(
            "Rows valid (30 days)",
            fmt.compact(valid),
            f"{fmt.compact(quarantined)} quarantined "
            f"({fmt.pct(quarantined / (valid + quarantined) * 100 if valid + quarantined else None, 2)})",
            "down" if quarantined else "",
            "rows",
        ),
        kpi("Credits (30 days)", fmt.integer(totals["credits"]), "CoinCap credits billed", name="credits"),
        dq_tile,
    ]

    run_days = [r["report_date"] for r in hl.runs_by_day]
    runs_chart = charts.time_chart(
        "runs",
        run_days,
        [
            Series("Succeeded", [r["ok_runs"] for r in hl.runs_by_day], charts.UP, "bar"),
            Series("Failed", [r["failed_runs"] for r in hl.runs_by_day], charts.DOWN, "bar"),
        ],
        label="Pipeline runs per day",
        stacked=True,
        value_format=lambda v: fmt.integer(v),
        integers=True,
        height=210,
    )
    credit_days = sorted({r["report_date"] for r in hl.credits_by_day})
    credit_steps = _ordered_steps(r["step"] for r in hl.credits_by_day)
    credits = {(r["report_date"], r["step"]): r["credits"] for r in hl.credits_by_day}
    credits_chart = charts.time_chart(
        "credits",
        credit_days,
        [
            Series(s, [credits.get((d, s), 0) for d in credit_days], DATASET_COLORS.get(s, charts.MUTED), "bar")
            for s in credit_steps
        ],
        label="CoinCap credits per day by dataset",
        stacked=True,
        value_format=lambda v: fmt.integer(v),
        integers=True,
        height=210,
    )

    row_days = sorted({r["report_date"] for r in hl.rows_by_day})
    by_step: dict[str, dict[date, Row]] = defaultdict(dict)
    for r in hl.rows_by_day:
        by_step[r["step"]][r["report_date"]] = r
    minis = []
    for step in _ordered_steps(by_step):
        days_rows = by_step[step]
        valid_total = sum(r["valid"] for r in days_rows.values())
        q_total = sum(r["quarantined"] for r in days_rows.values())
        mini = charts.time_chart(
            f"rows-{step}",
            row_days,
            [
                Series(
                    "Valid",
                    [days_rows[d]["valid"] if d in days_rows else None for d in row_days],
                    charts.PALETTE[0],
                    "bar",
                ),
                Series(
                    "Quarantined",
                    [days_rows[d]["quarantined"] if d in days_rows else None for d in row_days],
                    charts.DOWN,
                    "bar",
                ),
            ],
            label=f"{step}: rows valid and quarantined per day",
            stacked=True,
            value_format=lambda v: fmt.integer(v),
            integers=True,
            height=170,
            width=420,
        )
        minis.append(
            f'<div class="mini"><h3>{_e(step)} <span class="muted">{fmt.compact(valid_total)} valid · '
            f'<span class="{"tone-down" if q_total else ""}">{fmt.compact(q_total)} quarantined</span></span></h3>'
            f"{chart_or_empty(mini)}</div>"
        )
    rows_block = f'<div class="minis">{"".join(minis)}</div>' if minis else '<p class="muted">No dataset runs yet.</p>'

    def fresh_state(r: Row) -> str:
        if r["age_hours"] is None:
            return status_pill("failed") if r["last_failure"] else fmt.DASH
        ok = r["age_hours"] <= r["threshold_hours"]
        return f'<span class="pill pill-{"ok" if ok else "bad"}">{"fresh" if ok else "stale"}</span>'

    def fresh_meter(r: Row) -> str:
        if r["age_hours"] is None:
            return ""
        ratio = r["age_hours"] / r["threshold_hours"] if r["threshold_hours"] else 1.0
        color = charts.UP if ratio <= 0.75 else charts.WARN if ratio <= 1 else charts.DOWN
        return charts.meter(ratio, color=color, label=f"{ratio * 100:.0f}% of the threshold")

    fresh_cols = [
        Col(
            "Dataset",
            lambda r: f'<span class="asset-name">{_e(r["step"] if r["step"] != "dbt" else "marts (dbt)")}</span>',
        ),
        Col("Latest success", lambda r: _e(fmt.utc(r["last_success"]))),
        Col("Age", lambda r: _e(fmt.duration(r["age_hours"] * 3600 if r["age_hours"] is not None else None)), True),
        Col("Threshold", lambda r: _e(fmt.duration(r["threshold_hours"] * 3600)), True),
        Col("", fresh_meter),
        Col("State", fresh_state),
    ]
    failure_cols = [
        Col("When", lambda r: _e(fmt.utc(r["started_at"]))),
        Col("Snapshot", lambda r: f"<code>{_e(r['snapshot_id'])}</code>"),
        Col("Failed steps", lambda r: _e(", ".join(r["steps"] or []))),
        Col("Error", lambda r: f'<span class="error-line">{_e(r["error"])}</span>'),
    ]
    failures_block = (
        table(failure_cols, hl.failures, name="failures")
        if hl.failures
        else '<p class="muted ok-note">No failed runs recorded.</p>'
    )
    body = "".join(
        [
            heading(
                "Pipeline health",
                "Runs, rows, credits and freshness from <code>ops.pipeline_runs</code>; "
                "data-quality checks from <code>ops.dq_results</code> · last 30 days",
            ),
            kpis(tiles),
            '<div class="grid">',
            card(
                "Runs per day", chart_or_empty(runs_chart), subtitle="Flow runs that succeeded or failed", name="runs"
            ),
            card(
                "Credits per day",
                chart_or_empty(credits_chart),
                subtitle="CoinCap credits billed, by dataset",
                name="credits",
            ),
            card(
                "Rows valid and quarantined",
                rows_block,
                subtitle="Per dataset and day: rows that passed their contract, "
                "and rows set aside in quarantine with a reason",
                wide=True,
                name="rows",
            ),
            card(
                "Freshness",
                table(fresh_cols, hl.freshness, name="freshness"),
                subtitle="Age of the latest successful snapshot of each dataset against its threshold",
                wide=True,
                name="freshness",
            ),
            _quality_cards(q),
            card(
                "Recent failures",
                failures_block,
                subtitle="Newest first, with the one-line error the run reported",
                wide=True,
                name="failures",
            ),
            "</div>",
        ]
    )
    return frame(title="Pipeline health", active="health", body=body, data=data, nav=nav)


def _ordered_steps(steps: Iterable[str]) -> list[str]:
    order = {s: i for i, s in enumerate((*SNAPSHOT_DATASETS, "dbt"))}
    return sorted(set(steps), key=lambda s: (order.get(s, 99), s))


def _measure(value: float | None) -> str:
    if value is None:
        return fmt.DASH
    if value != int(value) or abs(value) < 1:
        return f"{value:,.4g}" if abs(value) < 1000 else fmt.compact(value, 2)
    return fmt.compact(value, 2) if abs(value) >= 10_000 else f"{value:,.0f}"


def _quality_cards(q: Quality | Unavailable) -> str:
    if isinstance(q, Unavailable):
        return card("Data quality", empty(q.reason, "quality"), wide=True, name="quality")
    check_cols = [
        Col(
            "Status",
            lambda r: status_pill(r["status"]),
            sort=lambda r: {"error": 0, "fail": 1, "warn": 2}.get(r["status"], 3),
        ),
        Col(
            "Check",
            lambda r: f'<span class="check-name" title="{_e(r["description"])}">{_e(r["check_name"])}</span>',
            sort=lambda r: r["check_name"],
        ),
        Col("Dataset", lambda r: _e(r["dataset"])),
        Col("Severity", lambda r: _e(r["severity"])),
        Col("Observed", lambda r: _e(_measure(r["observed"])), True, _num("observed")),
        Col("Threshold", lambda r: _e(_measure(r["threshold"])), True, _num("threshold")),
        Col("Failing rows", lambda r: _e(fmt.integer(r["failing_rows"])), True, _num("failing_rows")),
        Col("Detail", lambda r: f'<span class="detail">{_e(r["detail"])}</span>'),
    ]
    statuses = defaultdict(int)
    for c in q.latest:
        statuses[c["status"]] += 1
    summary = " · ".join(f"{statuses[s]} {s}" for s in ("pass", "warn", "fail", "error") if statuses[s])
    latest = card(
        "Data-quality checks, latest run",
        table(check_cols, q.latest, name="quality-latest", filterable=len(q.latest) > 12),
        subtitle=f"{_e(summary)} · checked {_e(fmt.utc(q.checked_at))}"
        + (f" · snapshot <code>{_e(q.snapshot_id)}</code>" if q.snapshot_id else ""),
        wide=True,
        name="quality-latest",
    )
    when = [r["checked_at"] for r in q.runs]
    history_chart = charts.time_chart(
        "quality-runs",
        when,
        [
            Series("fail", [r["fail"] for r in q.runs], charts.DOWN, "bar"),
            Series("error", [r["error"] for r in q.runs], "#9b1c1c", "bar"),
            Series("warn", [r["warn"] for r in q.runs], charts.WARN, "bar"),
        ],
        label="Failing and warning checks per quality run",
        stacked=True,
        value_format=lambda v: fmt.integer(v),
        integers=True,
        width=1180,
        height=200,
        zero_based=True,
    )
    if not any(r["fail"] or r["warn"] or r["error"] for r in q.runs):
        history_chart = ""
    fail_cols = [
        Col("Checked", lambda r: _e(fmt.utc(r["checked_at"]))),
        Col("Snapshot", lambda r: f"<code>{_e(r['snapshot_id'] or fmt.DASH)}</code>"),
        Col("Status", lambda r: status_pill(r["status"])),
        Col("Check", lambda r: _e(r["check_name"])),
        Col("Dataset", lambda r: _e(r["dataset"])),
        Col("Detail", lambda r: f'<span class="detail">{_e(r["detail"])}</span>'),
    ]
    history_body = (history_chart or "") + (
        table(fail_cols, q.failing, name="quality-history") if q.failing else ""
    ) or f'<p class="muted ok-note">Every check passed in the last {len(q.runs)} quality runs.</p>'
    history = card(
        "Failing checks over time",
        history_body,
        wide=True,
        name="quality-history",
        subtitle=f"Checks that failed or warned, across the last {len(q.runs)} quality runs (newest first)",
    )
    return latest + history
