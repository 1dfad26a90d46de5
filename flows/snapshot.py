"""The Prefect flows: one per dataset, and `snapshot`, which runs the four under one snapshot id, then dbt.

The story of a snapshot: take the data dir's lock and check it is writable → extract every dataset concurrently
(each task pages, validates and stages its files) → publish the staged files only if every dataset succeeded →
record run metrics → build the marts and check their quality (the dbt-build flow's steps, `flows/dbt_build.py`).
Business logic lives in plain functions (`flows/ingest/extract.py`, `build_marts`); tasks add retries (their
delays scaled by PIPELINE_TASK_RETRY_DELAY_SCALE) and timeouts.

Run metrics are honest: a dataset is recorded `completed` only once its files are in the lake; a dataset that
extracted fine but was not published (another dataset failed, or the publish did) is `failed`, saying why; and
every step's calls and credits are recorded, failed attempts and failed steps included, so the credits in
ops.pipeline_runs add up to what the client metered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from pydantic import Field

from flows.coincap.budget import CallStats, CreditMeter
from flows.coincap.endpoints import DATASETS
from flows.datasets import Dataset
from flows.dbt_build import check_quality, record_dbt_build, step_row
from flows.ingest.extract import DatasetReport, StagedFiles, extract_dataset
from flows.lake.factory import lake_storage
from flows.lake.lock import data_dir_lock
from flows.lake.storage import LocalStorage, ensure_writable
from flows.ops.observability import redact_error, redacted_errors
from flows.orchestration.alerting import alert_on_failure
from flows.orchestration.artifacts import publish_snapshot_artifact
from flows.orchestration.logs import configure_logging, quiet_known_failures
from flows.orchestration.runs import flow_run_id, retry_if_transient, with_retry_delays
from flows.quality import QualityReport
from flows.settings import Settings, current_settings
from flows.snapshot_id import PATTERN, Snapshot
from flows.warehouse.dbt import DbtOutcome
from flows.warehouse.factory import warehouse

quiet_known_failures()
# Secrets redacted from every log record; JSON lines with PIPELINE_LOG_FORMAT=json (deployments import this module).
configure_logging()

SnapshotId = Annotated[str, Field(pattern=PATTERN, description="UTC snapshot id like 20261121T053000Z")]


@dataclass
class SnapshotSummary:
    """What a snapshot run did: the CLI's summary table and the flow's return value."""

    snapshot_id: str
    reports: list[DatasetReport]
    dbt: DbtOutcome | None
    lake_uri: str
    warehouse_uri: str
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)
    quality: QualityReport | None = None  # the data-quality checks run after the dbt build


# ---- what an extract step spent, failed attempts included ---------------------------------------------------
#
# `extract_dataset` reports its calls only when it succeeds; the task passes it a meter and, when an attempt fails,
# records what that meter counted, so the flow can put it on the failed step's row.


@dataclass
class _Spent:
    """Calls, credits and seconds of an extract task's failed attempts."""

    stats: CallStats = field(default_factory=CallStats)
    seconds: float = 0.0


_failed_attempts: dict[Any, _Spent] = {}  # task run id -> what its failed attempts spent (the flow pops it)
_failed_attempts_lock = threading.Lock()


def _count_failed_attempt(meters: list[CreditMeter], seconds: float) -> None:
    context = TaskRunContext.get()
    if context is None:
        return
    with _failed_attempts_lock:
        spent = _failed_attempts.setdefault(context.task_run.id, _Spent())
        for meter in meters:
            spent.stats.add(meter.total())
        spent.seconds += seconds


def _spent_by(task_run_id: Any) -> _Spent:
    with _failed_attempts_lock:
        return _failed_attempts.pop(task_run_id, None) or _Spent()


@task(
    name="extract",
    task_run_name="extract-{dataset}",
    retries=2,
    retry_delay_seconds=[10, 60],
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_if_transient,
    timeout_seconds=3600,
    cache_policy=NO_CACHE,
)
def extract_task(dataset: Dataset, snapshot_id: str) -> tuple[DatasetReport, StagedFiles]:
    """Page through one dataset and stage its validated files."""
    with redacted_errors():  # what Prefect records of a failure (state message, event) holds no secret
        return _extract(dataset, snapshot_id)


