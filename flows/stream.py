"""The stream flow: CoinCap's price WebSocket into the lake as micro-batches, for most of an hour per run.

A thin Prefect layer over the engine (`flows/ingest/stream.py`, where the ticks, the gaps and the reconnects are
explained): the flow builds the settings and the lake once, takes the data dir's stream lock and logs each batch.
"""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import Field

from flows.ingest.stream import ASSET_PATTERN, DEFAULT_WS_URL, StreamSummary, stream_prices
from flows.ingest.stream_lake import BatchReport
from flows.lake.factory import lake_storage
from flows.ops.observability import redacted_errors
from flows.orchestration.alerting import alert_on_failure
from flows.settings import current_settings

AssetId = Annotated[str, Field(pattern=ASSET_PATTERN, description="Asset slug like bitcoin, or ALL")]


@flow(
    name="stream",
    log_prints=True,
    validate_parameters=True,
    on_failure=[alert_on_failure],
    on_crashed=[alert_on_failure],
)
def stream_flow(
    assets: list[AssetId] = ["bitcoin", "ethereum"],  # noqa: B006 - Prefect needs a literal default for the UI form
    batch_seconds: Annotated[float, Field(gt=0, le=300)] = 2.0,
    max_minutes: Annotated[float, Field(gt=0)] | None = None,
    ws_url: str = DEFAULT_WS_URL,
) -> StreamSummary:
    """Stream CoinCap prices into the lake (long-running; paid plans; 1 credit per minute connected)."""
    logger = get_run_logger()

    def log_batch(batch: BatchReport) -> None:
        logger.info("batch: %d ticks, %d quarantined, lag %.2f s", batch.ticks, batch.quarantined, batch.lag_s)

    from flows.lake.lock import data_dir_lock

    settings = current_settings()
    # One stream per data dir (two would write every tick twice and pay twice); its own lock, not the snapshot's:
    # a stream runs for most of an hour, alongside hourly snapshots. The CLI took it already (re-entered here).
    with (
        redacted_errors(),  # what Prefect records of a failure holds no secret
        data_dir_lock(settings.data_dir, kind="stream", job="price stream"),
    ):
        return stream_prices(
            settings,
            assets,
            storage=lake_storage(settings),
            ws_url=ws_url,
            batch_seconds=batch_seconds,
            max_seconds=max_minutes * 60 if max_minutes is not None else None,
            on_batch=log_batch,
            logger=logger,
        )
