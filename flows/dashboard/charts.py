"""Inline SVG charts rendered in Python: no JavaScript library, no network, every label escaped.

Each chart is an HTML `<figure class="chart" data-chart="<id>">` holding one `<svg>`; the shapes that carry data
have the class `mark` (tests count them), and every data point has a `<title>` tooltip. Sizes are in SVG user
units inside a `viewBox`, so charts scale with their card.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from html import escape

from flows.dashboard import formatting as fmt

# Tableau 10: distinct, colour-blind-aware, and calm on white.
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f")
OTHERS = "#c7ccd4"
PRIMARY = "#2f5d9e"
ACCENT = "#f28e2b"
VIOLET = "#8a5cc2"
UP = "#1a9b5b"
DOWN = "#d64545"
WARN = "#e0a100"
MUTED = "#8a94a6"
GRID = "#e7eaf0"
AXIS_TEXT = "#6b7385"

Number = float | int | None
Formatter = Callable[[float | None], str]
X = date | datetime


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _r(value: float) -> str:
    """Coordinates with one decimal keep the SVG small."""
    return "%.1f" % value  # noqa: UP031 - the fastest formatting, and charts format a lot of numbers


@dataclass(frozen=True)
class Series:
    """One series of a time chart. `kind`: line, area (line filled to zero) or bar."""

    name: str
    values: Sequence[Number]
    color: str
    kind: str = "line"
    dashed: bool = False
    width: float = 2.0


@dataclass(frozen=True)
class Bar:
    """One bar of a horizontal bar chart."""

    label: str
    value: float
    color: str = PRIMARY
    note: str = ""  # extra tooltip text
    href: str | None = None


# ----------------------------------------------------------------------------------------------- scales and axes


def nice_ticks(low: float, high: float, count: int = 5, integers: bool = False) -> list[float]:
    """Round tick values covering [low, high] (about `count` of them); whole numbers only with `integers`."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0]
    if high < low:
        low, high = high, low
    if high == low:
        pad = abs(high) * 0.05 or 1.0
        low, high = low - pad, high + pad
    raw = (high - low) / max(1, count - 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    steps = (1, 2, 5, 10) if integers else (1, 2, 2.5, 5, 10)
    step = next(m * magnitude for m in steps if m * magnitude >= raw)
    if integers:
        step = max(1.0, round(step))
    first = math.floor(low / step) * step
    ticks = []
    tick = first
    while tick < high + step * 0.999:
        ticks.append(round(tick, 12))
        tick += step
    return ticks


def axis_formatter(ticks: Sequence[float], prefix: str = "", suffix: str = "") -> Formatter:
    """Labels with just enough precision to tell neighbouring ticks apart: $84K … $86K, $0.9995 … $1.0005."""
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else abs(ticks[0]) or 1.0
    top = max(abs(t) for t in ticks) if ticks else 0.0
    units = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K"))
    unit, letter = next(((u, s) for u, s in units if top >= u and not suffix), (1.0, ""))
    decimals = max(0, min(8, -math.floor(math.log10(step / unit) + 1e-9))) if step else 0
    while decimals < 8 and abs(round(step / unit, decimals) - step / unit) > 1e-9 * (step / unit):
        decimals += 1  # a step of 2.5K needs one decimal: $82.5K, not $82K

    def label(value: float | None) -> str:
        if value is None:
            return fmt.DASH
        if value == 0:
            return f"{prefix}0{suffix}"
        sign = "-" if value < 0 else ""
        text = f"{abs(value) / unit:,.{decimals}f}"
        return f"{sign}{prefix}{text}{letter}{suffix}"

    return label


def _x_number(x: X) -> float:
    if isinstance(x, datetime):
        return x.timestamp() / 86400
    return float(x.toordinal())


def _x_label(x: X, span_days: float) -> str:
    if isinstance(x, datetime) and span_days < 2:
        return f"{x:%H:%M}"
    return fmt.short_day(x.date() if isinstance(x, datetime) else x)


def _x_tip(x: X) -> str:
    return fmt.utc(x) if isinstance(x, datetime) else fmt.day(x)


def legend(entries: Sequence[tuple[str, str, bool]]) -> str:
    """An HTML legend: (name, colour, dashed) per entry."""
    items = []
    for name, color, dashed in entries:
        dash = ' stroke-dasharray="3 2"' if dashed else ""
        swatch = (
            f'<svg class="swatch" viewBox="0 0 14 10" aria-hidden="true"><line x1="0" y1="5" x2="14" y2="5" '
            f'stroke="{color}" stroke-width="3"{dash}/></svg>'
        )
        items.append(f"<li>{swatch}{_e(name)}</li>")
    return f'<ul class="legend">{"".join(items)}</ul>'


def _figure(chart_id: str, svg: str, caption: str = "", legend_html: str = "") -> str:
    cap = f'<figcaption class="chart-note">{_e(caption)}</figcaption>' if caption else ""
    return f'<figure class="chart" data-chart="{_e(chart_id)}">{legend_html}{svg}{cap}</figure>'


def _svg_open(width: float, height: float, label: str) -> str:
    return (
        f'<svg viewBox="0 0 {_r(width)} {_r(height)}" role="img" aria-label="{_e(label)}" '
        f'preserveAspectRatio="xMidYMid meet" xmlns="http://www.w3.org/2000/svg">'
    )


# ------------------------------------------------------------------------------------------------- time chart


def time_chart(
    chart_id: str,
    xs: Sequence[X],
    series: Sequence[Series],
    *,
    label: str,
    prefix: str = "",
    suffix: str = "",
    value_format: Formatter | None = None,
    height: float = 250,
    width: float = 720,
    stacked: bool = False,
    zero_based: bool = False,
    integers: bool = False,
    caption: str = "",
) -> str:
    """Lines, areas and (optionally stacked) bars over dates or timestamps, with gridlines and tooltips.

    `integers`: the values are counts, so the axis ticks are whole numbers."""
    n = len(xs)
    # a bar series that is zero throughout (no failed runs) draws nothing: keep it out of the legend too
    shown = [s for s in series if any(v is not None and (s.kind != "bar" or v != 0) for v in s.values)]
    if n == 0 or not shown:
        return ""
    bars = [s for s in shown if s.kind == "bar"]
    lines = [s for s in shown if s.kind != "bar"]
    values: list[float] = []
    for s in lines:
        values.extend(float(v) for v in s.values if v is not None)
    if bars:
        if stacked:
            for i in range(n):
                values.append(sum(float(s.values[i] or 0) for s in bars))
        else:
            values.extend(float(v) for s in bars for v in s.values if v is not None)
        values.append(0.0)
    if zero_based:
        values.append(0.0)
    low, high = min(values), max(values)
    if high > low:
        # breathing room above and below, without ever pushing an all-positive axis below zero
        pad = (high - low) * 0.06
        low, high = (low - pad if low < 0 or low - pad >= 0 else 0.0), high + pad
    ticks = nice_ticks(low, high, integers=integers)
    y_lo, y_hi = ticks[0], ticks[-1]
    tick_label = axis_formatter(ticks, prefix, suffix)
    tip = value_format or tick_label

    left = 14 + 7.0 * max(len(tick_label(t)) for t in ticks)
    right, top, bottom = 14.0, 10.0, 26.0
    plot_w, plot_h = width - left - right, height - top - bottom
    xn = [_x_number(x) for x in xs]
    x_lo, x_hi = min(xn), max(xn)
    span = x_hi - x_lo
    gaps = [b - a for a, b in zip(xn, xn[1:], strict=False) if b > a]
    step = min(gaps) if gaps else 1.0
    band_px = plot_w / (span / step + 1) if span else plot_w / 3
    inset = band_px / 2 if bars or n == 1 else 0.0

    def px(i: int) -> float:
        if not span:
            return left + plot_w / 2
        return left + inset + (xn[i] - x_lo) / span * (plot_w - 2 * inset)

    def py(value: float) -> float:
        return top + plot_h - (value - y_lo) / (y_hi - y_lo) * plot_h

    tips = [_x_tip(x) for x in xs]
    parts = [_svg_open(width, height, label)]
    for t in ticks:
        y = py(t)
        parts.append(f'<line class="gridline" x1="{_r(left)}" x2="{_r(width - right)}" y1="{_r(y)}" y2="{_r(y)}"/>')
        parts.append(
            f'<text class="axis" x="{_r(left - 6)}" y="{_r(y + 3.5)}" text-anchor="end">{_e(tick_label(t))}</text>'
        )  # noqa: E501
    label_count = max(1, min(n, int(plot_w // 90)))
    picks = sorted({round(i * (n - 1) / max(1, label_count - 1)) for i in range(label_count)}) if n > 1 else [0]
    for i in picks:
        anchor = "middle"
        if n > 1 and i == 0 and inset < 20:
            anchor = "start"
        elif n > 1 and i == n - 1 and inset < 20:
            anchor = "end"
        parts.append(
            f'<text class="axis" x="{_r(px(i))}" y="{_r(height - 8)}" text-anchor="{anchor}">'
            f"{_e(_x_label(xs[i], span))}</text>"
        )

    if bars:
        bar_w = max(1.0, band_px * (0.72 if n > 1 else 0.4) / (1 if stacked else len(bars)))
        base = py(max(y_lo, 0.0))
        for i in range(n):
            offset = 0.0
            for k, s in enumerate(bars):
                value = s.values[i]
                if value is None or value == 0:
                    continue
                if stacked:
                    y0, y1 = py(offset), py(offset + float(value))
                    offset += float(value)
                    x = px(i) - bar_w / 2
                else:
                    y0, y1 = base, py(float(value))
                    x = px(i) - bar_w * len(bars) / 2 + k * bar_w
                top_y, h = min(y0, y1), max(0.6, abs(y0 - y1))
                parts.append(
                    f'<rect class="mark bar" x="{_r(x)}" y="{_r(top_y)}" width="{_r(bar_w)}" height="{_r(h)}" '
                    f'fill="{s.color}"><title>{_e(tips[i])}: {_e(s.name)} {_e(tip(float(value)))}</title></rect>'
                )

    for s in lines:
        segments: list[list[tuple[float, float]]] = [[]]
        for i, v in enumerate(s.values):
            if v is None:
                if segments[-1]:
                    segments.append([])
                continue
            segments[-1].append((px(i), py(float(v))))
        segments = [seg for seg in segments if seg]
        dash = ' stroke-dasharray="5 4"' if s.dashed else ""
        for seg in segments:
            d = "M" + " L".join(f"{_r(x)} {_r(y)}" for x, y in seg)
            if s.kind == "area" and len(seg) > 1:
                floor = py(y_lo)  # filled down to the axis floor, which is zero unless values go below it
                area = d + f" L{_r(seg[-1][0])} {_r(floor)} L{_r(seg[0][0])} {_r(floor)} Z"
                parts.append(f'<path class="area" d="{area}" fill="{s.color}" fill-opacity="0.12" stroke="none"/>')
            if len(seg) > 1:
                parts.append(
                    f'<path class="mark line" d="{d}" fill="none" stroke="{s.color}" '
                    f'stroke-width="{s.width}" stroke-linejoin="round" stroke-linecap="round"{dash}/>'
                )
            if len(seg) == 1 or n <= 3:
                for x, y in seg:
                    parts.append(f'<circle class="mark dot" cx="{_r(x)}" cy="{_r(y)}" r="3.5" fill="{s.color}"/>')

    # one invisible column per x, whose tooltip lists every line at that point (bars carry their own)
    col_w = plot_w / n if n > 1 else plot_w
    for i in range(n) if lines else ():
        lines_txt = [tips[i]] + [
            f"{s.name}: {tip(None if s.values[i] is None else float(s.values[i]))}"  # type: ignore[arg-type]
            for s in shown
        ]
        cx = px(i)
        parts.append(
            f'<rect class="hit" x="{_r(max(left, cx - col_w / 2))}" y="{_r(top)}" width="{_r(col_w)}" '
            f'height="{_r(plot_h)}"><title>{_e(chr(10).join(lines_txt))}</title></rect>'
        )
    parts.append("</svg>")
    entries = [(s.name, s.color, s.dashed) for s in shown]
    legend_html = legend(entries) if len(shown) > 1 else ""
    return _figure(chart_id, "".join(parts), caption, legend_html)


# ----------------------------------------------------------------------------------------- horizontal bars


def bar_chart(
    chart_id: str,
    bars: Sequence[Bar],
    *,
    label: str,
    value_format: Formatter,
    width: float = 560,
    row: float = 24,
    label_width: float = 150,
    caption: str = "",
) -> str:
    """Horizontal bars, one per row, labelled on the left and valued on the right; negatives grow leftwards."""
    if not bars:
        return ""
    values = [b.value for b in bars]
    low, high = min(0.0, *values), max(0.0, *values)
    value_w = 64.0
    top = 4.0
    height = top + row * len(bars) + 4
    plot_x = label_width + 8 + (value_w if low < 0 else 0.0)  # negative values are labelled left of their bar
    plot_w = width - plot_x - (value_w if high > 0 else 8.0)
    span = (high - low) or 1.0

    def px(value: float) -> float:
        return plot_x + (value - low) / span * plot_w

    zero = px(0.0)
    parts = [_svg_open(width, height, label)]
    if low < 0 < high:
        parts.append(f'<line class="zero" x1="{_r(zero)}" x2="{_r(zero)}" y1="0" y2="{_r(height)}"/>')
    for i, b in enumerate(bars):
        y = top + i * row
        mid = y + row / 2
        text = b.label if len(b.label) <= 24 else b.label[:23] + "…"
        name = f'<text class="label" x="{_r(label_width)}" y="{_r(mid + 4)}" text-anchor="end">{_e(text)}</text>'
        if b.href:
            name = f'<a href="{_e(b.href)}">{name}</a>'
        parts.append(name)
        x0, x1 = sorted((zero, px(b.value)))
        tip = f"{b.label}: {value_format(b.value)}" + (f" ({b.note})" if b.note else "")
        parts.append(
            f'<rect class="mark bar" x="{_r(x0)}" y="{_r(y + 4)}" width="{_r(max(1.0, x1 - x0))}" '
            f'height="{_r(row - 8)}" rx="2" fill="{b.color}"><title>{_e(tip)}</title></rect>'
        )
        if b.value >= 0:
            parts.append(f'<text class="value" x="{_r(x1 + 6)}" y="{_r(mid + 4)}">{_e(value_format(b.value))}</text>')
        else:
            parts.append(
                f'<text class="value" x="{_r(x0 - 6)}" y="{_r(mid + 4)}" text-anchor="end">'
                f"{_e(value_format(b.value))}</text>"
            )
    parts.append("</svg>")
    return _figure(chart_id, "".join(parts), caption)


# ------------------------------------------------------------------------------------------------------- donut


def donut(
    chart_id: str,
    slices: Sequence[tuple[str, float, str]],
    *,
    label: str,
    value_format: Formatter,
    center_title: str = "",
    center_value: str = "",
    caption: str = "",
) -> str:
    """A donut of (name, value, colour) slices with an HTML legend; slices of zero are left out."""
    slices = [s for s in slices if s[1] > 0]
    total = sum(v for _, v, _ in slices)
    if not slices or total <= 0:
        return ""
    size, outer, inner = 220.0, 100.0, 62.0
    c = size / 2
    parts = [_svg_open(size, size, label)]
    angle = -math.pi / 2
    for name, value, color in slices:
        sweep = value / total * 2 * math.pi
        tip = f"{name}: {value_format(value)} ({value / total * 100:.1f}%)"
        if sweep >= 2 * math.pi - 1e-9:  # one slice: a full ring
            parts.append(
                f'<circle class="mark slice" cx="{c}" cy="{c}" r="{(outer + inner) / 2}" fill="none" '
                f'stroke="{color}" stroke-width="{outer - inner}"><title>{_e(tip)}</title></circle>'
            )
            break
        end = angle + sweep
        large = 1 if sweep > math.pi else 0
        p = [
            (c + outer * math.cos(angle), c + outer * math.sin(angle)),
            (c + outer * math.cos(end), c + outer * math.sin(end)),
            (c + inner * math.cos(end), c + inner * math.sin(end)),
            (c + inner * math.cos(angle), c + inner * math.sin(angle)),
        ]
        d = (
            f"M{_r(p[0][0])} {_r(p[0][1])} A{outer} {outer} 0 {large} 1 {_r(p[1][0])} {_r(p[1][1])} "
            f"L{_r(p[2][0])} {_r(p[2][1])} A{inner} {inner} 0 {large} 0 {_r(p[3][0])} {_r(p[3][1])} Z"
        )
        parts.append(
            f'<path class="mark slice" d="{d}" fill="{color}" stroke="#fff" stroke-width="1.5">'
            f"<title>{_e(tip)}</title></path>"
        )
        angle = end
    if center_title:
        parts.append(f'<text class="donut-title" x="{c}" y="{c - 6}" text-anchor="middle">{_e(center_title)}</text>')
    if center_value:
        parts.append(f'<text class="donut-value" x="{c}" y="{c + 16}" text-anchor="middle">{_e(center_value)}</text>')
    parts.append("</svg>")
    items = "".join(
        f'<li><svg class="swatch" viewBox="0 0 10 10" aria-hidden="true"><rect width="10" height="10" rx="2" '
        f'fill="{color}"/></svg><span class="legend-name">{_e(name)}</span>'
        f'<span class="legend-value">{_e(f"{value / total * 100:.1f}%")}</span></li>'
        for name, value, color in slices
    )
    body = f'<div class="donut-wrap">{"".join(parts)}<ul class="legend legend-table">{items}</ul></div>'
    return _figure(chart_id, body, caption)


# --------------------------------------------------------------------------------------------------- sparkline


def sparkline(values: Sequence[Number], *, label: str, width: float = 96, height: float = 26) -> str:
    """A tiny price line, green when the last value is at or above the first, red otherwise."""
    points = [(i, float(v)) for i, v in enumerate(values) if v is not None]
    if len(points) < 2:
        return ""
    lo, hi = min(v for _, v in points), max(v for _, v in points)
    span_y = (hi - lo) or 1.0
    last = len(values) - 1 or 1
    coords = " ".join(
        f"{_r(2 + i / last * (width - 4))},{_r(height - 3 - (v - lo) / span_y * (height - 6))}" for i, v in points
    )
    color = UP if points[-1][1] >= points[0][1] else DOWN
    return (
        f'<svg class="spark" viewBox="0 0 {_r(width)} {_r(height)}" role="img" aria-label="{_e(label)}" '
        f'xmlns="http://www.w3.org/2000/svg"><polyline class="mark spark-line" points="{coords}" fill="none" '
        f'stroke="{color}" stroke-width="1.5" stroke-linejoin="round"/></svg>'
    )


def meter(fraction: float, *, color: str, label: str, width: float = 120, height: float = 10) -> str:
    """A small horizontal gauge (0..1, clipped) for table cells: share of volume, age against a threshold."""
    share = min(1.0, max(0.0, fraction))
    return (
        f'<svg class="meter" viewBox="0 0 {_r(width)} {_r(height)}" role="img" aria-label="{_e(label)}" '
        f'xmlns="http://www.w3.org/2000/svg"><rect width="{_r(width)}" height="{_r(height)}" rx="3" fill="{GRID}"/>'
        f'<rect class="mark meter-fill" width="{_r(max(1.0, share * width))}" height="{_r(height)}" rx="3" '
        f'fill="{color}"><title>{_e(label)}</title></rect></svg>'
    )