def _extract(dataset: Dataset, snapshot_id: str) -> tuple[DatasetReport, StagedFiles]:
    logger = get_run_logger()
    settings = current_settings()
    last_log = [0.0]

    def progress(name: str, pages: int, records: int) -> None:
        now = time.monotonic()
        if now - last_log[0] >= 2.0:
            last_log[0] = now
            logger.info("%s: %d pages, %d records so far", name, pages, records)

    meter = CreditMeter()
    started = time.perf_counter()
    try:
        report, staged = extract_dataset(
            dataset, Snapshot.parse(snapshot_id), settings=settings, progress=progress, meter=meter
        )
    except BaseException:
        _count_failed_attempt([meter], time.perf_counter() - started)  # recorded by the flow, with the step
        raise
    logger.info(
        "%s: %d valid, %d quarantined, %d duplicates dropped, %d calls, %d credits, %.1fs",
        dataset, report.valid, report.quarantined, report.duplicates, report.calls, report.credits, report.seconds,
    )  # fmt: skip
    if report.new_fields:
        logger.warning("%s: CoinCap sent fields the contract does not know (kept in extra_fields): %s",
                       dataset, ", ".join(report.new_fields))  # fmt: skip
    return report, staged


@task(
    name="publish",
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_if_transient,
    timeout_seconds=1800,
    cache_policy=NO_CACHE,
)
def publish_task(staged: list[StagedFiles]) -> list[str]:
    """Publish a snapshot's staged files to the lake, each object atomically."""
    with redacted_errors():
        storage = lake_storage(current_settings())
        return [key for files in staged for key in files.publish(storage)]


def _run_snapshot(datasets: list[Dataset], snapshot_id: str | None, transform: bool) -> SnapshotSummary:
    logger = get_run_logger()
    settings = current_settings()
    started = time.perf_counter()
    snap = Snapshot.parse(snapshot_id) if snapshot_id else Snapshot.now()
    logger.info("snapshot %s: extracting %s from %s", snap.id, ", ".join(datasets), settings.api_base_url)

    _check_writable(settings)  # before any credit is spent
    extract = with_retry_delays(extract_task, settings)
    futures = {d: extract.submit(d, snap.id) for d in dict.fromkeys(datasets)}
    results: dict[str, tuple[DatasetReport, StagedFiles]] = {}
    errors: dict[str, BaseException] = {}
    spent: dict[str, _Spent] = {}
    for dataset, future in futures.items():
        try:
            results[dataset] = future.result()
        except BaseException as exc:  # collect all, so one failure never leaves others' files staged
            errors[dataset] = exc
        spent[dataset] = _spent_by(future.task_run_id)  # what failed attempts cost: counted with the step
        if dataset in results:
            _add_spent(results[dataset][0], spent[dataset])

    run_id = flow_run_id()
    store = warehouse(settings)
    if errors:
        for _, staged in results.values():
            staged.discard()
        first = next(iter(errors.values()))
        why = f"not published: {', '.join(errors)} failed ({redact_error(first, 300)})"
        store.record_runs(
            [_unpublished_row(r, run_id, why) for r, _ in results.values()]
            + [_failed_step_row(d, snap.id, run_id, spent[d], e) for d, e in errors.items()]
        )
        logger.error("snapshot %s: nothing published (%s)", snap.id, first)
        raise first

    reports = [results[d][0] for d in futures]
    staged_files = [results[d][1] for d in futures]
    try:
        with_retry_delays(publish_task, settings)(staged_files)
    except BaseException as exc:
        # Each object is published atomically, a dataset's files one after another: a dataset whose files all
        # went in is complete; the others are not, whatever their extract did.
        why = f"not published: the publish failed ({redact_error(exc, 300)})"
        store.record_runs(
            [
                _metrics_row(r, run_id, "completed") if not files.puts else _unpublished_row(r, run_id, why)
                for r, files in zip(reports, staged_files, strict=True)
            ]
        )
        for files in staged_files:
            files.discard()
        raise
    store.record_runs([_metrics_row(r, run_id, "completed") for r in reports])

    outcome = record_dbt_build(store, snap.id, run_id) if transform else None
    quality = check_quality(snap.id, run_id) if outcome is not None else None
    summary = SnapshotSummary(
        snapshot_id=snap.id,
        reports=reports,
        dbt=outcome,
        lake_uri=lake_storage(settings).root_uri,
        warehouse_uri=store.uri,
        seconds=time.perf_counter() - started,
        quality=quality,
    )
    publish_snapshot_artifact(summary)  # `snapshot-summary` in the Prefect UI; never fails the run
    return summary


