"""The benchmark's parent side: a stand-in per size in its own process, timed children against it, the best of
`repeat` runs kept, then the history backfill; and the machine it ran on."""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flows.errors import ConfigError
from flows.lab.benchmark.minimum import history_minimum, measure_minimum
from flows.lab.benchmark.results import (
    ASSETS,
    BASELINE_BUDGET_S,
    BENCH_KEY,
    EXCHANGES,
    HISTORY_ASSETS,
    HISTORY_YEARS,
    SIZES,
    BenchmarkError,
    BenchmarkReport,
    HistoryResult,
    RunResult,
    Say,
    SizeResult,
)


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


def run_history(n_assets: int = HISTORY_ASSETS, years: int = HISTORY_YEARS, say: Say = print) -> HistoryResult:
    """A d1 backfill of `n_assets` x `years` from a stand-in in its own process
    (`python -m flows.lab.backfill_bench run`, the backfill benchmark's timed child), priced against one call per
    asset for its whole range."""
    from flows.standin import serve_in_subprocess
    from flows.standin.records import DEFAULT_AS_OF_MS

    end = datetime.fromtimestamp(DEFAULT_AS_OF_MS / 1000, UTC).date()
    start = end - timedelta(days=365 * years)  # the range `python -m flows.lab.backfill_bench run --years` fetches
    days = (end - start).days + 1
    say(f"history: starting the stand-in ({n_assets:,} assets x {days:,} days of d1)")
    server, base_url = serve_in_subprocess(
        assets=n_assets, exchanges=5, markets=10, history_days=days, history_assets=n_assets,
        history_interval="d1", api_key=BENCH_KEY, timeout_s=600,
    )  # fmt: skip
    try:
        min_calls, min_credits, points = history_minimum(base_url, start, end)
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
