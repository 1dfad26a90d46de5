"""Benchmark: synthetic CoinCap snapshots served locally, through our pipeline and through a naive baseline.

`coincap-pipeline benchmark` serves, per size, a synthetic v3 snapshot (3,000 assets, 200 exchanges, 1k to 1M
markets: realistic records with 18-decimal strings) from the stand-in in its own process, then:

1. computes the minimum API calls and credits that snapshot can cost (one call per 2,000 records, billed on the
   server's real page bytes), with plain `http.client`: independent of our client. This pass also warms the
   stand-in (it encodes each record once), so every timed run below reads the same warm server;
2. runs our pipeline in a fresh interpreter per run (fetch → validate every record → Parquet lake → dbt build),
   timing each stage and reading its peak RSS;
3. runs the naive baseline (`flows/lab/naive_baseline.py`: requests → `pd.json_normalize` → row-by-row INSERT) the
   same way;
4. once, a history backfill of 3,000 assets x 3 years of d1 points (`python -m flows.lab.backfill_bench run`).

Each run is repeated (`--repeat`) and the fastest kept: other processes on the machine only ever slow a run down.

The modules: `results` (defaults and result records), `minimum` (the least each snapshot can cost), `runs` (the
parent side: sizes, repeats, the history backfill), `children` (the timed runs, `python -m flows.lab.benchmark`)
and `report` (the table, the summary, JSON and SVG).
"""

from flows.lab.benchmark.children import naive_child, pipeline_child
from flows.lab.benchmark.minimum import measure_minimum, minimum_cost, minimum_pages
from flows.lab.benchmark.report import TABLE_HEADER, TABLE_RULE, markdown_table, summary_lines, write_json, write_svg
from flows.lab.benchmark.results import (
    ASSETS,
    BASELINE_BUDGET_S,
    BENCH_KEY,
    DATASETS,
    EXCHANGES,
    HISTORY_ASSETS,
    HISTORY_YEARS,
    PAGE_LIMIT,
    PAGINATED,
    SIZES,
    BenchmarkError,
    BenchmarkReport,
    DatasetMinimum,
    HistoryResult,
    RunResult,
    Say,
    SizeResult,
)
from flows.lab.benchmark.runs import machine, parse_sizes, run_benchmark, run_history, run_size, server_stats

__all__ = [
    "ASSETS",
    "BASELINE_BUDGET_S",
    "BENCH_KEY",
    "DATASETS",
    "EXCHANGES",
    "HISTORY_ASSETS",
    "HISTORY_YEARS",
    "PAGE_LIMIT",
    "PAGINATED",
    "SIZES",
    "TABLE_HEADER",
    "TABLE_RULE",
    "BenchmarkError",
    "BenchmarkReport",
    "DatasetMinimum",
    "HistoryResult",
    "RunResult",
    "Say",
    "SizeResult",
    "machine",
    "markdown_table",
    "measure_minimum",
    "minimum_cost",
    "minimum_pages",
    "naive_child",
    "parse_sizes",
    "pipeline_child",
    "run_benchmark",
    "run_history",
    "run_size",
    "server_stats",
    "summary_lines",
    "write_json",
    "write_svg",
]
