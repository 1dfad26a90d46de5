"""Simulated history for the offline demo: a month of daily snapshots ending with today's real demo snapshot.

The offline demo serves one set of bundled sample responses, so a single run gives every chart one point. To
show what the dashboard looks like after weeks of scheduled runs (the screenshots in docs/dashboard/, and the
dashboard tests), this module replays the demo catalog through the real pipeline once per past day, with
prices walked backwards from today's values (a seeded random walk, a shared market factor plus each asset's
own noise), then takes today's snapshot from the unchanged samples and builds the marts. Along the way, one
day's snapshot is deliberately bad (records that fail their contracts, and a price spike), and one run fails
(CoinCap answers "quota exhausted") before a retry succeeds, so the health page has something to show.

Run metrics record when a step really ran; the simulated runs all ran today, so their `started_at` (and
`checked_at` of their quality results) are moved to the day each snapshot stands for.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from flows.errors import PipelineError
from flows.settings import Settings, use_settings
from flows.standin import Catalog, Faults, StubServer

Record = dict[str, Any]
_STABLE_BAND = (0.97, 1.03)  # a price this close to $1 is treated as a stablecoin: it barely moves


@dataclass
class SimulatedHistory:
    """What `simulate_history` did: the snapshot ids, the bad one, and the run that failed."""

    settings: Settings
    snapshot_ids: list[str] = field(default_factory=list)  # oldest first; the last one is today's demo snapshot
    bad_snapshot_id: str | None = None
    failed_snapshot_id: str | None = None
    quality_runs: int = 0


def _num(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _dec(value: float) -> str:
    return f"{value:.18f}"


def price_factors(assets: list[Record], days: int, seed: int) -> dict[str, list[float]]:
    """Per asset, the price on day d before today as a multiple of today's price (index 0 = today = 1.0)."""
    rng = random.Random(seed)
    market = [rng.gauss(0.0015, 0.028) for _ in range(days)]
    factors: dict[str, list[float]] = {}
    for rank, asset in enumerate(assets):
        price = _num(asset.get("priceUsd"))
        stable = price is not None and _STABLE_BAND[0] <= price <= _STABLE_BAND[1]
        beta = 0.0 if stable else 0.8 + 0.6 * rng.random()
        own = 0.0004 if stable else 0.012 + 0.03 * min(1.0, rank / 60)
        level, path = 0.0, [1.0]
        for d in range(1, days):
            # walking backwards: yesterday's price is today's divided by today's return
            level -= beta * market[d - 1] + rng.gauss(0.0, own)
            path.append(math.exp(level))
        factors[asset["id"]] = path
    return factors


def day_catalog(base: Catalog, factors: dict[str, list[float]], day: int, seed: int) -> Catalog:
    """The demo catalog as it might have looked `day` days ago (day 0 returns an unchanged copy)."""
    catalog = copy.deepcopy(base)
    if day == 0:
        return catalog
    rng = random.Random(seed * 1000 + day)
    for asset in catalog.assets:
        path = factors.get(asset["id"])
        if not path:
            continue
        f, f_before = path[day], path[min(day + 1, len(path) - 1)]
        volume_noise = math.exp(rng.gauss(0.0, 0.25))
        for key, scale in (("priceUsd", f), ("marketCapUsd", f), ("vwap24Hr", f), ("volumeUsd24Hr", volume_noise)):
            value = _num(asset.get(key))
            if value is not None:
                asset[key] = _dec(value * scale)
        asset["changePercent24Hr"] = repr(round((f / f_before - 1) * 100, 10))
    for rate in catalog.rates:
        path = factors.get(rate.get("id", ""))
        value = _num(rate.get("rateUsd"))
        if path and value is not None and rate.get("type") == "crypto":
            rate["rateUsd"] = _dec(value * path[day])
    # each exchange's volume moves on its own; shares are recomputed so that they still match the volumes
    noise = {e["exchangeId"]: math.exp(rng.gauss(0.0, 0.2)) for e in catalog.exchanges}
    shares = {
        e["exchangeId"]: _num(e.get("percentTotalVolume"))
        for e in catalog.exchanges
        if _num(e.get("percentTotalVolume")) is not None and _num(e.get("volumeUsd")) is not None
    }
    total_share = sum(shares.values())
    weighted = sum(share * noise[k] for k, share in shares.items()) or 1.0
    for exchange in catalog.exchanges:
        key = exchange["exchangeId"]
        volume = _num(exchange.get("volumeUsd"))
        if volume is not None:
            exchange["volumeUsd"] = _dec(volume * noise[key])
        if key in shares:
            exchange["percentTotalVolume"] = _dec(shares[key] * noise[key] * total_share / weighted)
    for market in catalog.markets:
        f = factors.get(market.get("baseId", ""), [1.0] * (day + 1))[day]
        for key in ("priceUsd", "priceQuote"):
            value = _num(market.get(key))
            if value is not None:
                market[key] = _dec(value * f)
        volume = _num(market.get("volumeUsd24Hr"))
        if volume is not None:
            market["volumeUsd24Hr"] = _dec(volume * math.exp(rng.gauss(0.0, 0.3)))
    return catalog


