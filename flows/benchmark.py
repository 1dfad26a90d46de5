"""Benchmark: a locally served snapshot through extract → validate → lake → dbt, timed per stage.

Each size runs in a fresh Python process (so its peak RSS is its own), against the CoinCap stand-in in a
separate process (so the server's CPU time is not ours). Run it with `coincap-pipeline benchmark`.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from flows.coincap.endpoints import DATASETS
from flows.settings import Settings

BENCH_KEY = "benchmark-key"


@dataclass
class SizeResult:
    """One benchmark size: what was served and how long each stage took."""

    markets: int
    assets: int
    records: int
    valid: int
    quarantined: int
    calls: int
    credits: int
    extract_s: float
    dbt_s: float | None
    peak_rss_extract_mib: float
    peak_rss_mib: float
    per_dataset_s: dict[str, float]

    @property
    def records_per_s(self) -> float:
        return self.records / self.extract_s if self.extract_s else 0.0


def run_one(markets: int, assets: int, with_dbt: bool) -> SizeResult:
    """Serve one synthetic snapshot locally and push it through the pipeline; call in a fresh process."""
    from flows.extract import extract_dataset
    from flows.lake.factory import lake_storage
    from flows.local_api import serve_in_subprocess
    from flows.snapshot_id import Snapshot

    proc, base_url = serve_in_subprocess(markets=markets, assets=assets, exchanges=200, api_key=BENCH_KEY)
    try:
        with tempfile.TemporaryDirectory(prefix="coincap-bench-") as tmp:
            settings = Settings(COINCAP_API_KEY=BENCH_KEY, COINCAP_API_BASE_URL=base_url, PIPELINE_DATA_DIR=Path(tmp))  # type: ignore[call-arg]
            snapshot = Snapshot.now()
            storage = lake_storage(settings)
            per_dataset: dict[str, float] = {}
            records = valid = quarantined = calls = credits = 0
            started = time.perf_counter()
            for dataset in DATASETS:
                t0 = time.perf_counter()
                report, staged = extract_dataset(dataset, snapshot, settings=settings)
                staged.publish(storage)
                per_dataset[dataset] = round(time.perf_counter() - t0, 3)
                records += report.served
                valid += report.valid
                quarantined += report.quarantined
                calls += report.calls
                credits += report.credits
            extract_s = time.perf_counter() - started
            peak_extract = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
            dbt_s = None
            if with_dbt:
                from flows.transform import run_dbt

                dbt_s = run_dbt(settings, "build").seconds
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
            return SizeResult(
                markets=markets, assets=assets, records=records, valid=valid, quarantined=quarantined,
                calls=calls, credits=credits, extract_s=round(extract_s, 3),
                dbt_s=round(dbt_s, 3) if dbt_s is not None else None,
                peak_rss_extract_mib=round(peak_extract, 1), peak_rss_mib=round(peak, 1),
                per_dataset_s=per_dataset,
            )  # fmt: skip
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def run_sizes(sizes: list[int], assets: int, with_dbt: bool) -> list[SizeResult]:
    """Run each size in its own interpreter and collect the results."""
    results = []
    for markets in sizes:
        cmd = [sys.executable, "-m", "flows.benchmark", str(markets), str(assets), "1" if with_dbt else "0"]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ})
        if done.returncode != 0:
            raise RuntimeError(f"benchmark of {markets} markets failed:\n{done.stderr[-3000:]}")
        data = json.loads(done.stdout.strip().splitlines()[-1])
        results.append(SizeResult(**data))
    return results


def machine() -> str:
    """A one-line description of this machine, for the README table."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB RAM, Python {platform.python_version()}, {platform.system()}"
    )


if __name__ == "__main__":
    n_markets, n_assets, dbt_flag = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
    result = run_one(n_markets, n_assets, dbt_flag)
    print(json.dumps(asdict(result)))
