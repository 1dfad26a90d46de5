"""Retention: granular data past the policy goes, daily aggregates stay, and a second application is a no-op."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from flows.lake.storage import LocalStorage
from flows.maintenance import apply_retention, cutoff_for, expired_objects
from flows.settings import Settings
from flows.transform import run_dbt
from tests.lake_fixtures import generate_history, write_history

ROOT = Path(__file__).resolve().parent.parent
DAYS = range(0, 45)


def rows(settings: Settings, sql: str) -> list[tuple]:
    con = duckdb.connect(str(settings.duckdb_path))
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def daily(settings: Settings) -> list[tuple]:
    return rows(settings, "select * from marts.fct_asset_daily order by asset_id, price_date")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    settings = Settings(PIPELINE_DATA_DIR=tmp_path_factory.mktemp("retention"), PIPELINE_GRANULAR_RETENTION_DAYS=31)  # type: ignore[call-arg]
    snapshots = generate_history(DAYS)
    write_history(settings.lake_dir, snapshots)
    run_dbt(settings, "build")
    today = max(s.ts for s in snapshots).date() + timedelta(days=1)
    return settings, today


def test_retention_drops_granular_keeps_daily_and_is_idempotent(built):
    settings, today = built
    cutoff = cutoff_for(settings, today)
    daily_before = daily(settings)
    snapshots_before = rows(settings, "select count(*), min(snapshot_date) from marts.fct_asset_snapshots")[0]
    assert snapshots_before[1] < cutoff, "the fixture has data older than the policy"

    first = apply_retention(settings, today)
    assert first.objects_deleted and all(re.search(r"/dt=(\d{4}-\d{2}-\d{2})/", k) for k in first.objects_deleted)
    assert first.rows_deleted["marts.fct_asset_snapshots"] > 0
    assert expired_objects(LocalStorage(settings.lake_dir), cutoff) == []
    (min_kept,) = rows(settings, "select min(snapshot_date) from marts.fct_asset_snapshots")[0]
    assert min_kept >= cutoff
    assert daily(settings) == daily_before, "daily aggregates of dropped days are intact"

    second = apply_retention(settings, today)
    assert second.objects_deleted == [] and not any(second.rows_deleted.values()), "second application is a no-op"
    assert daily(settings) == daily_before

    # The next build does not resurrect dropped days nor lose the daily history of them.
    run_dbt(settings, "build")
    assert daily(settings) == daily_before
    (min_after_build,) = rows(settings, "select min(snapshot_date) from marts.fct_asset_snapshots")[0]
    assert min_after_build >= cutoff


def test_retention_shorter_than_the_longest_window_is_refused():
    with pytest.raises(ValueError, match="greater than or equal to 31"):
        Settings(PIPELINE_GRANULAR_RETENTION_DAYS=10)  # type: ignore[call-arg]


def test_terraform_applies_the_same_retention_as_the_settings():
    default = Settings.model_fields["granular_retention_days"].default
    variables = (ROOT / "terraform/envs/prod/variables.tf").read_text()
    for name in ("granular_retention_days", "granular_partition_expiration_days"):
        block = variables.split(f'variable "{name}"', 1)[1].split("\n}", 1)[0]
        assert re.search(rf"default\s*=\s*{default}\b", block), f"{name} must default to {default} like the settings"


def test_sweep_staging_removes_only_files_older_than_a_day(tmp_path: Path) -> None:
    """Files a killed run left in staging go; a running run's fresh files stay."""
    import os
    import time

    from flows.maintenance import STAGING_MAX_AGE, sweep_staging

    staging = tmp_path / "staging"
    (staging / "history").mkdir(parents=True)
    old, old_nested, fresh = staging / "a.parquet", staging / "history" / "b.parquet", staging / "c.parquet"
    for path in (old, old_nested, fresh):
        path.write_bytes(b"x")
    stale = time.time() - STAGING_MAX_AGE.total_seconds() - 60
    for path in (old, old_nested):
        os.utime(path, (stale, stale))
    assert sweep_staging(staging) == 2
    assert [p.name for p in staging.rglob("*") if p.is_file()] == ["c.parquet"]
    assert sweep_staging(staging) == 0
    assert sweep_staging(tmp_path / "missing") == 0
