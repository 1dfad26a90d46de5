"""One backfill run's machinery: fetch threads feed a queue, the calling thread validates in batches, write threads
land each chunk in the lake (quarantine first, then the data object, whose existence marks the chunk done)."""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from flows.coincap.budget import CreditBudget, OverBudget
from flows.coincap.client import CoinCapClient
from flows.contracts.columns import API_TIMESTAMP, QUARANTINE_SCHEMA, SNAPSHOT_ID, SNAPSHOT_TS, TIMESTAMP_TYPE
from flows.contracts.datasets import ASSET_HISTORY
from flows.contracts.validate import plausible_api_timestamp, validate_records
from flows.errors import ApiError
from flows.ingest.backfill_plan import INTERVALS, BackfillPlan, Chunk, chunk_max_bytes, day_ms, skipped_key
from flows.ingest.backfill_report import BackfillReport
from flows.lake.history import DATASET
from flows.lake.parquet import StagedParquet
from flows.lake.storage import LakeStorage
from flows.settings import Settings
from flows.snapshot_id import Snapshot

log = logging.getLogger(__name__)

# Validation has a fixed cost per call (~9 ms of Pandera): chunks are validated in batches of this many points.
_BATCH_POINTS = 20_000

BackfillProgress = Callable[[int, int, int], None]  # (chunks done, chunks to fetch, points landed)


class _Pacer:
    """Spaces calls evenly to stay under a calls-per-minute limit, across threads."""

    def __init__(self, calls_per_minute: float | None) -> None:
        self.gap = 60.0 / calls_per_minute if calls_per_minute else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.gap:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.gap
        if slot > now:
            time.sleep(slot - now)


@dataclass
class _Fetched:
    """One chunk's answer, on its way from a fetch thread to validation."""

    chunk: Chunk
    records: list[Any]
    api_ts: datetime | None
    refetch: bool


