"""The BigQuery warehouse against the BigQuery emulator: run metrics, ad-hoc SQL, and one-line errors.

The emulator checks the client code (REST calls, schemas, parameters, errors), not BigQuery's semantics.
Every warehouse here has short retry deadlines: the emulator answers a bad request with a 500, which the client
would otherwise retry for minutes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from flows.contracts.ops_tables import RUNS_TABLE
from flows.errors import ConfigError, PipelineError
from flows.ingest.extract import DatasetReport
from flows.paths import PROJECT_ROOT
from flows.settings import Settings
from flows.warehouse.bigquery import BigQueryWarehouse, runs_columns
from flows.warehouse.factory import warehouse
from flows.warehouse.local_duckdb import LocalWarehouse
from tests.bq_emulator import PROJECT, BigQueryEmulator, bq_emulator  # noqa: F401 - session fixture

ROOT = PROJECT_ROOT
FAST = {"retry_deadline_s": 5.0, "request_timeout_s": 5.0, "query_timeout_s": 20.0}


def gcp_settings(endpoint: str, prefix: str, **extra: Any) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None, PIPELINE_TARGET="gcp", GCP_PROJECT_ID=PROJECT, BQ_DATASET_PREFIX=prefix,
        BQ_API_ENDPOINT=endpoint, **extra,
    )  # fmt: skip


@pytest.fixture
def prefix(bq_emulator: BigQueryEmulator) -> str:  # noqa: F811
    """A dataset prefix of this test's own, with the ops and marts datasets Terraform would have created."""
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    client = bq_emulator.client()
    for layer in ("ops", "marts"):
        client.create_dataset(f"{PROJECT}.{prefix}{layer}")
    return prefix


@pytest.fixture
def store(bq_emulator: BigQueryEmulator, prefix: str) -> BigQueryWarehouse:  # noqa: F811
    return BigQueryWarehouse(gcp_settings(bq_emulator.endpoint, prefix), **FAST)


def one_line(exc: pytest.ExceptionInfo[PipelineError]) -> str:
    text = str(exc.value)
    assert "\n" not in text and len(text) < 400, text
    return text


def pipeline_rows() -> list[dict[str, Any]]:
    """Rows as `flows.snapshot` records them: a dataset's report, and a failed dbt step."""
    report = DatasetReport(
        dataset="assets", snapshot_id="20261121T053000Z", served=120, duplicates=2, valid=117, quarantined=1,
        pages=1, new_fields=["newField"], calls=2, failed_calls=1, retries=1, bytes=52_000, credits=22,
        seconds=1.25, files=["coincap/assets/dt=2026-11-21/20261121T053000Z.parquet"],
        started_at=datetime(2026, 11, 21, 5, 30, 1, tzinfo=UTC),
    )  # fmt: skip
    assets = {**report.as_row(), "step": "assets", "flow_run_id": "run-1", "status": "completed"}
    dbt_failed = {
        "flow_run_id": "run-1", "snapshot_id": "20261121T053000Z", "step": "dbt", "status": "failed",
        "started_at": datetime(2026, 11, 21, 5, 31, tzinfo=UTC), "seconds": None, "error": "dbt build failed: x.",
    }  # fmt: skip
    return [assets, dbt_failed]


def test_run_columns_follow_the_duckdb_table(tmp_path: Path) -> None:
    local = LocalWarehouse(tmp_path / "w.duckdb")
    local.record_runs(pipeline_rows())
    with duckdb.connect(str(local.path)) as con:
        duckdb_columns = [row[0] for row in con.execute(f"describe {RUNS_TABLE}").fetchall()]
    columns = {name: (kind, mode) for name, kind, mode in runs_columns()}
    assert list(columns) == duckdb_columns
    assert columns["started_at"] == ("TIMESTAMP", "REQUIRED")
    assert columns["flow_run_id"] == ("STRING", "NULLABLE")
    assert columns["seconds"] == ("FLOAT64", "NULLABLE")
    assert columns["credits"] == ("INT64", "NULLABLE")
    assert columns["files"] == ("STRING", "REPEATED")


