"""What the checks of one quality run see: the settings, the moment, the warehouse, and the snapshots under check.

The SQL here is the part both engines speak alike (no engine's functions, `date '…'` and `timestamp '…'` literals
in UTC, the warehouse session being UTC); where the engines differ, the check is a dbt test with dispatched
macros. Table names are the target's: `marts.x` on DuckDB, `` `project.<prefix>marts.x` `` on BigQuery.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flows.datasets import SNAPSHOT_DATASETS
from flows.errors import PipelineError
from flows.quality.freshness import freshness_thresholds
from flows.settings import Settings, Target

DATASETS = SNAPSHOT_DATASETS
LOOKBACK_DAYS = 35  # how far back "the latest snapshot" is looked for (bounds BigQuery's partition scans)

# dataset -> (layer, relation, natural key columns): the model a dataset's checks read
RELATIONS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "assets": ("marts", "fct_asset_snapshots", ("asset_id",)),
    "rates": ("marts", "fct_rates", ("rate_id",)),
    "exchanges": ("marts", "fct_exchange_snapshots", ("exchange_id",)),
    "markets": ("marts", "fct_market_snapshots", ("exchange_id", "base_asset_id", "quote_asset_id")),
}

Query = Callable[[str], tuple[list[str], list[tuple[Any, ...]]]]


def table_name(settings: Settings, layer: str, name: str) -> str:
    """`marts.x` on DuckDB; `` `project.<prefix>marts.x` `` on BigQuery."""
    if settings.target is Target.gcp:
        return f"`{settings.gcp_project or 'project'}.{settings.bq_dataset_prefix}{layer}.{name}`"
    return f"{layer}.{name}"


def dataset_of_model(model: str) -> str | None:
    """The dataset a model holds snapshots of: its RELATIONS entry, or its staging model's name."""
    for dataset, (_, relation, _) in RELATIONS.items():
        if relation == model:
            return dataset
    prefix = "stg_coincap__"
    if model.startswith(prefix) and model.removeprefix(prefix) in DATASETS:
        return model.removeprefix(prefix)
    return None


def sql_date(day: date) -> str:
    return f"date '{day.isoformat()}'"


def sql_timestamp(moment: datetime) -> str:
    """A UTC moment as a literal both engines read as UTC (the local warehouse's session is UTC)."""
    return f"timestamp '{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}'"


def sql_in(values: Iterable[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def as_utc(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime.fromisoformat(str(value)).astimezone(UTC)


@dataclass(frozen=True)
class Snap:
    """A dataset's snapshot that a check reads: its id and day (the partition to filter on)."""

    dataset: str
    snapshot_id: str
    snapshot_date: date
    snapshot_ts: datetime

    def where(self, alias: str = "") -> str:
        a = f"{alias}." if alias else ""
        return f"{a}snapshot_date = {sql_date(self.snapshot_date)} and {a}snapshot_id = '{self.snapshot_id}'"


def snap_of(dataset: str, snapshot_id: str) -> Snap:
    """The snapshot `snapshot_id` of `dataset` (validates the id: a SnapshotIdError says why not)."""
    from flows.snapshot_id import Snapshot

    snap = Snapshot.parse(snapshot_id)
    return Snap(dataset, snap.id, snap.ts.date(), snap.ts)


class Context:
    """What the checks of one quality run see: settings, the moment, and the snapshots under check."""

    def __init__(self, settings: Settings, *, now: datetime, snapshot_id: str | None, query: Query | None = None):
        self.settings = settings
        self.now = now
        self.snapshot_id = snapshot_id
        self._query = query
        self.freshness = freshness_thresholds(settings)
        # caches, filled on first use (tests preload them)
        self.current: dict[str, Snap | None] = {}
        self.ever_landed: set[str] | None = None

    def table(self, dataset: str) -> str:
        layer, name, _ = RELATIONS[dataset]
        return table_name(self.settings, layer, name)

    @property
    def runs_table(self) -> str:
        return table_name(self.settings, "ops", "pipeline_runs")

    def query(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run SQL on the warehouse: (column names, rows)."""
        if self._query is None:
            raise PipelineError("No warehouse to query.", "Pass a warehouse to the quality run.")
        return self._query(sql)

    def run(self, sql: str) -> list[tuple[Any, ...]]:
        return self.query(sql)[1]

    def target(self, dataset: str) -> Snap | None:
        """The dataset's snapshot under check: the run's snapshot if the dataset is in it, else (no snapshot
        given) its latest; None when there is none to check."""
        if dataset not in self.current:
            if self.snapshot_id is not None:
                at = snap_of(dataset, self.snapshot_id)
                found = self._latest(dataset, at.snapshot_date, at.snapshot_date, at)
                self.current[dataset] = found if found and found.snapshot_id == self.snapshot_id else None
            else:
                today = self.now.date()
                self.current[dataset] = self._latest(
                    dataset, today - timedelta(days=LOOKBACK_DAYS), today + timedelta(days=1), None
                )
        return self.current[dataset]

    def _latest(self, dataset: str, first: date, last: date, at: Snap | None) -> Snap | None:
        """The dataset's latest snapshot between two days (at or before `at`)."""
        up_to = f" and snapshot_id <= '{at.snapshot_id}'" if at else ""
        rows = self.run(
            f"select snapshot_id, snapshot_date, min(snapshot_ts) from {self.table(dataset)}"
            f" where snapshot_date between {sql_date(first)} and {sql_date(last)}{up_to}"
            " group by snapshot_id, snapshot_date order by snapshot_id desc limit 1"
        )
        return Snap(dataset, rows[0][0], as_date(rows[0][1]), as_utc(rows[0][2])) if rows else None

    def landed_datasets(self) -> set[str]:
        """Datasets the pipeline has ever landed (within a year): freshness is checked for these."""
        if self.ever_landed is None:
            since = sql_timestamp(self.now - timedelta(days=400))
            rows = self.run(
                f"select distinct step from {self.runs_table} where status = 'completed'"
                f" and step in ({sql_in(DATASETS)}) and started_at >= {since}"
            )
            self.ever_landed = {r[0] for r in rows}
        return self.ever_landed

    def checked_targets(self) -> list[Snap]:
        return [t for t in (self.target(d) for d in DATASETS) if t is not None]
