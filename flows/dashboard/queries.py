"""What the dashboard reads from the local DuckDB warehouse: the `marts.rpt_*` report marts and the `ops` tables.

Every section loads on its own and comes back either with data or as `Unavailable(reason)`, one line saying
what is missing and what to run, so a fresh checkout, a half-built warehouse or a mart from an older build
shows a panel instead of a crash. The connection is read-only and closed before any page is rendered.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from flows.datasets import SNAPSHOT_DATASETS
from flows.errors import PipelineError
from flows.redaction import redact_row

RUN_HINT = "run `coincap-pipeline run`"
MARKET_OVERVIEW = "marts.rpt_market_overview_daily"
ASSET_DAILY = "marts.rpt_asset_daily"
EXCHANGE_DAILY = "marts.rpt_exchange_daily"
MARKET_PAIRS = "marts.rpt_market_pairs_daily"
PIPELINE_RUNS = "ops.pipeline_runs"
DQ_RESULTS = "ops.dq_results"

# How old the latest successful snapshot of a dataset may be, when the latest quality run does not say: the
# default schedules refresh reference data daily and markets weekly (prefect.yaml), plus slack for a late run.
DEFAULT_FRESHNESS_HOURS = {"assets": 36.0, "rates": 36.0, "exchanges": 36.0, "markets": 8 * 24.0, "dbt": 36.0}

Row = dict[str, Any]


@dataclass(frozen=True)
class Unavailable:
    """A section with nothing to show, and the one line that says why and what to do."""

    reason: str


# ------------------------------------------------------------------------------------------------ page data


@dataclass
class Overview:
    report_date: date
    snapshot_id: str | None
    assets: list[Row]  # the latest day's rows, by market cap (largest first)
    totals: list[Row]  # report_date, total_market_cap_usd, total_volume_usd_24h, asset_count per day
    spark_days: list[date] = field(default_factory=list)
    sparks: dict[str, list[float | None]] = field(default_factory=dict)  # asset_id -> closes on spark_days


@dataclass
class AssetHistory:
    asset_id: str
    symbol: str | None
    name: str | None
    rank: int | None
    rows: list[Row]  # one per report_date, oldest first


@dataclass
class Assets:
    report_date: date
    listing: list[AssetHistory]  # every asset, largest first; `rows` holds only the latest day
    histories: dict[str, AssetHistory]  # the full history of the assets loaded (the largest `asset_pages`)

    def find(self, asset_id: str) -> AssetHistory | None:
        return next((a for a in self.listing if a.asset_id == asset_id), None)


@dataclass
class Exchanges:
    report_date: date
    exchanges: list[Row]  # latest day, by volume
    history: list[Row]  # report_date, exchange_id, exchange_name, volume_usd_24h, volume_share_pct
    pairs: list[Row] | Unavailable  # latest day, the largest 1,000 by volume
    pairs_date: date | None = None
    pairs_total: Row = field(default_factory=dict)  # markets, volume_usd_24h: the whole latest day


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


@dataclass
class DashboardData:
    warehouse: Path
    loaded_at: datetime
    overview: Overview | Unavailable
    assets: Assets | Unavailable
    exchanges: Exchanges | Unavailable
    health: Health | Unavailable

    @property
    def as_of(self) -> datetime | None:
        """The moment of the latest snapshot the market pages show."""
        if isinstance(self.overview, Overview) and self.overview.snapshot_id:
            return snapshot_time(self.overview.snapshot_id)
        return None


# ------------------------------------------------------------------------------------------------ reading


def snapshot_time(snapshot_id: str | None) -> datetime | None:
    """20261121T053000Z → 2026-11-21 05:30:00+00:00 (None if it is not a snapshot id)."""
    if not snapshot_id:
        return None
    try:
        return datetime.strptime(snapshot_id, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def _clean(value: Any) -> Any:
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Reader:
    """A read-only connection to the warehouse and the list of its tables."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        names = con.execute("select lower(table_schema || '.' || table_name) from information_schema.tables").fetchall()
        self.tables = {n for (n,) in names}

    def has(self, table: str) -> bool:
        return table.lower() in self.tables

    def rows(self, sql: str, params: list[Any] | None = None) -> list[Row]:
        cursor = self.con.execute(sql, params or [])
        names = [d[0] for d in cursor.description or []]
        return [{k: _clean(v) for k, v in zip(names, r, strict=True)} for r in cursor.fetchall()]

    def scalar(self, sql: str, params: list[Any] | None = None) -> Any:
        row = self.con.execute(sql, params or []).fetchone()
        return _clean(row[0]) if row else None


@contextmanager
def open_reader(path: Path) -> Iterator[Reader | None]:
    """Yield a reader over the DuckDB file, or None when it does not exist yet."""
    if not path.exists():
        yield None
        return
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.ConnectionException:
        # this process already holds the file read-write (dbt-duckdb after an in-process build): share it
        con = duckdb.connect(str(path))
    except duckdb.IOException as exc:
        raise PipelineError(
            f"Cannot open the warehouse {path} ({str(exc).splitlines()[0]}).",
            "A pipeline run may be writing it: wait for the run to finish and try again.",
        ) from None
    try:
        con.execute("set TimeZone = 'UTC'")
        con.execute("set enable_progress_bar = false")
        yield Reader(con)
    finally:
        con.close()


