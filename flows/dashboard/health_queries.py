"""What the pipeline health page reads: runs, rows and credits per day, freshness and failures from
`ops.pipeline_runs`, and the data-quality results from `ops.dq_results`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb

from flows.dashboard.reader import (
    DQ_RESULTS,
    PIPELINE_RUNS,
    RUN_HINT,
    Reader,
    Row,
    Unavailable,
    empty,
    missing,
)
from flows.datasets import SNAPSHOT_DATASETS
from flows.redaction import redact_row

# How old the latest successful snapshot of a dataset may be, when the latest quality run does not say: the
# default schedules refresh reference data daily and markets weekly (prefect.yaml), plus slack for a late run.
DEFAULT_FRESHNESS_HOURS = {"assets": 36.0, "rates": 36.0, "exchanges": 36.0, "markets": 8 * 24.0, "dbt": 36.0}


@dataclass
class Health:
    now: datetime
    runs_by_day: list[Row]  # report_date, ok_runs, failed_runs
    rows_by_day: list[Row]  # report_date, step, valid, quarantined
    credits_by_day: list[Row]  # report_date, step, credits
    freshness: list[Row]  # step, last_success, age_hours, threshold_hours, last_failure
    failures: list[Row]  # started_at, snapshot_id, steps, error: one per failed run and error
    totals: Row  # runs, failed_runs, credits, served, valid, quarantined over the window
    last_run: Row | None
    quality: Quality | Unavailable


@dataclass
class Quality:
    run_id: str
    checked_at: datetime
    snapshot_id: str | None
    latest: list[Row]  # every check of the latest quality run, worst first
    runs: list[Row]  # run_id, checked_at, snapshot_id, pass, warn, fail, error (oldest first)
    failing: list[Row]  # recent non-passing results across runs, newest first


def load_health(r: Reader, now: datetime, days: int = 30) -> Health | Unavailable:
    """The health page's data over the last `days` days (the quality results when `ops.dq_results` exists)."""
    if not r.scalar(f"select count(*) from {PIPELINE_RUNS}"):
        return empty(PIPELINE_RUNS)
    since = (now - timedelta(days=days)).date()
    # One run = one flow run (or one snapshot id when a step ran outside Prefect); it failed if any step did.
    runs = f"""
        select coalesce(flow_run_id, snapshot_id) as run_key,
               min(started_at) as started_at,
               bool_or(status = 'failed') as failed,
               list(distinct step order by step) as steps,
               any_value(snapshot_id) as snapshot_id
        from {PIPELINE_RUNS}
        group by 1
    """
    runs_by_day = r.rows(
        f"""
        select cast(started_at as date) as report_date,
               count(*) filter (where not failed) as ok_runs,
               count(*) filter (where failed) as failed_runs
        from ({runs})
        where cast(started_at as date) >= ?
        group by 1 order by 1
        """,
        [since],
    )
    last_run = next(
        iter(
            r.rows(
                f"select run_key, started_at, failed, steps, snapshot_id from ({runs}) order by started_at desc limit 1"
            )
        ),  # noqa: E501
        None,
    )
    rows_by_day = r.rows(
        f"""
        select cast(started_at as date) as report_date, step,
               sum(coalesce(valid, 0)) as valid, sum(coalesce(quarantined, 0)) as quarantined,
               sum(coalesce(served, 0)) as served
        from {PIPELINE_RUNS}
        where step <> 'dbt' and cast(started_at as date) >= ?
        group by 1, 2 order by 1, 2
        """,
        [since],
    )
    credits_by_day = r.rows(
        f"""
        select cast(started_at as date) as report_date, step, sum(coalesce(credits, 0)) as credits
        from {PIPELINE_RUNS}
        where step <> 'dbt' and cast(started_at as date) >= ?
        group by 1, 2 order by 1, 2
        """,
        [since],
    )
    totals = r.rows(
        f"""
        select count(distinct coalesce(flow_run_id, snapshot_id)) as runs,
               count(distinct coalesce(flow_run_id, snapshot_id)) filter (where status = 'failed') as failed_runs,
               sum(coalesce(credits, 0)) as credits, sum(coalesce(served, 0)) as served,
               sum(coalesce(valid, 0)) as valid, sum(coalesce(quarantined, 0)) as quarantined
        from {PIPELINE_RUNS}
        where cast(started_at as date) >= ?
        """,
        [since],
    )[0]
    steps = r.rows(
        f"""
        select step,
               max(case when step = 'dbt' then started_at
                        else coalesce(try_strptime(snapshot_id, '%Y%m%dT%H%M%SZ')::timestamptz, started_at) end)
                   filter (where status = 'completed') as last_success,
               max(started_at) filter (where status = 'failed') as last_failure
        from {PIPELINE_RUNS}
        group by step
        """
    )
    thresholds = _freshness_thresholds(r)
    order = {s: i for i, s in enumerate((*SNAPSHOT_DATASETS, "dbt"))}
    freshness = []
    for row in sorted(steps, key=lambda s: (order.get(s["step"], 99), s["step"])):
        success = row["last_success"]
        age = (now - success).total_seconds() / 3600 if success else None
        threshold = thresholds.get(row["step"], DEFAULT_FRESHNESS_HOURS.get(row["step"], 36.0))
        freshness.append({**row, "age_hours": age, "threshold_hours": threshold})
    # one row per failed run and error: a run whose four extractions hit the same error shows it once
    failures = r.rows(
        f"""
        select min(started_at) as started_at, snapshot_id, list(distinct step order by step) as steps,
               coalesce(error, '(no message recorded)') as error
        from {PIPELINE_RUNS}
        where status = 'failed'
        group by coalesce(flow_run_id, snapshot_id), snapshot_id, coalesce(error, '(no message recorded)')
        order by started_at desc
        limit 20
        """
    )
    failures = [redact_row(f) for f in failures]  # rows written before redaction, or by other tools
    quality = _quality(r) if r.has(DQ_RESULTS) else missing(DQ_RESULTS)
    return Health(now, runs_by_day, rows_by_day, credits_by_day, freshness, failures, totals, last_run, quality)


