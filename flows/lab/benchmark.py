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
Calls and credits are metered by the server.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from flows.coincap.credits import credits_for
from flows.coincap.endpoints import ENDPOINTS
from flows.datasets import SNAPSHOT_DATASETS
from flows.errors import ConfigError, PipelineError

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
_DAY_MS = 86_400_000

Say = Callable[[str], None]


class BenchmarkError(PipelineError):
    """A benchmark run failed."""


# ------------------------------------------------------------------------------------------------ results


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


# ------------------------------------------------------------------------------------------------ minimum


def minimum_pages(records: int, page_limit: int = PAGE_LIMIT) -> int:
    """Calls a listing of `records` needs at least: one per full or partial page, and one to learn it is empty."""
    return max(1, math.ceil(records / page_limit))


def minimum_cost(records: int, page_bytes: Sequence[int], page_limit: int = PAGE_LIMIT) -> DatasetMinimum:
    """The minimum of one dataset of `records`, from the body sizes of the pages that carry them (each billed
    1 credit + 1 per 2,500 bytes): one entry per page, `minimum_pages` of them."""
    if len(page_bytes) != minimum_pages(records, page_limit):
        raise ValueError(f"{records} records take {minimum_pages(records, page_limit)} pages, not {len(page_bytes)}")
    return DatasetMinimum(
        records=records, calls=len(page_bytes), bytes=sum(page_bytes), credits=sum(credits_for(b) for b in page_bytes)
    )


def measure_minimum(base_url: str, api_key: str, page_limit: int = PAGE_LIMIT) -> dict[str, DatasetMinimum]:
    """Read every dataset of the served snapshot with `http.client` (not our client) and price its minimum.

    A listing is read with `limit`/`offset` until a short page; only the pages that carry records count (a page
    CoinCap sends empty, to say a full last page was the last, is not needed by someone who knows the count).
    """
    minimum = {}
    with _RawClient(base_url, api_key) as raw:
        for dataset in DATASETS:
            sizes: list[int] = []
            records = 0
            if PAGINATED[dataset]:
                offset = 0
                while True:
                    data, nbytes = raw.get_list(f"/{dataset}", {"limit": page_limit, "offset": offset})
                    if data or not sizes:
                        sizes.append(nbytes)
                    records += len(data)
                    if len(data) < page_limit:
                        break
                    offset += page_limit
            else:  # one call returns the whole list
                data, nbytes = raw.get_list(f"/{dataset}", {})
                sizes.append(nbytes)
                records = len(data)
            minimum[dataset] = minimum_cost(records, sizes, page_limit if PAGINATED[dataset] else max(1, records))
    return minimum


class _RawClient:
    """A bare keep-alive HTTP/1.1 client for the stand-in: status 200 and a JSON list under `data`, or an error."""

    def __init__(self, base_url: str, api_key: str) -> None:
        parts = urlsplit(base_url)
        self._prefix = parts.path.rstrip("/")
        self._conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=120)
        self._headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}

    def get_list(self, path: str, params: dict[str, Any]) -> tuple[list[Any], int]:
        url = self._prefix + path + ("?" + urlencode(params) if params else "")
        self._conn.request("GET", url, headers=self._headers)
        response = self._conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise BenchmarkError(
                f"The stand-in answered {response.status} for {url} while measuring the minimum cost.",
                "Re-run the benchmark; if it persists, run `python -m flows.standin` to see the server's error.",
            )
        data = json.loads(body)["data"]
        return data, len(body)

    def __enter__(self) -> _RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.close()


# ------------------------------------------------------------------------------------------------ one size


