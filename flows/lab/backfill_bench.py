"""Benchmark of the history backfill (the lab: not imported by the pipeline).

`python -m flows.lab.backfill_bench benchmark [--assets N] [--years Y]` serves synthetic history from a CoinCap stand-in
in its own process, runs the backfill in a child process (`python -m flows.lab.backfill_bench run`), measures seconds,
CPU and memory, kills the child once partway and checks that the resumed run lands every point exactly once.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from flows.ingest.backfill import DEFAULT_WORKERS, backfill
from flows.ingest.backfill_plan import plan_chunks
from flows.lake.history import DATASET
from flows.lake.parquet import ZONE_DATA
from flows.lake.storage import LocalStorage
from flows.settings import Settings


@dataclass
class BackfillBenchmark:
    """Seconds, memory and the kill-and-resume check of one benchmark."""

    assets: int
    years: int
    chunks: int
    points: int
    seconds: float
    cpu_seconds: float
    server_cpu_seconds: float
    peak_rss_mib: float
    credits: int
    estimated_credits: int
    killed_after_chunks: int
    resume_requests: int
    resume_expected_requests: int
    refetched_finished_chunks: int
    points_after_resume: int
    distinct_points_after_resume: int

    @property
    def ok(self) -> bool:
        return (
            self.refetched_finished_chunks == 0
            and self.resume_requests == self.resume_expected_requests
            and self.points_after_resume == self.distinct_points_after_resume == self.points
        )

    def lines(self) -> Iterator[str]:
        """The result for people: what ran, how fast, and whether the kill-and-resume check held."""
        yield f"{self.assets:,} assets x {self.years} years of d1: {self.chunks:,} chunks, {self.points:,} points"
        yield (
            f"  {self.seconds:.1f}s wall, {self.cpu_seconds:.1f}s CPU in the backfill process "
            f"(server: {self.server_cpu_seconds:.1f}s CPU in its own process), peak RSS {self.peak_rss_mib:.0f} MiB"
        )
        yield f"  credits: {self.credits:,} used, {self.estimated_credits:,} estimated"
        yield (
            f"  kill and resume: killed after {self.killed_after_chunks:,} chunks landed; resume made "
            f"{self.resume_requests:,} requests ({self.resume_expected_requests:,} expected), refetched "
            f"{self.refetched_finished_chunks} finished chunks; {self.points_after_resume:,} points, "
            f"{self.distinct_points_after_resume:,} distinct -> {'OK' if self.ok else 'FAILED'}"
        )


BENCH_KEY = "benchmark-key"


def bench_range(years: int) -> tuple[date, date]:
    """`years` x 365 days up to the stand-in's fixed "now", whose synthetic history ends that day."""
    from flows.standin.records import DEFAULT_AS_OF_MS

    end = datetime.fromtimestamp(DEFAULT_AS_OF_MS / 1000, UTC).date()
    return end - timedelta(days=365 * years), end


def child_command(base_url: str, data_dir: Path, n_assets: int, years: int, workers: int) -> list[str]:
    import sys

    return [
        sys.executable, "-m", "flows.lab.backfill_bench", "run",
        "--base-url", base_url, "--data-dir", str(data_dir), "--assets", str(n_assets),
        "--years", str(years), "--workers", str(workers),
    ]  # fmt: skip


def _server_stats(base_url: str) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(base_url.removesuffix("/v3") + "/_stub/stats", timeout=10) as response:
        return json.loads(response.read())