def _missing(table: str) -> Unavailable:
    return Unavailable(f"{table} does not exist yet: {RUN_HINT} to build it.")


def _empty(table: str) -> Unavailable:
    return Unavailable(f"{table} is empty: {RUN_HINT} to take a snapshot.")


def _section(table: str, load: Any, reader: Reader) -> Any:
    """Run one section's loader; a missing table or an unreadable mart becomes an `Unavailable` panel."""
    if not reader.has(table):
        return _missing(table)
    try:
        return load(reader)
    except duckdb.Error as exc:
        first = str(exc).splitlines()[0]
        return Unavailable(f"Cannot read {table} ({first}); rebuild the marts: {RUN_HINT}.")


def load_dashboard_data(
    warehouse: Path, *, history_days: int = 365, asset_pages: int | None = None, now: datetime | None = None
) -> DashboardData:
    """Read everything the pages show. `history_days` bounds the time series (days before the latest day);
    the full history is loaded for the largest `asset_pages` assets (None: all), the others are only listed."""
    loaded_at = now or datetime.now(UTC)
    with open_reader(warehouse) as reader:
        if reader is None:
            nothing = Unavailable(f"There is no warehouse at {warehouse} yet: {RUN_HINT} to take a first snapshot.")
            return DashboardData(warehouse, loaded_at, nothing, nothing, nothing, nothing)
        return DashboardData(
            warehouse=warehouse,
            loaded_at=loaded_at,
            overview=_section(MARKET_OVERVIEW, lambda r: _overview(r, history_days), reader),
            assets=_section(ASSET_DAILY, lambda r: _assets(r, history_days, asset_pages), reader),
            exchanges=_section(EXCHANGE_DAILY, lambda r: _exchanges(r, history_days), reader),
            health=_section(PIPELINE_RUNS, lambda r: _health(r, loaded_at), reader),
        )


# ----------------------------------------------------------------------------------------------- sections


def _overview(r: Reader, history_days: int) -> Overview | Unavailable:
    latest = r.scalar(f"select max(report_date) from {MARKET_OVERVIEW}")
    if latest is None:
        return _empty(MARKET_OVERVIEW)
    assets = r.rows(
        f"""
        select asset_id, asset_symbol, asset_name, asset_rank, price_usd, market_cap_usd, volume_usd_24h,
               change_percent_24h, dominance_pct, total_market_cap_usd, total_volume_usd_24h, snapshot_id
        from {MARKET_OVERVIEW}
        where report_date = ?
        order by market_cap_usd desc nulls last, asset_rank nulls last, asset_id
        """,
        [latest],
    )
    totals = r.rows(
        f"""
        select report_date, max(total_market_cap_usd) as total_market_cap_usd,
               max(total_volume_usd_24h) as total_volume_usd_24h, count(*) as asset_count
        from {MARKET_OVERVIEW}
        where report_date >= ?
        group by report_date
        order by report_date
        """,
        [latest - timedelta(days=history_days)],
    )
    overview = Overview(latest, assets[0]["snapshot_id"] if assets else None, assets, totals)
    if r.has(ASSET_DAILY):
        spark_from = latest - timedelta(days=29)
        ids = [a["asset_id"] for a in assets[:100]]
        rows = r.rows(
            f"""
            select asset_id, report_date, close_price_usd
            from {ASSET_DAILY}
            where report_date between ? and ? and list_contains(?, asset_id)
            order by report_date
            """,
            [spark_from, latest, ids],
        )
        overview.spark_days = sorted({row["report_date"] for row in rows})
        index = {d: i for i, d in enumerate(overview.spark_days)}
        for row in rows:
            line = overview.sparks.setdefault(row["asset_id"], [None] * len(index))
            line[index[row["report_date"]]] = row["close_price_usd"]
    return overview


_ASSET_COLUMNS = (
    "report_date, asset_id, asset_symbol, asset_name, open_price_usd, high_price_usd, low_price_usd, "
    "close_price_usd, moving_avg_7d, moving_avg_30d, volatility_30d, volatility_30d_annualised, volume_usd_24h, "
    "market_cap_usd, pct_change_1d, pct_change_7d, pct_change_30d, price_source, snapshot_count"
)