class BackfillRun:
    """One backfill: fetch threads feed a queue; the calling thread validates batches; write threads land chunks."""

    def __init__(
        self,
        settings: Settings,
        storage: LakeStorage,
        plan: BackfillPlan,
        report: BackfillReport,
        *,
        budget: CreditBudget,
        workers: int,
        calls_per_minute: float | None,
        now_ms: int,
        progress: BackfillProgress | None,
    ) -> None:
        self.settings = settings
        self.plan = plan
        self.report = report
        self.budget = budget
        self.meter = budget.meter
        self.workers = max(1, workers)
        self.now_ms = now_ms
        self.range_end_ms = day_ms(report.end + timedelta(days=1))
        self.progress = progress
        self.storage = storage
        self.staging = settings.data_dir.resolve() / "staging"
        self.pacer = _Pacer(calls_per_minute)
        self.snapshot = Snapshot.parse(report.run_id)
        self.stop = threading.Event()
        self.fetched: queue.Queue[_Fetched] = queue.Queue(maxsize=4 * self.workers)
        self.lock = threading.Lock()
        self.local = threading.local()
        self.clients: list[CoinCapClient] = []
        self.chunks_done = 0
        self.answered = 0  # history calls answered with data (a 404 for all of them smells of a wrong base URL)
        self.new_fields: set[str] = set()
        self.schema = ASSET_HISTORY.arrow_schema()

    # ---- fetch threads

    def client(self) -> CoinCapClient:
        client = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = CoinCapClient(self.settings, budget=self.budget)
            with self.lock:
                self.clients.append(client)
        return client

    def fetch_asset(self, asset: str, chunks: list[Chunk]) -> None:
        """Fetch one asset's chunks in order (a 404 ends the asset at its first call)."""
        try:
            self._fetch_asset(asset, chunks)
        except BaseException:
            self.stop.set()  # auth, quota, an outage: no other thread sends another call
            raise

    def _fetch_asset(self, asset: str, chunks: list[Chunk]) -> None:
        previous_points: int | None = None  # points of the previous chunk, when fetched in this run
        for chunk in chunks:
            if self.stop.is_set():
                return
            try:
                self.pacer.wait()
                # every attempt reserves the largest answer a chunk can be, and a larger one is refused
                data, timestamp, _ = self.client().get_list(
                    chunk.path, chunk.params, max_body_bytes=chunk_max_bytes(chunk.interval)
                )
            except OverBudget:
                with self.lock:
                    self.report.stopped = self.report.stopped or "budget"
                self.stop.set()
                return
            except ApiError as exc:
                if _is_not_found(exc):
                    self.record_delisted(asset, exc)
                    return
                raise
            self.check_points(chunk, data, previous_points)
            previous_points = len(data)
            api_ts = plausible_api_timestamp(timestamp)  # None when implausible, never raises
            item = _Fetched(chunk, data, api_ts, refetch=chunk.key in self.plan.refetch)
            while True:  # a bounded queue: memory stays flat however far ahead the fetches run
                try:
                    self.fetched.put(item, timeout=0.2)
                    break
                except queue.Full:
                    if self.stop.is_set():
                        return

    def check_points(self, chunk: Chunk, data: list[Any], previous: int | None) -> None:
        """Warn about chunks that look truncated or wrong: the API's range limits are undocumented."""
        step = INTERVALS[chunk.interval].step_ms
        times = sorted(p["time"] for p in data if isinstance(p, dict) and type(p.get("time")) is int)
        expected = chunk.expected_points(self.now_ms)
        # a whole chunk is fetched, but only the days asked for are expected to be there
        last_expected = min(chunk.end_ms, self.range_end_ms, self.now_ms) - step
        problem = None
        if not data:
            with self.lock:
                self.report.empty_chunks += 1
            if previous:
                problem = "no points, though the chunk before it had some"
        elif len(data) > expected + 1:
            problem = f"{len(data)} points where the window holds {expected}"
        elif times and times[-1] < last_expected - step:
            problem = f"points stop {(last_expected - times[-1]) // step} steps before the window ends (truncated?)"
        elif times and previous and times[0] > chunk.start_ms + step:
            problem = f"points start {(times[0] - chunk.start_ms) // step} steps into the window (truncated?)"
        if problem:
            message = f"{chunk.asset_id} {chunk.interval} {chunk.start_ms}_{chunk.end_ms}: {problem}"
            with self.lock:
                self.report.suspicious.append(message)
                count = len(self.report.suspicious)
            if count <= 20:  # the report keeps them all; the log only the first few
                log.warning("suspicious history chunk %s", message)
        with self.lock:
            self.answered += 1

    def record_delisted(self, asset: str, exc: ApiError) -> None:
        table = pa.table(
            {
                "asset_id": [asset],
                "history_interval": [self.report.interval],
                "http_status": pa.array([404], pa.int32()),
                "message": [exc.what],
                SNAPSHOT_ID: [self.report.run_id],
                "recorded_at": pa.array([datetime.now(UTC)], TIMESTAMP_TYPE),
            }
        )
        with StagedParquet(table.schema, self.staging) as staged:
            staged.write(table)
            staged.publish(self.storage, skipped_key(self.report.interval, asset))
        with self.lock:
            self.report.delisted.append(asset)
        log.info("%s: history answered 404 (delisted?): recorded and skipped", asset)

    # ---- the calling thread: validate in batches

    def next_batch(self) -> list[_Fetched]:
        batch: list[_Fetched] = []
        points = 0
        try:
            item = self.fetched.get(timeout=0.1)
        except queue.Empty:
            return batch
        batch.append(item)
        points += len(item.records)
        while points < _BATCH_POINTS:
            try:
                item = self.fetched.get_nowait()
            except queue.Empty:
                break
            batch.append(item)
            points += len(item.records)
        return batch

    def validate(self, batch: list[_Fetched]) -> list[tuple[_Fetched, pa.Table, pa.Table]]:
        """Valid rows and quarantined rows per chunk. One Pandera call per batch when nothing is wrong."""
        prepared = [self._prepare(item) for item in batch]
        if all(not outside for _, outside in prepared):
            records = [r for inside, _ in prepared for r in inside]
            result = validate_records(
                ASSET_HISTORY, records, snapshot_id=self.snapshot.id, snapshot_ts=self.snapshot.ts
            )
            self.new_fields |= result.new_fields
            if result.quarantine.num_rows == 0:  # valid rows are then the input rows, in order
                out, offset = [], 0
                empty = result.quarantine
                for item, (inside, _) in zip(batch, prepared, strict=True):
                    valid = result.valid.slice(offset, len(inside))
                    if item.api_ts is not None:
                        valid = valid.set_column(
                            valid.schema.get_field_index(API_TIMESTAMP),
                            API_TIMESTAMP,
                            pa.array([item.api_ts] * valid.num_rows, TIMESTAMP_TYPE),
                        )
                    out.append((item, valid, empty))
                    offset += len(inside)
                return out
        return [
            self._validate_one(item, inside, outside) for item, (inside, outside) in zip(batch, prepared, strict=True)
        ]

    def _prepare(self, item: _Fetched) -> tuple[list[Any], list[Any]]:
        """Points with the pipeline's columns added, split into in-window and out-of-window ones."""
        chunk = item.chunk
        extra = {"asset_id": chunk.asset_id, "history_interval": chunk.interval}
        inside, outside = [], []
        for point in item.records:
            if isinstance(point, dict):
                t = point.get("time")
                if type(t) is int and not chunk.start_ms <= t < chunk.end_ms:
                    outside.append(point)
                    continue
                point = {**point, **extra}
            inside.append(point)
        return inside, outside

    def _validate_one(
        self, item: _Fetched, inside: list[Any], outside: list[Any]
    ) -> tuple[_Fetched, pa.Table, pa.Table]:
        result = validate_records(
            ASSET_HISTORY, inside, snapshot_id=self.snapshot.id, snapshot_ts=self.snapshot.ts, api_timestamp=item.api_ts
        )
        self.new_fields |= result.new_fields
        quarantine = result.quarantine
        if outside:
            chunk = item.chunk
            reason = f"time: outside the requested window [{chunk.start_ms}, {chunk.end_ms})"
            n = len(outside)
            extra = pa.table(
                {
                    "dataset": [DATASET] * n,
                    SNAPSHOT_ID: [self.snapshot.id] * n,
                    SNAPSHOT_TS: pa.array([self.snapshot.ts] * n, TIMESTAMP_TYPE),
                    API_TIMESTAMP: pa.array([item.api_ts] * n, TIMESTAMP_TYPE),
                    "record_json": [json.dumps(p, default=str, separators=(",", ":")) for p in outside],
                    "reason": [reason] * n,
                },
                schema=QUARANTINE_SCHEMA,
            )
            quarantine = pa.concat_tables([quarantine, extra])
        return item, result.valid, quarantine

    # ---- write threads

    def land(self, item: _Fetched, valid: pa.Table, quarantine: pa.Table) -> None:
        """Publish one chunk: quarantine first, then the data object, whose existence marks the chunk done."""
        chunk = item.chunk
        if quarantine.num_rows:
            with StagedParquet(QUARANTINE_SCHEMA, self.staging) as bad:
                bad.write(quarantine)
                bad.publish(self.storage, chunk.quarantine_key)
        elif chunk.quarantine_key in self.plan.quarantined:
            self.storage.delete(chunk.quarantine_key)  # a re-fetch without rejects must not keep the old ones
        with StagedParquet(self.schema, self.staging) as good:
            good.write(valid)
            good.publish(self.storage, chunk.key)
        with self.lock:
            self.chunks_done += 1
            report = self.report
            report.chunks_fetched += 1
            report.chunks_refetched_open += 1 if item.refetch else 0
            report.points_served += len(item.records)
            report.points_landed += valid.num_rows
            report.points_quarantined += quarantine.num_rows

    # ---- orchestration

    def run(self) -> None:
        work = self.plan.work
        to_fetch = self.plan.estimate.chunks_to_fetch
        fetchers = ThreadPoolExecutor(self.workers, thread_name_prefix="backfill-fetch")
        writers = ThreadPoolExecutor(4, thread_name_prefix="backfill-write")
        fetches: list[Future[None]] = []
        writes: set[Future[None]] = set()
        last_progress = 0.0
        try:
            # largest first: long tails of big assets would otherwise leave threads idle at the end
            for asset, chunks in sorted(work.items(), key=lambda kv: -len(kv[1])):
                fetches.append(fetchers.submit(self.fetch_asset, asset, chunks))
            while True:
                batch = self.next_batch()
                if batch:
                    for item, valid, bad in self.validate(batch):
                        writes.add(writers.submit(self.land, item, valid, bad))
                    while len(writes) > 64:  # bounded: memory stays flat when writes are slower than fetches
                        done, pending = wait(writes, return_when=FIRST_COMPLETED)
                        writes = set(pending)
                        _raise_first(done)
                _raise_first(f for f in fetches if f.done())
                finished, writes = _split_done(writes)
                _raise_first(finished)
                if self.progress and time.monotonic() - last_progress >= 1.0:
                    last_progress = time.monotonic()
                    self.progress(self.chunks_done, to_fetch, self.report.points_landed)
                if not batch and all(f.done() for f in fetches) and self.fetched.empty():
                    break
            for future in writes:
                future.result()
            if self.progress:
                self.progress(self.chunks_done, to_fetch, self.report.points_landed)
        except BaseException:
            self.stop.set()
            raise
        finally:
            self.stop.set()
            fetchers.shutdown(wait=True, cancel_futures=True)
            writers.shutdown(wait=True, cancel_futures=True)
            for client in self.clients:
                client.close()


def _split_done(futures: set[Future[None]]) -> tuple[list[Future[None]], set[Future[None]]]:
    done = [f for f in futures if f.done()]
    return done, futures.difference(done)


def _raise_first(futures: Any) -> None:
    for future in futures:
        if future.done() and not future.cancelled() and future.exception() is not None:
            raise future.exception()  # type: ignore[misc]


def _is_not_found(exc: ApiError) -> bool:
    # The client raises a plain ApiError for a 404 (no subclass), with this wording.
    return type(exc) is ApiError and exc.what.startswith("CoinCap answered 404")
