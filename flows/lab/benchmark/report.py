"""The benchmark's results for people: the README's table, what it means, the JSON file and the SVG plot."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

from flows.lab.benchmark.results import (
    BenchmarkReport,
    RunResult,
    SizeResult,
)

TABLE_HEADER = (
    "| markets | pipeline | records | fetch+parse s | validate s | normalize s | write s | wall s | records/min "
    "| dbt s | API→marts s | peak RSS | calls (min) | credits (min) | credits ÷ min |"
)
TABLE_RULE = "|---:|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"


def markdown_table(report: BenchmarkReport) -> str:
    """The results as the README shows them: one row per size and pipeline, then the history row and the machine."""
    lines = [TABLE_HEADER, TABLE_RULE]
    for s in report.sizes:
        lines.append(_row(s, s.ours))
        if s.naive is not None:
            lines.append(_row(s, s.naive))
        elif s.naive_skipped and not s.naive_skipped.startswith("not run"):
            lines.append(f"| {s.markets:,} | naive | {s.records:,} | {s.naive_skipped} |" + " |" * 11)
    if report.history:
        h = report.history
        lines.append(
            f"| history | ours (backfill) | {h.points:,} | | | | | {h.wall_s:.1f} | {h.records_per_min:,.0f} | | "
            f"| {h.peak_rss_mib:,.0f} MiB | {h.calls:,} ({h.min_calls:,}) | {h.credits:,} ({h.min_credits:,}) "
            f"| {_ratio(h.credits, h.min_credits)} |"
        )
    return "\n".join(lines)


def _row(s: SizeResult, r: RunResult) -> str:
    def sec(value: float | None, digits: int = 2) -> str:
        return "—" if value is None else f"{value:.{digits}f}"

    marts = sec(r.to_marts_s, 1)
    return (
        f"| {s.markets:,} | {r.pipeline} | {r.records:,} | {sec(r.fetch_s)} | {sec(r.validate_s)} "
        f"| {sec(r.normalize_s)} | {sec(r.write_s)} | {sec(r.wall_s)} | {r.records_per_min:,.0f} "
        f"| {sec(r.dbt_s, 1)} | {marts} | {r.peak_rss_mib:,.0f} MiB | {r.calls:,} ({s.min_calls:,}) "
        f"| {r.credits:,} ({s.min_credits:,}) | {_ratio(r.credits, s.min_credits)} |"
    )


def _ratio(credits: int, minimum: int) -> str:
    return f"{credits / minimum:.3f}" if minimum else "—"


def summary_lines(report: BenchmarkReport) -> Iterator[str]:
    """What the table means, and how the targets came out, for people."""
    yield (
        "ours: fetch+parse = HTTP + JSON parse in a background thread, overlapped with validation (busy seconds); "
        "validate = contract checks (Pandera) + Arrow; write = Parquet + publish into the lake; wall = first "
        "request to files published. naive: requests → .json(), pd.json_normalize, DataFrame.to_sql into SQLite "
        "(row-by-row INSERT), one after the other; no validation."
    )
    yield "peak RSS: each run in a fresh process, before dbt; calls and credits: metered by the server."
    for s in report.sizes:
        parts = [f"{s.markets:,} markets: ours {s.ours.records_per_min:,.0f} records/min to the lake"]
        if s.naive is not None:
            fetch_only = s.naive.records / s.naive.fetch_s * 60 if s.naive.fetch_s else 0.0
            parts.append(f"naive {s.naive.records_per_min:,.0f}/min (its fetch+parse alone {fetch_only:,.0f}/min)")
        if s.ours.to_marts_s is not None:
            parts.append(f"API → marts {s.ours.to_marts_s:.1f} s")
        parts.append(f"credits {_ratio(s.ours.credits, s.min_credits)} x the minimum")
        yield "; ".join(parts)
    yield f"machine: {report.machine}"


def write_json(report: BenchmarkReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**report.to_json(), "table": markdown_table(report)}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")


def write_svg(report: BenchmarkReport, path: Path) -> None:
    """Two charts side by side, drawn by hand (no plotting dependency): records/min and peak RSS per size,
    ours against the naive baseline, on a logarithmic size axis."""
    sizes = [s.markets for s in report.sizes]
    series = {
        "records/min to the lake (ours) or SQL (naive)": (
            [s.ours.records_per_min for s in report.sizes],
            [s.naive.records_per_min if s.naive else None for s in report.sizes],
        ),
        "peak RSS, MiB (fresh process, before dbt)": (
            [s.ours.peak_rss_mib for s in report.sizes],
            [s.naive.peak_rss_mib if s.naive else None for s in report.sizes],
        ),
    }
    width, height, pad = 460, 300, 56
    panels = []
    for n, (title, (ours, naive)) in enumerate(series.items()):
        panels.append(_svg_panel(n * (width + 20), width, height, pad, title, sizes, ours, naive))
    total_w = 2 * width + 20
    legend = (
        f'<g font-size="12"><rect x="{pad}" y="{height + 8}" width="14" height="4" fill="#1f77b4"/>'
        f'<text x="{pad + 20}" y="{height + 14}">ours (validated, Parquet lake)</text>'
        f'<rect x="{pad + 230}" y="{height + 8}" width="14" height="4" fill="#d62728"/>'
        f'<text x="{pad + 250}" y="{height + 14}">naive (requests → pandas → row-by-row INSERT)</text></g>'
    )
    caption = f'<text x="{pad}" y="{height + 34}" font-size="11" fill="#555">{_xml(report.machine)}</text>'
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{height + 44}" '
        f'font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>'
        + "".join(panels)
        + legend
        + caption
        + "</svg>\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(svg, encoding="utf-8")


def _svg_panel(x0: int, width: int, height: int, pad: int, title: str, sizes: list[int], ours: list[float],
               naive: list[float | None]) -> str:  # fmt: skip
    values = [v for v in [*ours, *naive] if v is not None]
    step = _nice_step((max(values) if values else 1.0) / 4)
    ticks = math.ceil((max(values) if values else 1.0) / step)
    top = step * ticks
    lo, hi = math.log10(min(sizes)), math.log10(max(sizes))
    span = hi - lo or 1.0

    def px(size: int) -> float:
        return x0 + pad + (math.log10(size) - lo) / span * (width - 2 * pad) if hi > lo else x0 + width / 2

    def py(value: float) -> float:
        return height - pad + 20 - value / top * (height - pad - 20)

    parts = [f'<text x="{x0 + pad}" y="16" font-size="13" font-weight="bold">{_xml(title)}</text>']
    for i in range(ticks + 1):  # horizontal grid and its labels
        value = step * i
        y = py(value)
        parts.append(f'<line x1="{x0 + pad}" y1="{y:.1f}" x2="{x0 + width - pad}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{x0 + pad - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end">'
                     f"{_short_number(value)}</text>")  # fmt: skip
    for size in sizes:
        parts.append(f'<text x="{px(size):.1f}" y="{height - pad + 36}" font-size="10" text-anchor="middle">'
                     f"{_short_number(size)}</text>")  # fmt: skip
    parts.append(f'<text x="{x0 + width / 2:.1f}" y="{height - pad + 50}" font-size="11" text-anchor="middle">'
                 "markets served (log scale)</text>")  # fmt: skip
    for color, points in (("#1f77b4", ours), ("#d62728", naive)):
        xy = [(px(size), py(v)) for size, v in zip(sizes, points, strict=True) if v is not None]
        if len(xy) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>' for x, y in xy]
    return "<g>" + "".join(parts) + "</g>"


def _nice_step(value: float) -> float:
    """The smallest of 1, 2, 2.5 or 5 times a power of ten that is at least `value`."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    return next(step * magnitude for step in (1, 2, 2.5, 5, 10) if value <= step * magnitude)


def _short_number(value: float) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            text = f"{value / scale:.1f}".rstrip("0").rstrip(".")
            return f"{text}{unit}"
    return f"{value:.0f}"


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