def _assets(r: Reader, history_days: int, asset_pages: int | None) -> Assets | Unavailable:
    latest = r.scalar(f"select max(report_date) from {ASSET_DAILY}")
    if latest is None:
        return _empty(ASSET_DAILY)
    # every asset's latest day (an asset delisted today keeps its last day), ranked by the latest overview
    rank_join, rank_col = "", "cast(null as bigint)"
    if r.has(MARKET_OVERVIEW):
        rank_join = f"""
            left join (
                select asset_id, asset_rank from {MARKET_OVERVIEW}
                where report_date = (select max(report_date) from {MARKET_OVERVIEW})
            ) as o using (asset_id)
        """
        rank_col = "o.asset_rank"
    listing_rows = r.rows(
        f"""
        with last_day as (
            select * from {ASSET_DAILY}
            qualify row_number() over (partition by asset_id order by report_date desc) = 1
        )
        select {", ".join(f"d.{c.strip()}" for c in _ASSET_COLUMNS.split(","))}, {rank_col} as asset_rank
        from last_day as d
        {rank_join}
        order by d.report_date = ? desc, {rank_col} nulls last, d.market_cap_usd desc nulls last, d.asset_id
        """,
        [latest],
    )
    listing = [
        AssetHistory(
            row["asset_id"], row["asset_symbol"], row["asset_name"],
            None if row["asset_rank"] is None else int(row["asset_rank"]), [row],
        )
        for row in listing_rows
    ]  # fmt: skip
    wanted = [a.asset_id for a in (listing if asset_pages is None else listing[:asset_pages])]
    histories = _histories(r, wanted, latest, history_days)
    for entry in listing:
        if entry.asset_id in histories:
            histories[entry.asset_id] = AssetHistory(
                entry.asset_id, entry.symbol, entry.name, entry.rank, histories[entry.asset_id].rows
            )
    return Assets(latest, listing, histories)


def _histories(r: Reader, asset_ids: list[str], latest: date, history_days: int) -> dict[str, AssetHistory]:
    if not asset_ids:
        return {}
    rows = r.rows(
        f"""
        select {_ASSET_COLUMNS} from {ASSET_DAILY}
        where report_date >= ? and list_contains(?, asset_id)
        order by asset_id, report_date
        """,
        [latest - timedelta(days=history_days), asset_ids],
    )
    grouped: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        grouped[row["asset_id"]].append(row)
    return {k: AssetHistory(k, v[-1]["asset_symbol"], v[-1]["asset_name"], None, v) for k, v in grouped.items()}


def load_asset_history(warehouse: Path, asset_id: str, *, history_days: int = 365) -> AssetHistory | None:
    """One asset's daily history (for a page rendered on demand); None if the asset has none."""
    with open_reader(warehouse) as reader:
        if reader is None or not reader.has(ASSET_DAILY):
            return None
        latest = reader.scalar(f"select max(report_date) from {ASSET_DAILY}")
        if latest is None:
            return None
        return _histories(reader, [asset_id], latest, history_days).get(asset_id)


def _exchanges(r: Reader, history_days: int) -> Exchanges | Unavailable:
    latest = r.scalar(f"select max(report_date) from {EXCHANGE_DAILY}")
    if latest is None:
        return _empty(EXCHANGE_DAILY)
    exchanges = r.rows(
        f"""
        select exchange_id, exchange_name, exchange_rank, volume_usd_24h, volume_share_pct, trading_pairs,
               markets_count, markets_volume_usd_24h
        from {EXCHANGE_DAILY}
        where report_date = ?
        order by volume_usd_24h desc nulls last, exchange_rank nulls last, exchange_id
        """,
        [latest],
    )
    history = r.rows(
        f"""
        select report_date, exchange_id, exchange_name, volume_usd_24h, volume_share_pct
        from {EXCHANGE_DAILY}
        where report_date >= ?
        order by report_date, exchange_id
        """,
        [latest - timedelta(days=min(history_days, 90))],
    )
    result = Exchanges(latest, exchanges, history, pairs=_missing(MARKET_PAIRS))
    if r.has(MARKET_PAIRS):
        pairs_date = r.scalar(f"select max(report_date) from {MARKET_PAIRS}")
        if pairs_date is None:
            result.pairs = _empty(MARKET_PAIRS)
        else:
            result.pairs_date = pairs_date
            result.pairs_total = r.rows(
                f"select count(*) as markets, sum(volume_usd_24h) as volume_usd_24h from {MARKET_PAIRS} "
                "where report_date = ?",
                [pairs_date],
            )[0]
            result.pairs = r.rows(
                f"""
                select p.exchange_id, coalesce(e.exchange_name, p.exchange_id) as exchange_name, p.base_asset_id,
                       p.quote_asset_id, p.base_symbol, p.quote_symbol, p.pair, p.price_usd, p.volume_usd_24h,
                       p.volume_share_of_exchange_pct, p.asset_price_usd, p.price_deviation_pct
                from {MARKET_PAIRS} as p
                left join {EXCHANGE_DAILY} as e
                    on e.exchange_id = p.exchange_id and e.report_date = p.report_date
                where p.report_date = ?
                order by p.volume_usd_24h desc nulls last, p.exchange_id, p.pair
                limit 1000
                """,
                [pairs_date],
            )
    return result


def _health(r: Reader, now: datetime, days: int = 30) -> Health | Unavailable:
    if not r.scalar(f"select count(*) from {PIPELINE_RUNS}"):
        return _empty(PIPELINE_RUNS)
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
    quality = _quality(r) if r.has(DQ_RESULTS) else _missing(DQ_RESULTS)
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
