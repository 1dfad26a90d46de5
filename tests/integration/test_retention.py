"""Retention: granular data past the policy goes, daily aggregates stay, and a second application is a no-op.

One setting (`PIPELINE_GRANULAR_RETENTION_DAYS`, Terraform's `granular_retention_days`) drives the lake, staging
and the marts: every dbt run gets it as `granular_partition_expiration_days`.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import duckdb
import hcl2
import pytest
import yaml

from flows.lake.storage import LocalStorage
from flows.maintenance import apply_retention, cutoff_for, expired_objects
from flows.paths import PROJECT_ROOT
from flows.settings import Settings
from flows.warehouse.dbt import invoke_dbt, run_dbt
from tests.lake_fixtures import generate_history, write_history

ROOT = PROJECT_ROOT
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


def test_the_marts_expire_after_the_settings_retention(built):
    """The build ran with PIPELINE_GRANULAR_RETENTION_DAYS=31: every model reading the var got 31, not 365."""
    settings, _ = built
    readers = {
        path.stem
        for path in (ROOT / "dbt" / "models").rglob("*.sql")
        if "var('granular_partition_expiration_days')" in path.read_text()
    }
    assert {"fct_asset_snapshots", "fct_market_snapshots", "fct_rates"} <= readers
    manifest = json.loads((settings.data_dir.resolve() / "dbt" / "target" / "manifest.json").read_text())
    expiration = {
        node["name"]: node["config"].get("partition_expiration_days")
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model" and node["name"] in readers
    }
    assert expiration == dict.fromkeys(readers, 31)


def test_every_dbt_invocation_passes_the_retention(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """run_dbt and invoke_dbt add the setting to dbt's --vars, merged with the caller's own --vars."""
    import dbt.cli.main

    calls: list[list[str]] = []

    class Runner:
        def invoke(self, args: list[str]) -> SimpleNamespace:
            calls.append(args)
            return SimpleNamespace(success=True, result=None, exception=None)

    monkeypatch.setattr(dbt.cli.main, "dbtRunner", Runner)
    settings = Settings(PIPELINE_DATA_DIR=tmp_path, PIPELINE_GRANULAR_RETENTION_DAYS=400)  # type: ignore[call-arg]
    run_dbt(settings, "build", "--select", "fct_rates")
    invoke_dbt(
        settings, "source freshness", "--select", "source:coincap.assets", "--vars", "{freshness_assets_days: 2}"
    )
    run_dbt(settings, "compile", "--vars={granular_partition_expiration_days: 40, test_recent_days: 1}")

    def dbt_vars(args: list[str]) -> dict:
        assert args.count("--vars") == 1 and not any(a.startswith("--vars=") for a in args), args
        return yaml.safe_load(args[args.index("--vars") + 1])

    build, freshness, compile_ = calls
    assert build[:1] == ["build"] and "fct_rates" in build
    assert dbt_vars(build) == {"granular_partition_expiration_days": 400, "dq_price_jump_pct": 50.0}
    assert freshness[:2] == ["source", "freshness"] and "source:coincap.assets" in freshness
    assert dbt_vars(freshness) == {"granular_partition_expiration_days": 400, "dq_price_jump_pct": 50.0,
                                   "freshness_assets_days": 2}  # fmt: skip
    # A caller's explicit value wins (a deliberate override, as on the dbt CLI).
    assert dbt_vars(compile_) == {"granular_partition_expiration_days": 40, "dq_price_jump_pct": 50.0,
                                 "test_recent_days": 1}  # fmt: skip


def test_one_retention_setting_with_one_default_everywhere():
    """Settings, Terraform (the env and both modules) and dbt's fallback agree; Terraform has no second setting."""
    default = Settings.model_fields["granular_retention_days"].default
    dbt_default = yaml.safe_load((ROOT / "dbt" / "dbt_project.yml").read_text())["vars"]
    assert dbt_default["granular_partition_expiration_days"] == default, "dbt_project.yml's fallback"
    for module in ("envs/prod", "modules/bigquery", "modules/lake_bucket"):
        with (ROOT / "terraform" / module / "variables.tf").open() as handle:
            blocks = hcl2.load(handle)["variable"]
        variables = {name.strip('"'): body for block in blocks for name, body in block.items()}
        assert variables["granular_retention_days"]["default"] == default, module
        assert "granular_partition_expiration_days" not in variables, f"{module}: a second retention setting"


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
