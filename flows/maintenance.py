"""Retention: one policy, set once (`PIPELINE_GRANULAR_RETENTION_DAYS`, default 365).

Granular data (snapshot files, quarantine, stream ticks, and the snapshot-grain facts) older than the policy is
dropped; daily aggregates (`fct_asset_daily`, asset history) are kept forever. Locally the maintenance flow
applies it to the lake folder and DuckDB. On Google Cloud the same number is Terraform's
`granular_retention_days`: it sets `PIPELINE_GRANULAR_RETENTION_DAYS` for the Cloud Run jobs, the bucket's
lifecycle rule and the staging dataset's partition expiration; `flows.warehouse.dbt` passes the setting to dbt as
`granular_partition_expiration_days`, the snapshot-grain marts' partition expiration.
Applying it twice changes nothing the second time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.lake.factory import lake_storage
from flows.lake.lock import data_dir_lock
from flows.lake.parquet import PLACEHOLDER_DAY
from flows.lake.storage import LakeStorage
from flows.orchestration.alerting import alert_on_failure
from flows.settings import Settings, Target, current_settings

# Lake prefixes holding granular, dt-partitioned data. Asset history (and its quarantine) is daily data: kept
# forever. On Google Cloud the bucket's lifecycle rule deletes by these same prefixes (Terraform's
# lake_bucket granular_prefixes; tests/integration/test_terraform.py checks that the two lists agree).
GRANULAR_PREFIXES = (
    "coincap/assets/",
    "coincap/rates/",
    "coincap/exchanges/",
    "coincap/markets/",
    "coincap/prices_stream/",
    "coincap/prices_stream_gaps/",
    "quarantine/assets/",
    "quarantine/rates/",
    "quarantine/exchanges/",
    "quarantine/markets/",
    "quarantine/prices_stream/",
)
# Snapshot-grain marts and the day column they are partitioned by; fct_asset_daily is not here on purpose.
GRANULAR_MARTS = {
    "marts.fct_asset_snapshots": "snapshot_date",
    "marts.fct_exchange_snapshots": "snapshot_date",
    "marts.fct_market_snapshots": "snapshot_date",
    "marts.fct_rates": "snapshot_date",
    "marts.rpt_market_pairs_daily": "report_date",  # on BigQuery its partitions expire with the same setting
}
_DT = re.compile(r"/dt=(\d{4}-\d{2}-\d{2})/")


@dataclass
class RetentionReport:
    """What one application of the policy removed."""

    cutoff: date
    objects_deleted: list[str] = field(default_factory=list)
    rows_deleted: dict[str, int] = field(default_factory=dict)
    staging_files_removed: int = 0


# A staged file older than this belongs to a run that was killed or failed before publishing (a run stages and
# publishes within its task timeouts, 1 h for an extract), so it is removed. Nothing ever reads it.
STAGING_MAX_AGE = timedelta(hours=24)


def sweep_staging(staging_dir: Path, now: datetime | None = None) -> int:
    """Remove files a killed or failed run left in the staging folder; return how many."""
    if not staging_dir.is_dir():
        return 0
    oldest = (now or datetime.now(UTC)).timestamp() - STAGING_MAX_AGE.total_seconds()
    removed = 0
    for path in staging_dir.rglob("*"):
        try:
            if path.is_file() and path.stat().st_mtime < oldest:
                path.unlink()
                removed += 1
        except FileNotFoundError:  # a concurrent run published or discarded it meanwhile
            continue
    return removed


def cutoff_for(settings: Settings, today: date | None = None) -> date:
    """The first day kept: everything on an earlier day is dropped."""
    today = today or datetime.now(UTC).date()
    return today - timedelta(days=settings.granular_retention_days)


def expired_objects(storage: LakeStorage, cutoff: date) -> list[str]:
    """Granular lake objects whose `dt=` partition is older than `cutoff` (schema placeholders excepted)."""
    expired = []
    for prefix in GRANULAR_PREFIXES:
        for key in storage.list(prefix):
            match = _DT.search(key)
            if not match:
                continue
            day = date.fromisoformat(match.group(1))
            if day < cutoff and day != PLACEHOLDER_DAY.date():
                expired.append(key)
    return expired


def apply_lake_retention(storage: LakeStorage, cutoff: date) -> list[str]:
    """Delete expired granular objects; return their keys."""
    keys = expired_objects(storage, cutoff)
    for key in keys:
        storage.delete(key)
    return keys


def apply_warehouse_retention(settings: Settings, cutoff: date) -> dict[str, int]:
    """Delete snapshot-grain mart rows older than `cutoff` in DuckDB; daily marts are untouched."""
    import duckdb

    if not settings.duckdb_path.exists():
        return {}
    deleted = {}
    con = duckdb.connect(str(settings.duckdb_path))
    try:
        existing = {
            f"{s}.{t}"
            for s, t in con.execute("select table_schema, table_name from information_schema.tables").fetchall()
        }
        for table, column in GRANULAR_MARTS.items():
            if table not in existing:
                continue
            (count,) = con.execute(f"select count(*) from {table} where {column} < ?", [cutoff]).fetchone()
            if count:
                con.execute(f"delete from {table} where {column} < ?", [cutoff])
            deleted[table] = count
    finally:
        con.close()
    return deleted


def apply_retention(settings: Settings, today: date | None = None) -> RetentionReport:
    """Apply the retention policy to the local lake and warehouse (GCS and BigQuery do it themselves)."""
    cutoff = cutoff_for(settings, today)
    report = RetentionReport(cutoff=cutoff)
    report.objects_deleted = apply_lake_retention(lake_storage(settings), cutoff)
    if settings.target is Target.local:
        report.rows_deleted = apply_warehouse_retention(settings, cutoff)
    report.staging_files_removed = sweep_staging(settings.data_dir.resolve() / "staging")
    return report


@task(name="apply-retention", retries=1, retry_delay_seconds=30, timeout_seconds=1800, cache_policy=NO_CACHE)
def retention_task() -> RetentionReport:
    """Drop granular data past the retention policy."""
    report = apply_retention(current_settings())
    get_run_logger().info(
        "retention: kept from %s; %d lake objects, %d mart rows and %d stale staged files removed",
        report.cutoff, len(report.objects_deleted), sum(report.rows_deleted.values()), report.staging_files_removed,
    )  # fmt: skip
    return report


def compact_stream(settings: Settings, now: datetime | None = None) -> list[str]:
    """Compact every day of stream micro-batches (finished days whole, today's finished hours); return files written."""
    from flows.lake.compaction import compact

    storage = lake_storage(settings)
    days = sorted(
        {date.fromisoformat(m.group(1)) for k in storage.list("coincap/prices_stream/") if (m := _DT.search(k))}
    )
    written: list[str] = []
    for day in days:
        if day == PLACEHOLDER_DAY.date():
            continue
        written += compact(
            storage, "prices_stream", day=day, now=now, staging_dir=settings.data_dir.resolve() / "staging"
        ).written
    return written


@task(name="compact-stream", retries=1, retry_delay_seconds=30, timeout_seconds=3600, cache_policy=NO_CACHE)
def compact_task() -> list[str]:
    """Merge the stream's small files into large ones (no tick lost or duplicated; re-runs are idempotent)."""
    written = compact_stream(current_settings())
    get_run_logger().info("compaction: %d merged files written", len(written))
    return written


@flow(name="maintenance", log_prints=True, on_failure=[alert_on_failure], on_crashed=[alert_on_failure])
def maintenance_flow() -> RetentionReport:
    """Daily upkeep: compact the price stream, then apply the retention policy (PIPELINE_GRANULAR_RETENTION_DAYS).

    Holds the data dir's pipeline lock (the CLI takes it first, before Prefect starts, and this re-enters it): a
    deployment's run never rewrites files under a snapshot or a dbt build."""
    with data_dir_lock(current_settings().data_dir, kind="pipeline", job="maintenance run"):
        compact_task()
        return retention_task()