def _check_writable(settings: Settings) -> None:
    """Every local folder the run writes (staging, the lake, the warehouse's), or one line naming the one that is
    not writable: at once, before any credit is spent, instead of at the first write or the publish."""
    data_dir = settings.data_dir.resolve()
    folders = [data_dir, data_dir / "staging"]  # the data dir also holds the DuckDB warehouse and dbt's files
    lake = lake_storage(settings)
    if isinstance(lake, LocalStorage):
        folders.append(lake.root)
    for folder in folders:
        ensure_writable(folder)


def _add_spent(report: DatasetReport, spent: _Spent) -> None:
    """Count the failed attempts before a successful one in its report (the retries cost credits too)."""
    stats = spent.stats
    report.calls += stats.calls
    report.failed_calls += stats.failed_calls
    report.retries += stats.retries
    report.bytes += stats.bytes
    report.credits += stats.credits
    report.seconds += spent.seconds


def _metrics_row(report: DatasetReport, run_id: str | None, status: str) -> dict[str, Any]:
    return {**report.as_row(), "step": report.dataset, "flow_run_id": run_id, "status": status}


def _unpublished_row(report: DatasetReport, run_id: str | None, why: str) -> dict[str, Any]:
    """A dataset extracted but not published: `failed`, with what it served and spent; nothing landed."""
    row = _metrics_row(report, run_id, "failed")
    return {**row, "valid": None, "quarantined": None, "files": [], "error": why}


def _failed_step_row(
    dataset: str, snapshot_id: str, run_id: str | None, spent: _Spent, exc: BaseException
) -> dict[str, Any]:
    """A dataset whose extract failed: its error, and the calls and credits its attempts spent."""
    stats = spent.stats
    return {
        **step_row(dataset, snapshot_id, run_id, "failed", spent.seconds, exc),
        "calls": stats.calls,
        "failed_calls": stats.failed_calls,
        "retries": stats.retries,
        "bytes": stats.bytes,
        "credits": stats.credits,
    }


@contextmanager
def _one_run_per_data_dir(job: str) -> Iterator[None]:
    """Hold the data dir's pipeline lock for the whole run, as `job`: a second run on it stops at once with one line
    ("another snapshot run is writing to …") instead of colliding with this one on DuckDB's lock halfway through.

    The CLI takes the same lock before Prefect starts and calls the flow in the same thread, which re-enters it;
    a deployment's flow run takes it here."""
    with data_dir_lock(current_settings().data_dir, kind="pipeline", job=job):
        yield


@flow(
    name="snapshot",
    log_prints=True,
    validate_parameters=True,
    on_failure=[alert_on_failure],
    on_crashed=[alert_on_failure],
)
def snapshot_flow(
    snapshot_id: SnapshotId | None = None,
    datasets: list[Dataset] = list(DATASETS),  # noqa: B006 - Prefect needs a literal default for the UI form
    transform: bool = True,
) -> SnapshotSummary:
    """Extract assets, rates, exchanges and markets under one snapshot id, then build the marts with dbt."""
    with redacted_errors(), _one_run_per_data_dir("snapshot run"):
        return _run_snapshot(datasets, snapshot_id, transform)


def _dataset_flow(dataset: Dataset) -> Any:
    @flow(
        name=dataset,
        log_prints=True,
        validate_parameters=True,
        on_failure=[alert_on_failure],
        on_crashed=[alert_on_failure],
    )
    def dataset_flow(snapshot_id: SnapshotId | None = None, transform: bool = False) -> SnapshotSummary:
        with redacted_errors(), _one_run_per_data_dir(f"{dataset} run"):
            return _run_snapshot([dataset], snapshot_id, transform)

    dataset_flow.__doc__ = f"Extract {dataset} for one snapshot (optionally rebuild the marts)."
    dataset_flow.fn.__name__ = f"{dataset}_flow"
    return dataset_flow


assets_flow = _dataset_flow("assets")
rates_flow = _dataset_flow("rates")
exchanges_flow = _dataset_flow("exchanges")
markets_flow = _dataset_flow("markets")
