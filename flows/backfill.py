"""The backfill flow: CoinCap price history into the lake, chunked, resumable, within a credit budget.

A thin Prefect layer over the engine (`flows/ingest/backfill.py`, where the chunks, the budget and the resume are
explained): the flow builds the settings, the lake and the warehouse once, plans and then fetches in two tasks
(a retry resumes: finished chunks are skipped), and records the run in `ops.pipeline_runs`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from flows.ingest.backfill import backfill, list_asset_ids
from flows.ingest.backfill_plan import CreditEstimate, IntervalName, default_range, estimate_backfill_credits
from flows.ingest.backfill_report import BackfillReport
from flows.lake.factory import lake_storage
from flows.lake.history import DATASET
from flows.lake.storage import LakeStorage
from flows.ops.observability import redact_error, redacted_errors
from flows.orchestration.alerting import alert_on_failure
from flows.orchestration.runs import flow_run_id, retry_if_transient, with_retry_delays
from flows.settings import Settings, current_settings
from flows.snapshot_id import Snapshot
from flows.warehouse.factory import warehouse


@dataclass
class _Resolved:
    assets: list[str]
    estimate: CreditEstimate
    listing_credits: int


@task(
    name="plan-backfill",
    retries=2,
    retry_delay_seconds=[10, 60],
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_if_transient,
    timeout_seconds=900,
    cache_policy=NO_CACHE,
)
def plan_backfill_task(
    settings: Settings,
    storage: LakeStorage,
    assets: list[str] | None,
    interval: str,
    start: date,
    end: date,
    max_credits: int | None,
) -> _Resolved:
    """Resolve the asset list (one /assets listing when none is given) and price the backfill."""
    with redacted_errors():  # what Prefect records of a failure holds no secret
        ids, spent = list_asset_ids(settings, max_credits=max_credits) if assets is None else (list(assets), 0)
        estimate = estimate_backfill_credits(ids, interval, start, end, storage=storage)
    get_run_logger().info("%s", estimate.describe())
    return _Resolved(ids, estimate, spent)


@task(
    name="backfill-history",
    retries=2,
    retry_delay_seconds=[60, 300],
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_if_transient,  # a retry resumes: finished chunks are skipped
    timeout_seconds=6 * 3600,
    cache_policy=NO_CACHE,
)
def backfill_task(
    settings: Settings,
    storage: LakeStorage,
    assets: list[str],
    interval: str,
    start: date,
    end: date,
    max_credits: int | None,
) -> BackfillReport:
    """Fetch, validate and land every chunk not yet in the lake."""
    logger = get_run_logger()
    last = [0.0]

    def progress(done: int, total: int, points: int) -> None:
        if time.monotonic() - last[0] >= 10:
            last[0] = time.monotonic()
            logger.info("%d/%d chunks, %d points landed", done, total, points)

    with redacted_errors():
        report = backfill(settings, assets, interval, start, end, max_credits, progress, storage=storage)
    for message in report.suspicious[:20]:
        logger.warning("suspicious chunk: %s", message)
    if report.delisted:
        logger.warning("delisted (404), recorded and skipped: %s", ", ".join(report.delisted))
    return report


@flow(
    name="backfill",
    log_prints=True,
    validate_parameters=True,
    on_failure=[alert_on_failure],
    on_crashed=[alert_on_failure],
)
def backfill_flow(
    assets: list[str] | None = None,
    interval: IntervalName = "d1",
    start: date | None = None,
    end: date | None = None,
    max_credits: Annotated[int, Field(ge=1)] | None = None,
) -> BackfillReport:
    """Backfill CoinCap price history into the lake: chunked, resumable, within a credit budget."""
    from flows.lake.lock import data_dir_lock

    with redacted_errors():
        settings = current_settings()
        # One backfill per data dir (two would fetch and write the same chunks); its own lock, not the snapshot's:
        # it writes only history files, so hourly snapshots go on. The CLI took it already (re-entered here).
        with data_dir_lock(settings.data_dir, kind="backfill", job="backfill"):
            return _backfill_run(settings, assets, interval, start, end, max_credits)


def _backfill_run(
    settings: Settings,
    assets: list[str] | None,
    interval: IntervalName,
    start: date | None,
    end: date | None,
    max_credits: int | None,
) -> BackfillReport:
    default_start, default_end = default_range()
    start, end = start or default_start, end or default_end
    plan_step, fetch_step = plan_backfill_task, backfill_task
    if max_credits is not None:
        # a task retry would get the whole budget again; re-running the flow resumes with what is left
        plan_step, fetch_step = plan_step.with_options(retries=0), fetch_step.with_options(retries=0)
    plan_step, fetch_step = with_retry_delays(plan_step, settings), with_retry_delays(fetch_step, settings)
    store = warehouse(settings)
    started = datetime.now(UTC)
    try:
        storage = lake_storage(settings)  # inside: a lake that cannot be built is a failed run, recorded
        resolved = plan_step(settings, storage, assets, interval, start, end, max_credits)
        budget = None if max_credits is None else max(0, max_credits - resolved.listing_credits)
        report = fetch_step(settings, storage, resolved.assets, interval, start, end, budget)
    except Exception as exc:
        store.record_runs(
            [
                {
                    "flow_run_id": flow_run_id(),
                    "snapshot_id": Snapshot.now().id,
                    "step": f"{DATASET}:{interval}",
                    "status": "failed",
                    "started_at": started,
                    "error": redact_error(exc, 500),
                }
            ]
        )
        raise
    report.credits_used += resolved.listing_credits
    report.max_credits = max_credits
    store.record_runs([{**report.as_row(), "flow_run_id": flow_run_id(), "status": "completed"}])
    print(report.summary())
    return report