def test_record_runs_then_query_them_back(store: BigQueryWarehouse, bq_emulator: BigQueryEmulator) -> None:  # noqa: F811
    before = datetime.now(UTC)
    store.record_runs(pipeline_rows())
    store.record_runs(pipeline_rows()[:1])  # a re-run adds rows: runs are events
    store.record_runs([])

    table = bq_emulator.client().get_table(store.runs_table_id)
    assert [f.name for f in table.schema] == [name for name, _, _ in runs_columns()]
    names, rows = store.query(
        f"select step, status, started_at, seconds, served, credits, new_fields, files, error, recorded_at"
        f" from {store.ops_dataset}.pipeline_runs order by step, recorded_at"
    )
    assert names[:3] == ["step", "status", "started_at"]
    assert len(rows) == 3
    assets, assets_again, dbt = rows
    assert assets[:6] == ("assets", "completed", datetime(2026, 11, 21, 5, 30, 1, tzinfo=UTC), 1.25, 120, 22)
    assert list(assets[6]) == ["newField"]
    assert list(assets[7]) == ["coincap/assets/dt=2026-11-21/20261121T053000Z.parquet"]
    assert assets[9] >= before
    assert assets_again[:6] == assets[:6]
    assert dbt[:2] == ("dbt", "failed")
    assert dbt[3] is None and list(dbt[6]) == [] and dbt[8] == "dbt build failed: x."


def test_the_runs_table_is_created_partitioned_and_clustered(store: BigQueryWarehouse) -> None:
    created: list[Any] = []
    real_create = store.client.create_table

    def spy(table: Any, **kwargs: Any) -> Any:
        created.append(table)
        return real_create(table, **kwargs)

    store.client.create_table = spy  # type: ignore[method-assign]
    store.record_runs(pipeline_rows())
    store.record_runs(pipeline_rows())
    assert len(created) == 1  # the second call finds it ready
    table = created[0]
    assert (table.time_partitioning.type_, table.time_partitioning.field) == ("DAY", "started_at")
    assert table.clustering_fields == ["step"]
    assert table.table_id == "pipeline_runs" and table.dataset_id == store.ops_dataset


def test_adhoc_query_with_parameters_and_the_marts_as_default_dataset(
    store: BigQueryWarehouse,
    bq_emulator: BigQueryEmulator,  # noqa: F811
) -> None:
    client = bq_emulator.client()
    client.query(
        f"create table {store.marts_dataset}.dim_assets as"
        " select 'bitcoin' as asset_id, 1 as asset_rank union all select 'ethereum', 2"
    ).result()
    names, rows = store.query("select asset_id from dim_assets where asset_rank <= ? order by asset_id", [2])
    assert (names, rows) == (["asset_id"], [("bitcoin",), ("ethereum",)])
    names, rows = store.query("select ? as n, ? as s, ? as b", [3, "x", True])
    assert (names, rows) == (["n", "s", "b"], [(3, "x", True)])


def test_a_sql_error_is_one_line(store: BigQueryWarehouse) -> None:
    with pytest.raises(PipelineError) as exc:
        store.query(f"select no_such_column from {store.ops_dataset}.missing_table_or_column")
    assert one_line(exc).startswith("SQL error:")
    with pytest.raises(PipelineError) as exc:
        store.query("selec 1")
    assert "Syntax error" in one_line(exc) and "Fix the query" in str(exc.value)


def test_sql_refuses_statements_that_change_data(store: BigQueryWarehouse) -> None:
    store.record_runs(pipeline_rows())
    with pytest.raises(PipelineError) as exc:
        store.query(f"delete from {store.ops_dataset}.pipeline_runs where true")
    assert "read-only" in one_line(exc)
    _, rows = store.query(f"select count(*) from {store.ops_dataset}.pipeline_runs")
    assert rows == [(2,)]


