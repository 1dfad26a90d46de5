"""The dbt-build flow: build and test the marts from what is in the lake, then run the data-quality checks.

The snapshot flow (`flows/snapshot.py`) ends with the same two steps when it transforms: `record_dbt_build` (the
dbt task, its step recorded in ops.pipeline_runs whether it completed or failed) and `check_quality` (checks that
trip, or cannot run, are logged and alerted, never raised). `build_marts` is the plain function under the dbt
task: the lake made readable for dbt, then `dbt build`.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.contracts.datasets import ASSET_HISTORY, CONTRACTS
from flows.contracts.stream import GAP_SCHEMA, TICK_SCHEMA
from flows.errors import PipelineError
from flows.lake.factory import lake_storage
from flows.lake.history import ensure_history_readable
from flows.lake.integrity import verify_lake
from flows.lake.lock import data_dir_lock
from flows.lake.parquet import ensure_readable
from flows.ops.alerts import quality_alert
from flows.ops.observability import redact_error, redacted_errors
from flows.orchestration.alerting import alert_on_failure, failure_alert, send_alert
from flows.orchestration.logs import configure_logging, quiet_known_failures
from flows.orchestration.runs import flow_run_id
from flows.quality import QualityReport, run_checks
from flows.settings import Settings, current_settings
from flows.snapshot_id import Snapshot
from flows.warehouse.dbt import DbtOutcome, run_dbt
from flows.warehouse.factory import warehouse

quiet_known_failures()
# Secrets redacted from every log record; JSON lines with PIPELINE_LOG_FORMAT=json (deployments import this module).
configure_logging()


def build_marts(settings: Settings, full_refresh: bool = False) -> DbtOutcome:
    """Move corrupt lake files aside, make every table dbt reads exist (lake placeholders, ops tables), then
    `dbt build` the marts."""
    schemas = {name: contract.arrow_schema() for name, contract in CONTRACTS.items()}
    schemas.update(prices_stream=TICK_SCHEMA, prices_stream_gaps=GAP_SCHEMA)  # read by dbt even if never streamed
    staging = settings.data_dir.resolve() / "staging"
    # One corrupt file would fail every build from now on: files not verified before are checked, bad ones moved
    # to corrupt/ with a warning each. Before the placeholders, so a dataset left without files gets one.
    verify_lake(lake_storage(settings), {**schemas, "asset_history": ASSET_HISTORY.arrow_schema()}, staging)
    ensure_readable(lake_storage(settings), schemas, staging)
    ensure_history_readable(lake_storage(settings), staging)
    warehouse(settings).ensure_ops_tables()  # the health views read ops.pipeline_runs and ops.dq_results
    return run_dbt(settings, "build", *(["--full-refresh"] if full_refresh else []))


@task(name="dbt-build", timeout_seconds=3600, cache_policy=NO_CACHE)
def dbt_task(full_refresh: bool = False) -> DbtOutcome:
    """Build and test the marts (`dbt build`)."""
    with redacted_errors():
        outcome = build_marts(current_settings(), full_refresh)
    get_run_logger().info("dbt build: %s in %.1fs", dict(outcome.statuses), outcome.seconds)
    return outcome


@task(name="quality", timeout_seconds=900, cache_policy=NO_CACHE)
def quality_task(snapshot_id: str | None, flow_run_id: str | None) -> QualityReport:
    """Run the data-quality checks on the snapshot (or each dataset's latest) and store them in ops.dq_results
    (the dbt build that just ran tested the snapshot: its data-quality tests' results are read, not run again)."""
    with redacted_errors():
        return run_checks(current_settings(), snapshot_id=snapshot_id, flow_run_id=flow_run_id, after_build=True)


def record_dbt_build(store: Any, snapshot_id: str, run_id: str | None, full_refresh: bool = False) -> DbtOutcome:
    """Run the dbt task and record its step (completed or failed) in the run-metrics table."""
    started = time.perf_counter()
    try:
        outcome = dbt_task(full_refresh)
    except PipelineError as exc:
        store.record_runs([step_row("dbt", snapshot_id, run_id, "failed", time.perf_counter() - started, exc)])
        raise
    store.record_runs([step_row("dbt", snapshot_id, run_id, "completed", outcome.seconds, None)])
    return outcome


def check_quality(snapshot_id: str | None, run_id: str | None) -> QualityReport | None:
    """Run the quality task; a tripped check (or checks that cannot run) is logged and alerted, never raised:
    the data is landed and modeled, and anomalies are flagged, not dropped."""
    logger = get_run_logger()
    settings = current_settings()
    try:
        report = quality_task(snapshot_id, run_id)
    except Exception as exc:
        logger.error("data quality: the checks could not run (%s)", exc)
        send_alert(failure_alert("quality", run_id, exc), settings)
        return None
    level = logging.ERROR if not report.ok else logging.WARNING if report.warned else logging.INFO
    logger.log(level, "data quality: %s", report.summary_line())
    alert = quality_alert(report)
    if alert is not None:
        send_alert(alert, settings)
    return report


def step_row(
    step: str,
    snapshot_id: str,
    run_id: str | None,
    status: str,
    seconds: float | None,
    exc: BaseException | None,
) -> dict[str, Any]:
    """The run-metrics row of a step that has no dataset report (the dbt build, a failed extract)."""
    return {
        "flow_run_id": run_id,
        "snapshot_id": snapshot_id,
        "step": step,
        "status": status,
        "started_at": datetime.now(UTC),
        "seconds": seconds,
        "error": redact_error(exc, 500),
    }


@flow(name="dbt-build", log_prints=True, on_failure=[alert_on_failure], on_crashed=[alert_on_failure])
def transform_flow(full_refresh: bool = False) -> DbtOutcome:
    """Build and test the marts from what is in the lake."""
    # The snapshot flows' lock (a dbt build and a snapshot run never share the warehouse); the CLI re-enters it.
    with redacted_errors(), data_dir_lock(current_settings().data_dir, kind="pipeline", job="dbt build"):
        run_id = flow_run_id()
        # A dbt-only run is recorded under the moment it ran, in the snapshot-id format.
        outcome = record_dbt_build(warehouse(current_settings()), Snapshot.now().id, run_id, full_refresh)
        check_quality(None, run_id)  # each dataset's latest snapshot
        return outcome
