"""Near-real-time prices: CoinCap's price WebSocket → micro-batch Parquet files in the lake every few seconds.

What the API forces: `wss://wss.coincap.io/prices?assets=...&apiKey=...` needs a paid plan and bills 1 credit per
minute connected. A message is a JSON object of asset id → price string, with no timestamp and no sequence number,
so a tick is stamped with its receive time and identified by (connection_id, message_seq, asset_id), where
message_seq counts the messages of one connection. TCP keeps a connection's messages in order, so when it drops
only its last messages can be lost in flight: every drop is recorded as a gap (`prices_stream_gaps`, with the last
message_seq received) instead of leaving a silent hole. Garbage goes to `quarantine/prices_stream/` with reasons.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import pyarrow as pa
from prefect import flow, get_run_logger
from pydantic import Field
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI, WebSocketException
from websockets.sync.client import ClientConnection, connect

from flows.contracts.columns import QUARANTINE_SCHEMA, SNAPSHOT_ID, SNAPSHOT_TS, TIMESTAMP_TYPE
from flows.contracts.datasets import PRICES_STREAM
from flows.contracts.stream import GAP_SCHEMA, GAPS_DATASET, TICK_SCHEMA
from flows.contracts.validate import parse_decimal
from flows.errors import ApiUnavailable, AuthError, ConfigError, PipelineError, QuotaExhausted, StorageError
from flows.lake.factory import lake_storage
from flows.lake.parquet import ZONE_DATA, ZONE_QUARANTINE, StagedParquet, ensure_readable
from flows.lake.storage import LakeStorage
from flows.ops.alerts import alert_on_failure
from flows.ops.observability import redact, redacted_errors
from flows.settings import Settings, current_settings

DEFAULT_WS_URL = "wss://wss.coincap.io/prices"
DATASET = PRICES_STREAM.dataset
TICK_KEY = ("connection_id", "message_seq", "asset_id")
POLICY_VIOLATION = 1008  # close code of a rejected key
_STOP_POLL_S = 0.2  # how often a blocked receive checks the stop event
_MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # `assets=ALL` messages are a few hundred KB at most
_QUOTA_WORDS = ("usage limit", "monthly", "quota", "credits", "plan limit")
_ASSET_PATTERN = r"^(ALL|[a-z0-9]+(-[a-z0-9]+)*)$"

# The lake schema of a tick: the contract's columns, then what the stream adds.
AssetId = Annotated[str, Field(pattern=_ASSET_PATTERN, description="Asset slug like bitcoin, or ALL")]
log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Reject:
    """A message, or one tick of it, that failed validation."""

    record: dict[str, Any]  # {"message": text} or {"asset_id": ..., "price": ...}
    reason: str


def parse_message(data: str | bytes) -> tuple[list[tuple[str, Decimal]], list[Reject]]:
    """Split one WebSocket message into valid ticks (asset_id, price) and rejects with reasons."""
    if isinstance(data, bytes):
        try:
            data = data.decode()
        except UnicodeDecodeError:
            return [], [Reject({"message": data[:500].hex()}, "message is binary, not UTF-8 text")]
    try:
        payload = json.loads(data)
    except ValueError:
        return [], [Reject({"message": data[:2000]}, "message is not JSON")]
    if not isinstance(payload, dict):
        return [], [Reject({"message": data[:2000]}, f"message is a JSON {_json_type(payload)}, not an object")]
    ticks: list[tuple[str, Decimal]] = []
    rejects: list[Reject] = []
    price_col = PRICES_STREAM.by_name["price_usd"]
    for asset_id, raw in payload.items():
        record = {"asset_id": asset_id, "price": raw}
        if not asset_id.strip():
            rejects.append(Reject(record, "asset_id: required field is empty"))
            continue
        try:
            price = parse_decimal(raw, None if price_col.ge is None else Decimal(price_col.ge))
        except Exception as exc:  # parse_decimal's error type is private: it explains the value
            rejects.append(Reject(record, f"price_usd: {exc} (got {_short(raw)})"))
            continue
        if price is None:
            rejects.append(Reject(record, "price_usd: required field is null"))
        elif price_col.ge is not None and price < Decimal(price_col.ge):
            rejects.append(Reject(record, f"price_usd: below {price_col.ge} (got {_short(raw)})"))
        elif price_col.max_abs is not None and abs(price) >= price_col.max_abs:
            bound = f"{price_col.max_abs:.0e}"
            rejects.append(
                Reject(
                    record,
                    f"price_usd: magnitude not below {bound}, beyond what the warehouse can sum (got {_short(raw)})",
                )
            )
        else:
            ticks.append((asset_id, price))
    return ticks, rejects


def _json_type(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def _short(value: Any) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------------------------------------- lake side


@dataclass
class BatchReport:
    """One flush: the files it published and how stale its oldest tick was when they landed."""

    keys: list[str]
    ticks: int
    quarantined: int
    lag_s: float  # publish time minus the receive time of the batch's oldest row


@dataclass
class Gap:
    """A time without a connection: from losing `connection_id` to opening the next one.

    `disconnected_at` is when the loss was noticed (for a stall, the idle timeout after the last message);
    messages the server sent after `last_message_seq` on that connection were lost in flight.
    """

    connection_id: str
    last_message_seq: int
    disconnected_at: datetime
    reason: str
    reconnected_at: datetime | None = None
    next_connection_id: str | None = None
    failed_attempts: int = 0

    @property
    def seconds(self) -> float | None:
        if self.reconnected_at is None:
            return None
        return (self.reconnected_at - self.disconnected_at).total_seconds()

    def as_row(self) -> dict[str, Any]:
        return {
            "connection_id": self.connection_id,
            "last_message_seq": self.last_message_seq,
            "disconnected_at": self.disconnected_at,
            "reconnected_at": self.reconnected_at,
            "next_connection_id": self.next_connection_id,
            "seconds": self.seconds,
            "reason": self.reason,
            "failed_attempts": self.failed_attempts,
        }


class _LakeWriter:
    """Buffers ticks and rejects; `flush` publishes them as one file per UTC hour they span, atomically."""

    def __init__(self, storage: LakeStorage, staging: Path, stream_tag: str, max_failures: int) -> None:
        self.storage = storage
        self.staging = staging
        self.tag = stream_tag
        self.max_failures = max_failures
        self._ticks: list[tuple[str, Decimal, datetime, int, str]] = []
        self._rejects: list[tuple[datetime, dict[str, Any], str]] = []
        self._unpublished: list[tuple[str, pa.Table]] = []  # kept for the next flush when the lake failed
        self._failures = 0
        self.files: list[str] = []
        self.batches = 0

    def add(self, data: str | bytes, connection_id: str, seq: int, received_at: datetime) -> tuple[int, int]:
        ticks, rejects = parse_message(data)
        for asset_id, price in ticks:
            self._ticks.append((asset_id, price, received_at, seq, connection_id))
        for reject in rejects:
            record = {"connection_id": connection_id, "message_seq": seq, **reject.record}
            self._rejects.append((received_at, record, reject.reason))
        return len(ticks), len(rejects)

    def flush(self) -> BatchReport | None:
        """Publish what is buffered (and anything a failed flush left); None when there was nothing."""
        if not (self._ticks or self._rejects or self._unpublished):
            return None
        oldest = min([t[2] for t in self._ticks] + [r[0] for r in self._rejects], default=None)
        n_ticks, n_rejects = len(self._ticks), len(self._rejects)
        self._unpublished += self._tables()
        self._ticks, self._rejects = [], []
        keys = []
        while self._unpublished:
            key, table = self._unpublished[0]
            try:
                with StagedParquet(table.schema, self.staging) as staged:
                    staged.write(table)
                    staged.publish(self.storage, key)
            except StorageError as exc:
                self._failures += 1
                if self._failures >= self.max_failures:
                    raise
                log.warning("could not publish %s (%s); retrying at the next flush", key, exc)
                break
            self._failures = 0
            self._unpublished.pop(0)
            keys.append(key)
        self.files += keys
        self.batches += 1
        lag = (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0
        return BatchReport(keys=keys, ticks=n_ticks, quarantined=n_rejects, lag_s=lag)

    def _tables(self) -> list[tuple[str, pa.Table]]:
        # One batch per UTC hour: a file never straddles a day partition or a compaction unit.
        hours: dict[datetime, tuple[list[Any], list[Any]]] = {}
        for tick in self._ticks:
            hours.setdefault(tick[2].replace(minute=0, second=0, microsecond=0), ([], []))[0].append(tick)
        for reject in self._rejects:
            hours.setdefault(reject[0].replace(minute=0, second=0, microsecond=0), ([], []))[1].append(reject)
        out = []
        for hour, (ticks, rejects) in sorted(hours.items()):
            first = min([t[2] for t in ticks] + [r[0] for r in rejects])
            batch_id = f"{first:%Y%m%dT%H%M%S%f}Z-{self.tag}"
            day = f"dt={hour:%Y-%m-%d}"
            if ticks:
                columns = list(zip(*ticks, strict=True))
                table = pa.table(
                    {
                        "asset_id": pa.array(columns[0], pa.string()),
                        "price_usd": pa.array(columns[1], TICK_SCHEMA.field("price_usd").type),
                        "tick_ts": pa.array(columns[2], TIMESTAMP_TYPE),
                        "message_seq": pa.array(columns[3], pa.int64()),
                        "connection_id": pa.array(columns[4], pa.string()),
                        "batch_id": pa.array([batch_id] * len(ticks), pa.string()),
                    }
                ).cast(TICK_SCHEMA)
                out.append((f"{ZONE_DATA}/{DATASET}/{day}/{batch_id}.parquet", table))
            if rejects:
                table = pa.table(
                    {
                        "dataset": [DATASET] * len(rejects),
                        SNAPSHOT_ID: [batch_id] * len(rejects),
                        SNAPSHOT_TS: pa.array([r[0] for r in rejects], TIMESTAMP_TYPE),
                        "api_timestamp": pa.nulls(len(rejects), TIMESTAMP_TYPE),
                        "record_json": [json.dumps(r[1], ensure_ascii=False, default=str) for r in rejects],
                        "reason": [r[2] for r in rejects],
                    }
                ).cast(QUARANTINE_SCHEMA)
                out.append((f"{ZONE_QUARANTINE}/{DATASET}/{day}/{batch_id}.parquet", table))
        return out

    def write_gap(self, gap: Gap) -> str:
        """One file per lost connection (a connection is lost once), so a re-write replaces it."""
        key = f"{ZONE_DATA}/{GAPS_DATASET}/dt={gap.disconnected_at:%Y-%m-%d}/{gap.connection_id}.parquet"
        with StagedParquet(GAP_SCHEMA, self.staging) as staged:
            staged.write(pa.Table.from_pylist([gap.as_row()], schema=GAP_SCHEMA))
            staged.publish(self.storage, key)
        self.files.append(key)
        return key


# ---------------------------------------------------------------------------------------------- the stream


@dataclass
class StreamSummary:
    """What a stream run did; `credits` counts each connection's started minutes (CoinCap bills per minute)."""

    stream_id: str
    started_at: datetime
    seconds: float = 0.0
    connections: int = 0
    messages: int = 0
    ticks: int = 0
    quarantined: int = 0
    batches: int = 0
    files: list[str] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    connected_seconds: float = 0.0
    credits: int = 0
    stopped_by: str = ""

    def line(self) -> str:
        return (
            f"stream {self.stream_id}: {self.ticks} ticks, {self.quarantined} quarantined, {self.messages} messages "
            f"in {self.batches} batches; {self.connections} connections, {len(self.gaps)} gaps; "
            f"{self.connected_seconds:.0f} s connected = {self.credits} credits; stopped by {self.stopped_by}"
        )