def run_size(markets: int, *, assets: int = ASSETS, exchanges: int = EXCHANGES, repeat: int = 1,
             with_dbt: bool = True, with_naive: bool = True, naive_budget_s: float = BASELINE_BUDGET_S,
             naive_projection: float | None = None, say: Say = print) -> SizeResult:  # fmt: skip
    """Serve one synthetic snapshot and measure the minimum, then our pipeline and the baseline `repeat` times.

    `naive_projection`: the baseline's expected seconds for this size (from a smaller one); over the budget, the
    baseline is skipped and says so.
    """
    from flows.standin import serve_in_subprocess

    say(f"{markets:,} markets: starting the stand-in ({assets:,} assets, {exchanges} exchanges)")
    server, base_url = serve_in_subprocess(
        markets=markets, assets=assets, exchanges=exchanges, api_key=BENCH_KEY, timeout_s=600
    )
    try:
        minimum = measure_minimum(base_url, BENCH_KEY)
        records = sum(m.records for m in minimum.values())
        say(f"{markets:,} markets: {records:,} records, minimum {sum(m.calls for m in minimum.values()):,} calls "
            f"and {sum(m.credits for m in minimum.values()):,} credits")  # fmt: skip
        ours = _best(
            lambda: _metered(base_url, lambda: _child(["pipeline", base_url, "1" if with_dbt else "0"])),
            repeat, "ours", markets, say,
        )  # fmt: skip
        naive = None
        skipped = None
        if not with_naive:
            skipped = "not run (--no-baseline)"
        elif naive_projection is not None and naive_projection > naive_budget_s:
            skipped = f"skipped: projected {naive_projection:,.0f} s, over the {naive_budget_s:,.0f} s budget"
            say(f"{markets:,} markets: naive baseline {skipped}")
        else:
            naive = _best(
                lambda: _metered(base_url, lambda: _child(["naive", base_url])), repeat, "naive", markets, say
            )
        return SizeResult(
            markets=markets, assets=assets, exchanges=exchanges, records=records, minimum=minimum, ours=ours,
            naive=naive, naive_skipped=skipped, runs=repeat,
        )  # fmt: skip
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def _best(run: Callable[[], RunResult], repeat: int, name: str, markets: int, say: Say) -> RunResult:
    best: RunResult | None = None
    for attempt in range(1, repeat + 1):
        result = run()
        say(
            f"{markets:,} markets: {name} run {attempt}/{repeat}: {result.wall_s:.2f} s to "
            f"{'lake' if name == 'ours' else 'SQL'} ({result.records_per_min:,.0f} records/min)"
            + (f", dbt {result.dbt_s:.1f} s" if result.dbt_s is not None else "")
            + f", peak RSS {result.peak_rss_mib:,.0f} MiB"
        )
        if best is None or result.wall_s < best.wall_s:
            best = result
    assert best is not None
    return best


def _metered(base_url: str, run: Callable[[], dict[str, Any]]) -> RunResult:
    """Run a child and add the calls and credits the server metered while it ran."""
    before = server_stats(base_url)
    data = run()
    after = server_stats(base_url)
    data["calls"] = after["total_requests"] - before["total_requests"]
    data["credits"] = after["credits"] - before["credits"]
    return RunResult(**data)


def server_stats(base_url: str) -> dict[str, Any]:
    """The stand-in's counters (requests, credits, ...), read outside the metered API."""
    with urllib.request.urlopen(base_url.removesuffix("/v3") + "/_stub/stats", timeout=30) as response:
        return json.loads(response.read())


