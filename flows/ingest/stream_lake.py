"""The price stream's lake side: a WebSocket message parsed into ticks and rejects, buffered, and published as
micro-batch Parquet files (one per UTC hour a batch spans), plus one gap file per lost connection."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa

from flows.contracts.columns import QUARANTINE_SCHEMA, SNAPSHOT_ID, SNAPSHOT_TS, TIMESTAMP_TYPE
from flows.contracts.datasets import PRICES_STREAM
from flows.contracts.parsing import parse_decimal
from flows.contracts.stream import GAP_SCHEMA, GAPS_DATASET, TICK_SCHEMA
from flows.errors import StorageError
from flows.lake.parquet import ZONE_DATA, ZONE_QUARANTINE, StagedParquet
from flows.lake.storage import LakeStorage

DATASET = PRICES_STREAM.dataset
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


class LakeWriter:
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