def stream_url(ws_url: str, assets: Sequence[str], api_key: str) -> str:
    """`<ws_url>?assets=a,b&apiKey=<key>` (the key is CoinCap's only accepted auth on the WebSocket)."""
    parts = urlsplit(ws_url)
    query = urlencode({"assets": ",".join(assets), "apiKey": api_key}, safe=",*")
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/prices", query, ""))


class _Stalled(Exception):
    """No message within the idle timeout."""


def stream_prices(
    settings: Settings,
    assets: Sequence[str],
    *,
    ws_url: str = DEFAULT_WS_URL,
    batch_seconds: float = 2.0,
    max_seconds: float | None = None,
    stop_event: threading.Event | None = None,
    idle_timeout_s: float | None = None,
    storage: LakeStorage | None = None,
    on_batch: Callable[[BatchReport], None] | None = None,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
) -> StreamSummary:
    """Stream `assets` (or ["ALL"]) into the lake until `max_seconds` pass or `stop_event` is set.

    Reconnects with exponential backoff and jitter (COINCAP_BACKOFF_BASE/MAX) after any drop, and after
    `idle_timeout_s` (default COINCAP_READ_TIMEOUT) without a message. A rejected key raises AuthError at once.
    """
    logger = logger or log
    key = settings.api_key_value
    if not key:
        raise AuthError(
            "COINCAP_API_KEY is not set, and the price WebSocket needs a key.",
            "Set COINCAP_API_KEY to a key of a paid plan (the Free plan has no WebSocket).",
        )
    chosen = _check_assets(assets)
    if batch_seconds <= 0:
        raise ConfigError(f"batch_seconds must be positive (got {batch_seconds}).", "Use e.g. 2.")
    storage = storage or lake_storage(settings)
    staging = settings.data_dir.resolve() / "staging" / "stream"
    ensure_readable(storage, {DATASET: TICK_SCHEMA}, staging)  # readers' globs need one file from the start

    stop = stop_event or threading.Event()
    idle = idle_timeout_s or settings.read_timeout_s
    started = time.monotonic()
    deadline = started + max_seconds if max_seconds is not None else math.inf
    tag = secrets.token_hex(3)
    summary = StreamSummary(stream_id=f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{tag}", started_at=datetime.now(UTC))
    lake = _LakeWriter(storage, staging, tag, max_failures=settings.max_attempts)
    url = stream_url(ws_url, chosen, key)
    shown = stream_url(ws_url, chosen, "***")
    rng = random.Random()
    next_flush = time.monotonic() + batch_seconds

    def stopping() -> bool:
        if stop.is_set():
            summary.stopped_by = summary.stopped_by or "stop_event"
            return True
        if time.monotonic() >= deadline:
            summary.stopped_by = summary.stopped_by or "max_seconds"
            return True
        return False

    def flush(force: bool = False) -> None:
        nonlocal next_flush
        if force or time.monotonic() >= next_flush:
            next_flush = time.monotonic() + batch_seconds
            report = lake.flush()
            if report is not None and on_batch is not None:
                on_batch(report)

    def wait(seconds: float) -> None:
        end = time.monotonic() + seconds
        while not stopping() and (left := end - time.monotonic()) > 0:
            stop.wait(max(0.0, min(left, next_flush - time.monotonic(), _STOP_POLL_S)))
            flush()

    def terminated() -> None:  # runs in the signal handler: no I/O, no logging, only ask the loop to stop
        summary.stopped_by = summary.stopped_by or "SIGTERM"
        stop.set()

    gap: Gap | None = None
    failures = 0  # consecutive attempts that delivered nothing
    logger.info("streaming %s every %.1f s from %s", ",".join(chosen), batch_seconds, shown)
    restore_sigterm = _stop_on_sigterm(terminated)  # until the last batch is out, SIGTERM only asks to stop
    try:
        with _redacted_websockets_log(key) as ws_log:
            while not stopping():
                try:
                    ws = connect(
                        url,
                        open_timeout=settings.connect_timeout_s,
                        close_timeout=1.0,
                        max_size=_MAX_MESSAGE_BYTES,
                        logger=ws_log,
                        proxy=None if urlsplit(ws_url).hostname in ("127.0.0.1", "localhost") else True,
                    )
                except InvalidStatus as exc:
                    _raise_if_refused(exc)
                    reason = f"handshake refused (HTTP {exc.response.status_code})"
                    ws = None
                except InvalidURI:
                    raise ConfigError(f"Not a WebSocket URL: {shown}.", f"Use e.g. {DEFAULT_WS_URL}.") from None
                except (OSError, TimeoutError, InvalidHandshake, WebSocketException) as exc:
                    reason = redact(f"could not connect ({type(exc).__name__}: {exc})")  # kept in gap rows
                    ws = None
                if ws is None:
                    failures += 1
                    if gap is not None:
                        gap.failed_attempts += 1
                    elif summary.connections == 0 and failures >= settings.max_attempts:
                        raise ApiUnavailable(
                            f"Could not open the price stream at {shown} after {failures} attempts ({reason}).",
                            "Check the URL and the network; once connected, the stream retries drops forever.",
                        )
                else:
                    summary.connections += 1
                    connection_id = f"{summary.stream_id}-c{summary.connections:04d}"
                    if gap is not None:
                        gap.reconnected_at, gap.next_connection_id = datetime.now(UTC), connection_id
                        lake.write_gap(gap)
                        logger.warning("reconnected after %.1f s (%s)", gap.seconds or 0.0, gap.reason)
                        gap = None
                    seq, lost = _receive(ws, connection_id, lake, summary, stopping, flush, idle, lambda: next_flush)
                    if lost is None:
                        break  # stopped on purpose
                    reason = lost = redact(lost)  # the server's close reason, recorded in the gap row
                    gap = Gap(connection_id, seq, datetime.now(UTC), lost)
                    summary.gaps.append(gap)
                    flush(force=True)  # what arrived before the drop lands now
                    failures = 1 if seq else failures + 1  # a connection that delivered restarts the backoff
                delay = rng.uniform(0, min(settings.backoff_max_s, settings.backoff_base_s * 2 ** (failures - 1)))
                logger.warning("price stream: %s; reconnecting in %.2f s", reason, delay)
                wait(delay)
    finally:
        if summary.stopped_by == "SIGTERM":
            logger.warning("SIGTERM: stopped reading; publishing the last batch before exiting")
        try:
            flush(force=True)
            if gap is not None:  # stopped while disconnected: the gap is still open
                lake.write_gap(gap)
        except PipelineError:
            logger.exception("could not publish the last batch")
        finally:
            restore_sigterm()
        summary.seconds = time.monotonic() - started
        summary.files, summary.batches = lake.files, lake.batches
    logger.info(summary.line())
    return summary


def _receive(
    ws: ClientConnection,
    connection_id: str,
    lake: _LakeWriter,
    summary: StreamSummary,
    stopping: Callable[[], bool],
    flush: Callable[[], None],
    idle: float,
    next_flush: Callable[[], float],
) -> tuple[int, str | None]:
    """Receive until stopped (reason None) or the connection is lost; returns (last message_seq, reason)."""
    seq = 0
    opened = last = time.monotonic()
    reason: str | None = None
    try:
        with ws:
            while not stopping():
                now = time.monotonic()
                timeout = max(0.0, min(next_flush() - now, last + idle - now, _STOP_POLL_S))
                try:
                    data = ws.recv(timeout=timeout)
                except TimeoutError:
                    pass
                else:
                    seq += 1
                    last = time.monotonic()
                    n_ticks, n_rejects = lake.add(data, connection_id, seq, datetime.now(UTC))
                    summary.messages += 1
                    summary.ticks += n_ticks
                    summary.quarantined += n_rejects
                flush()
                if time.monotonic() - last > idle:
                    raise _Stalled
    except _Stalled:
        reason = f"stalled: no message for {idle:g} s"
    except ConnectionClosed as exc:
        if exc.rcvd is not None and exc.rcvd.code == POLICY_VIOLATION:
            raise AuthError(
                f"CoinCap closed the price stream: the API key was refused ({exc.rcvd.reason or 'code 1008'}).",
                "Set COINCAP_API_KEY to a valid key of a paid plan from https://pro.coincap.io/dashboard.",
            ) from None
        if exc.rcvd is not None:
            reason = f"closed by the server (code {exc.rcvd.code}: {exc.rcvd.reason or 'no reason'})"
        else:
            reason = "connection lost without a close frame"
    finally:
        connected = time.monotonic() - opened
        summary.connected_seconds += connected
        summary.credits += max(1, math.ceil(connected / 60))
    return seq, reason


def _raise_if_refused(exc: InvalidStatus) -> None:
    status = exc.response.status_code
    body = bytes(exc.response.body or b"").decode(errors="replace")[:200]
    if status in (401, 403, 429) and any(w in body.lower() for w in _QUOTA_WORDS) and "per minute" not in body:
        raise QuotaExhausted(
            f"CoinCap refused the price stream: credit quota exhausted (HTTP {status}: {body}).",
            "Wait for the monthly reset or upgrade the plan.",
        ) from None
    if status in (401, 403):
        raise AuthError(
            f"CoinCap refused the price stream's API key (HTTP {status}).",
            "Set COINCAP_API_KEY to a valid key of a paid plan from https://pro.coincap.io/dashboard.",
        ) from None


def _check_assets(assets: Sequence[str]) -> list[str]:
    chosen = list(dict.fromkeys(a.strip() for a in assets if a.strip()))
    bad = [a for a in chosen if not re.match(_ASSET_PATTERN, a)]
    if not chosen or bad or ("ALL" in chosen and len(chosen) > 1):
        raise ConfigError(
            f"Bad asset list for the price stream: {list(assets)}.",
            "Give asset slugs like bitcoin,ethereum, or ALL alone.",
        )
    return chosen


class _RedactKey(logging.Filter):
    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.key in message:
            record.msg, record.args = message.replace(self.key, "***"), None
        return True


def _stop_on_sigterm(on_signal: Callable[[], None]) -> Callable[[], None]:
    """Make SIGTERM call `on_signal` (which asks the stream to stop) instead of ending the process.

    Cloud Run sends SIGTERM when a job is cancelled or reaches its timeout, and SIGKILL about 10 s later.
    Prefect's own handler raises wherever the flow happens to be (a receive, a publish) and ends the run
    Crashed; with this one the loop notices within `_STOP_POLL_S`, closes the connection, publishes the
    pending batch (and an open gap), logs the summary and returns it: the flow run ends Completed and the
    process exits 0. Returns the function that puts the previous handler (Prefect's, in a flow run) back.
    Signals are only handled in the main thread: a stream in another thread leaves them alone.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: on_signal())

    def restore() -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)

    return restore


@contextmanager
def _redacted_websockets_log(key: str) -> Iterator[logging.Logger]:
    """The websockets library logs handshakes at DEBUG, URL and key included: never let the key through."""
    ws_log = logging.getLogger("flows.stream.websockets")
    redact = _RedactKey(key)
    ws_log.addFilter(redact)
    try:
        yield ws_log
    finally:
        ws_log.removeFilter(redact)


# ---------------------------------------------------------------------------------------------- Prefect


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
            ws_url=ws_url,
            batch_seconds=batch_seconds,
            max_seconds=max_minutes * 60 if max_minutes is not None else None,
            on_batch=log_batch,
            logger=logger,
        )