def test_a_missing_dataset_says_to_run_terraform(bq_emulator: BigQueryEmulator) -> None:  # noqa: F811
    store = BigQueryWarehouse(gcp_settings(bq_emulator.endpoint, f"t{uuid.uuid4().hex[:8]}_"), **FAST)
    with pytest.raises(ConfigError) as exc:
        store.record_runs(pipeline_rows())
    assert "terraform apply" in one_line(exc) and f"{store.ops_dataset}" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        store.query(f"select * from {store.marts_dataset}.fct_asset_daily")
    assert "terraform apply" in one_line(exc)


def test_an_unreachable_bigquery_gives_up_within_the_deadline(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    store = BigQueryWarehouse(gcp_settings(endpoint, "coincap_"), retry_deadline_s=1.5, request_timeout_s=1.0)
    for call in (lambda: store.record_runs(pipeline_rows()), lambda: store.query("select 1")):
        started = time.monotonic()
        with pytest.raises(PipelineError) as exc:
            call()
        assert time.monotonic() - started < 10
        assert "did not answer in time (could not connect)" in one_line(exc)


class _DryRunOnly:
    """A client whose dry run reports a terabyte: the real query must never be sent."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def query(self, sql: str, job_config: Any, **_: Any) -> Any:
        self.sent.append(job_config)
        assert job_config.dry_run, "the query ran despite its estimate"
        return type("Plan", (), {"statement_type": "SELECT", "total_bytes_processed": 10**12})()


def test_a_query_over_the_bytes_limit_is_refused_before_it_runs() -> None:
    store = BigQueryWarehouse(gcp_settings("http://127.0.0.1:9", "coincap_"), max_bytes_billed=10 * 1024**3)
    fake = _DryRunOnly()
    store._client = fake  # type: ignore[assignment]
    with pytest.raises(PipelineError) as exc:
        store.query("select * from fct_market_snapshots")
    assert "931.32 GiB, over the 10.00 GiB limit" in one_line(exc) and "BQ_MAX_BYTES_BILLED" in str(exc.value)
    assert fake.sent[0].maximum_bytes_billed == 10 * 1024**3


def test_the_factory_picks_bigquery_for_gcp_lazily(tmp_path: Path) -> None:
    gcp = warehouse(Settings(_env_file=None, PIPELINE_TARGET="gcp", GCP_PROJECT_ID=PROJECT))  # type: ignore[call-arg]
    assert isinstance(gcp, BigQueryWarehouse) and gcp._client is None  # nothing contacted yet
    assert gcp.uri == f"bigquery://{PROJECT}/coincap_marts"
    assert gcp.runs_table_id == f"{PROJECT}.coincap_ops.pipeline_runs"
    local = warehouse(Settings(_env_file=None, PIPELINE_DATA_DIR=tmp_path))  # type: ignore[call-arg]
    assert isinstance(local, LocalWarehouse)
    with pytest.raises(ConfigError) as exc:
        warehouse(Settings(_env_file=None, PIPELINE_TARGET="gcp"))  # type: ignore[call-arg]
    assert "GCP_PROJECT_ID" in one_line(exc)


def test_no_google_credentials_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))  # no gcloud application-default file
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # do not probe the metadata server
    store = BigQueryWarehouse(Settings(_env_file=None, PIPELINE_TARGET="gcp", GCP_PROJECT_ID=PROJECT))  # type: ignore[call-arg]
    with pytest.raises(ConfigError) as exc:
        store.query("select 1")
    assert "gcloud auth application-default login" in one_line(exc)


def test_the_sql_command_queries_bigquery_on_the_gcp_target(
    store: BigQueryWarehouse,
    prefix: str,
    bq_emulator: BigQueryEmulator,  # noqa: F811
    tmp_path: Path,
) -> None:
    store.record_runs(pipeline_rows())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COINCAP_", "PIPELINE_", "BQ_", "GCP_"))}
    env.update(
        PYTHONPATH=str(ROOT), GCP_PROJECT_ID=PROJECT, BQ_DATASET_PREFIX=prefix, BQ_API_ENDPOINT=bq_emulator.endpoint
    )
    query = f"select step, status from {prefix}ops.pipeline_runs order by step"
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", "sql", "--target", "gcp", "--format", "json", query],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout) == [{"step": "assets", "status": "completed"}, {"step": "dbt", "status": "failed"}]