def _cpu_seconds(pid: int) -> float:
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def lake_points(lake_dir: Path) -> tuple[int, int]:
    """Rows and distinct (asset, interval, time) points of the history in a lake: equal when nothing is duplicated."""
    import duckdb

    files = f"{lake_dir.as_posix()}/{ZONE_DATA}/{DATASET}/*/*/*.parquet"
    with duckdb.connect() as con:
        row = con.sql(
            f"select count(*), count(distinct (asset_id, history_interval, time)) from read_parquet('{files}')"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _history_requests(stats: dict[str, Any]) -> dict[str, int]:
    return {p: n for p, n in stats["requests"].items() if p.endswith("/history")}


def benchmark_backfill(
    n_assets: int = 2000,
    years: int = 3,
    *,
    workers: int = DEFAULT_WORKERS,
    kill_at: float = 0.4,
    server_delay_s: float = 0.0,
    timed_run: bool = True,
) -> BackfillBenchmark:
    """Time a d1 backfill of `n_assets` x `years` from a stand-in in another process; then SIGKILL a second run
    at `kill_at` of its chunks, resume it, and check that no finished chunk is refetched and each point lands once."""
    import signal
    import subprocess

    from flows.standin import Faults, serve_in_subprocess

    start, end = bench_range(years)
    days = (end - start).days + 1
    points = n_assets * days  # the stand-in serves one d1 point per day, all inside the range
    chunks = n_assets * len(plan_chunks("x", "d1", start, end, int(datetime.now(UTC).timestamp() * 1000)))
    server, base_url = serve_in_subprocess(
        assets=n_assets, exchanges=5, markets=10, history_days=days, history_assets=n_assets,
        history_interval="d1", api_key=BENCH_KEY, timeout_s=120, faults=Faults(delay_s=server_delay_s),
    )  # fmt: skip
    try:
        with tempfile.TemporaryDirectory(prefix="coincap-backfill-bench-") as tmp:
            timed: dict[str, Any] = {"seconds": 0.0, "cpu_seconds": 0.0, "peak_rss_mib": 0.0, "report": {}}
            server_cpu = 0.0
            if timed_run:  # 1. one timed run, in its own interpreter so its peak RSS is its own
                server_cpu = _cpu_seconds(server.pid)
                done = subprocess.run(
                    child_command(base_url, Path(tmp) / "timed", n_assets, years, workers),
                    capture_output=True, text=True, check=False,
                )  # fmt: skip
                server_cpu = _cpu_seconds(server.pid) - server_cpu
                if done.returncode != 0:
                    raise RuntimeError(f"benchmark run failed:\n{done.stderr[-3000:]}")
                timed = json.loads(done.stdout.strip().splitlines()[-1])
                timed_rows, timed_distinct = lake_points(Path(tmp) / "timed" / "lake")
                if not timed_rows == timed_distinct == points:
                    raise RuntimeError(
                        f"the timed run landed {timed_rows} points ({timed_distinct} distinct), not {points}"
                    )

            # 2. kill a run part-way (SIGKILL: no cleanup of any kind), then resume it
            data_dir = Path(tmp) / "killed"
            lake = data_dir / "lake" / ZONE_DATA / DATASET
            child = subprocess.Popen(
                child_command(base_url, data_dir, n_assets, years, workers),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                while child.poll() is None and _count_objects(lake) < int(chunks * kill_at):
                    time.sleep(0.02)
            finally:
                child.send_signal(signal.SIGKILL)
                child.wait()
            time.sleep(0.5)  # let the server answer what the killed process had already sent
            landed = {_chunk_of(p) for p in lake.rglob("*.parquet")}
            before = _history_requests(_server_stats(base_url))
            resumed = subprocess.run(
                child_command(base_url, data_dir, n_assets, years, workers), capture_output=True, text=True,
                check=False,
            )  # fmt: skip
            if resumed.returncode != 0:
                raise RuntimeError(f"resumed benchmark run failed:\n{resumed.stderr[-3000:]}")
            after = _history_requests(_server_stats(base_url))
            now_ms = int(datetime.now(UTC).timestamp() * 1000)
            refetched = expected_requests = 0
            for path in after:
                asset = path.split("/")[-2]
                planned = plan_chunks(asset, "d1", start, end, now_ms)
                missing = [c for c in planned if (asset, c.start_ms) not in landed or c.is_open(now_ms)]
                expected_requests += len(missing)
                refetched += max(0, after[path] - before.get(path, 0) - len(missing))
            total_points, distinct = lake_points(data_dir / "lake")
            report = timed["report"]
            return BackfillBenchmark(
                assets=n_assets, years=years, chunks=chunks, points=points,
                seconds=round(timed["seconds"], 2), cpu_seconds=round(timed["cpu_seconds"], 2),
                server_cpu_seconds=round(server_cpu, 2), peak_rss_mib=round(timed["peak_rss_mib"], 1),
                credits=report.get("credits_used", 0), estimated_credits=report.get("estimated_credits", 0),
                killed_after_chunks=len(landed),
                resume_requests=sum(after.values()) - sum(before.values()),
                resume_expected_requests=expected_requests, refetched_finished_chunks=refetched,
                points_after_resume=total_points, distinct_points_after_resume=distinct,
            )  # fmt: skip
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def _count_objects(folder: Path) -> int:
    return sum(1 for _ in folder.rglob("*.parquet")) if folder.exists() else 0


def _chunk_of(path: Path) -> tuple[str, int]:
    """(asset, start_ms) of a chunk object's path."""
    return path.parent.name.removeprefix("asset="), int(path.stem.split("_")[0])


def _run_child(argv: list[str]) -> dict[str, Any]:
    """`run`: one timed backfill against a stand-in, for the benchmark (prints a JSON line)."""
    import argparse
    import resource

    parser = argparse.ArgumentParser(prog="python -m flows.lab.backfill_bench run")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--assets", type=int, required=True)
    parser.add_argument("--years", type=int, default=3)
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    args = parser.parse_args(argv)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, COINCAP_API_KEY=BENCH_KEY, COINCAP_API_BASE_URL=args.base_url, PIPELINE_DATA_DIR=args.data_dir
    )
    start, end = bench_range(args.years)
    wall, cpu = time.perf_counter(), time.process_time()
    storage = LocalStorage(settings.lake_dir)
    report = backfill(settings, None, "d1", start, end, storage=storage, workers=args.workers, calls_per_minute=None)
    return {
        "seconds": time.perf_counter() - wall,
        "cpu_seconds": time.process_time() - cpu,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "report": json.loads(json.dumps(report.as_dict(), default=str)),
    }


def main(argv: list[str] | None = None) -> int:
    """`python -m flows.lab.backfill_bench benchmark [--assets N] [--years Y]`, or `run` (the benchmark's child)."""
    import argparse
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:
        print(json.dumps(_run_child(argv[1:])))
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m flows.lab.backfill_bench", description="Benchmark the history backfill."
    )
    parser.add_argument("command", choices=["benchmark"])
    parser.add_argument("--assets", type=int, default=2000)
    parser.add_argument("--years", type=int, default=3)
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    args = parser.parse_args(argv)
    result = benchmark_backfill(args.assets, args.years, workers=args.workers)
    for line in result.lines():
        print(line)
    print(json.dumps({**asdict(result), "ok": result.ok}))
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
