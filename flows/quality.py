"""Data-quality checks on the warehouse: completeness, freshness, validity, consistency, uniqueness, anomalies.

Every check is one portable SQL query (DuckDB locally, BigQuery on gcp) run through `warehouse(settings).query`,
plus `dbt source freshness` for the lake. Checks of a snapshot read that snapshot's partition (and the previous
snapshot's, for anomalies), so on BigQuery a quality run bills a few partitions, never whole tables.

A check that trips does not drop data: the snapshot stays landed and modeled, the result says what is wrong
(with up to five sample keys), and `flows.snapshot` logs it and alerts. Results are stored per quality run in
`ops.dq_results`, which the health page reads (rpt_data_quality).

Thresholds are constants here unless users tune them (settings `PIPELINE_DQ_*`). Freshness follows the
deployments' schedules: a dataset is stale after twice the longest gap between its scheduled runs plus an hour.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from flows.datasets import SNAPSHOT_DATASETS
from flows.errors import ConfigError, PipelineError
from flows.paths import PROJECT_ROOT
from flows.settings import Settings, Target

# ------------------------------------------------------------------------------------------------ the results

CATEGORIES = ("completeness", "freshness", "validity", "consistency", "uniqueness", "anomaly")
DATASETS = SNAPSHOT_DATASETS
ERROR, WARN = "error", "warn"
DQ_TABLE = "ops.dq_results"


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check in one quality run (a row of ops.dq_results)."""

    check_name: str
    category: str
    dataset: str
    severity: str
    # pass | fail (an error-severity check tripped) | warn (a warn-severity one did) | error (could not run)
    status: str
    observed: float | None
    threshold: float | None
    failing_rows: int | None
    detail: str
    description: str


