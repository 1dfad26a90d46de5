"""Backfill price history from `/assets/{slug}/history` into the lake: chunked, resumable, credit-aware.

What the API forces, and what this module does about it:
- every call costs 1 credit plus 1 per 2,500 bytes, and a history point is ~95 bytes: three years of daily
  points for 2,000 assets is ~8,000 calls and ~110,000 credits. `estimate_backfill_credits` prices a backfill
  before any call, and `max_credits` is a budget the run never crosses (it stops before a call that could);
- nobody documents the longest start-end range one request may cover, so each asset's range is cut into
  chunks of at most 1,440 points (`INTERVALS`) and every chunk's point count is checked: a server-side cap
  would show up as a "truncated" warning, not as silent gaps;
- a delisted asset answers 404: recorded once under `coincap/asset_history_skipped/`, never asked again.

Chunks sit on a fixed grid (multiples of the chunk length since the Unix epoch), so any two runs, whatever
their ranges, cut the same chunks: one object per chunk at
`coincap/asset_history/interval=<i>/asset=<slug>/<start_ms>_<end_ms>.parquet` (start inclusive, end exclusive).
A chunk whose object exists is finished and never fetched again, so a killed backfill resumes where it
stopped; a chunk still open (its last interval not yet over) is fetched again and replaces its object.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import pyarrow as pa
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from flows.coincap.client import CallStats, CoinCapClient, CreditBudget, CreditMeter, OverBudget
from flows.coincap.credits import credits_for
from flows.coincap.paging import STALLED_PAGES, ignores_offset
from flows.contracts.columns import API_TIMESTAMP, QUARANTINE_SCHEMA, SNAPSHOT_ID, SNAPSHOT_TS, TIMESTAMP_TYPE
from flows.contracts.datasets import ASSET_HISTORY
from flows.contracts.validate import plausible_api_timestamp, validate_records
from flows.errors import ApiError, ConfigError
from flows.flow_support import flow_run_id, retry_if_transient
from flows.lake.factory import lake_storage
from flows.lake.history import DATASET, SKIPPED_DATASET
from flows.lake.parquet import ZONE_DATA, ZONE_QUARANTINE, StagedParquet
from flows.lake.storage import LakeStorage
from flows.ops.alerts import alert_on_failure
from flows.ops.observability import redact_error, redacted_errors
from flows.settings import Settings, current_settings
from flows.snapshot_id import Snapshot
from flows.warehouse.factory import warehouse

log = logging.getLogger(__name__)

_DAY_MS = 86_400_000


@dataclass(frozen=True)
class Interval:
    """A CoinCap history interval: the step between points and the length of one request's chunk."""

    name: str
    step_ms: int
    chunk_days: int

    @property
    def chunk_ms(self) -> int:
        return self.chunk_days * _DAY_MS

    @property
    def points_per_chunk(self) -> int:
        return self.chunk_ms // self.step_ms


# At most 1,440 points per request (~135 KB, ~55 credits): small enough that an undocumented per-request cap
# is unlikely to bite (and would be caught by the point counts), large enough that the 1-credit-per-call
# overhead stays under ~7% of a chunk's cost. d1 is one 365-day chunk (365 points), h1 a 30-day one, m1 a day.
INTERVALS: dict[str, Interval] = {
    i.name: i
    for i in (
        Interval("m1", 60_000, 1),
        Interval("m5", 300_000, 5),
        Interval("m15", 900_000, 15),
        Interval("m30", 1_800_000, 30),
        Interval("h1", 3_600_000, 30),
        Interval("h2", 7_200_000, 60),
        Interval("h6", 21_600_000, 180),
        Interval("h12", 43_200_000, 360),
        Interval("d1", _DAY_MS, 365),
    )
}
IntervalName = Literal["m1", "m5", "m15", "m30", "h1", "h2", "h6", "h12", "d1"]

# Measured on CoinCap's own history samples (flows/standin/samples/history.json: 92.1 bytes per compact point
# with 16-decimal prices) plus 2 bytes for v3's 18 decimals and 1 for rounding.
BYTES_PER_POINT = 95
# The budget's worst case per point: long prices and a `circulatingSupply` field (v2 sent one).
MAX_BYTES_PER_POINT = 160
ENVELOPE_BYTES = 40  # {"data":[],"timestamp":1763748000000}
# Worst case of one /assets page when the asset list itself is fetched: a v3 asset is ~380 bytes, the largest seen
# (many chain tokens) 710. A page is refused past this many bytes per asset, and reserved at it.
MAX_BYTES_PER_ASSET = 1_500
# Calls per minute by default: CoinCap allows 600 on every plan; leave room for scheduled snapshots.
DEFAULT_CALLS_PER_MINUTE = 500
DEFAULT_WORKERS = 6
# Validation has a fixed cost per call (~9 ms of Pandera): chunks are validated in batches of this many points.
_BATCH_POINTS = 20_000
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