def _child(args: list[str]) -> dict[str, Any]:
    """Run `python -m flows.lab.benchmark <args>` in a fresh interpreter (so its peak RSS is its own); read its JSON."""
    done = subprocess.run(
        [sys.executable, "-m", "flows.lab.benchmark", *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchmarkError(
            f"The benchmark's {args[0]} run failed: {last}",
            "Run `python -m flows.lab.benchmark " + " ".join(args) + "` to see the whole error.",
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ children


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
    from flows.snapshot import build_marts

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


# ------------------------------------------------------------------------------------------------ history


def run_history(n_assets: int = HISTORY_ASSETS, years: int = HISTORY_YEARS, say: Say = print) -> HistoryResult:
    """A d1 backfill of `n_assets` x `years` from a stand-in in its own process
    (`python -m flows.lab.backfill_bench run`, the backfill benchmark's timed child), priced against one call per
    asset for its whole range."""
    from flows.standin import serve_in_subprocess
    from flows.standin.catalog import DEFAULT_AS_OF_MS

    end = datetime.fromtimestamp(DEFAULT_AS_OF_MS / 1000, UTC).date()
    start = end - timedelta(days=365 * years)  # the range `python -m flows.lab.backfill_bench run --years` fetches
    days = (end - start).days + 1
    say(f"history: starting the stand-in ({n_assets:,} assets x {days:,} days of d1)")
    server, base_url = serve_in_subprocess(
        assets=n_assets, exchanges=5, markets=10, history_days=days, history_assets=n_assets,
        history_interval="d1", api_key=BENCH_KEY, timeout_s=600,
    )  # fmt: skip
    try:
        min_calls, min_credits, points = _history_minimum(base_url, start, end)
        say(f"history: {points:,} points, minimum {min_calls:,} calls and {min_credits:,} credits")
        before = server_stats(base_url)
        with tempfile.TemporaryDirectory(prefix="coincap-bench-history-") as tmp:
            command = [
                sys.executable, "-m", "flows.lab.backfill_bench", "run", "--base-url", base_url, "--data-dir", tmp,
                "--assets", str(n_assets), "--years", str(years),
            ]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise BenchmarkError(f"The history backfill run failed: {last}", "Run it alone: " + " ".join(command[1:]))
        child = json.loads(done.stdout.strip().splitlines()[-1])
        after = server_stats(base_url)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    report = child.get("report", {})
    if int(report.get("points_landed", 0)) != points:
        raise BenchmarkError(
            f"The history backfill landed {report.get('points_landed', 0):,} points of the {points:,} served.",
            "Run `python -m flows.lab.backfill_bench benchmark` to see which chunks are missing.",
        )
    result = HistoryResult(
        assets=n_assets, years=years, points=int(report.get("points_landed", 0)), wall_s=child["seconds"],
        cpu_s=child["cpu_seconds"], peak_rss_mib=child["peak_rss_mib"],
        calls=after["total_requests"] - before["total_requests"], credits=after["credits"] - before["credits"],
        min_calls=min_calls, min_credits=min_credits,
    )  # fmt: skip
    say(
        f"history: {result.wall_s:.1f} s ({result.records_per_min:,.0f} points/min), {result.calls:,} calls, "
        f"{result.credits:,} credits, peak RSS {result.peak_rss_mib:,.0f} MiB"
    )
    return result


def _history_minimum(base_url: str, start: date, end: date) -> tuple[int, int, int]:
    """(calls, credits, points) of the cheapest read: the asset list, then each asset's whole range in one call."""
    first_ms = int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp() * 1000)
    last_ms = int(datetime(end.year, end.month, end.day, tzinfo=UTC).timestamp() * 1000) + _DAY_MS - 1
    calls = credits = points = 0
    with _RawClient(base_url, BENCH_KEY) as raw:
        slugs: list[str] = []
        offset = 0
        while True:
            data, nbytes = raw.get_list("/assets", {"limit": PAGE_LIMIT, "offset": offset})
            if data or not calls:
                calls, credits = calls + 1, credits + credits_for(nbytes)
            slugs += [a["id"] for a in data]
            if len(data) < PAGE_LIMIT:
                break
            offset += PAGE_LIMIT
        for slug in slugs:
            series, nbytes = raw.get_list(f"/assets/{slug}/history", {"interval": "d1", "start": first_ms,
                                                                       "end": last_ms})  # fmt: skip
            calls, credits, points = calls + 1, credits + credits_for(nbytes), points + len(series)
    return calls, credits, points


# ------------------------------------------------------------------------------------------------ whole run


def parse_sizes(text: str) -> list[int]:
    """`1k,10k,100k,1M` (or plain numbers) → market counts; a bad entry is a one-line `ConfigError`."""
    sizes = []
    for part in (p.strip() for p in text.split(",")):
        match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmM]?)", part.replace("_", ""))
        if not match:
            raise ConfigError(
                f"Benchmark size {part!r} is not a number of markets.", "Use e.g. --sizes 1k,10k,100k,1M."
            )
        scale = {"": 1, "k": 1_000, "m": 1_000_000}[match.group(2).lower()]
        value = float(match.group(1)) * scale
        if value < 1 or value != int(value):
            raise ConfigError(f"Benchmark size {part!r} is not a whole number of markets >= 1.", "Use e.g. 10k.")
        sizes.append(int(value))
    if not sizes:
        raise ConfigError("No benchmark sizes given.", "Use e.g. --sizes 1k,10k,100k,1M.")
    return sizes


def run_benchmark(
    sizes: Sequence[int] = SIZES,
    *,
    assets: int = ASSETS,
    exchanges: int = EXCHANGES,
    repeat: int = 1,
    with_dbt: bool = True,
    with_naive: bool = True,
    history: tuple[int, int] | None = (HISTORY_ASSETS, HISTORY_YEARS),
    naive_budget_s: float = BASELINE_BUDGET_S,
    say: Say = print,
) -> BenchmarkReport:
    """The whole benchmark: every size (smallest first), then the history backfill."""
    started = time.perf_counter()
    started_at = datetime.now(UTC).replace(microsecond=0).isoformat()
    results: list[SizeResult] = []
    for markets in sorted(sizes):
        projection = _naive_projection(results, markets)
        results.append(
            run_size(markets, assets=assets, exchanges=exchanges, repeat=repeat, with_dbt=with_dbt,
                     with_naive=with_naive, naive_budget_s=naive_budget_s, naive_projection=projection, say=say)
        )  # fmt: skip
    history_result = run_history(*history, say=say) if history else None
    return BenchmarkReport(
        machine=machine(), started_at=started_at, seconds=round(time.perf_counter() - started, 1), repeat=repeat,
        sizes=results, history=history_result,
    )  # fmt: skip


