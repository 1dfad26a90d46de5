"""The backfill's plan: CoinCap's history intervals, the fixed grid of chunks, and the credit estimate.

Chunks sit on a fixed grid (multiples of the chunk length since the Unix epoch), so any two runs, whatever
their ranges, cut the same chunks: one object per chunk at
`coincap/asset_history/interval=<i>/asset=<slug>/<start_ms>_<end_ms>.parquet` (start inclusive, end exclusive).
A chunk whose object exists is finished and never fetched again; a chunk still open (its last interval not yet
over) is fetched again and replaces its object. `plan_backfill` reads the lake once to tell them apart, and
prices what is left before any call.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

from flows.coincap.credits import credits_for
from flows.errors import ConfigError
from flows.lake.history import DATASET, SKIPPED_DATASET
from flows.lake.parquet import ZONE_DATA, ZONE_QUARANTINE
from flows.lake.storage import LakeStorage

DAY_MS = 86_400_000


@dataclass(frozen=True)
class Interval:
    """A CoinCap history interval: the step between points and the length of one request's chunk."""

    name: str
    step_ms: int
    chunk_days: int

    @property
    def chunk_ms(self) -> int:
        return self.chunk_days * DAY_MS

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
        Interval("d1", DAY_MS, 365),
    )
}
IntervalName = Literal["m1", "m5", "m15", "m30", "h1", "h2", "h6", "h12", "d1"]

# Measured on CoinCap's own history samples (flows/standin/samples/history.json: 92.1 bytes per compact point
# with 16-decimal prices) plus 2 bytes for v3's 18 decimals and 1 for rounding.
BYTES_PER_POINT = 95
# The budget's worst case per point: long prices and a `circulatingSupply` field (v2 sent one).
MAX_BYTES_PER_POINT = 160
ENVELOPE_BYTES = 40  # {"data":[],"timestamp":1763748000000}
SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # a CoinCap asset id


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


def day_ms(day: date) -> int:
    """Milliseconds since the epoch at the start of UTC `day`."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def plan_chunks(asset_id: str, interval: str, start: date, end: date, now_ms: int) -> list[Chunk]:
    """The grid chunks covering UTC days start..end (inclusive), oldest first, none wholly in the future."""
    spec = INTERVALS[interval]
    first_ms, last_ms = day_ms(start), min(day_ms(end + timedelta(days=1)), now_ms)
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


def check_slug(slug: str) -> str:
    """`slug`, if it is a CoinCap asset id; else a ConfigError."""
    if not SLUG.match(slug):
        raise ConfigError(
            f"{slug!r} is not a CoinCap asset id (slugs look like bitcoin or binance-coin).",
            "Pass asset ids as /assets lists them.",
        )
    return slug


def check_range(interval: str, start: date, end: date) -> None:
    """A ConfigError for an unknown interval or a range that ends before it starts."""
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
class BackfillPlan:
    """What a run will do: the chunks to fetch per asset, and what the lake already holds."""

    estimate: CreditEstimate
    work: dict[str, list[Chunk]]  # asset -> chunks to fetch, oldest first
    delisted_known: list[str]
    refetch: set[str]  # keys of open chunks already in the lake
    quarantined: set[str]  # quarantine keys already in the lake


def plan_backfill(
    storage: LakeStorage | None,
    assets: Sequence[str],
    interval: str,
    start: date,
    end: date,
    now_ms: int,
    *,
    retry_delisted: bool = False,
) -> BackfillPlan:
    """Plan `assets` x start..end against the lake (`storage`; None: a fresh lake): finished chunks are skipped,
    open ones fetched again, assets recorded as delisted skipped (unless `retry_delisted`)."""
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
    return BackfillPlan(estimate, work, delisted_known, refetch, quarantined)


def estimate_backfill_credits(
    assets: Sequence[str] | int,
    interval: str = "d1",
    start: date | None = None,
    end: date | None = None,
    *,
    storage: LakeStorage | None = None,
    now: datetime | None = None,
) -> CreditEstimate:
    """Price a backfill without any API call: `assets` is a list of ids or a number of assets. The chunks already
    in `storage` are subtracted; a number of assets, or no storage, prices a fresh lake."""
    default_start, default_end = default_range()
    start, end = start or default_start, end or default_end
    check_range(interval, start, end)
    now_ms = int((now or datetime.now(UTC)).timestamp() * 1000)
    if isinstance(assets, int):
        one = plan_backfill(None, ["x"], interval, start, end, now_ms).estimate
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
    ids = [check_slug(a) for a in assets]
    return plan_backfill(storage, ids, interval, start, end, now_ms).estimate