BackfillProgress = Callable[[int, int, int], None]  # (chunks done, chunks to fetch, points landed)


# ------------------------------------------------------------------------------------------------ chunks


@dataclass(frozen=True)
class Chunk:
    """One request's worth of one asset's history: points with start_ms <= time < end_ms."""

    asset_id: str
    interval: str
    start_ms: int
    end_ms: int

    @property
    def key(self) -> str:
        return chunk_key(ZONE_DATA, self)

    @property
    def quarantine_key(self) -> str:
        return chunk_key(ZONE_QUARANTINE, self)

    @property
    def path(self) -> str:
        return f"/assets/{self.asset_id}/history"

    @property
    def params(self) -> dict[str, str | int]:
        # `end` is presumably inclusive (v2's was): end_ms - 1 keeps the next chunk's first point out.
        return {"interval": self.interval, "start": self.start_ms, "end": self.end_ms - 1}

    def is_open(self, now_ms: int) -> bool:
        """Whether CoinCap may still add or change points: until one more step after the chunk's end."""
        return self.end_ms + INTERVALS[self.interval].step_ms > now_ms

    def expected_points(self, now_ms: int) -> int:
        """Points the chunk holds when every interval up to now has one."""
        step = INTERVALS[self.interval].step_ms
        last = min(self.end_ms, now_ms)
        return max(0, -(-(last - self.start_ms) // step))


def chunk_key(zone: str, chunk: Chunk) -> str:
    """`<zone>/asset_history/interval=<i>/asset=<slug>/<start_ms>_<end_ms>.parquet`."""
    return f"{zone}/{DATASET}/interval={chunk.interval}/asset={chunk.asset_id}/{chunk.start_ms}_{chunk.end_ms}.parquet"


def history_prefix(interval: str, zone: str = ZONE_DATA) -> str:
    return f"{zone}/{DATASET}/interval={interval}/"


def skipped_key(interval: str, asset_id: str) -> str:
    """Where a delisted asset (404) is recorded, so later runs skip it without a call."""
    return f"{ZONE_DATA}/{SKIPPED_DATASET}/interval={interval}/{asset_id}.parquet"


def _day_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def plan_chunks(asset_id: str, interval: str, start: date, end: date, now_ms: int) -> list[Chunk]:
    """The grid chunks covering UTC days start..end (inclusive), oldest first, none wholly in the future."""
    spec = INTERVALS[interval]
    first_ms, last_ms = _day_ms(start), min(_day_ms(end + timedelta(days=1)), now_ms)
    chunks = []
    for k in range(first_ms // spec.chunk_ms, -(-last_ms // spec.chunk_ms)):
        chunks.append(Chunk(asset_id, interval, k * spec.chunk_ms, (k + 1) * spec.chunk_ms))
    return chunks


def default_range(today: date | None = None, years: int = 3) -> tuple[date, date]:
    """`years` years back from today (UTC), both ends included."""
    today = today or datetime.now(UTC).date()
    try:
        start = today.replace(year=today.year - years)
    except ValueError:  # 29 February
        start = today.replace(year=today.year - years, day=28)
    return start, today


def _check_slug(slug: str) -> str:
    if not _SLUG.match(slug):
        raise ConfigError(
            f"{slug!r} is not a CoinCap asset id (slugs look like bitcoin or binance-coin).",
            "Pass asset ids as /assets lists them.",
        )
    return slug


def _check_range(interval: str, start: date, end: date) -> None:
    if interval not in INTERVALS:
        raise ConfigError(f"Unknown history interval {interval!r}.", f"Use one of {', '.join(INTERVALS)}.")
    if start > end:
        raise ConfigError(f"The backfill starts ({start}) after it ends ({end}).", "Swap --start and --end.")


# ------------------------------------------------------------------------------------------------ estimate


def chunk_max_bytes(interval: str) -> int:
    """The largest answer a chunk of `interval` can be: its budget reservation, and its body cap (a larger answer
    is refused unread, so no answer costs more than was reserved for it)."""
    return ENVELOPE_BYTES + INTERVALS[interval].points_per_chunk * MAX_BYTES_PER_POINT


def chunk_credits(points: int, bytes_per_point: float = BYTES_PER_POINT) -> int:
    """Credits of one history call returning `points` points."""
    return credits_for(int(ENVELOPE_BYTES + bytes_per_point * points))


@dataclass
class CreditEstimate:
    """What a backfill would cost, before any history call."""

    interval: str
    start: date
    end: date
    assets: int
    chunks_total: int
    chunks_landed: int  # finished chunks already in the lake: skipped, free
    chunks_to_fetch: int  # includes open chunks fetched again
    points: int
    credits: int
    worst_case_credits: int
    bytes_per_point: int = BYTES_PER_POINT
    delisted_known: int = 0

    def describe(self) -> str:
        """One line for logs and the CLI."""
        return (
            f"backfill {self.interval} {self.start}..{self.end}: {self.assets:,} assets, "
            f"{self.chunks_to_fetch:,} of {self.chunks_total:,} chunks to fetch ({self.chunks_landed:,} already "
            f"in the lake), ~{self.points:,} points, ~{self.credits:,} credits (worst case "
            f"{self.worst_case_credits:,}; {self.bytes_per_point} bytes/point, 1 + 1 per 2,500 bytes per call)"
        )


@dataclass
class _Plan:
    estimate: CreditEstimate
    work: dict[str, list[Chunk]]  # asset -> chunks to fetch, oldest first
    delisted_known: list[str]
    refetch: set[str]  # keys of open chunks already in the lake
    quarantined: set[str]  # quarantine keys already in the lake


def _plan(
    storage: LakeStorage | None,
    assets: Sequence[str],
    interval: str,
    start: date,
    end: date,
    now_ms: int,
    *,
    retry_delisted: bool = False,
) -> _Plan:
    landed = set(storage.list(history_prefix(interval))) if storage else set()
    quarantined = set(storage.list(history_prefix(interval, ZONE_QUARANTINE))) if storage else set()
    known = (
        {Path(k).stem for k in storage.list(f"{ZONE_DATA}/{SKIPPED_DATASET}/interval={interval}/")}
        if storage and not retry_delisted
        else set()
    )
    work: dict[str, list[Chunk]] = {}
    total = done = points = credits = worst = 0
    refetch: set[str] = set()
    delisted_known = []
    for asset in dict.fromkeys(assets):
        chunks = plan_chunks(asset, interval, start, end, now_ms)
        total += len(chunks)
        if asset in known:
            delisted_known.append(asset)
            continue
        todo = []
        for chunk in chunks:
            if chunk.key in landed and not chunk.is_open(now_ms):
                done += 1
                continue
            if chunk.key in landed:
                refetch.add(chunk.key)
            todo.append(chunk)
            expected = chunk.expected_points(now_ms)
            points += expected
            credits += chunk_credits(expected)
            worst += credits_for(chunk_max_bytes(interval))
        if todo:
            work[asset] = todo
    estimate = CreditEstimate(
        interval=interval,
        start=start,
        end=end,
        assets=len(dict.fromkeys(assets)),
        chunks_total=total,
        chunks_landed=done,
        chunks_to_fetch=sum(len(c) for c in work.values()),
        points=points,
        credits=credits,
        worst_case_credits=worst,
        delisted_known=len(delisted_known),
    )
    return _Plan(estimate, work, delisted_known, refetch, quarantined)


def estimate_backfill_credits(
    settings: Settings,
    assets: Sequence[str] | int,
    interval: str = "d1",
    start: date | None = None,
    end: date | None = None,
    *,
    now: datetime | None = None,
) -> CreditEstimate:
    """Price a backfill without any API call: `assets` is a list of ids (chunks already in the lake are
    subtracted) or a number of assets (a fresh lake is assumed)."""
    default_start, default_end = default_range()
    start, end = start or default_start, end or default_end
    _check_range(interval, start, end)
    now_ms = int((now or datetime.now(UTC)).timestamp() * 1000)
    if isinstance(assets, int):
        one = _plan(None, ["x"], interval, start, end, now_ms).estimate
        n = assets
        return CreditEstimate(
            interval=interval,
            start=start,
            end=end,
            assets=n,
            chunks_total=one.chunks_total * n,
            chunks_landed=0,
            chunks_to_fetch=one.chunks_to_fetch * n,
            points=one.points * n,
            credits=one.credits * n,
            worst_case_credits=one.worst_case_credits * n,
        )
    ids = [_check_slug(a) for a in assets]
    return _plan(lake_storage(settings), ids, interval, start, end, now_ms).estimate


# ------------------------------------------------------------------------------------------------ report


@dataclass
class BackfillReport:
    """What a backfill did: the CLI's summary, the flow's return value, a row of the run-metrics table."""

    run_id: str
    interval: str
    start: date
    end: date
    assets: int = 0
    chunks_total: int = 0
    chunks_skipped: int = 0  # finished before this run: no call
    chunks_fetched: int = 0
    chunks_refetched_open: int = 0
    chunks_left: int = 0  # not fetched because the run stopped (budget or error)
    empty_chunks: int = 0
    points_served: int = 0
    points_landed: int = 0
    points_quarantined: int = 0
    delisted: list[str] = field(default_factory=list)  # 404 in this run
    delisted_known: list[str] = field(default_factory=list)  # recorded by an earlier run: no call
    suspicious: list[str] = field(default_factory=list)
    new_fields: list[str] = field(default_factory=list)
    estimated_credits: int = 0
    max_credits: int | None = None
    credits_used: int = 0  # every call of the run, /assets listing and failed attempts included
    credits_left_estimate: int = 0  # what the chunks left would cost
    calls: int = 0
    failed_calls: int = 0
    retries: int = 0
    bytes: int = 0
    stopped: str | None = None  # why the run stopped early: "budget", or the error
    seconds: float = 0.0
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def summary(self) -> str:
        """A few lines for logs and the CLI."""
        lines = [
            f"backfill {self.interval} {self.start}..{self.end}: {self.assets:,} assets, "
            f"{self.chunks_fetched:,} chunks fetched ({self.chunks_refetched_open:,} open ones again), "
            f"{self.chunks_skipped:,} already landed, {self.chunks_left:,} left; {self.points_landed:,} points "
            f"landed, {self.points_quarantined:,} quarantined; {self.credits_used:,} credits used of "
            f"~{self.estimated_credits:,} estimated; {self.seconds:.1f}s",
        ]
        if self.delisted or self.delisted_known:
            lines.append(
                f"delisted (404, skipped): {', '.join(self.delisted) or '-'}; "
                f"recorded earlier: {len(self.delisted_known)}"
            )
        if self.stopped == "budget":
            lines.append(
                f"stopped before exceeding --max-credits {self.max_credits:,}: {self.chunks_left:,} chunks "
                f"(~{self.credits_left_estimate:,} credits) left; re-run to continue"
            )
        elif self.stopped:
            lines.append(f"stopped: {self.stopped}")
        if self.suspicious:
            lines.append(f"{len(self.suspicious)} suspicious chunks, e.g. {self.suspicious[0]}")
        return "\n".join(lines)

    def as_row(self) -> dict[str, Any]:
        """The run-metrics row (`ops.pipeline_runs`)."""
        return {
            "snapshot_id": self.run_id,
            "step": f"{DATASET}:{self.interval}",
            "started_at": self.started_at,
            "seconds": self.seconds,
            "served": self.points_served,
            "valid": self.points_landed,
            "quarantined": self.points_quarantined,
            "pages": self.chunks_fetched,
            "calls": self.calls,
            "failed_calls": self.failed_calls,
            "retries": self.retries,
            "bytes": self.bytes,
            "credits": self.credits_used,
            "new_fields": self.new_fields,
            "files": [skipped_key(self.interval, a) for a in self.delisted],
            "error": self.stopped,
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------------------ machinery


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


class _Run:
    """One backfill: fetch threads feed a queue; the calling thread validates batches; write threads land chunks."""

    def __init__(
        self,
        settings: Settings,
        plan: _Plan,
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
        self.range_end_ms = _day_ms(report.end + timedelta(days=1))
        self.progress = progress
        self.storage = lake_storage(settings)
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


def _list_assets(settings: Settings, budget: CreditBudget) -> list[str]:
    """Every asset id `/assets` lists, page by page, each page within the budget and the paging bounded: a server
    that ignores `offset` stops the listing after `STALLED_PAGES` full pages without a new id."""
    ids: dict[str, None] = {}
    stalled = 0
    limit = settings.page_limit
    with CoinCapClient(settings, budget=budget) as client:
        pages = client.paginate("/assets", limit=limit, max_body_bytes=ENVELOPE_BYTES + limit * MAX_BYTES_PER_ASSET)
        try:
            for page in pages:
                before = len(ids)
                for record in page.records:
                    slug = record.get("id") if isinstance(record, dict) else None
                    if isinstance(slug, str) and _SLUG.match(slug):
                        ids.setdefault(slug)
                    elif slug is not None:
                        log.warning("/assets lists an id the history endpoint cannot take: %r (skipped)", slug)
                full = len(page.records) >= limit
                stalled = stalled + 1 if full and len(ids) == before else 0
                if stalled >= STALLED_PAGES:
                    raise ignores_offset("assets", stalled, page.offset)
        except OverBudget:
            raise ConfigError(
                f"--max-credits {budget.limit:,} leaves too little to list /assets (a page may cost "
                f"{budget.worst(ENVELOPE_BYTES + limit * MAX_BYTES_PER_ASSET):,} credits).",
                "Pass the asset ids to backfill, or raise --max-credits.",
            ) from None
    return list(ids)


def list_asset_ids(settings: Settings, *, max_credits: int | None = None) -> tuple[list[str], int]:
    """Every asset id `/assets` lists, and the credits that cost (with `max_credits`, never more)."""
    budget = CreditBudget(max_credits)
    return _list_assets(settings, budget), budget.meter.spent


def backfill(
    settings: Settings,
    assets: Sequence[str] | None = None,
    interval: str = "d1",
    start: date | None = None,
    end: date | None = None,
    max_credits: int | None = None,
    progress: BackfillProgress | None = None,
    *,
    workers: int = DEFAULT_WORKERS,
    calls_per_minute: float | None = DEFAULT_CALLS_PER_MINUTE,
    retry_delisted: bool = False,
    now: datetime | None = None,
) -> BackfillReport:
    """Backfill `interval` history of `assets` (None: every asset /assets lists) for UTC days start..end.

    Resumable and idempotent: finished chunks in the lake are skipped without a call. With `max_credits` the
    run stops cleanly before a call whose worst case could cross it. Auth and quota errors stop at once.
    """
    started = time.perf_counter()
    default_start, default_end = default_range()
    start, end = start or default_start, end or default_end
    _check_range(interval, start, end)
    if max_credits is not None and max_credits < 0:
        raise ConfigError(f"--max-credits cannot be negative (got {max_credits}).", "Pass a budget in credits.")
    now_dt = now or datetime.now(UTC)
    now_ms = int(now_dt.timestamp() * 1000)
    report = BackfillReport(run_id=Snapshot.now().id, interval=interval, start=start, end=end, max_credits=max_credits)
    meter = CreditMeter()
    budget = CreditBudget(max_credits, meter)
    ids = _list_assets(settings, budget) if assets is None else [_check_slug(a) for a in assets]
    storage = lake_storage(settings)
    plan = _plan(storage, ids, interval, start, end, now_ms, retry_delisted=retry_delisted)
    estimate = plan.estimate
    log.info("%s", estimate.describe())
    report.assets = estimate.assets
    report.chunks_total = estimate.chunks_total
    report.chunks_skipped = estimate.chunks_landed
    report.delisted_known = plan.delisted_known
    report.estimated_credits = estimate.credits
    run = _Run(
        settings,
        plan,
        report,
        budget=budget,
        workers=workers,
        calls_per_minute=calls_per_minute,
        now_ms=now_ms,
        progress=progress,
    )
    try:
        run.run()
    finally:
        _finish(report, plan, meter, started, run)
    if report.delisted and run.answered == 0 and len(report.delisted) > 1:
        log.warning("every asset's history answered 404: check COINCAP_API_BASE_URL (%s)", settings.api_base_url)
    log.info("%s", report.summary())
    return report


def _finish(report: BackfillReport, plan: _Plan, meter: CreditMeter, started: float, run: _Run) -> None:
    stats: CallStats = meter.total()
    report.calls, report.failed_calls, report.retries = stats.calls, stats.failed_calls, stats.retries
    report.bytes, report.credits_used = stats.bytes, stats.credits
    report.new_fields = sorted(run.new_fields)
    landed_or_gone = report.chunks_fetched + sum(len(plan.work.get(a, ())) for a in report.delisted)
    report.chunks_left = max(0, plan.estimate.chunks_to_fetch - landed_or_gone)
    if report.chunks_left:
        per_chunk = plan.estimate.credits / max(1, plan.estimate.chunks_to_fetch)
        report.credits_left_estimate = math.ceil(per_chunk * report.chunks_left)
    report.seconds = time.perf_counter() - started


# ------------------------------------------------------------------------------------------------ Prefect


@dataclass
class _Resolved:
    assets: list[str]
    estimate: CreditEstimate
    listing_credits: int


@task(
    name="plan-backfill",
    retries=2,
    retry_delay_seconds=[10, 60],
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_if_transient,
    timeout_seconds=900,
    cache_policy=NO_CACHE,
)
def plan_backfill_task(
    assets: list[str] | None, interval: str, start: date, end: date, max_credits: int | None
) -> _Resolved:
    """Resolve the asset list (one /assets listing when none is given) and price the backfill."""
    with redacted_errors():  # what Prefect records of a failure holds no secret
        settings = current_settings()
        ids, spent = list_asset_ids(settings, max_credits=max_credits) if assets is None else (list(assets), 0)
        estimate = estimate_backfill_credits(settings, ids, interval, start, end)
    get_run_logger().info("%s", estimate.describe())
    return _Resolved(ids, estimate, spent)


@task(
    name="backfill-history",
    retries=2,
    retry_delay_seconds=[60, 300],
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_if_transient,  # a retry resumes: finished chunks are skipped
    timeout_seconds=6 * 3600,
    cache_policy=NO_CACHE,
)
def backfill_task(assets: list[str], interval: str, start: date, end: date, max_credits: int | None) -> BackfillReport:
    """Fetch, validate and land every chunk not yet in the lake."""
    logger = get_run_logger()
    last = [0.0]

    def progress(done: int, total: int, points: int) -> None:
        if time.monotonic() - last[0] >= 10:
            last[0] = time.monotonic()
            logger.info("%d/%d chunks, %d points landed", done, total, points)

    with redacted_errors():
        report = backfill(current_settings(), assets, interval, start, end, max_credits, progress)
    for message in report.suspicious[:20]:
        logger.warning("suspicious chunk: %s", message)
    if report.delisted:
        logger.warning("delisted (404), recorded and skipped: %s", ", ".join(report.delisted))
    return report


@flow(
    name="backfill",
    log_prints=True,
    validate_parameters=True,
    on_failure=[alert_on_failure],
    on_crashed=[alert_on_failure],
)
def backfill_flow(
    assets: list[str] | None = None,
    interval: IntervalName = "d1",
    start: date | None = None,
    end: date | None = None,
    max_credits: Annotated[int, Field(ge=1)] | None = None,
) -> BackfillReport:
    """Backfill CoinCap price history into the lake: chunked, resumable, within a credit budget."""
    from flows.lake.lock import data_dir_lock

    # One backfill per data dir (two would fetch and write the same chunks); its own lock, not the snapshot's: it
    # writes only history files, so hourly snapshots go on. The CLI took it already (re-entered here).
    with redacted_errors(), data_dir_lock(current_settings().data_dir, kind="backfill", job="backfill"):
        return _backfill_run(assets, interval, start, end, max_credits)


def _backfill_run(
    assets: list[str] | None, interval: IntervalName, start: date | None, end: date | None, max_credits: int | None
) -> BackfillReport:
    default_start, default_end = default_range()
    start, end = start or default_start, end or default_end
    plan_step, fetch_step = plan_backfill_task, backfill_task
    if max_credits is not None:
        # a task retry would get the whole budget again; re-running the flow resumes with what is left
        plan_step, fetch_step = plan_step.with_options(retries=0), fetch_step.with_options(retries=0)
    store = warehouse(current_settings())
    started = datetime.now(UTC)
    try:
        resolved = plan_step(assets, interval, start, end, max_credits)
        budget = None if max_credits is None else max(0, max_credits - resolved.listing_credits)
        report = fetch_step(resolved.assets, interval, start, end, budget)
    except Exception as exc:
        store.record_runs(
            [
                {
                    "flow_run_id": flow_run_id(),
                    "snapshot_id": Snapshot.now().id,
                    "step": f"{DATASET}:{interval}",
                    "status": "failed",
                    "started_at": started,
                    "error": redact_error(exc, 500),
                }
            ]
        )
        raise
    report.credits_used += resolved.listing_credits
    report.max_credits = max_credits
    store.record_runs([{**report.as_row(), "flow_run_id": flow_run_id(), "status": "completed"}])
    print(report.summary())
    return report
