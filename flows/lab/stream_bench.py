"""Tick-to-queryable freshness of the price stream (the lab: not imported by the pipeline).

`python -m flows.lab.stream_bench --seconds 30 --batch-seconds 1` streams from the local WebSocket stand-in (or
`--ws-url`, a real stream, with COINCAP_API_KEY) into a lake while DuckDB polls it, and reports how long a tick
takes to become queryable.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from flows.contracts.stream import DATASET, TICK_SCHEMA
from flows.errors import ConfigError, PipelineError
from flows.ingest.stream import StreamSummary, stream_prices
from flows.lake.parquet import ZONE_DATA, ensure_readable
from flows.lake.storage import LocalStorage
from flows.settings import Settings, current_settings


@dataclass
class FreshnessReport:
    """Tick-to-queryable latency: from a tick's receive time to a DuckDB query over the lake returning it."""

    seconds: float
    batch_seconds: float
    poll_interval_s: float
    ticks_streamed: int
    ticks_seen: int
    p50_s: float
    p95_s: float
    max_s: float

    def line(self) -> str:
        return (
            f"freshness over {self.seconds:.0f} s, {self.batch_seconds:g}-s batches: {self.ticks_seen} of "
            f"{self.ticks_streamed} ticks queryable; p50 {self.p50_s:.2f} s, p95 {self.p95_s:.2f} s, "
            f"max {self.max_s:.2f} s (polled every {self.poll_interval_s:g} s)"
        )


def measure_freshness(
    settings: Settings | None = None,
    *,
    seconds: float = 30.0,
    batch_seconds: float = 1.0,
    assets: Sequence[str] = ("bitcoin", "ethereum"),
    ws_url: str | None = None,
    poll_interval_s: float = 0.1,
    data_dir: Path | None = None,
) -> FreshnessReport:
    """Stream for `seconds` while polling `read_parquet(<lake>/coincap/prices_stream/*/*.parquet)` with DuckDB.

    Without `ws_url`, streams from the local stand-in into a temporary lake (or `data_dir`); with it, from that
    URL into the settings' local lake. Latency includes the poll interval, so it errs high.
    """
    if ws_url is None:
        from flows.standin.ws import StubPriceStream

        key = "freshness-key"
        with (
            tempfile.TemporaryDirectory(prefix="freshness-") as tmp,
            StubPriceStream(api_keys={key}, seed=7) as server,
        ):
            local = Settings(_env_file=None, PIPELINE_DATA_DIR=data_dir or Path(tmp), COINCAP_API_KEY=key)  # type: ignore[call-arg]
            return _measure(local, server.url, seconds, batch_seconds, assets, poll_interval_s)
    if settings is None:
        raise ConfigError("measure_freshness needs settings with COINCAP_API_KEY for a real stream.", "")
    return _measure(settings, ws_url, seconds, batch_seconds, assets, poll_interval_s)


def _measure(
    settings: Settings, ws_url: str, seconds: float, batch_seconds: float, assets: Sequence[str], poll: float
) -> FreshnessReport:
    import duckdb

    storage = LocalStorage(settings.lake_dir)
    ensure_readable(storage, {DATASET: TICK_SCHEMA}, settings.data_dir.resolve() / "staging" / "stream")
    pattern = f"{settings.lake_dir.as_posix()}/{ZONE_DATA}/{DATASET}/*/*.parquet".replace("'", "''")
    watermark = datetime.now(UTC)
    seen: dict[tuple[str, int, str], float] = {}
    result: dict[str, StreamSummary] = {}
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result["summary"] = stream_prices(
                settings, assets, ws_url=ws_url, batch_seconds=batch_seconds, max_seconds=seconds, storage=storage
            )
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")

    def query() -> None:
        nonlocal watermark
        rows = con.execute(
            f"select connection_id, message_seq, asset_id, tick_ts from read_parquet('{pattern}', union_by_name = true)"
            " where tick_ts >= ?",
            [watermark],
        ).fetchall()
        returned = datetime.now(UTC)
        for connection_id, seq, asset_id, tick_ts in rows:
            key = (connection_id, seq, asset_id)
            if key not in seen:
                seen[key] = (returned - tick_ts).total_seconds()
        if rows:
            watermark = max(watermark, max(r[3] for r in rows) - timedelta(seconds=batch_seconds * 2))

    worker = threading.Thread(target=run, name="freshness-stream", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            query()
            worker.join(poll)
        query()
    finally:
        con.close()
    if failure:
        raise failure[0]
    latencies = sorted(seen.values())
    if len(latencies) < 2:
        raise PipelineError("The stream delivered fewer than two ticks; no latency to report.", "Stream longer.")
    cuts = statistics.quantiles(latencies, n=20, method="inclusive")
    return FreshnessReport(
        seconds=seconds,
        batch_seconds=batch_seconds,
        poll_interval_s=poll,
        ticks_streamed=result["summary"].ticks,
        ticks_seen=len(latencies),
        p50_s=statistics.median(latencies),
        p95_s=cuts[18],
        max_s=latencies[-1],
    )


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Measure tick-to-queryable freshness of the price stream.")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--batch-seconds", type=float, default=1.0)
    parser.add_argument("--assets", default="bitcoin,ethereum", help="comma list of slugs, or ALL")
    parser.add_argument("--ws-url", default=None, help="a real stream (needs COINCAP_API_KEY); default: local stand-in")
    args = parser.parse_args()
    from contextlib import nullcontext

    from flows.lake.lock import data_dir_lock

    # A real stream goes into the settings' lake: one stream per data dir, as for the flow (the stand-in's goes
    # into a temporary lake).
    with (
        data_dir_lock(current_settings().data_dir, kind="stream", job="price stream") if args.ws_url else nullcontext()
    ):
        report = measure_freshness(
            current_settings() if args.ws_url else None,
            seconds=args.seconds,
            batch_seconds=args.batch_seconds,
            assets=args.assets.split(","),
            ws_url=args.ws_url,
        )
    print(report.line())
