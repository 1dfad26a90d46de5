"""The pipeline health page: runs, credits, rows valid and quarantined, freshness, data quality, failures."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import date

from flows.dashboard import charts
from flows.dashboard import formatting as fmt
from flows.dashboard.charts import Series
from flows.dashboard.health_queries import Quality
from flows.dashboard.pages.components import (
    Col,
    card,
    chart_or_empty,
    empty,
    heading,
    kpi,
    kpis,
    sort_key,
    status_pill,
    table,
)
from flows.dashboard.pages.layout import Nav, esc, frame
from flows.dashboard.queries import DashboardData
from flows.dashboard.reader import Row, Unavailable
from flows.datasets import SNAPSHOT_DATASETS

DATASET_COLORS = dict(zip((*SNAPSHOT_DATASETS, "dbt"), charts.PALETTE, strict=False))


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
            f'<div class="mini"><h3>{esc(step)} <span class="muted">{fmt.compact(valid_total)} valid · '
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
            lambda r: f'<span class="asset-name">{esc(r["step"] if r["step"] != "dbt" else "marts (dbt)")}</span>',
        ),
        Col("Latest success", lambda r: esc(fmt.utc(r["last_success"]))),
        Col("Age", lambda r: esc(fmt.duration(r["age_hours"] * 3600 if r["age_hours"] is not None else None)), True),
        Col("Threshold", lambda r: esc(fmt.duration(r["threshold_hours"] * 3600)), True),
        Col("", fresh_meter),
        Col("State", fresh_state),
    ]
    failure_cols = [
        Col("When", lambda r: esc(fmt.utc(r["started_at"]))),
        Col("Snapshot", lambda r: f"<code>{esc(r['snapshot_id'])}</code>"),
        Col("Failed steps", lambda r: esc(", ".join(r["steps"] or []))),
        Col("Error", lambda r: f'<span class="error-line">{esc(r["error"])}</span>'),
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
            lambda r: f'<span class="check-name" title="{esc(r["description"])}">{esc(r["check_name"])}</span>',
            sort=lambda r: r["check_name"],
        ),
        Col("Dataset", lambda r: esc(r["dataset"])),
        Col("Severity", lambda r: esc(r["severity"])),
        Col("Observed", lambda r: esc(_measure(r["observed"])), True, sort_key("observed")),
        Col("Threshold", lambda r: esc(_measure(r["threshold"])), True, sort_key("threshold")),
        Col("Failing rows", lambda r: esc(fmt.integer(r["failing_rows"])), True, sort_key("failing_rows")),
        Col("Detail", lambda r: f'<span class="detail">{esc(r["detail"])}</span>'),
    ]
    statuses = defaultdict(int)
    for c in q.latest:
        statuses[c["status"]] += 1
    summary = " · ".join(f"{statuses[s]} {s}" for s in ("pass", "warn", "fail", "error") if statuses[s])
    latest = card(
        "Data-quality checks, latest run",
        table(check_cols, q.latest, name="quality-latest", filterable=len(q.latest) > 12),
        subtitle=f"{esc(summary)} · checked {esc(fmt.utc(q.checked_at))}"
        + (f" · snapshot <code>{esc(q.snapshot_id)}</code>" if q.snapshot_id else ""),
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
        Col("Checked", lambda r: esc(fmt.utc(r["checked_at"]))),
        Col("Snapshot", lambda r: f"<code>{esc(r['snapshot_id'] or fmt.DASH)}</code>"),
        Col("Status", lambda r: status_pill(r["status"])),
        Col("Check", lambda r: esc(r["check_name"])),
        Col("Dataset", lambda r: esc(r["dataset"])),
        Col("Detail", lambda r: f'<span class="detail">{esc(r["detail"])}</span>'),
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