@dataclass
class QualityReport:
    """One quality run: every check's result, under one run id."""

    run_id: str
    snapshot_id: str | None
    checked_at: datetime
    results: list[CheckResult]
    # check name -> the snapshot it read (None for checks not tied to one): the snapshot_id column of its row
    snapshots: dict[str, str | None] = field(default_factory=dict, repr=False)

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.status in ("fail", "error")]

    @property
    def warned(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "warn"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary_line(self) -> str:
        """e.g. `22 checks: 20 pass, 1 warn, 1 fail (validity.no_negative_prices)`."""
        counts = {s: sum(1 for r in self.results if r.status == s) for s in ("pass", "warn", "fail", "error")}
        parts = [f"{counts['pass']} pass"]
        parts += [f"{counts[s]} {s}" for s in ("warn", "fail", "error") if counts[s]]
        named = self.failed or self.warned
        names = f" ({', '.join(r.check_name for r in named)})" if named else ""
        noun = "check" if len(self.results) == 1 else "checks"
        return f"{len(self.results)} {noun}: {', '.join(parts)}{names}"

    def rows(self, flow_run_id: str | None) -> list[dict[str, Any]]:
        """The results as ops.dq_results rows."""
        return [
            {
                "run_id": self.run_id,
                "flow_run_id": flow_run_id,
                "snapshot_id": self.snapshots.get(r.check_name, self.snapshot_id),
                "checked_at": self.checked_at,
                "check_name": r.check_name,
                "category": r.category,
                "dataset": r.dataset,
                "severity": r.severity,
                "status": r.status,
                "observed": r.observed,
                "threshold": r.threshold,
                "failing_rows": r.failing_rows,
                "detail": r.detail,
                "description": r.description,
            }
            for r in self.results
        ]


# ------------------------------------------------------------------------------------------------ thresholds

MARKET_CAP_TOLERANCE_PCT = 1.0  # market cap vs price x supply
MARKET_PRICE_TOLERANCE_PCT = 10.0  # median deviation of an asset's markets from its price (premiums stay under)
RATE_TOLERANCE_PCT = 2.0  # a crypto rate vs its asset's price (two calls seconds apart)
VWAP_TOLERANCE_PCT = 10.0  # VWAP outside [price 24 h ago, price now] by more than this
SHARE_TOLERANCE_POINTS = 1.0  # an exchange's volume share vs its volume / the implied total
SHARE_SUM_MAX = 100.5  # shares of a whole, with rounding
UNKNOWN_EXCHANGE_MAX_PCT = 1.0  # markets on exchanges /exchanges does not list
ROW_DROP_MAX_PCT = 20.0  # fewer rows than the previous snapshot
VOLUME_SPIKE_FACTOR = 10.0
VOLUME_SPIKE_FLOOR_USD = 1_000_000.0  # below this a 10x volume is noise
CHANGE_PCT_MIN, CHANGE_PCT_MAX = -100.0, 10_000.0  # changePercent24Hr within (-100, 10000]
FUTURE_SLACK = timedelta(minutes=5)  # clocks differ
MARKET_STALE_AFTER = timedelta(hours=24)  # a market not updated for a day before the snapshot is not compared
REFERENCE_WITHIN = timedelta(hours=24)  # another dataset's snapshot used for a comparison must be this recent
PREVIOUS_WITHIN = timedelta(days=8)  # the previous snapshot anomalies compare with (weekly markets fit)
LOOKBACK_DAYS = 35  # how far back "the latest snapshot" is looked for (bounds BigQuery's partition scans)
FRESHNESS_SLACK_HOURS = 1.0
DEFAULT_RUN_GAP_HOURS = 24.0  # datasets no active schedule refreshes: as if daily
_PACKAGE_ROOT = PROJECT_ROOT


# ------------------------------------------------------------------------------------------------ freshness


@dataclass(frozen=True)
class Freshness:
    """How old a dataset's latest snapshot may get: warn after one missed run, error after two."""

    dataset: str
    run_gap_hours: float  # longest gap between two scheduled runs that refresh it
    scheduled: bool
    override_hours: float | None = None  # PIPELINE_DQ_FRESHNESS_HOURS

    @property
    def warn_hours(self) -> float:
        return min(self.run_gap_hours + FRESHNESS_SLACK_HOURS, self.error_hours)

    @property
    def error_hours(self) -> float:
        if self.override_hours is not None:
            return self.override_hours
        return 2 * self.run_gap_hours + FRESHNESS_SLACK_HOURS

    @property
    def lookback_days(self) -> int:
        """Days of partitions that hold any snapshot still fresh enough to pass."""
        return math.ceil(self.error_hours / 24) + 1


def schedule_file(settings: Settings) -> Path:
    """The deployments whose schedules refresh this target's data: prefect.yaml on gcp, the local ones else."""
    name = "prefect.yaml" if settings.target is Target.gcp else "deployments/local.prefect.yaml"
    return _PACKAGE_ROOT / name


def scheduled_gaps(prefect_yaml: Path, days: int = 35) -> dict[str, float]:
    """Per dataset, the longest gap in hours between the active scheduled runs that extract it (over `days`)."""
    from zoneinfo import ZoneInfo

    import yaml
    from cronsim import CronSim

    from flows.datasets import FLOW_DATASETS

    if not prefect_yaml.exists():
        return {}
    try:
        config = yaml.safe_load(prefect_yaml.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{prefect_yaml} is not valid YAML ({str(exc).splitlines()[0]}).", "Fix the file.") from None
    runs: dict[str, set[datetime]] = {}
    for deployment in config.get("deployments") or []:
        flow_name = str(deployment.get("entrypoint", "")).split(":")[-1]
        datasets = (deployment.get("parameters") or {}).get("datasets") or FLOW_DATASETS.get(flow_name, ())
        for schedule in deployment.get("schedules") or []:
            if not schedule.get("active", True) or not schedule.get("cron"):
                continue
            zone = ZoneInfo(schedule.get("timezone", "UTC"))
            start = datetime(2027, 1, 4, tzinfo=zone)  # a Monday: whole weeks from here
            moments = []
            for moment in CronSim(schedule["cron"], start - timedelta(seconds=1)):
                if moment >= start + timedelta(days=days):
                    break
                moments.append(moment.astimezone(UTC))
            for dataset in datasets:
                runs.setdefault(dataset, set()).update(moments)
    gaps = {}
    for dataset, moments in runs.items():
        ordered = sorted(moments)
        if len(ordered) >= 2:
            gaps[dataset] = max((b - a).total_seconds() / 3600 for a, b in zip(ordered, ordered[1:], strict=False))
    return gaps


def freshness_thresholds(settings: Settings) -> dict[str, Freshness]:
    """Each dataset's freshness: `PIPELINE_DQ_FRESHNESS_HOURS` if set, else from the deployments' schedules."""
    gaps = scheduled_gaps(schedule_file(settings))
    override = settings.dq_freshness_hours
    return {d: Freshness(d, gaps.get(d, DEFAULT_RUN_GAP_HOURS), d in gaps, override) for d in DATASETS}


def dbt_freshness_vars(thresholds: dict[str, Freshness]) -> dict[str, int]:
    """The vars `dbt/models/staging/coincap/_coincap__sources.yml` reads for each table's freshness: its defaults
    are prefect.yaml's; pass these as `dbt source freshness --vars '<json>'` to use another target's thresholds."""
    out: dict[str, int] = {}
    for dataset, f in thresholds.items():
        out[f"freshness_{dataset}_warn_hours"] = math.ceil(f.warn_hours)
        out[f"freshness_{dataset}_error_hours"] = math.ceil(f.error_hours)
        out[f"freshness_{dataset}_days"] = f.lookback_days
    return out


# ------------------------------------------------------------------------------------------------ SQL dialects


class Dialect:
    """Portable SQL: table names and the few functions DuckDB and BigQuery spell differently."""

    def __init__(self, settings: Settings) -> None:
        self.bigquery = settings.target is Target.gcp
        self.project = settings.gcp_project or "project"
        self.prefix = settings.bq_dataset_prefix

    def table(self, layer: str, name: str) -> str:
        """`marts.x` on DuckDB; `` `project.<prefix>marts.x` `` on BigQuery."""
        if self.bigquery:
            return f"`{self.project}.{self.prefix}{layer}.{name}`"
        return f"{layer}.{name}"

    def float(self, expr: str) -> str:
        return f"cast({expr} as {'float64' if self.bigquery else 'double'})"

    def text(self, expr: str) -> str:
        return f"cast({expr} as {'string' if self.bigquery else 'varchar'})"

    def num(self, expr: str, digits: int = 2) -> str:
        """A number as short text for sample keys."""
        return self.text(f"round({expr}, {digits})")

    def median(self, expr: str) -> str:
        return f"approx_quantiles({expr}, 2)[offset(1)]" if self.bigquery else f"median({expr})"

    def hours_between(self, later: str, earlier: str) -> str:
        if self.bigquery:
            return f"timestamp_diff({later}, {earlier}, second) / 3600.0"
        return f"date_diff('second', {earlier}, {later}) / 3600.0"

    def ts(self, moment: datetime) -> str:
        text = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S+00")
        return f"timestamp '{text}'" if self.bigquery else f"cast('{text}' as timestamptz)"

    @staticmethod
    def date(day: date) -> str:
        return f"date '{day.isoformat()}'"


# dataset -> (layer, relation, natural key columns)
RELATIONS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "assets": ("marts", "fct_asset_snapshots", ("asset_id",)),
    "rates": ("marts", "fct_rates", ("rate_id",)),
    "exchanges": ("staging", "stg_coincap__exchanges", ("exchange_id",)),
    "markets": ("marts", "fct_market_snapshots", ("exchange_id", "base_asset_id", "quote_asset_id")),
}


@dataclass(frozen=True)
class Snap:
    """A dataset's snapshot that a check reads: its id and day (the partition to filter on)."""

    dataset: str
    snapshot_id: str
    snapshot_date: date
    snapshot_ts: datetime

    def where(self, alias: str = "") -> str:
        a = f"{alias}." if alias else ""
        return f"{a}snapshot_date = {Dialect.date(self.snapshot_date)} and {a}snapshot_id = '{self.snapshot_id}'"


# ------------------------------------------------------------------------------------------------ probes


@dataclass(frozen=True)
class Measured:
    """What a check's query returned."""

    population: int
    observed: float | None
    failing_rows: int
    samples: str | None


@dataclass(frozen=True)
class Probe:
    """A check ready to run: its SQL, its threshold, and how to read the answer."""

    sql: str
    threshold: float | None
    tripped: Callable[[Measured], bool]
    describe: Callable[[Measured, bool], str]
    snapshot_id: str | None = None


@dataclass(frozen=True)
class Outcome:
    """A check decided without SQL of its own (dbt's source freshness) or not applicable."""

    tripped: bool
    observed: float | None
    threshold: float | None
    failing_rows: int | None
    detail: str
    snapshot_id: str | None = None


def _rows_tripped(m: Measured) -> bool:
    return m.failing_rows > 0


def row_probe(
    *,
    population: str,
    measure: str,
    failing: str,
    sample: str,
    unit: str,
    problem: str,
    observed: str = "max(measure)",
    value: str | None = None,
    worst: str = "desc",
    threshold: float | None = None,
    tripped: Callable[[Measured], bool] = _rows_tripped,
    observed_label: str = "worst",
    snapshot_id: str | None = None,
) -> Probe:
    """A check over rows: each row of `population` gets a measure and a failing flag; the query returns the row
    count, an observed aggregate (over `measure`, `value`, `failing`), the failing count and five sample keys."""
    sql = f"""
with population as (
{population}
),
scored as (
    select
        {sample} as sample,
        {measure} as measure,
        {value or measure} as value,
        case when {failing} then 1 else 0 end as failing
    from population
),
ranked as (
    select
        sample, measure, value, failing,
        row_number() over (order by failing desc, coalesce(measure, 0) {worst}, sample) as rn
    from scored
)
select
    count(*) as population_rows,
    {observed} as observed,
    coalesce(sum(failing), 0) as failing_rows,
    string_agg(case when failing = 1 and rn <= 5 then sample end, ', ' order by rn) as samples
from ranked
""".strip()

    def describe(m: Measured, is_tripped: bool) -> str:
        if is_tripped:
            head = f"{m.failing_rows:,} of {m.population:,} {unit} {problem}"
            return f"{head}: {m.samples}" if m.samples else head
        tail = f"; {observed_label} {_fmt(m.observed)}" if m.observed is not None else ""
        return f"{m.population:,} {unit} checked{tail}"

    return Probe(sql, threshold, tripped, describe, snapshot_id)


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.4g}" if abs(value) < 1e6 else f"{value:,.0f}"


# ------------------------------------------------------------------------------------------------ context


