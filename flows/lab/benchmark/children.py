"""The timed runs, each in a fresh interpreter (`python -m flows.lab.benchmark pipeline|naive`) so that its peak
RSS is its own: our pipeline (extract, validate, Parquet lake, dbt build) and the naive baseline."""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from flows.lab.benchmark.results import (
    BENCH_KEY,
    DATASETS,
    PAGE_LIMIT,
)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def pipeline_child(base_url: str, with_dbt: bool) -> dict[str, Any]:
    """Our pipeline on the served snapshot, in this (fresh) process: each dataset extracted, validated and staged,
    then published, as the snapshot flow's tasks do (without Prefect's orchestration); then the dbt build."""
    from flows.ingest.extract import extract_dataset
    from flows.lake.factory import lake_storage
    from flows.snapshot_id import Snapshot

    with tempfile.TemporaryDirectory(prefix="coincap-bench-") as tmp:
        settings = _bench_settings(base_url, Path(tmp))
        snapshot = Snapshot.now()
        storage = lake_storage(settings)
        stages: dict[str, float] = {}
        records = rows = 0
        wall, cpu = time.perf_counter(), time.process_time()
        staged_all = []
        for dataset in DATASETS:
            report, staged = extract_dataset(dataset, snapshot, settings=settings, stage_seconds=stages)
            records += report.served
            rows += report.valid
            staged_all.append(staged)
        published = time.perf_counter()
        for staged in staged_all:
            staged.publish(storage)
        stages["publish"] = time.perf_counter() - published
        wall_s, cpu_s = time.perf_counter() - wall, time.process_time() - cpu
        peak = _peak_rss_mib()
        dbt_s = peak_dbt = None
        if with_dbt:
            dbt_s = _dbt_build(settings)
            peak_dbt = _peak_rss_mib()
    return {
        "pipeline": "ours", "records": records, "rows": rows, "fetch_s": stages.get("fetch", 0.0),
        "validate_s": stages.get("validate", 0.0), "normalize_s": None,
        "write_s": stages.get("lake", 0.0) + stages["publish"], "wall_s": wall_s, "dbt_s": dbt_s,
        "peak_rss_mib": peak, "peak_rss_dbt_mib": peak_dbt, "cpu_s": cpu_s, "calls": 0, "credits": 0,
        "stages": stages,
    }  # fmt: skip


def _dbt_build(settings: Any) -> float:
    """What the snapshot flow's dbt task does (`build_marts`); seconds, dbt's start-up included."""
    from flows.dbt_build import build_marts

    started = time.perf_counter()
    build_marts(settings)
    return time.perf_counter() - started


def naive_child(base_url: str) -> dict[str, Any]:
    """The naive baseline on the served snapshot, in this (fresh) process."""
    from flows.lab.naive_baseline import load_snapshot

    with tempfile.TemporaryDirectory(prefix="coincap-naive-") as tmp:
        cpu = time.process_time()
        result = load_snapshot(base_url, BENCH_KEY, Path(tmp) / "naive.sqlite", datasets=DATASETS)
        cpu_s = time.process_time() - cpu
    return {
        "pipeline": "naive", "records": result.records, "rows": result.rows, "fetch_s": result.fetch_s,
        "validate_s": None, "normalize_s": result.normalize_s, "write_s": result.insert_s, "wall_s": result.wall_s,
        "dbt_s": None, "peak_rss_mib": _peak_rss_mib(), "peak_rss_dbt_mib": None, "cpu_s": cpu_s, "calls": 0,
        "credits": 0, "stages": {"fetch": result.fetch_s, "normalize": result.normalize_s, "insert": result.insert_s},
    }  # fmt: skip


def _bench_settings(base_url: str, data_dir: Path) -> Any:
    """Settings for a benchmark run: the stand-in, a scratch data folder, and nothing from the environment that
    would change what is fetched or where it goes (no scope, the local target)."""
    from flows.settings import Settings

    return Settings(  # type: ignore[call-arg]
        _env_file=None, COINCAP_API_KEY=BENCH_KEY, COINCAP_API_BASE_URL=base_url, PIPELINE_DATA_DIR=data_dir,
        PIPELINE_TARGET="local", COINCAP_PAGE_LIMIT=PAGE_LIMIT, COINCAP_ASSETS_LIMIT=None,
        COINCAP_MARKETS_EXCHANGES=[], COINCAP_MARKETS_QUOTES=[], PIPELINE_DBT_PROJECT_DIR=None,
    )  # fmt: skip
