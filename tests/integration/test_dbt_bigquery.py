"""The dbt project on the BigQuery target, without BigQuery: dbt's own runner with a stubbed connection.

`compile_offline` (flows/ops/sql_check/dbt_offline.py, shared with `coincap-pipeline check-sql`) runs dbt for real
on the gcp target; only the connection is replaced, and every SQL statement dbt would send is recorded. Two
passes: a first build (CREATE TABLE/VIEW, data tests) and an incremental run (insert_overwrite with copy jobs).
Here the marts' configs and the statements' shape are checked (sqlglot's BigQuery dialect parses them: syntax
only); tests/integration/test_sql_check.py has Google's analyzer check their semantics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlglot
from sqlglot import exp

from flows.ops.sql_check.dbt_offline import LATEST_LOADED_DAY, OfflineBuild
from flows.paths import PROJECT_ROOT
from flows.settings import Settings
from flows.warehouse.dbt import DbtOutcome, dbt_env

pytestmark = pytest.mark.slow

ROOT = PROJECT_ROOT
PROJECT = "example-project"
SNAPSHOT_FACTS = {
    "fct_asset_snapshots": ["asset_id"],
    "fct_exchange_snapshots": ["exchange_id"],
    "fct_market_snapshots": ["exchange_id", "base_asset_id"],
    "fct_rates": ["rate_id"],
}
INCREMENTAL = {
    **SNAPSHOT_FACTS,
    "fct_asset_daily": ["asset_id"],
    "stg_coincap__assets": ["asset_id"],
    "stg_coincap__rates": ["rate_id"],
    "stg_coincap__exchanges": ["exchange_id"],
    "stg_coincap__markets": ["exchange_id", "base_asset_id"],
}
# The dashboards' daily reports (dbt/models/reports): incremental too, partitioned by report_date, clustered by what
# the charts filter on; and the report views over the tables the pipeline writes in the ops dataset.
REPORTS = {
    "rpt_market_overview_daily": ["asset_rank", "asset_id"],
    "rpt_asset_daily": ["asset_id"],
    "rpt_exchange_daily": ["exchange_id"],
    "rpt_market_pairs_daily": ["exchange_id", "base_asset_id"],
}
REPORT_VIEWS = {"rpt_pipeline_health_daily": "pipeline_runs", "rpt_data_quality": "dq_results"}


@dataclass
class BigQueryRuns:
    settings: Settings
    manifest: dict[str, Any]
    first: DbtOutcome
    incremental: DbtOutcome
    first_sql: dict[str, list[str]]  # node unique id -> statements, first build
    incremental_sql: dict[str, list[str]]  # the same for the incremental run
    copies: dict[str, list[tuple[str, str, str]]]  # model -> (source, destination, disposition) copy jobs

    def node(self, name: str) -> dict[str, Any]:
        return next(n for n in self.manifest["nodes"].values() if n["resource_type"] == "model" and n["name"] == name)


def _by_node(statements: list[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for node, sql in statements:
        grouped.setdefault(node, []).append(sql)
    return grouped


@pytest.fixture(scope="module")
def runs(bigquery_offline: tuple[Settings, OfflineBuild]) -> BigQueryRuns:
    _, build = bigquery_offline
    copies: dict[str, list[tuple[str, str, str]]] = {}
    for sources, destination, disposition in build.copies:
        copies.setdefault(destination.split("$")[0], []).append((sources[0], destination, disposition))
    return BigQueryRuns(
        build.settings, build.manifest, build.first, build.incremental, _by_node(build.first_sql),
        _by_node(build.incremental_sql), copies,
    )  # fmt: skip


def _model_sql(statements: dict[str, list[str]], name: str) -> str:
    return "\n;\n".join(statements[f"model.coincap.{name}"])


def _parse(sql: str) -> list[exp.Expression]:
    return [e for e in sqlglot.parse(sql, read="bigquery", error_level=sqlglot.ErrorLevel.RAISE) if e is not None]


def test_every_model_and_data_test_builds_on_the_bigquery_target(runs: BigQueryRuns) -> None:
    models = [n for n in runs.manifest["nodes"].values() if n["resource_type"] == "model"]
    assert len(models) >= 11 and set(INCREMENTAL) <= {n["name"] for n in models}
    assert runs.first.ok, runs.first.failures
    assert runs.first.statuses["success"] == len(models)
    assert runs.first.statuses["pass"] > 90  # data tests
    assert runs.incremental.ok, runs.incremental.failures
    assert runs.incremental.statuses["success"] == len(models)


def test_every_statement_parses_as_bigquery_sql(runs: BigQueryRuns) -> None:
    statements = [
        sql for by_node in (runs.first_sql, runs.incremental_sql) for sqls in by_node.values() for sql in sqls
    ]
    assert len(statements) > 120
    for sql in statements:
        try:
            parsed = _parse(sql)
        except sqlglot.errors.ParseError as exc:
            pytest.fail(f"not BigQuery SQL: {str(exc).splitlines()[0]}\n{sql[:3000]}")
        # sqlglot falls back to an opaque Command for statements it cannot parse: that is not a check
        assert not [e for e in parsed if isinstance(e, exp.Command)], sql[:3000]


def test_models_land_in_the_prefixed_datasets_and_read_the_raw_external_tables(runs: BigQueryRuns) -> None:
    assert runs.node("stg_coincap__assets")["schema"] == "coincap_staging"
    assert runs.node("int_asset_snapshots_daily")["schema"] == "coincap_staging"
    assert runs.node("fct_rates")["schema"] == "coincap_marts"
    assert runs.node("fct_rates")["database"] == PROJECT
    for name, source in [("stg_coincap__assets", "assets"), ("stg_coincap__markets", "markets")]:
        assert f"from `{PROJECT}`.`coincap_raw`.`{source}`" in _model_sql(runs.first_sql, name)
    dim_sql = _model_sql(runs.first_sql, "dim_assets")
    assert f"create or replace table `{PROJECT}`.`coincap_marts`.`dim_assets`" in dim_sql
    assert f"`{PROJECT}`.`coincap_staging`.`stg_coincap__assets`" in dim_sql


@pytest.mark.parametrize("name", sorted(INCREMENTAL))
def test_incremental_models_are_partitioned_by_day_and_clustered(runs: BigQueryRuns, name: str) -> None:
    config = runs.node(name)["config"]
    day = "price_date" if name == "fct_asset_daily" else "snapshot_date"
    assert config["materialized"] == "incremental"
    assert config["incremental_strategy"] == "insert_overwrite"
    assert config["partition_by"] == {"field": day, "data_type": "date", "granularity": "day", "copy_partitions": True}
    assert config["cluster_by"] == INCREMENTAL[name]
    assert config["on_schema_change"] == "fail"
    expiring = name in SNAPSHOT_FACTS
    assert config.get("partition_expiration_days") == (runs.settings.granular_retention_days if expiring else None)
    assert bool(config.get("require_partition_filter")) == (name == "fct_market_snapshots")

    # the first build's CREATE carries the same, as BigQuery will see it
    create = next(e for e in _parse(_model_sql(runs.first_sql, name)) if isinstance(e, exp.Create))
    properties = {type(p).__name__: p for p in create.args["properties"].expressions}
    assert properties["PartitionedByProperty"].sql("bigquery") == f"PARTITION BY {day}"
    assert properties["ClusterProperty"].sql("bigquery") == f"CLUSTER BY {', '.join(INCREMENTAL[name])}"
    options = {
        p.name: p.args["value"].sql("bigquery") for p in create.args["properties"].expressions if p.key == "property"
    }
    assert options.get("partition_expiration_days") == (
        str(runs.settings.granular_retention_days) if expiring else None
    )
    assert options.get("require_partition_filter") == ("TRUE" if name == "fct_market_snapshots" else None)
    layer = "staging" if name.startswith("stg_") else "marts"
    assert options["labels"] == f"[('pipeline', 'coincap'), ('layer', '{layer}')]"


@pytest.mark.parametrize("name", sorted(INCREMENTAL))
def test_incremental_runs_replace_whole_days_read_with_constant_filters(runs: BigQueryRuns, name: str) -> None:
    first, later = _model_sql(runs.first_sql, name), _model_sql(runs.incremental_sql, name)
    # the latest loaded day comes from partition metadata, not from a scan of the table
    assert "INFORMATION_SCHEMA.PARTITIONS" in later and f"table_name = '{name}'" in later
    # and is a constant in the query, so BigQuery reads only the partitions from that day on
    if name == "fct_asset_daily":  # 30 days of context for the windows, then the recomputed days only
        assert f"where snapshot_date >= date_add(cast('{LATEST_LOADED_DAY}' as date), interval -30 day)" in later
        assert f"where snapshot_date >= cast('{LATEST_LOADED_DAY}' as date)" in later
    else:
        column = "dt" if name.startswith("stg_") else "snapshot_date"
        assert f"where {column} >= cast('{LATEST_LOADED_DAY}' as date)" in later
        assert f"where {column} >= cast('1970-01-01' as date)" in first  # a first build reads everything

    # insert_overwrite with copy_partitions: the recomputed days go to a temporary table, then each replaces its
    # partition with a (free) copy job; no MERGE, no DML on the target
    parsed = [e for sql in runs.incremental_sql[f"model.coincap.{name}"] for e in _parse(sql)]
    creates = [e for e in parsed if isinstance(e, exp.Create)]
    assert len(creates) == 1 and creates[0].this.name.startswith(f"{name}__dbt_tmp")
    temporary = creates[0].this.name
    assert not [m for e in parsed for m in e.find_all(exp.Merge, exp.Delete, exp.Insert)]
    day = LATEST_LOADED_DAY.replace("-", "")
    assert runs.copies[name] == [(f"{temporary}${day}", f"{name}${day}", "WRITE_TRUNCATE")]
    assert isinstance(parsed[-1], exp.Drop) and parsed[-1].find(exp.Table).name == temporary


def test_data_tests_of_partitioned_models_read_only_recent_days(runs: BigQueryRuns) -> None:
    tests = [n for n in runs.manifest["nodes"].values() if n["resource_type"] == "test" and n.get("attached_node")]
    assert len(tests) > 90
    for test in tests:
        model = test["attached_node"].split(".")[-1]
        sql = "\n".join(runs.first_sql[test["unique_id"]])
        if model in INCREMENTAL or model in REPORTS:  # the day-partitioned models: staging, facts, reports
            day = {"fct_asset_daily": "price_date"}.get(model, "report_date" if model in REPORTS else "snapshot_date")
            assert f"where {day} >= date_sub(current_date(), interval 3 day)" in sql, test["name"]
        else:  # dimensions and the intermediate view: everything
            assert "current_date()" not in sql, test["name"]


def test_the_granular_facts_expire_after_the_retention_setting(runs: BigQueryRuns) -> None:
    import hcl2

    days = runs.settings.granular_retention_days  # passed to dbt as granular_partition_expiration_days
    for module in ("envs/prod", "modules/bigquery"):
        variables = hcl2.load((ROOT / "terraform" / module / "variables.tf").open())["variable"]
        defaults = {name.strip('"'): body.get("default") for block in variables for name, body in block.items()}
        assert defaults["granular_retention_days"] == days, module
    for name in SNAPSHOT_FACTS:
        assert runs.node(name)["config"]["partition_expiration_days"] == days


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_report_tables_are_partitioned_by_report_date_and_replace_whole_days(runs: BigQueryRuns, name: str) -> None:
    config = runs.node(name)["config"]
    assert (config["materialized"], config["incremental_strategy"]) == ("incremental", "insert_overwrite")
    day = {"field": "report_date", "data_type": "date", "granularity": "day", "copy_partitions": True}
    assert config["partition_by"] == day and config["cluster_by"] == REPORTS[name]
    pairs = name == "rpt_market_pairs_daily"  # the largest: a partition filter is required, and it expires
    assert config.get("partition_expiration_days") == (runs.settings.granular_retention_days if pairs else None)
    assert bool(config.get("require_partition_filter")) == pairs

    create = next(e for e in _parse(_model_sql(runs.first_sql, name)) if isinstance(e, exp.Create))
    properties = {type(p).__name__: p for p in create.args["properties"].expressions}
    assert properties["PartitionedByProperty"].sql("bigquery") == "PARTITION BY report_date"
    assert properties["ClusterProperty"].sql("bigquery") == f"CLUSTER BY {', '.join(REPORTS[name])}"
    options = {
        p.name: p.args["value"].sql("bigquery") for p in create.args["properties"].expressions if p.key == "property"
    }
    assert options["labels"] == "[('pipeline', 'coincap'), ('layer', 'reports')]"
    assert create.this.db == "coincap_marts"

    # incremental: the latest loaded day from partition metadata, constant filters, partitions replaced by copy jobs
    later = _model_sql(runs.incremental_sql, name)
    assert "INFORMATION_SCHEMA.PARTITIONS" in later and f"table_name = '{name}'" in later
    column = "price_date" if name == "rpt_asset_daily" else "snapshot_date"
    assert f"where {column} >= cast('{LATEST_LOADED_DAY}' as date)" in later
    parsed = [e for sql in runs.incremental_sql[f"model.coincap.{name}"] for e in _parse(sql)]
    assert not [m for e in parsed for m in e.find_all(exp.Merge, exp.Delete, exp.Insert)]
    assert [c[1] for c in runs.copies[name]] == [f"{name}${LATEST_LOADED_DAY.replace('-', '')}"]


@pytest.mark.parametrize("name", sorted(REPORT_VIEWS))
def test_report_views_read_the_ops_tables_the_pipeline_writes(runs: BigQueryRuns, name: str) -> None:
    models = [n for n in runs.manifest["nodes"].values() if n["resource_type"] == "model"]
    reports = {n["name"] for n in models if n["name"].startswith("rpt_")}
    assert reports == set(REPORTS) | set(REPORT_VIEWS)  # every report is one or the other (looker/report.yaml too)
    assert runs.node(name)["config"]["materialized"] == "view"
    sql = _model_sql(runs.first_sql, name)
    assert f"create or replace view `{PROJECT}`.`coincap_marts`.`{name}`" in sql
    staging = f"stg_ops__{REPORT_VIEWS[name]}"  # the ops table's staging view, the only reader of the source
    assert f"from `{PROJECT}`.`coincap_staging`.`{staging}`" in sql
    assert runs.node(staging)["config"]["materialized"] == "view"
    staging_sql = _model_sql(runs.first_sql, staging)
    assert f"from `{PROJECT}`.`coincap_ops`.`{REPORT_VIEWS[name]}`" in staging_sql
    assert "where false" not in staging_sql  # the empty stand-in is only for a warehouse without the ops tables


def test_dbt_env_sets_the_gcp_names_and_keeps_the_local_ones(tmp_path: Path) -> None:
    gcp = Settings(  # type: ignore[call-arg]
        _env_file=None, PIPELINE_TARGET="gcp", GCP_PROJECT_ID=PROJECT, BQ_LOCATION="EU", BQ_DATASET_PREFIX="cc_",
        PIPELINE_DATA_DIR=tmp_path,
    )  # fmt: skip
    env = dbt_env(gcp)
    assert env["GCP_PROJECT_ID"] == PROJECT and env["BQ_LOCATION"] == "EU"
    assert env["PIPELINE_SCHEMA_PREFIX"] == "cc_"
    assert (env["BQ_DATASET_RAW"], env["BQ_DATASET_MARTS"]) == ("cc_raw", "cc_marts")
    local = dbt_env(Settings(_env_file=None, PIPELINE_DATA_DIR=tmp_path))  # type: ignore[call-arg]
    assert local["PIPELINE_DUCKDB_PATH"] == str(tmp_path.resolve() / "warehouse.duckdb")
    assert local["PIPELINE_SCHEMA_PREFIX"] == ""  # a gcp prefix exported earlier in the process must not stick
    assert not {"GCP_PROJECT_ID", "BQ_DATASET_RAW", "BQ_DATASET_MARTS"} & set(local)


def test_the_daily_build_reads_only_the_d1_price_history_files(runs: BigQueryRuns) -> None:
    """The price history is hive-partitioned by `interval` and `asset`: the daily model's filter on the d1 series
    must land on the `interval` partition key (a file column would make BigQuery read every backfill: m1...h12)."""
    from sqlglot.lineage import lineage

    sql = _model_sql(runs.first_sql, "stg_coincap__asset_history")
    assert f"from `{PROJECT}`.`coincap_raw`.`asset_history`" in sql
    assert "1 = 0" not in sql  # on BigQuery the raw table always exists: no empty fallback
    view = next(e for e in _parse(sql) if isinstance(e, exp.Create))
    from flows.contracts.bigquery import hive_partition_columns, lake_tables

    columns = [*lake_tables()["asset_history"].names, *(c["name"] for c in hive_partition_columns("asset_history"))]
    schema = {PROJECT: {"coincap_raw": {"asset_history": dict.fromkeys(columns, "STRING")}}}
    node = lineage("history_interval", view.expression, schema=schema, dialect="bigquery")
    leaves = [n.name for n in node.walk() if not n.downstream]
    assert leaves == ["asset_history.interval"]  # the partition key, through the view
    # the window that deduplicates partitions by it, so BigQuery pushes a filter on it into the scan
    window = next(w for w in view.find_all(exp.Window) if w.find_ancestor(exp.CTE).alias == "deduplicated")
    assert "history_interval" in {c.name for c in window.args["partition_by"]}

    daily = _model_sql(runs.first_sql, "int_asset_snapshots_daily")
    assert (
        f"from `{PROJECT}`.`coincap_staging`.`stg_coincap__asset_history`\n    where history_interval = 'd1'" in daily
    )