def _naive_projection(done: list[SizeResult], markets: int) -> float | None:
    """The baseline's seconds for `markets`, scaled linearly from the largest size it ran (it is row by row)."""
    ran = [s for s in done if s.naive is not None]
    if not ran:
        return None
    last = max(ran, key=lambda s: s.records)
    per_record = last.naive.wall_s / max(1, last.records)  # type: ignore[union-attr]
    expected_records = last.records - last.markets + markets
    return per_record * expected_records


def machine() -> str:
    """One line about this machine: CPU model, cores this process may use, RAM, Python, OS."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {cores} cores, {mem_gib:.0f} GiB RAM, Python {platform.python_version()}, {platform.system()}"


# ------------------------------------------------------------------------------------------------ output

TABLE_HEADER = (
    "| markets | pipeline | records | fetch+parse s | validate s | normalize s | write s | wall s | records/min "
    "| dbt s | API→marts s | peak RSS | calls (min) | credits (min) | credits ÷ min |"
)
TABLE_RULE = "|---:|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"


def markdown_table(report: BenchmarkReport) -> str:
    """The results as the README shows them: one row per size and pipeline, then the history row and the machine."""
    lines = [TABLE_HEADER, TABLE_RULE]
    for s in report.sizes:
        lines.append(_row(s, s.ours))
        if s.naive is not None:
            lines.append(_row(s, s.naive))
        elif s.naive_skipped and not s.naive_skipped.startswith("not run"):
            lines.append(f"| {s.markets:,} | naive | {s.records:,} | {s.naive_skipped} |" + " |" * 11)
    if report.history:
        h = report.history
        lines.append(
            f"| history | ours (backfill) | {h.points:,} | | | | | {h.wall_s:.1f} | {h.records_per_min:,.0f} | | "
            f"| {h.peak_rss_mib:,.0f} MiB | {h.calls:,} ({h.min_calls:,}) | {h.credits:,} ({h.min_credits:,}) "
            f"| {_ratio(h.credits, h.min_credits)} |"
        )
    return "\n".join(lines)


def _row(s: SizeResult, r: RunResult) -> str:
    def sec(value: float | None, digits: int = 2) -> str:
        return "—" if value is None else f"{value:.{digits}f}"

    marts = sec(r.to_marts_s, 1)
    return (
        f"| {s.markets:,} | {r.pipeline} | {r.records:,} | {sec(r.fetch_s)} | {sec(r.validate_s)} "
        f"| {sec(r.normalize_s)} | {sec(r.write_s)} | {sec(r.wall_s)} | {r.records_per_min:,.0f} "
        f"| {sec(r.dbt_s, 1)} | {marts} | {r.peak_rss_mib:,.0f} MiB | {r.calls:,} ({s.min_calls:,}) "
        f"| {r.credits:,} ({s.min_credits:,}) | {_ratio(r.credits, s.min_credits)} |"
    )


def _ratio(credits: int, minimum: int) -> str:
    return f"{credits / minimum:.3f}" if minimum else "—"


def summary_lines(report: BenchmarkReport) -> Iterator[str]:
    """What the table means, and how the targets came out, for people."""
    yield (
        "ours: fetch+parse = HTTP + JSON parse in a background thread, overlapped with validation (busy seconds); "
        "validate = contract checks (Pandera) + Arrow; write = Parquet + publish into the lake; wall = first "
        "request to files published. naive: requests → .json(), pd.json_normalize, DataFrame.to_sql into SQLite "
        "(row-by-row INSERT), one after the other; no validation."
    )
    yield "peak RSS: each run in a fresh process, before dbt; calls and credits: metered by the server."
    for s in report.sizes:
        parts = [f"{s.markets:,} markets: ours {s.ours.records_per_min:,.0f} records/min to the lake"]
        if s.naive is not None:
            fetch_only = s.naive.records / s.naive.fetch_s * 60 if s.naive.fetch_s else 0.0
            parts.append(f"naive {s.naive.records_per_min:,.0f}/min (its fetch+parse alone {fetch_only:,.0f}/min)")
        if s.ours.to_marts_s is not None:
            parts.append(f"API → marts {s.ours.to_marts_s:.1f} s")
        parts.append(f"credits {_ratio(s.ours.credits, s.min_credits)} x the minimum")
        yield "; ".join(parts)
    yield f"machine: {report.machine}"


def write_json(report: BenchmarkReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**report.to_json(), "table": markdown_table(report)}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")


def write_svg(report: BenchmarkReport, path: Path) -> None:
    """Two charts side by side, drawn by hand (no plotting dependency): records/min and peak RSS per size,
    ours against the naive baseline, on a logarithmic size axis."""
    sizes = [s.markets for s in report.sizes]
    series = {
        "records/min to the lake (ours) or SQL (naive)": (
            [s.ours.records_per_min for s in report.sizes],
            [s.naive.records_per_min if s.naive else None for s in report.sizes],
        ),
        "peak RSS, MiB (fresh process, before dbt)": (
            [s.ours.peak_rss_mib for s in report.sizes],
            [s.naive.peak_rss_mib if s.naive else None for s in report.sizes],
        ),
    }
    width, height, pad = 460, 300, 56
    panels = []
    for n, (title, (ours, naive)) in enumerate(series.items()):
        panels.append(_svg_panel(n * (width + 20), width, height, pad, title, sizes, ours, naive))
    total_w = 2 * width + 20
    legend = (
        f'<g font-size="12"><rect x="{pad}" y="{height + 8}" width="14" height="4" fill="#1f77b4"/>'
        f'<text x="{pad + 20}" y="{height + 14}">ours (validated, Parquet lake)</text>'
        f'<rect x="{pad + 230}" y="{height + 8}" width="14" height="4" fill="#d62728"/>'
        f'<text x="{pad + 250}" y="{height + 14}">naive (requests → pandas → row-by-row INSERT)</text></g>'
    )
    caption = f'<text x="{pad}" y="{height + 34}" font-size="11" fill="#555">{_xml(report.machine)}</text>'
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{height + 44}" '
        f'font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>'
        + "".join(panels)
        + legend
        + caption
        + "</svg>\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(svg, encoding="utf-8")


def _svg_panel(x0: int, width: int, height: int, pad: int, title: str, sizes: list[int], ours: list[float],
               naive: list[float | None]) -> str:  # fmt: skip
    values = [v for v in [*ours, *naive] if v is not None]
    step = _nice_step((max(values) if values else 1.0) / 4)
    ticks = math.ceil((max(values) if values else 1.0) / step)
    top = step * ticks
    lo, hi = math.log10(min(sizes)), math.log10(max(sizes))
    span = hi - lo or 1.0

    def px(size: int) -> float:
        return x0 + pad + (math.log10(size) - lo) / span * (width - 2 * pad) if hi > lo else x0 + width / 2

    def py(value: float) -> float:
        return height - pad + 20 - value / top * (height - pad - 20)

    parts = [f'<text x="{x0 + pad}" y="16" font-size="13" font-weight="bold">{_xml(title)}</text>']
    for i in range(ticks + 1):  # horizontal grid and its labels
        value = step * i
        y = py(value)
        parts.append(f'<line x1="{x0 + pad}" y1="{y:.1f}" x2="{x0 + width - pad}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{x0 + pad - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end">'
                     f"{_short_number(value)}</text>")  # fmt: skip
    for size in sizes:
        parts.append(f'<text x="{px(size):.1f}" y="{height - pad + 36}" font-size="10" text-anchor="middle">'
                     f"{_short_number(size)}</text>")  # fmt: skip
    parts.append(f'<text x="{x0 + width / 2:.1f}" y="{height - pad + 50}" font-size="11" text-anchor="middle">'
                 "markets served (log scale)</text>")  # fmt: skip
    for color, points in (("#1f77b4", ours), ("#d62728", naive)):
        xy = [(px(size), py(v)) for size, v in zip(sizes, points, strict=True) if v is not None]
        if len(xy) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>' for x, y in xy]
    return "<g>" + "".join(parts) + "</g>"


def _nice_step(value: float) -> float:
    """The smallest of 1, 2, 2.5 or 5 times a power of ten that is at least `value`."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    return next(step * magnitude for step in (1, 2, 2.5, 5, 10) if value <= step * magnitude)


def _short_number(value: float) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            text = f"{value / scale:.1f}".rstrip("0").rstrip(".")
            return f"{text}{unit}"
    return f"{value:.0f}"


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def main(argv: list[str] | None = None) -> int:
    """`python -m flows.lab.benchmark pipeline <base_url> <dbt 0|1>` or `naive <base_url>`: one run, as a JSON line."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["pipeline"] and len(args) == 3:
        print(json.dumps(pipeline_child(args[1], args[2] == "1")))
        return 0
    if args[:1] == ["naive"] and len(args) == 2:
        print(json.dumps(naive_child(args[1])))
        return 0
    print("usage: python -m flows.lab.benchmark pipeline <base_url> <0|1> | naive <base_url>  "
          "(the whole benchmark: coincap-pipeline benchmark)", file=sys.stderr)  # fmt: skip
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