def spoil(catalog: Catalog) -> Catalog:
    """A deliberately bad snapshot: records that break their contracts, and one valid price 40 times too high."""
    bad = copy.deepcopy(catalog)
    assets = bad.assets
    if len(assets) > 12:
        assets[9]["priceUsd"] = "-" + str(assets[9]["priceUsd"])  # negative price
        assets[10]["marketCapUsd"] = "n/a"  # not a number
        del assets[11]["symbol"]  # missing required field
        price = _num(assets[12]["priceUsd"])
        if price is not None:
            assets[12]["priceUsd"] = _dec(price * 40)  # passes the contract: for the data-quality checks
    if bad.markets:
        bad.markets[0]["priceUsd"] = "-1.000000000000000000"
    return bad


def simulate_history(
    data_dir: Path,
    *,
    days: int = 30,
    bad_day: int | None = 3,
    failed_day: int | None = 5,
    check_days: Sequence[int] = (3,),
    seed: int = 7,
    hour: int = 6,
    progress: Callable[[str], None] | None = None,
) -> SimulatedHistory:
    """Fill `data_dir` with `days` daily demo snapshots; the last is today's, from the unchanged samples.

    `bad_day` (days before today; 0 = today's snapshot) is spoiled, `failed_day` has a failed run before its
    snapshot, and `check_days` get a data-quality run of their own (today's is checked by the pipeline run).
    Runs the real snapshot flow against the local stand-in, so Prefect must be reachable (PREFECT_API_URL, or
    Prefect's temporary local server). About a second per day, plus the dbt build and ~10 s per quality run.
    """
    from flows.quality import run_checks
    from flows.snapshot import snapshot_flow

    say = progress or (lambda _msg: None)
    base = Catalog.demo()
    factors = price_factors(base.assets, days + 1, seed)
    today = datetime.now(UTC).replace(microsecond=0)
    moments: dict[str, datetime] = {}
    with StubServer(base) as stub:
        settings = Settings(
            PIPELINE_DATA_DIR=data_dir,
            PIPELINE_TARGET="local",
            COINCAP_API_BASE_URL=stub.base_url,
            COINCAP_API_KEY=None,
        )
        result = SimulatedHistory(settings)
        use_settings(settings)
        try:
            for day in range(days - 1, 0, -1):
                moment = (today - timedelta(days=day)).replace(hour=hour, minute=0, second=0)
                snapshot_id = moment.strftime("%Y%m%dT%H%M%SZ")
                if day == failed_day:
                    failed = moment - timedelta(hours=1)
                    result.failed_snapshot_id = failed.strftime("%Y%m%dT%H%M%SZ")
                    moments[result.failed_snapshot_id] = failed
                    stub.faults = Faults(quota_exhausted=True)
                    say(f"{result.failed_snapshot_id}: a run that fails (CoinCap: quota exhausted)")
                    with contextlib.suppress(PipelineError):  # the failure is the point: ops.pipeline_runs has it
                        snapshot_flow(snapshot_id=result.failed_snapshot_id, transform=False)
                    stub.faults = Faults()
                catalog = day_catalog(base, factors, day, seed)
                if day == bad_day:
                    catalog = spoil(catalog)
                    result.bad_snapshot_id = snapshot_id
                stub.catalog = catalog
                say(f"{snapshot_id}: {'bad ' if day == bad_day else ''}snapshot, {day} days ago")
                snapshot_flow(snapshot_id=snapshot_id, transform=False)
                result.snapshot_ids.append(snapshot_id)
                moments[snapshot_id] = moment
            stub.catalog = spoil(day_catalog(base, factors, 0, seed)) if bad_day == 0 else base
            say(f"today: the {'bad ' if bad_day == 0 else ''}demo snapshot, the dbt build and its quality checks")
            summary = snapshot_flow(transform=True)
            result.snapshot_ids.append(summary.snapshot_id)
            if bad_day == 0:
                result.bad_snapshot_id = summary.snapshot_id
            checked: dict[str, datetime] = {}
            for day in sorted(set(check_days), reverse=True):
                if 0 < day < days:
                    snapshot_id = result.snapshot_ids[days - 1 - day]
                    say(f"{snapshot_id}: data-quality checks")
                    report = run_checks(settings, snapshot_id=snapshot_id)
                    checked[report.run_id] = moments[snapshot_id] + timedelta(minutes=10)
                    result.quality_runs += 1
        finally:
            use_settings(None)
    _backdate(settings.duckdb_path, moments, checked)
    return result


def _backdate(warehouse: Path, runs: dict[str, datetime], checks: dict[str, datetime]) -> None:
    """Move the simulated runs and quality runs to the moment they stand for (see the module docstring).

    `runs`: snapshot id -> moment of its run; `checks`: quality run id -> moment it checked.
    """
    con = duckdb.connect(str(warehouse))
    try:
        con.execute("set TimeZone = 'UTC'")
        for snapshot_id, moment in runs.items():
            con.execute(
                """
                update ops.pipeline_runs
                set started_at = started_at + ($1::timestamptz - first.at),
                    recorded_at = recorded_at + ($1::timestamptz - first.at)
                from (select min(started_at) as at from ops.pipeline_runs where snapshot_id = $2) as first
                where snapshot_id = $2
                """,
                [moment, snapshot_id],
            )
        for run_id, moment in checks.items():
            con.execute("update ops.dq_results set checked_at = ? where run_id = ?", [moment, run_id])
    finally:
        con.close()