def _freshness_thresholds(r: Reader) -> dict[str, float]:
    """Freshness thresholds (hours) per dataset from the latest quality run's freshness checks, when it has any."""
    if not r.has(DQ_RESULTS):
        return {}
    try:
        rows = r.rows(
            f"""
            select dataset, threshold from {DQ_RESULTS}
            where category = 'freshness' and threshold is not null
              and run_id = (select run_id from {DQ_RESULTS} order by checked_at desc limit 1)
            """
        )
    except duckdb.Error:
        return {}
    return {row["dataset"]: float(row["threshold"]) for row in rows if row["dataset"]}


_STATUS_ORDER = "case status when 'error' then 0 when 'fail' then 1 when 'warn' then 2 else 3 end"


def _quality(r: Reader) -> Quality | Unavailable:
    try:
        latest = r.rows(f"select run_id, checked_at, snapshot_id from {DQ_RESULTS} order by checked_at desc limit 1")
        if not latest:
            return Unavailable(f"{DQ_RESULTS} has no results yet: {RUN_HINT} to check a snapshot.")
        head = latest[0]
        checks = r.rows(
            f"""
            select check_name, category, dataset, severity, status, observed, threshold, failing_rows, detail,
                   description, snapshot_id, checked_at
            from {DQ_RESULTS}
            where run_id = ?
            order by {_STATUS_ORDER}, category, check_name, dataset
            """,
            [head["run_id"]],
        )
        runs = r.rows(
            f"""
            select run_id, max(checked_at) as checked_at, any_value(snapshot_id) as snapshot_id,
                   count(*) filter (where status = 'pass') as pass,
                   count(*) filter (where status = 'warn') as warn,
                   count(*) filter (where status = 'fail') as fail,
                   count(*) filter (where status = 'error') as error
            from {DQ_RESULTS}
            group by run_id
            order by checked_at desc
            limit 60
            """
        )
        failing = r.rows(
            f"""
            select checked_at, run_id, snapshot_id, check_name, dataset, severity, status, observed, threshold,
                   failing_rows, detail
            from {DQ_RESULTS}
            where status <> 'pass'
            order by checked_at desc, {_STATUS_ORDER}, check_name
            limit 50
            """
        )
    except duckdb.Error as exc:
        return Unavailable(f"Cannot read {DQ_RESULTS} ({str(exc).splitlines()[0]}).")
    checks, failing = [redact_row(c) for c in checks], [redact_row(f) for f in failing]  # details shown as stored
    return Quality(head["run_id"], head["checked_at"], head["snapshot_id"], checks, runs[::-1], failing)
