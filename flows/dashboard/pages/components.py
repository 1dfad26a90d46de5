"""The parts the dashboard's pages are built of: headings, KPI tiles, cards, the "no data yet" panel, tables,
changes and status pills. Each returns HTML with every value from the data escaped."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from flows.dashboard import formatting as fmt
from flows.dashboard.pages.layout import esc
from flows.dashboard.reader import Row

STATUS_TONES = {"pass": "ok", "warn": "warn", "fail": "bad", "error": "bad", "completed": "ok", "failed": "bad"}


def heading(title: str, subtitle: str = "", extra: str = "") -> str:
    sub = f'<p class="subtitle">{subtitle}</p>' if subtitle else ""
    return f'<div class="page-head"><div><h1>{esc(title)}</h1>{sub}</div>{extra}</div>'


def kpi(label: str, value: str, sub: str = "", tone: str = "", name: str = "") -> str:
    tone_class = f" tone-{tone}" if tone else ""
    sub_html = f'<div class="kpi-sub{tone_class}">{esc(sub)}</div>' if sub else ""
    key = f' data-kpi="{esc(name)}"' if name else ""
    return (
        f'<div class="kpi"{key}><div class="kpi-label">{esc(label)}</div>'
        f'<div class="kpi-value">{esc(value)}</div>{sub_html}</div>'
    )


def kpis(items: Iterable[str]) -> str:
    return f'<div class="kpis">{"".join(items)}</div>'


def card(title: str, body: str, *, subtitle: str = "", wide: bool = False, name: str = "") -> str:
    sub = f'<p class="card-sub">{subtitle}</p>' if subtitle else ""
    key = f' data-card="{esc(name)}"' if name else ""
    return (
        f'<section class="card{" wide" if wide else ""}"{key}><header><h2>{esc(title)}</h2>{sub}</header>'
        f"{body}</section>"
    )


def empty(reason: str, name: str = "") -> str:
    """The "no data yet" panel: what is missing and the command that fills it."""
    key = f' data-empty="{esc(name)}"' if name else ""
    return (
        f'<div class="empty"{key}><svg viewBox="0 0 24 24" aria-hidden="true"><circle cx="12" cy="12" r="10" '
        f'fill="none" stroke="#8a94a6" stroke-width="1.6"/><path d="M12 7v6M12 16.5v.5" stroke="#8a94a6" '
        f'stroke-width="1.8" stroke-linecap="round"/></svg><div><strong>No data yet</strong>'
        f"<p>{with_code(reason)}</p></div></div>"
    )


def with_code(text: str) -> str:
    """Escape `text`, then show its `backticked` parts as code."""
    parts = esc(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def chart_or_empty(chart_html: str, reason: str = "Not enough data for this chart yet.") -> str:
    return chart_html or f'<p class="muted">{esc(reason)}</p>'


def change(value: float | None, digits: int = 2) -> str:
    """A signed percentage, green up, red down."""
    if value is None:
        return f'<span class="chg">{fmt.DASH}</span>'
    tone = "up" if value > 0 else "down" if value < 0 else "flat"
    return f'<span class="chg {tone}">{esc(fmt.pct(value, digits, signed=True))}</span>'


def status_pill(status: str | None) -> str:
    tone = STATUS_TONES.get(status or "", "muted")
    return f'<span class="pill pill-{tone}">{esc(status or "unknown")}</span>'


@dataclass(frozen=True)
class Col:
    """A table column: header, how to render a row's cell (already-escaped HTML), and alignment."""

    title: str
    cell: Callable[[Row], str]
    num: bool = False
    sort: Callable[[Row], Any] | None = None  # a sort key for the page's click-to-sort


def table(cols: Sequence[Col], rows: Iterable[Row], *, name: str, filterable: bool = False, caption: str = "") -> str:
    head = "".join(f'<th{" class=num" if c.num else ""} scope="col">{esc(c.title)}</th>' for c in cols)
    body = []
    for row in rows:
        cells = []
        for c in cols:
            sort = ""
            if c.sort is not None:
                key = c.sort(row)
                sort = f' data-sort="{esc("" if key is None else key)}"'
            cells.append(f"<td{' class=num' if c.num else ''}{sort}>{c.cell(row)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    tools = ""
    if filterable:
        tools = (
            f'<div class="table-tools"><input type="search" placeholder="Filter…" aria-label="Filter rows" '
            f'data-filter="{esc(name)}"></div>'
        )
    cap = f'<p class="table-note">{esc(caption)}</p>' if caption else ""
    return (
        f'{tools}<div class="table-wrap"><table class="data" data-table="{esc(name)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>{cap}"
    )


def sort_key(key: str) -> Callable[[Row], Any]:
    """A column's sort key: the row's raw `key` value (a number sorts as a number, not as its formatted text)."""
    return lambda r: r.get(key)