class Context:
    """What the checks of one quality run see: settings, dialect, the moment, and the snapshots under check."""

    def __init__(
        self,
        settings: Settings,
        *,
        now: datetime,
        snapshot_id: str | None,
        query: Callable[[str], tuple[list[str], list[tuple[Any, ...]]]] | None = None,
    ) -> None:
        self.settings = settings
        self.sql = Dialect(settings)
        self.now = now
        self.snapshot_id = snapshot_id
        self._query = query
        self.freshness = freshness_thresholds(settings)
        # caches, filled on first use (tests preload them)
        self.current: dict[str, Snap | None] = {}
        self.previous: dict[str, Snap | None] = {}
        self.at_or_before: dict[tuple[str, str], Snap | None] = {}
        self.ever_landed: set[str] | None = None

    def table(self, dataset: str) -> str:
        layer, name, _ = RELATIONS[dataset]
        return self.sql.table(layer, name)

    @property
    def runs_table(self) -> str:
        return self.sql.table("ops", "pipeline_runs")

    def query(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run SQL on the warehouse: (column names, rows)."""
        if self._query is None:
            raise PipelineError("No warehouse to query.", "Pass a warehouse to the quality run.")
        return self._query(sql)

    def run(self, sql: str) -> list[tuple[Any, ...]]:
        return self.query(sql)[1]

    # -- which snapshots the checks read

    def target(self, dataset: str) -> Snap | None:
        """The dataset's snapshot under check: the run's snapshot if the dataset is in it, else (no snapshot
        given) its latest; None when there is none to check."""
        if dataset not in self.current:
            self._resolve(dataset)
        return self.current[dataset]

    def previous_of(self, dataset: str) -> Snap | None:
        """The dataset's snapshot before the one under check, if within `PREVIOUS_WITHIN`."""
        if dataset not in self.current:
            self._resolve(dataset)
        return self.previous.get(dataset)

    def reference(self, dataset: str, near: Snap) -> Snap | None:
        """`dataset`'s latest snapshot at or before `near`, if within `REFERENCE_WITHIN` of it."""
        current = self.target(dataset)
        if current is not None and current.snapshot_id == near.snapshot_id:
            return current
        key = (dataset, near.snapshot_id)
        if key not in self.at_or_before:
            found = self._snapshots(dataset, near.snapshot_date - timedelta(days=1), near.snapshot_date, near)
            self.at_or_before[key] = found[0] if found else None
        ref = self.at_or_before[key]
        if ref is None or near.snapshot_ts - ref.snapshot_ts > REFERENCE_WITHIN:
            return None
        return ref

    def _resolve(self, dataset: str) -> None:
        if self.snapshot_id is not None:
            at = _snap_of(dataset, self.snapshot_id)
            found = self._snapshots(dataset, at.snapshot_date - PREVIOUS_WITHIN, at.snapshot_date, at)
            current = found[0] if found and found[0].snapshot_id == self.snapshot_id else None
            if found:
                self.at_or_before[(dataset, self.snapshot_id)] = found[0]
        else:
            today = self.now.date()
            found = self._snapshots(dataset, today - timedelta(days=LOOKBACK_DAYS), today + timedelta(days=1), None)
            current = found[0] if found else None
        self.current[dataset] = current
        previous = next((s for s in found if current and s.snapshot_id < current.snapshot_id), None)
        if current and previous and current.snapshot_ts - previous.snapshot_ts <= PREVIOUS_WITHIN:
            self.previous[dataset] = previous
        else:
            self.previous[dataset] = None

    def _snapshots(self, dataset: str, first: date, last: date, at: Snap | None) -> list[Snap]:
        """The dataset's two latest snapshots between two days (at or before `at`), newest first."""
        up_to = f" and snapshot_id <= '{at.snapshot_id}'" if at else ""
        rows = self.run(
            f"select snapshot_id, snapshot_date, min(snapshot_ts) from {self.table(dataset)}"
            f" where snapshot_date between {Dialect.date(first)} and {Dialect.date(last)}{up_to}"
            " group by snapshot_id, snapshot_date order by snapshot_id desc limit 2"
        )
        return [Snap(dataset, r[0], _as_date(r[1]), _as_utc(r[2])) for r in rows]

    def landed_datasets(self) -> set[str]:
        """Datasets the pipeline has ever landed (within a year): freshness is checked for these."""
        if self.ever_landed is None:
            since = self.sql.ts(self.now - timedelta(days=400))
            rows = self.run(
                f"select distinct step from {self.runs_table} where status = 'completed'"
                f" and step in ({_in(DATASETS)}) and started_at >= {since}"
            )
            self.ever_landed = {r[0] for r in rows}
        return self.ever_landed

    def checked_targets(self) -> list[Snap]:
        return [t for t in (self.target(d) for d in DATASETS) if t is not None]


def _snap_of(dataset: str, snapshot_id: str) -> Snap:
    from flows.snapshot_id import Snapshot

    snap = Snapshot.parse(snapshot_id)
    return Snap(dataset, snap.id, snap.ts.date(), snap.ts)


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def _as_utc(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime.fromisoformat(str(value)).astimezone(UTC)


def _in(values: Iterable[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


# ------------------------------------------------------------------------------------------------ the checks

Builder = Callable[[Context], "Probe | Outcome | None"]


@dataclass(frozen=True)
class Check:
    name: str
    category: str
    dataset: str
    severity: str
    description: str
    build: Builder


CHECKS: list[Check] = []


def check(name: str, dataset: str, description: str, severity: str = ERROR) -> Callable[[Builder], Builder]:
    """Register a check; its category is the first part of its name."""
    category = name.split(".")[0]
    assert category in CATEGORIES, name

    def register(build: Builder) -> Builder:
        CHECKS.append(Check(name, category, dataset, severity, description, build))
        return build

    return register


def _runs_population(ctx: Context) -> str:
    """The latest completed run of each dataset of the snapshot (or each dataset's latest run) in ops.pipeline_runs."""
    if ctx.snapshot_id is not None:
        at = _snap_of("assets", ctx.snapshot_id)
        scope = f"snapshot_id = '{ctx.snapshot_id}' and started_at >= {ctx.sql.ts(at.snapshot_ts - timedelta(days=1))}"
    else:
        scope = f"started_at >= {ctx.sql.ts(ctx.now - timedelta(days=LOOKBACK_DAYS))}"
    return f"""
    select step, snapshot_id, valid, quarantined from (
        select
            step, snapshot_id, valid, quarantined,
            row_number() over (partition by step order by started_at desc, recorded_at desc) as recency
        from {ctx.runs_table}
        where status = 'completed' and step in ({_in(DATASETS)}) and {scope}
    ) as runs
    where recency = 1"""


# -- completeness


@check("completeness.datasets_non_empty", "all", "Every dataset extracted in the snapshot landed a valid row.")
def _datasets_non_empty(ctx: Context) -> Probe:
    return row_probe(
        population=_runs_population(ctx),
        measure=ctx.sql.float("coalesce(valid, 0)"),
        failing="coalesce(valid, 0) = 0",
        sample="step",
        unit="datasets",
        problem="landed no valid row",
        observed="min(measure)",
        worst="asc",
        observed_label="fewest rows",
        snapshot_id=ctx.snapshot_id,
    )


@check("completeness.marts_match_lake", "all", "The marts hold exactly the valid rows each dataset landed in the lake.")
def _marts_match_lake(ctx: Context) -> Probe | Outcome:
    targets = ctx.checked_targets()
    if not targets:
        return Outcome(False, None, 0, 0, "no snapshot to compare")
    modeled = "\n        union all\n".join(
        f"        select '{t.dataset}' as dataset, '{t.snapshot_id}' as snapshot_id, count(*) as modeled"
        f" from {ctx.table(t.dataset)} where {t.where()}"
        for t in targets
    )
    since = ctx.sql.ts(min(t.snapshot_ts for t in targets) - timedelta(days=1))
    population = f"""
    select m.dataset, m.modeled, r.valid
    from (
{modeled}
    ) as m
    inner join (
        select
            step, snapshot_id, valid,
            row_number() over (partition by step, snapshot_id order by started_at desc, recorded_at desc) as recency
        from {ctx.runs_table}
        where status = 'completed' and snapshot_id in ({_in(t.snapshot_id for t in targets)}) and started_at >= {since}
    ) as r
        on r.step = m.dataset and r.snapshot_id = m.snapshot_id and r.recency = 1"""
    return row_probe(
        population=population,
        measure=ctx.sql.float("abs(modeled - valid)"),
        failing="modeled <> valid",
        sample=f"concat(dataset, ' ', {ctx.sql.text('modeled')}, ' modeled vs ', {ctx.sql.text('valid')}, ' landed')",
        unit="datasets",
        problem="differ between the marts and the lake",
        observed="sum(measure)",
        observed_label="rows missing or extra",
        snapshot_id=ctx.snapshot_id,
    )


@check("completeness.asset_ranks_contiguous", "assets", "Asset ranks run 1..N: no ranked asset is missing.")
def _ranks_contiguous(ctx: Context) -> Probe | None:
    t = ctx.target("assets")
    if t is None:
        return None
    text = ctx.sql.text
    population = f"""
    select asset_id, asset_rank, lag(asset_rank) over (order by asset_rank, asset_id) as previous_rank
    from {ctx.table("assets")}
    where {t.where()} and asset_rank is not null"""
    gap = "greatest(asset_rank - coalesce(previous_rank, 0) - 1, 0)"
    return row_probe(
        population=population,
        measure=ctx.sql.float(gap),
        failing=f"{gap} > 0",
        sample=f"case when {gap} = 1 then concat('rank ', {text('asset_rank - 1')}) "
        f"else concat('ranks ', {text('coalesce(previous_rank, 0) + 1')}, '-', {text('asset_rank - 1')}) end",
        unit="assets",
        problem="follow a gap in the ranking",
        observed="sum(measure)",
        observed_label="missing ranks",
        snapshot_id=t.snapshot_id,
    )


@check("completeness.quarantine_rate", "all", "The share of records rejected by the contracts stays below the limit.")
def _quarantine_rate(ctx: Context) -> Probe:
    limit = ctx.settings.dq_max_quarantine_pct
    rate = "100.0 * coalesce(quarantined, 0) / nullif(coalesce(valid, 0) + coalesce(quarantined, 0), 0)"
    return row_probe(
        population=_runs_population(ctx),
        measure=ctx.sql.float(f"coalesce({rate}, 0)"),
        failing=f"coalesce({rate}, 0) > {limit}",
        sample=f"concat(step, ' ', {ctx.sql.num(f'coalesce({rate}, 0)')}, '%')",
        unit="datasets",
        problem=f"quarantined more than {_fmt(limit)}% of their records",
        threshold=limit,
        observed_label="highest rate (%)",
        snapshot_id=ctx.snapshot_id,
    )


@check("completeness.markets_known_exchanges", "markets", "Markets name exchanges that /exchanges lists.")
def _markets_known_exchanges(ctx: Context) -> Probe | Outcome | None:
    t = ctx.target("markets")
    if t is None:
        return None
    ref = ctx.reference("exchanges", t)
    if ref is None:
        return Outcome(False, None, UNKNOWN_EXCHANGE_MAX_PCT, 0, "not compared: no exchanges snapshot within 24 h",
                       t.snapshot_id)  # fmt: skip
    population = f"""
    select m.exchange_id, count(*) as markets, max(case when e.exchange_id is null then 1 else 0 end) as unknown
    from {ctx.table("markets")} as m
    left join (select distinct exchange_id from {ctx.table("exchanges")} where {ref.where()}) as e
        on e.exchange_id = m.exchange_id
    where {t.where("m")}
    group by m.exchange_id"""
    limit = UNKNOWN_EXCHANGE_MAX_PCT
    return row_probe(
        population=population,
        measure=ctx.sql.float("markets"),
        failing="unknown = 1",
        sample=f"concat(exchange_id, ' (', {ctx.sql.text('markets')}, ' markets)')",
        unit="exchanges of the markets",
        problem=f"are not in exchanges snapshot {ref.snapshot_id}",
        observed="coalesce(100.0 * sum(case when failing = 1 then measure else 0 end) / nullif(sum(measure), 0), 0)",
        threshold=limit,
        tripped=lambda m: (m.observed or 0) > limit,
        observed_label="markets on unknown exchanges (%)",
        snapshot_id=t.snapshot_id,
    )


@check("completeness.row_count_stable", "all", "No dataset lost more than 20% of its rows since its previous snapshot.",
       WARN)  # fmt: skip
def _row_count_stable(ctx: Context) -> Probe | Outcome:
    pairs = [(d, ctx.target(d), ctx.previous_of(d)) for d in DATASETS]
    pairs = [(d, cur, prev) for d, cur, prev in pairs if cur and prev]
    if not pairs:
        return Outcome(False, None, ROW_DROP_MAX_PCT, 0, "not compared: no previous snapshot within 8 days")
    counts = "\n    union all\n".join(
        f"    select '{d}' as dataset,"
        f" sum(case when snapshot_id = '{cur.snapshot_id}' then 1 else 0 end) as current_rows,"
        f" sum(case when snapshot_id = '{prev.snapshot_id}' then 1 else 0 end) as previous_rows"
        f" from {ctx.table(d)}"
        f" where snapshot_date in ({Dialect.date(cur.snapshot_date)}, {Dialect.date(prev.snapshot_date)})"
        f" and snapshot_id in ('{cur.snapshot_id}', '{prev.snapshot_id}')"
        for d, cur, prev in pairs
    )
    drop = "100.0 * (previous_rows - current_rows) / nullif(previous_rows, 0)"
    return row_probe(
        population=counts,
        measure=ctx.sql.float(f"coalesce({drop}, 0)"),
        failing=f"coalesce({drop}, 0) > {ROW_DROP_MAX_PCT}",
        sample=f"concat(dataset, ' ', {ctx.sql.text('previous_rows')}, ' -> ', {ctx.sql.text('current_rows')})",
        unit="datasets",
        problem=f"have over {_fmt(ROW_DROP_MAX_PCT)}% fewer rows than their previous snapshot",
        threshold=ROW_DROP_MAX_PCT,
        observed_label="largest drop (%)",
        snapshot_id=ctx.snapshot_id,
    )


# -- freshness


def _freshness_check(dataset: str) -> None:
    @check(
        f"freshness.{dataset}",
        dataset,
        f"The marts' latest {dataset} snapshot is younger than the schedule allows (two missed runs plus an hour).",
    )
    def build(ctx: Context) -> Probe | Outcome | None:
        if dataset not in ctx.landed_datasets():
            return None  # never extracted here: nothing to go stale
        f = ctx.freshness[dataset]
        since = ctx.now.date() - timedelta(days=f.lookback_days)
        now = ctx.sql.ts(ctx.now)
        population = (
            f"    select max(snapshot_ts) as latest from {ctx.table(dataset)}"
            f" where snapshot_date >= {Dialect.date(since)}"
        )
        limit = f.error_hours
        source = "the deployments' schedules" if f.scheduled else "the default"
        if ctx.settings.dq_freshness_hours is not None:
            source = "PIPELINE_DQ_FRESHNESS_HOURS"

        def describe(m: Measured, is_tripped: bool) -> str:
            if m.observed is None:
                return f"no {dataset} snapshot in the marts in the last {f.lookback_days} days (limit {limit:g} h)"
            verb = "is older than" if is_tripped else "is within"
            return f"latest {dataset} snapshot is {m.observed:.1f} h old: {verb} {limit:g} h (from {source})"

        return Probe(
            sql=f"""
with population as (
{population}
)
select count(*) as population_rows, {ctx.sql.hours_between(now, "max(latest)")} as observed,
    0 as failing_rows, max({ctx.sql.text("latest")}) as samples
from population
""".strip(),
            threshold=limit,
            tripped=lambda m: m.observed is None or m.observed > limit,
            describe=describe,
        )


for _dataset in DATASETS:
    _freshness_check(_dataset)


@check("freshness.lake_sources", "lake", "dbt source freshness on the lake: each snapshot table's latest file is "
       "younger than the schedule allows (two missed runs plus an hour).")  # fmt: skip
def _lake_sources(ctx: Context) -> Outcome | None:
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
    detail = "; ".join(parts) or f"{len(measured)} lake tables fresh (oldest {_fmt(oldest)} h)"
    return Outcome(bool(stale), oldest, None, len(stale), detail)


def run_source_freshness(settings: Settings, datasets: Sequence[str]) -> list[tuple[str, float | None, str]]:
    """`dbt source freshness` on the lake's snapshot tables: (table, age in hours or None, problem) each.

    Ages are judged here against the schedule-derived thresholds; the thresholds in the sources yml (prefect.yaml's,
    as vars) serve runs by hand. Only the build's own vars are passed, so dbt reuses its partial parse (2 s, not 10).
    """
    from flows.warehouse.dbt import invoke_dbt

    work = settings.data_dir.resolve() / "dbt"
    result, _ = invoke_dbt(settings, "source freshness", "--select", *(f"source:coincap.{d}" for d in datasets))
    nodes = getattr(result.result, "results", None) or []
    if not nodes:
        reason = str(result.exception or "no result; see the dbt log").strip().splitlines()
        raise PipelineError(
            f"dbt source freshness did not run ({reason[0] if reason else 'no reason given'}).",
            f"See {work / 'logs' / 'dbt.log'}.",
        )
    out = []
    for node in nodes:
        status = str(getattr(node.status, "value", node.status))
        age = getattr(node, "age", None)
        message = (getattr(node, "message", None) or "").strip().splitlines()
        problem = "" if status in ("pass", "warn", "error") else (message[0] if message else status)
        out.append((node.node.name, age / 3600 if age is not None and not problem else None, problem))
    return sorted(out)


# -- validity


@check("validity.no_negative_prices", "assets", "No asset has a negative price or 24-hour VWAP.")
def _no_negative_prices(ctx: Context) -> Probe | None:
    t = ctx.target("assets")
    if t is None:
        return None
    f = ctx.sql.float
    lowest = "least(price, coalesce(vwap, price))"
    return row_probe(
        population=f"    select asset_id, {f('price_usd')} as price, {f('vwap_24h')} as vwap"
        f" from {ctx.table('assets')} where {t.where()}",
        measure=lowest,
        failing=f"{lowest} < 0",
        sample=f"concat(asset_id, ' ', {ctx.sql.num(lowest, 6)})",
        unit="assets",
        problem="have a negative price or VWAP",
        observed="min(measure)",
        worst="asc",
        observed_label="lowest price",
        snapshot_id=t.snapshot_id,
    )


@check("validity.no_negative_amounts", "assets", "No asset has a negative market cap, volume, supply or max supply.")
def _no_negative_amounts(ctx: Context) -> Probe | None:
    t = ctx.target("assets")
    if t is None:
        return None
    cols = ("market_cap_usd", "volume_usd_24h", "supply", "max_supply")
    lowest = f"least({', '.join(f'coalesce({ctx.sql.float(c)}, 0)' for c in cols)})"
    return row_probe(
        population=f"    select asset_id, {lowest} as lowest from {ctx.table('assets')} where {t.where()}",
        measure="lowest",
        failing="lowest < 0",
        sample=f"concat(asset_id, ' ', {ctx.sql.num('lowest')})",
        unit="assets",
        problem="have a negative market cap, volume or supply",
        observed="min(measure)",
        worst="asc",
        observed_label="lowest amount",
        snapshot_id=t.snapshot_id,
    )


@check("validity.market_values_in_range", "markets",
       "Market prices, volumes and trade counts are not negative; shares of the exchange are 0-100%.")  # fmt: skip
def _market_values(ctx: Context) -> Probe | None:
    t = ctx.target("markets")
    if t is None:
        return None
    f = ctx.sql.float
    lowest = f"least({f('price_usd')}, coalesce({f('price_quote')}, 0), coalesce({f('volume_usd_24h')}, 0),"
    lowest += f" coalesce({f('trades_count_24h')}, 0), coalesce({f('percent_exchange_volume')}, 0))"
    share = f"coalesce({f('percent_exchange_volume')}, 0)"
    return row_probe(
        population=f"    select concat(exchange_id, '/', base_asset_id, '/', quote_asset_id) as market,"
        f" {lowest} as lowest, {share} as share from {ctx.table('markets')} where {t.where()}",
        measure="lowest",
        failing="lowest < 0 or share > 100.000001",
        sample="market",
        unit="markets",
        problem="have a negative value or a share of their exchange over 100%",
        observed="min(measure)",
        worst="asc",
        observed_label="lowest value",
        snapshot_id=t.snapshot_id,
    )


@check("validity.exchange_values_in_range", "exchanges",
       "Exchange volumes and pair counts are not negative; a share of the total volume is 0-100%.")  # fmt: skip
def _exchange_values(ctx: Context) -> Probe | None:
    t = ctx.target("exchanges")
    if t is None:
        return None
    f = ctx.sql.float
    lowest = f"least(coalesce({f('volume_usd_24h')}, 0), coalesce({f('trading_pairs')}, 0),"
    lowest += f" coalesce({f('percent_total_volume')}, 0))"
    return row_probe(
        population=f"    select exchange_id, {lowest} as lowest, coalesce({f('percent_total_volume')}, 0) as share"
        f" from {ctx.table('exchanges')} where {t.where()}",
        measure="lowest",
        failing="lowest < 0 or share > 100.000001",
        sample="exchange_id",
        unit="exchanges",
        problem="have a negative value or a share over 100%",
        observed="min(measure)",
        worst="asc",
        observed_label="lowest value",
        snapshot_id=t.snapshot_id,
    )


@check("validity.rates_positive", "rates", "Every rate is a positive number of USD.")
def _rates_positive(ctx: Context) -> Probe | None:
    t = ctx.target("rates")
    if t is None:
        return None
    return row_probe(
        population=f"    select rate_id, {ctx.sql.float('rate_usd')} as rate"
        f" from {ctx.table('rates')} where {t.where()}",
        measure="rate",
        failing="rate is null or rate <= 0",
        sample=f"concat(rate_id, ' ', coalesce({ctx.sql.num('rate', 6)}, 'null'))",
        unit="rates",
        problem="are not positive",
        observed="min(measure)",
        worst="asc",
        observed_label="lowest rate",
        snapshot_id=t.snapshot_id,
    )


@check("validity.supply_within_max_supply", "assets",
       "Circulating supply does not exceed max supply (a max supply of 0 means none, as CoinCap documents).",
       WARN)  # fmt: skip
def _supply_within_max(ctx: Context) -> Probe | None:
    t = ctx.target("assets")
    if t is None:
        return None
    f = ctx.sql.float
    excess = "100.0 * (supply / max_supply - 1)"
    return row_probe(
        population=f"    select asset_id, {f('supply')} as supply, {f('max_supply')} as max_supply"
        f" from {ctx.table('assets')} where {t.where()} and max_supply > 0 and supply is not null",
        measure=excess,
        failing=f"{excess} > 1e-7",
        sample=f"concat(asset_id, ' +', {ctx.sql.num(excess)}, '%')",
        unit="assets with a max supply",
        problem="exceed it",
        observed_label="largest excess (%)",
        snapshot_id=t.snapshot_id,
    )


@check("validity.change_percent_range", "assets", "The 24-hour price change is within (-100%, +10000%].")
def _change_range(ctx: Context) -> Probe | None:
    t = ctx.target("assets")
    if t is None:
        return None
    return row_probe(
        population=f"    select asset_id, {ctx.sql.float('change_percent_24h')} as change from {ctx.table('assets')}"
        f" where {t.where()} and change_percent_24h is not null",
        measure="abs(change)",
        failing=f"change <= {CHANGE_PCT_MIN} or change > {CHANGE_PCT_MAX}",
        sample=f"concat(asset_id, ' ', {ctx.sql.num('change')}, '%')",
        unit="assets",
        problem="have a 24-hour change outside (-100%, 10000%]",
        threshold=CHANGE_PCT_MAX,
        observed_label="largest change (%)",
        snapshot_id=t.snapshot_id,
    )


@check("validity.ranks_positive", "all", "Asset, exchange and market ranks are 1 or more.")
def _ranks_positive(ctx: Context) -> Probe | None:
    parts = []
    for dataset, column, key in (
        ("assets", "asset_rank", "asset_id"),
        ("exchanges", "exchange_rank", "exchange_id"),
        ("markets", "market_rank", "concat(exchange_id, '/', base_asset_id, '/', quote_asset_id)"),
    ):
        t = ctx.target(dataset)
        if t is not None:
            parts.append(
                f"    select '{dataset}' as dataset, {key} as item, {column} as item_rank"
                f" from {ctx.table(dataset)} where {t.where()} and {column} is not null"
            )
    if not parts:
        return None
    return row_probe(
        population="\n    union all\n".join(parts),
        measure=ctx.sql.float("item_rank"),
        failing="item_rank < 1",
        sample=f"concat(dataset, ' ', item, ' rank ', {ctx.sql.text('item_rank')})",
        unit="ranked rows",
        problem="have a rank below 1",
        observed="min(measure)",
        worst="asc",
        observed_label="lowest rank",
    )


@check("validity.timestamps_not_in_future", "all",
       "No snapshot, response or update time lies in the future (5 minutes of clock skew allowed).")  # fmt: skip
def _not_in_future(ctx: Context) -> Probe | None:
    parts = []
    for t in ctx.checked_targets():
        columns = ["snapshot_ts", "api_timestamp"] + (["updated_at"] if t.dataset in ("markets", "exchanges") else [])
        for column in columns:
            parts.append(
                f"    select '{t.dataset}' as dataset, {_concat_key(t.dataset)} as item, '{column}' as field,"
                f" {column} as moment from {ctx.table(t.dataset)} where {t.where()} and {column} is not null"
            )
    if not parts:
        return None
    now = ctx.sql.ts(ctx.now)
    limit = ctx.sql.ts(ctx.now + FUTURE_SLACK)
    ahead = ctx.sql.hours_between("moment", now)
    return row_probe(
        population="\n    union all\n".join(parts),
        measure=ahead,
        failing=f"moment > {limit}",
        sample=f"concat(dataset, ' ', item, ' ', field, ' +', {ctx.sql.num(ahead, 1)}, ' h')",
        unit="timestamps",
        problem="are in the future",
        observed_label="latest vs now (h)",
    )


def _concat_key(dataset: str) -> str:
    columns = RELATIONS[dataset][2]
    if len(columns) == 1:
        return columns[0]
    return "concat(" + ", '/', ".join(columns) + ")"


# -- consistency


@check("consistency.market_cap_matches_price_supply", "assets",
       "Market cap is price x circulating supply, within 1%.")  # fmt: skip
def _market_cap(ctx: Context) -> Probe | None:
    t = ctx.target("assets")
    if t is None:
        return None
    f = ctx.sql.float
    off = "case when implied > 0 then 100.0 * abs(market_cap / implied - 1) when market_cap > 0 then 100.0 else 0.0 end"
    return row_probe(
        population=f"    select asset_id, {f('market_cap_usd')} as market_cap,"
        f" {f('price_usd')} * {f('supply')} as implied from {ctx.table('assets')}"
        f" where {t.where()} and market_cap_usd is not null and price_usd is not null and supply is not null",
        measure=off,
        failing=f"{off} > {MARKET_CAP_TOLERANCE_PCT}",
        sample=f"concat(asset_id, ' ', {ctx.sql.num(off)}, '% off')",
        unit="assets",
        problem=f"have a market cap over {_fmt(MARKET_CAP_TOLERANCE_PCT)}% off price x supply",
        threshold=MARKET_CAP_TOLERANCE_PCT,
        observed_label="largest deviation (%)",
        snapshot_id=t.snapshot_id,
    )


@check("consistency.market_prices_match_asset", "markets",
       "Per base asset, the median USD price of its markets updated within a day is within 10% of the asset's "
       "price.")  # fmt: skip
def _market_prices(ctx: Context) -> Probe | Outcome | None:
    t = ctx.target("markets")
    if t is None:
        return None
    ref = ctx.reference("assets", t)
    if ref is None:
        return Outcome(False, None, MARKET_PRICE_TOLERANCE_PCT, 0, "not compared: no assets snapshot within 24 h",
                       t.snapshot_id)  # fmt: skip
    f = ctx.sql.float
    fresh_after = ctx.sql.ts(t.snapshot_ts - MARKET_STALE_AFTER)
    population = f"""
    select base_asset_id, {ctx.sql.median("deviation")} as median_deviation, count(*) as markets
    from (
        select m.base_asset_id, 100.0 * ({f("m.price_usd")} / {f("a.price_usd")} - 1) as deviation
        from {ctx.table("markets")} as m
        inner join {ctx.table("assets")} as a
            on a.asset_id = m.base_asset_id
        where {t.where("m")} and {ref.where("a")}
            and m.updated_at >= {fresh_after} and m.price_usd > 0 and a.price_usd > 0
    ) as deviations
    group by base_asset_id"""
    return row_probe(
        population=population,
        measure="abs(median_deviation)",
        failing=f"abs(median_deviation) > {MARKET_PRICE_TOLERANCE_PCT}",
        sample=f"concat(base_asset_id, ' ', {ctx.sql.num('median_deviation', 1)}, '% over ', "
        f"{ctx.sql.text('markets')}, ' markets')",
        unit="assets with fresh markets",
        problem=f"trade over {_fmt(MARKET_PRICE_TOLERANCE_PCT)}% off their price (median)",
        threshold=MARKET_PRICE_TOLERANCE_PCT,
        observed_label="largest median deviation (%)",
        snapshot_id=t.snapshot_id,
    )


@check("consistency.rates_match_assets", "rates", "A crypto rate agrees with its asset's price within 2%.")
def _rates_match_assets(ctx: Context) -> Probe | Outcome | None:
    t = ctx.target("rates")
    if t is None:
        return None
    ref = ctx.reference("assets", t)
    if ref is None:
        return Outcome(False, None, RATE_TOLERANCE_PCT, 0, "not compared: no assets snapshot within 24 h",
                       t.snapshot_id)  # fmt: skip
    f = ctx.sql.float
    off = "100.0 * abs(rate / price - 1)"
    population = f"""
    select r.rate_id, {f("r.rate_usd")} as rate, {f("a.price_usd")} as price
    from {ctx.table("rates")} as r
    inner join {ctx.table("assets")} as a
        on a.asset_id = r.rate_id
    where {t.where("r")} and {ref.where("a")}
        and r.rate_type = 'crypto' and a.price_usd > 0 and r.rate_usd is not null"""
    return row_probe(
        population=population,
        measure=off,
        failing=f"{off} > {RATE_TOLERANCE_PCT}",
        sample=f"concat(rate_id, ' ', {ctx.sql.num('100.0 * (rate / price - 1)')}, '%')",
        unit="crypto rates of listed assets",
        problem=f"are over {_fmt(RATE_TOLERANCE_PCT)}% off the asset's price",
        threshold=RATE_TOLERANCE_PCT,
        observed_label="largest deviation (%)",
        snapshot_id=t.snapshot_id,
    )


@check("consistency.exchange_volume_shares", "exchanges",
       "Exchange volume shares add up to at most 100% and each matches volume / total volume (1 point).")  # fmt: skip
def _exchange_shares(ctx: Context) -> Probe | None:
    t = ctx.target("exchanges")
    if t is None:
        return None
    f = ctx.sql.float
    population = f"""
    select e.exchange_id, e.share, 100.0 * e.volume / i.total as expected
    from (
        select exchange_id, {f("volume_usd_24h")} as volume, {f("percent_total_volume")} as share
        from {ctx.table("exchanges")}
        where {t.where()} and volume_usd_24h is not null and percent_total_volume is not null
    ) as e
    cross join (
        select {ctx.sql.median(f"{f('volume_usd_24h')} / ({f('percent_total_volume')} / 100.0)")} as total
        from {ctx.table("exchanges")}
        where {t.where()} and volume_usd_24h > 0 and percent_total_volume > 0
    ) as i"""
    off = "abs(share - coalesce(expected, share))"

    def tripped(m: Measured) -> bool:
        return m.failing_rows > 0 or (m.observed or 0) > SHARE_SUM_MAX

    probe = row_probe(
        population=population,
        measure=off,
        value="share",
        failing=f"{off} > {SHARE_TOLERANCE_POINTS}",
        sample=f"concat(exchange_id, ' ', {ctx.sql.num('share')}, '% vs ', {ctx.sql.num('expected')}, '%')",
        unit="exchanges",
        problem="have a share that does not match their volume",
        observed="sum(value)",
        threshold=SHARE_SUM_MAX,
        tripped=tripped,
        observed_label="sum of shares (%)",
        snapshot_id=t.snapshot_id,
    )

    def describe(m: Measured, is_tripped: bool) -> str:
        line = probe.describe(m, is_tripped and m.failing_rows > 0)
        if (m.observed or 0) > SHARE_SUM_MAX:
            line = f"shares add up to {_fmt(m.observed)}% (over {SHARE_SUM_MAX}%); {line}"
        return line

    return Probe(probe.sql, probe.threshold, tripped, describe, probe.snapshot_id)


@check("consistency.market_shares_per_exchange", "markets",
       "An exchange's markets' shares of its volume add up to at most 100%.")  # fmt: skip
def _market_shares(ctx: Context) -> Probe | None:
    t = ctx.target("markets")
    if t is None:
        return None
    return row_probe(
        population=f"    select exchange_id, sum({ctx.sql.float('percent_exchange_volume')}) as share_sum"
        f" from {ctx.table('markets')} where {t.where()} and percent_exchange_volume is not null group by exchange_id",
        measure="share_sum",
        failing=f"share_sum > {SHARE_SUM_MAX}",
        sample=f"concat(exchange_id, ' ', {ctx.sql.num('share_sum')}, '%')",
        unit="exchanges",
        problem=f"have market shares adding up to over {SHARE_SUM_MAX}%",
        threshold=SHARE_SUM_MAX,
        observed_label="largest sum (%)",
        snapshot_id=t.snapshot_id,
    )


@check("consistency.vwap_within_24h_range", "assets",
       "The 24-hour VWAP lies between the price 24 hours ago and now, give or take 10%.", WARN)  # fmt: skip
def _vwap_range(ctx: Context) -> Probe | None:
    t = ctx.target("assets")
    if t is None:
        return None
    f = ctx.sql.float
    population = f"""
    select asset_id, vwap, least(price, price_24h_ago) as low, greatest(price, price_24h_ago) as high
    from (
        select
            asset_id, {f("vwap_24h")} as vwap, {f("price_usd")} as price,
            {f("price_usd")} / (1 + coalesce({f("change_percent_24h")}, 0) / 100.0) as price_24h_ago
        from {ctx.table("assets")}
        where {t.where()} and vwap_24h is not null and price_usd > 0
            and coalesce(change_percent_24h, 0) > -100
    ) as prices"""
    outside = "100.0 * greatest(low - vwap, vwap - high, 0) / (case when vwap < low then low else high end)"
    return row_probe(
        population=population,
        measure=outside,
        failing=f"{outside} > {VWAP_TOLERANCE_PCT}",
        sample=f"concat(asset_id, ' ', {ctx.sql.num(outside, 1)}, '% outside')",
        unit="assets",
        problem=f"have a VWAP over {_fmt(VWAP_TOLERANCE_PCT)}% outside their 24-hour price range",
        threshold=VWAP_TOLERANCE_PCT,
        observed_label="furthest outside (%)",
        snapshot_id=t.snapshot_id,
    )


# -- uniqueness


def _uniqueness_check(dataset: str, name: str, noun: str) -> None:
    @check(name, dataset, f"One row per {noun} per snapshot.")
    def build(ctx: Context) -> Probe | None:
        t = ctx.target(dataset)
        if t is None:
            return None
        key = _concat_key(dataset)
        return row_probe(
            population=f"    select {key} as item, count(*) as copies from {ctx.table(dataset)}"
            f" where {t.where()} group by {key}",
            measure=ctx.sql.float("copies"),
            failing="copies > 1",
            sample=f"concat(item, ' x', {ctx.sql.text('copies')})",
            unit=dataset,
            problem="appear more than once",
            observed="coalesce(sum(case when failing = 1 then measure - 1 else 0 end), 0)",
            observed_label="extra rows",
            snapshot_id=t.snapshot_id,
        )


_uniqueness_check("assets", "uniqueness.asset_id_per_snapshot", "asset")
_uniqueness_check("markets", "uniqueness.market_key_per_snapshot", "market (exchange, base, quote)")
_uniqueness_check("rates", "uniqueness.rate_id_per_snapshot", "rate")
_uniqueness_check("exchanges", "uniqueness.exchange_id_per_snapshot", "exchange")


@check("uniqueness.asset_rank_per_snapshot", "assets", "No two assets share a rank.")
def _rank_unique(ctx: Context) -> Probe | None:
    t = ctx.target("assets")
    if t is None:
        return None
    return row_probe(
        population=f"    select asset_rank, count(*) as assets, min(asset_id) as first_id, max(asset_id) as last_id"
        f" from {ctx.table('assets')} where {t.where()} and asset_rank is not null group by asset_rank",
        measure=ctx.sql.float("assets"),
        failing="assets > 1",
        sample=f"concat('rank ', {ctx.sql.text('asset_rank')}, ' (', first_id, ', ', last_id, ')')",
        unit="ranks",
        problem="are held by more than one asset",
        observed="coalesce(sum(failing), 0)",
        observed_label="shared ranks",
        snapshot_id=t.snapshot_id,
    )


@check("uniqueness.asset_symbol_collisions", "assets", "No two assets share a ticker symbol (case-insensitive).", WARN)
def _symbol_collisions(ctx: Context) -> Probe | None:
    t = ctx.target("assets")
    if t is None:
        return None
    table = ctx.sql.table("staging", "stg_coincap__assets")  # the fact has no symbol
    return row_probe(
        population=f"    select upper(asset_symbol) as symbol, count(distinct asset_id) as assets,"
        f" min(asset_id) as first_id, max(asset_id) as last_id from {table}"
        f" where {t.where()} and asset_symbol is not null group by upper(asset_symbol)",
        measure=ctx.sql.float("assets"),
        failing="assets > 1",
        sample="concat(symbol, ' (', first_id, ', ', last_id, ')')",
        unit="symbols",
        problem="are used by more than one asset",
        observed="coalesce(sum(failing), 0)",
        observed_label="shared symbols",
        snapshot_id=t.snapshot_id,
    )


# -- anomalies


def _against_previous(ctx: Context, columns: str, condition: str) -> tuple[str, Snap, Snap] | Outcome | None:
    """The assets of the snapshot under check joined to the same assets in the previous snapshot."""
    t = ctx.target("assets")
    if t is None:
        return None
    prev = ctx.previous_of("assets")
    if prev is None:
        return Outcome(False, None, None, 0, "not compared: no previous assets snapshot within 8 days", t.snapshot_id)
    population = f"""
    select c.asset_id, {columns}
    from {ctx.table("assets")} as c
    inner join {ctx.table("assets")} as p
        on p.asset_id = c.asset_id
    where {t.where("c")} and {prev.where("p")} and {condition}"""
    return population, t, prev


@check("anomaly.price_jump", "assets",
       "An asset's price moved less than PIPELINE_DQ_PRICE_JUMP_PCT since the previous snapshot (flagged, not "
       "dropped).", WARN)  # fmt: skip
def _price_jump(ctx: Context) -> Probe | Outcome | None:
    f = ctx.sql.float
    found = _against_previous(
        ctx, f"{f('c.price_usd')} as price, {f('p.price_usd')} as previous_price", "p.price_usd > 0"
    )
    if not isinstance(found, tuple):
        return found if found is None else replace(found, threshold=ctx.settings.dq_price_jump_pct)
    population, current, prev = found
    limit = ctx.settings.dq_price_jump_pct
    move = "100.0 * abs(price / previous_price - 1)"
    return row_probe(
        population=population,
        measure=move,
        failing=f"{move} > {limit}",
        sample=f"concat(asset_id, ' ', {ctx.sql.num('100.0 * (price / previous_price - 1)', 1)}, '%')",
        unit="assets",
        problem=f"moved over {_fmt(limit)}% since snapshot {prev.snapshot_id}",
        threshold=limit,
        observed_label="largest move (%)",
        snapshot_id=current.snapshot_id,
    )


@check("anomaly.volume_spike", "assets",
       "An asset's 24-hour volume did not grow over 10x since the previous snapshot (above $1M; flagged, not "
       "dropped).", WARN)  # fmt: skip
def _volume_spike(ctx: Context) -> Probe | Outcome | None:
    f = ctx.sql.float
    found = _against_previous(
        ctx,
        f"{f('c.volume_usd_24h')} as volume, {f('p.volume_usd_24h')} as previous_volume",
        "p.volume_usd_24h > 0 and c.volume_usd_24h is not null",
    )
    if not isinstance(found, tuple):
        return found if found is None else replace(found, threshold=VOLUME_SPIKE_FACTOR)
    population, current, prev = found
    ratio = "volume / previous_volume"
    return row_probe(
        population=population,
        measure=ratio,
        failing=f"{ratio} > {VOLUME_SPIKE_FACTOR} and volume >= {VOLUME_SPIKE_FLOOR_USD}",
        sample=f"concat(asset_id, ' x', {ctx.sql.num(ratio, 1)})",
        unit="assets",
        problem=f"traded over {_fmt(VOLUME_SPIKE_FACTOR)}x the volume of snapshot {prev.snapshot_id}",
        threshold=VOLUME_SPIKE_FACTOR,
        observed_label="largest ratio",
        snapshot_id=current.snapshot_id,
    )


# ------------------------------------------------------------------------------------------------ running


def run_checks(
    settings: Settings,
    *,
    snapshot_id: str | None = None,
    flow_run_id: str | None = None,
    categories: set[str] | None = None,
    store: bool = True,
) -> QualityReport:
    """Run the checks (of `categories`, default all) on a snapshot, or on each dataset's latest snapshot.

    A check that cannot run is reported with status `error` and its one-line reason; the others still run.
    With `store`, the results are appended to ops.dq_results. Raises only when the warehouse cannot be reached.
    """
    from flows.warehouse.factory import warehouse

    wanted = set(categories or CATEGORIES)
    unknown = wanted - set(CATEGORIES)
    if unknown:
        raise ConfigError(
            f"Unknown check category {', '.join(sorted(unknown))}.", f"Choose from {', '.join(CATEGORIES)}."
        )
    if snapshot_id is not None:
        # Validates the id before it goes into SQL: a SnapshotIdError (a ConfigError, one line) says why not.
        _snap_of("assets", snapshot_id)
    store_ = warehouse(settings)
    if store:
        store_.ensure_ops_tables()  # pipeline_runs is read by checks; dq_results is written below
    store_.query("select 1")  # one clear line if the warehouse is missing or unreachable
    checked_at = datetime.now(UTC)
    ctx = Context(settings, now=checked_at, snapshot_id=snapshot_id, query=store_.query)
    report = evaluate(ctx, [c for c in CHECKS if c.category in wanted])
    report.run_id = f"dq-{checked_at:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    if store:
        store_.record_checks(report.rows(flow_run_id))
    return report


def evaluate(ctx: Context, checks: Sequence[Check]) -> QualityReport:
    """Run `checks` in `ctx`; each failure to run becomes that check's `error` result."""
    results: list[CheckResult] = []
    snapshots: dict[str, str | None] = {}
    for c in checks:
        try:
            built = c.build(ctx)
            if built is None:
                continue  # the dataset is not in this snapshot
            if isinstance(built, Probe):
                names, rows = ctx.query(built.sql)
                row = dict(zip(names, rows[0], strict=True)) if rows else {}
                m = Measured(
                    population=int(row.get("population_rows") or 0),
                    observed=None if row.get("observed") is None else float(row["observed"]),
                    failing_rows=int(row.get("failing_rows") or 0),
                    samples=row.get("samples"),
                )
                tripped = built.tripped(m)
                outcome = Outcome(tripped, m.observed, built.threshold, m.failing_rows, built.describe(m, tripped),
                                  built.snapshot_id)  # fmt: skip
            else:
                outcome = built
        except Exception as exc:  # one check's failure never stops the others
            results.append(CheckResult(c.name, c.category, c.dataset, c.severity, "error", None, None, None,
                                       _one_line(f"could not run: {_reason(exc)}"), c.description))  # fmt: skip
            snapshots[c.name] = ctx.snapshot_id
            continue
        status = ("fail" if c.severity == ERROR else "warn") if outcome.tripped else "pass"
        observed = outcome.observed
        observed = None if observed is None or math.isnan(observed) else float(f"{observed:.12g}")
        results.append(CheckResult(c.name, c.category, c.dataset, c.severity, status, observed, outcome.threshold,
                                   outcome.failing_rows, _one_line(outcome.detail), c.description))  # fmt: skip
        snapshots[c.name] = outcome.snapshot_id
    snapshot_id = ctx.snapshot_id
    if snapshot_id is None:
        checked = {t.snapshot_id for t in ctx.current.values() if t is not None}
        snapshot_id = checked.pop() if len(checked) == 1 else None
    return QualityReport("", snapshot_id, ctx.now, results, snapshots)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, PipelineError):
        return str(exc)
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _one_line(text: str, limit: int = 500) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def compile_checks(
    settings: Settings,
    targets: dict[str, Snap],
    previous: dict[str, Snap] | None = None,
    now: datetime | None = None,
) -> dict[str, str]:
    """The SQL each check would run for these snapshots, without a warehouse (for tests and review)."""
    ctx = Context(settings, now=now or datetime.now(UTC), snapshot_id=None)
    ctx.current.update({d: targets.get(d) for d in DATASETS})
    ctx.previous.update({d: (previous or {}).get(d) for d in DATASETS})
    ctx.ever_landed = set(DATASETS)
    out = {}
    for c in CHECKS:
        built = c.build(ctx) if c.name != "freshness.lake_sources" else None
        if isinstance(built, Probe):
            out[c.name] = built.sql
    return out
