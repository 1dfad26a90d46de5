"""The checks that cross systems, so stay in Python: the lake against the warehouse, freshness from the schedules.

Checks that read one model's rows are dbt data tests (dbt/tests/generic/dq_*.sql, wired in each model's yml);
flows/quality/dbt_results.py turns their results into rows of the same report.

- completeness: each dataset extracted in the snapshot landed a valid row, the contracts rejected few records
  (the run metrics the extraction wrote, ops.pipeline_runs), and the marts hold exactly the rows that landed;
- freshness: each dataset's latest snapshot in the marts, and each lake table's latest file (dbt source
  freshness), is younger than its schedule allows (flows/quality/freshness.py).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flows.quality.context import DATASETS, LOOKBACK_DAYS, Context, as_utc, snap_of, sql_date, sql_in, sql_timestamp
from flows.quality.freshness import run_source_freshness
from flows.quality.registry import Outcome, Probe, check
from flows.quality.report import fmt


def records(names: list[str], rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [dict(zip(names, row, strict=True)) for row in rows]


def runs_population(ctx: Context) -> str:
    """The latest completed run of each dataset of the snapshot (or each dataset's latest run) in ops.pipeline_runs."""
    if ctx.snapshot_id is not None:
        at = snap_of("assets", ctx.snapshot_id)
        since = sql_timestamp(at.snapshot_ts - timedelta(days=1))
        scope = f"snapshot_id = '{ctx.snapshot_id}' and started_at >= {since}"
    else:
        scope = f"started_at >= {sql_timestamp(ctx.now - timedelta(days=LOOKBACK_DAYS))}"
    return f"""
select step, snapshot_id, valid, quarantined
from (
    select
        step, snapshot_id, valid, quarantined,
        row_number() over (partition by step order by started_at desc, recorded_at desc) as recency
    from {ctx.runs_table}
    where status = 'completed' and step in ({sql_in(DATASETS)}) and {scope}
) as runs
where recency = 1
order by step""".strip()


# -- completeness


@check("completeness.datasets_non_empty", "all", "Every dataset extracted in the snapshot landed a valid row.")
def datasets_non_empty(ctx: Context) -> Probe:
    def judge(names: list[str], rows: list[tuple[Any, ...]]) -> Outcome:
        runs = records(names, rows)
        empty = [r["step"] for r in runs if not r["valid"]]
        fewest = min((int(r["valid"] or 0) for r in runs), default=None)
        if empty:
            detail = f"{len(empty)} of {len(runs)} datasets landed no valid row: {', '.join(empty)}"
        else:
            detail = f"{len(runs)} datasets checked; fewest rows {fmt(fewest)}"
        return Outcome(bool(empty), fewest, None, len(empty), detail, ctx.snapshot_id)

    return Probe(runs_population(ctx), judge)


@check("completeness.quarantine_rate", "all", "The share of records rejected by the contracts stays below the limit.")
def quarantine_rate(ctx: Context) -> Probe:
    limit = ctx.settings.dq_max_quarantine_pct

    def judge(names: list[str], rows: list[tuple[Any, ...]]) -> Outcome:
        rates = {}
        for r in records(names, rows):
            valid, quarantined = int(r["valid"] or 0), int(r["quarantined"] or 0)
            rates[r["step"]] = 100.0 * quarantined / (valid + quarantined) if valid + quarantined else 0.0
        over = sorted((d for d, rate in rates.items() if rate > limit), key=lambda d: -rates[d])
        highest = max(rates.values(), default=None)
        if over:
            samples = ", ".join(f"{d} {rates[d]:.2f}%" for d in over[:5])
            detail = f"{len(over)} of {len(rates)} datasets quarantined more than {fmt(limit)}% of their records: "
            detail += samples
        else:
            detail = f"{len(rates)} datasets checked; highest rate (%) {fmt(highest)}"
        return Outcome(bool(over), highest, limit, len(over), detail, ctx.snapshot_id)

    return Probe(runs_population(ctx), judge)


@check("completeness.marts_match_lake", "all", "The marts hold exactly the valid rows each dataset landed in the lake.")
def marts_match_lake(ctx: Context) -> Probe | Outcome:
    targets = ctx.checked_targets()
    if not targets:
        return Outcome(False, None, 0, 0, "no snapshot to compare")
    modeled = "\n    union all\n".join(
        f"    select '{t.dataset}' as dataset, '{t.snapshot_id}' as snapshot_id, count(*) as modeled"
        f" from {ctx.table(t.dataset)} where {t.where()}"
        for t in targets
    )
    since = sql_timestamp(min(t.snapshot_ts for t in targets) - timedelta(days=1))
    sql = f"""
select m.dataset, m.modeled, r.valid
from (
{modeled}
) as m
inner join (
    select
        step, snapshot_id, valid,
        row_number() over (partition by step, snapshot_id order by started_at desc, recorded_at desc) as recency
    from {ctx.runs_table}
    where status = 'completed' and snapshot_id in ({sql_in(t.snapshot_id for t in targets)}) and started_at >= {since}
) as r
    on r.step = m.dataset and r.snapshot_id = m.snapshot_id and r.recency = 1
order by m.dataset""".strip()

    def judge(names: list[str], rows: list[tuple[Any, ...]]) -> Outcome:
        counts = records(names, rows)
        off = [c for c in counts if int(c["modeled"] or 0) != int(c["valid"] or 0)]
        total = sum(abs(int(c["modeled"] or 0) - int(c["valid"] or 0)) for c in counts)
        if off:
            samples = ", ".join(f"{c['dataset']} {c['modeled']} modeled vs {c['valid']} landed" for c in off)
            detail = f"{len(off)} of {len(counts)} datasets differ between the marts and the lake: {samples}"
        else:
            detail = f"{len(counts)} datasets checked; rows missing or extra {fmt(total)}"
        return Outcome(bool(off), float(total), None, len(off), detail, ctx.snapshot_id)

    return Probe(sql, judge)


# -- freshness


def freshness_check(dataset: str) -> None:
    @check(
        f"freshness.{dataset}",
        dataset,
        f"The marts' latest {dataset} snapshot is younger than the schedule allows (two missed runs plus an hour).",
    )
    def build(ctx: Context) -> Probe | None:
        if dataset not in ctx.landed_datasets():
            return None  # never extracted here: nothing to go stale
        f = ctx.freshness[dataset]
        since = ctx.now.date() - timedelta(days=f.lookback_days)
        limit = f.error_hours
        sql = f"select max(snapshot_ts) as latest from {ctx.table(dataset)} where snapshot_date >= {sql_date(since)}"

        def judge(names: list[str], rows: list[tuple[Any, ...]]) -> Outcome:
            latest = rows[0][0] if rows else None
            if latest is None:
                detail = f"no {dataset} snapshot in the marts in the last {f.lookback_days} days (limit {limit:g} h)"
                return Outcome(True, None, limit, 0, detail)
            age = (ctx.now - as_utc(latest)).total_seconds() / 3600
            verb = "is older than" if age > limit else "is within"
            detail = f"latest {dataset} snapshot is {age:.1f} h old: {verb} {limit:g} h (from {f.source})"
            return Outcome(age > limit, age, limit, 0, detail)

        return Probe(sql, judge)


for name in DATASETS:
    freshness_check(name)


@check("freshness.lake_sources", "lake", "dbt source freshness on the lake: each snapshot table's latest file is "
       "younger than the schedule allows (two missed runs plus an hour).")  # fmt: skip
def lake_sources(ctx: Context) -> Outcome | None:
    landed = ctx.landed_datasets()
    if not landed:
        return None
    measured = run_source_freshness(ctx.settings, sorted(landed))
    stale, late, ages = [], [], []
    for table, age, problem in measured:
        f = ctx.freshness[table]
        if age is not None:
            ages.append(age)
        if problem or age is None or age > f.error_hours:
            what = problem or (f"{age:.1f} h old" if age is not None else f"no file in {f.lookback_days} days")
            stale.append(f"{table} {what} (limit {f.error_hours:g} h)")
        elif age > f.warn_hours:
            late.append(f"{table} {age:.1f} h old (a run missed: {f.warn_hours:g} h)")
    parts = [f"stale: {', '.join(stale)}"] if stale else []
    parts += [f"late: {', '.join(late)}"] if late else []
    oldest = max(ages) if ages else None
    detail = "; ".join(parts) or f"{len(measured)} lake tables fresh (oldest {fmt(oldest)} h)"
    return Outcome(bool(stale), oldest, None, len(stale), detail)
