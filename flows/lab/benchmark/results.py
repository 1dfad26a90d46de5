"""What the benchmark runs by default, and the records of what it measured."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from flows.coincap.endpoints import ENDPOINTS
from flows.datasets import SNAPSHOT_DATASETS
from flows.errors import PipelineError

BENCH_KEY = "benchmark-key"
SIZES: tuple[int, ...] = (1_000, 10_000, 100_000, 1_000_000)
ASSETS = 3_000
EXCHANGES = 200
PAGE_LIMIT = 2_000  # CoinCap's largest page
HISTORY_ASSETS = 3_000
HISTORY_YEARS = 3
BASELINE_BUDGET_S = 180.0  # the baseline skips a size it is projected to need longer for
DATASETS = SNAPSHOT_DATASETS
PAGINATED = {dataset: endpoint.paginated for dataset, endpoint in ENDPOINTS.items()}  # CoinCap v3's listings

Say = Callable[[str], None]


class BenchmarkError(PipelineError):
    """A benchmark run failed."""


@dataclass
class DatasetMinimum:
    """The least one dataset of a served snapshot can cost: one call per 2,000 records."""

    records: int
    calls: int
    bytes: int
    credits: int


@dataclass
class RunResult:
    """One pipeline (ours or the naive baseline) on one size: seconds per stage, throughput, memory, cost."""

    pipeline: str  # "ours" or "naive"
    records: int  # served by the API
    rows: int  # landed valid (ours) or inserted (naive)
    fetch_s: float  # HTTP + JSON parse (ours: busy time of the fetching thread, overlapped with the rest)
    validate_s: float | None  # ours: contract checks (Pandera) and Arrow conversion, in the validating thread
    normalize_s: float | None  # naive: pd.json_normalize
    write_s: float  # ours: Parquet + publish into the lake; naive: DataFrame.to_sql (row-by-row INSERT)
    wall_s: float  # first request to last byte written (ours: files published)
    dbt_s: float | None  # ours: dbt build on the lake, start-up included
    peak_rss_mib: float  # before dbt
    peak_rss_dbt_mib: float | None
    cpu_s: float  # CPU seconds of the run's process until the lake is written (the server has its own)
    calls: int  # metered by the server
    credits: int
    stages: dict[str, float] = field(default_factory=dict)  # every stage clock, as measured

    @property
    def records_per_min(self) -> float:
        return self.records / self.wall_s * 60 if self.wall_s else 0.0

    @property
    def to_marts_s(self) -> float | None:
        return None if self.dbt_s is None else self.wall_s + self.dbt_s


@dataclass
class SizeResult:
    """One snapshot size: what was served, the minimum it can cost, and each pipeline's best run."""

    markets: int
    assets: int
    exchanges: int
    records: int
    minimum: dict[str, DatasetMinimum]
    ours: RunResult
    naive: RunResult | None
    naive_skipped: str | None = None
    runs: int = 1

    @property
    def min_calls(self) -> int:
        return sum(m.calls for m in self.minimum.values())

    @property
    def min_credits(self) -> int:
        return sum(m.credits for m in self.minimum.values())


@dataclass
class HistoryResult:
    """The d1 history backfill: points landed, seconds, memory, and credits against one call per asset."""

    assets: int
    years: int
    points: int
    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    calls: int
    credits: int
    min_calls: int
    min_credits: int

    @property
    def records_per_min(self) -> float:
        return self.points / self.wall_s * 60 if self.wall_s else 0.0


@dataclass
class BenchmarkReport:
    """Everything one `coincap-pipeline benchmark` measured."""

    machine: str
    started_at: str
    seconds: float
    repeat: int
    sizes: list[SizeResult]
    history: HistoryResult | None

    def to_json(self) -> dict[str, Any]:
        def size(s: SizeResult) -> dict[str, Any]:
            return {
                **asdict(s),
                "min_calls": s.min_calls,
                "min_credits": s.min_credits,
                "ours": _run_json(s.ours),
                "naive": _run_json(s.naive) if s.naive else None,
            }

        history = None
        if self.history:
            history = {**asdict(self.history), "records_per_min": round(self.history.records_per_min)}
        return {**asdict(self), "sizes": [size(s) for s in self.sizes], "history": history}


def _run_json(run: RunResult) -> dict[str, Any]:
    return {**asdict(run), "records_per_min": round(run.records_per_min), "to_marts_s": run.to_marts_s}
