"""Near-real-time prices: CoinCap's price WebSocket → micro-batch Parquet files in the lake every few seconds.

What the API forces: `wss://wss.coincap.io/prices?assets=...&apiKey=...` needs a paid plan and bills 1 credit per
minute connected. A message is a JSON object of asset id → price string, with no timestamp and no sequence number,
so a tick is stamped with its receive time and identified by (connection_id, message_seq, asset_id), where
message_seq counts the messages of one connection. TCP keeps a connection's messages in order, so when it drops
only its last messages can be lost in flight: every drop is recorded as a gap (`prices_stream_gaps`, with the last
message_seq received) instead of leaving a silent hole. Garbage goes to `quarantine/prices_stream/` with reasons.

The engine has no Prefect: the flow (`flows/stream.py`), a benchmark or a test builds the settings and the lake once
and passes them in. The lake side (parsing, micro-batches, gap rows) is in `stream_lake.py`.
"""

from __future__ import annotations

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
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI, WebSocketException
from websockets.sync.client import ClientConnection, connect

from flows.contracts.stream import TICK_SCHEMA
from flows.errors import ApiUnavailable, AuthError, ConfigError, PipelineError, QuotaExhausted
from flows.ingest.stream_lake import DATASET, BatchReport, Gap, LakeWriter
from flows.lake.parquet import ensure_readable
from flows.lake.storage import LakeStorage
from flows.redaction import redact
from flows.settings import Settings

DEFAULT_WS_URL = "wss://wss.coincap.io/prices"
TICK_KEY = ("connection_id", "message_seq", "asset_id")
POLICY_VIOLATION = 1008  # close code of a rejected key
ASSET_PATTERN = r"^(ALL|[a-z0-9]+(-[a-z0-9]+)*)$"  # an asset slug like bitcoin, or ALL
_STOP_POLL_S = 0.2  # how often a blocked receive checks the stop event
_MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # `assets=ALL` messages are a few hundred KB at most
_QUOTA_WORDS = ("usage limit", "monthly", "quota", "credits", "plan limit")

log = logging.getLogger(__name__)


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
    storage: LakeStorage,
    ws_url: str = DEFAULT_WS_URL,
    batch_seconds: float = 2.0,
    max_seconds: float | None = None,
    stop_event: threading.Event | None = None,
    idle_timeout_s: float | None = None,
    on_batch: Callable[[BatchReport], None] | None = None,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
) -> StreamSummary:
    """Stream `assets` (or ["ALL"]) into the lake `storage` until `max_seconds` pass or `stop_event` is set.

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
    staging = settings.data_dir.resolve() / "staging" / "stream"
    ensure_readable(storage, {DATASET: TICK_SCHEMA}, staging)  # readers' globs need one file from the start

    stop = stop_event or threading.Event()
    idle = idle_timeout_s or settings.read_timeout_s
    started = time.monotonic()
    deadline = started + max_seconds if max_seconds is not None else math.inf
    tag = secrets.token_hex(3)
    summary = StreamSummary(stream_id=f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{tag}", started_at=datetime.now(UTC))
    lake = LakeWriter(storage, staging, tag, max_failures=settings.max_attempts)
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
    lake: LakeWriter,
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
    bad = [a for a in chosen if not re.match(ASSET_PATTERN, a)]
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
    ws_log = logging.getLogger(f"{__name__}.websockets")
    redact = _RedactKey(key)
    ws_log.addFilter(redact)
    try:
        yield ws_log
    finally:
        ws_log.removeFilter(redact)
