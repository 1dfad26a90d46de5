"""Extract one dataset for one snapshot: page by page, de-duplicated, validated, staged, then published.

Memory stays flat as the data grows: each page is validated and written as it arrives; only the natural keys
already landed are held, to drop records that reappear on a later page when ranks shift between fetches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from flows.coincap.client import CallStats, CoinCapClient, CreditMeter, Page
from flows.coincap.endpoints import Endpoint, scoped_requests
from flows.contracts.columns import QUARANTINE_SCHEMA
from flows.contracts.datasets import CONTRACTS
from flows.contracts.validate import validate_records
from flows.errors import ApiError
from flows.lake.parquet import ZONE_DATA, ZONE_QUARANTINE, StagedParquet, snapshot_key
from flows.lake.storage import LakeStorage
from flows.settings import Settings
from flows.snapshot_id import Snapshot

ProgressFn = Callable[[str, int, int], None]  # (dataset, pages so far, records so far)


@dataclass
class StagedFiles:
    """Finished local files waiting to be published, and lake objects to remove when they are."""

    puts: list[tuple[Path, str]] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)

    def publish(self, storage: LakeStorage) -> list[str]:
        """Publish every file (each atomically) and apply the deletes; return the keys written."""
        for path, key in self.puts:
            storage.put_file(path, key)
        for key in self.deletes:
            storage.delete(key)
        return [key for _, key in self.puts]

    def discard(self) -> None:
        for path, _ in self.puts:
            path.unlink(missing_ok=True)


@dataclass
class DatasetReport:
    """What extracting one dataset for one snapshot did: the row of the run-metrics table."""

    dataset: str
    snapshot_id: str
    served: int = 0
    duplicates: int = 0
    valid: int = 0
    quarantined: int = 0
    pages: int = 0
    new_fields: list[str] = field(default_factory=list)
    calls: int = 0
    failed_calls: int = 0
    retries: int = 0
    bytes: int = 0
    credits: int = 0
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


def extract_dataset(
    dataset: str,
    snapshot: Snapshot,
    *,
    settings: Settings,
    progress: ProgressFn | None = None,
) -> tuple[DatasetReport, StagedFiles]:
    """Fetch every page of `dataset` and validate each record into staged lake files (not yet published).

    Publishing is the caller's step, so a snapshot lands only when all its datasets succeeded.
    """
    contract = CONTRACTS[dataset]
    report = DatasetReport(dataset=dataset, snapshot_id=snapshot.id)
    started = time.perf_counter()
    meter = CreditMeter()
    staging = settings.data_dir.resolve() / "staging"
    landed: set[tuple[Any, ...]] = set()
    rejected: set[str] = set()  # raw JSON of quarantined records: one served twice is quarantined once
    new_fields: set[str] = set()

    staged = StagedFiles()
    client = CoinCapClient(settings, meter=meter)
    good = StagedParquet(contract.arrow_schema(), staging)
    bad = StagedParquet(QUARANTINE_SCHEMA, staging)
    try:
        for endpoint in scoped_requests(dataset, settings):
            for page in _pages(client, endpoint):
                report.pages += 1
                report.served += len(page.records)
                fresh = [r for r in page.records if _raw_key(r, contract.key) not in landed]
                report.duplicates += len(page.records) - len(fresh)
                if endpoint.paginated and page.records and not fresh and len(page.records) >= settings.page_limit:
                    raise ApiError(
                        f"CoinCap sent the same full page of {dataset} twice (offset {page.offset}).",
                        "The server seems to ignore `offset`; check COINCAP_API_BASE_URL.",
                    )
                api_ts = datetime.fromtimestamp(page.timestamp_ms / 1000, UTC) if page.timestamp_ms else None
                result = validate_records(
                    contract, fresh, snapshot_id=snapshot.id, snapshot_ts=snapshot.ts, api_timestamp=api_ts
                )
                good.write(result.valid)
                bad.write(_first_rejects(result.quarantine, rejected, report))
                landed.update(zip(*(result.valid.column(k).to_pylist() for k in contract.key), strict=True))
                new_fields |= result.new_fields
                if progress:
                    progress(dataset, report.pages, report.served)

        data_key = snapshot_key(ZONE_DATA, dataset, snapshot.id, snapshot.ts)
        quarantine_key = snapshot_key(ZONE_QUARANTINE, dataset, snapshot.id, snapshot.ts)
        good.close()
        bad.close()
        staged.puts.append((good.path, data_key))
        if bad.rows:
            staged.puts.append((bad.path, quarantine_key))
        else:
            bad.discard()
            staged.deletes.append(quarantine_key)  # a re-run that now has no rejects must not keep old ones
    except BaseException:
        good.discard()
        bad.discard()
        raise
    finally:
        client.close()
    report.files = [key for _, key in staged.puts]
    report.valid, report.quarantined = good.rows, bad.rows
    report.new_fields = sorted(new_fields)
    _copy_stats(report, meter.total())
    report.seconds = time.perf_counter() - started
    return report, staged


def _pages(client: CoinCapClient, endpoint: Endpoint) -> Iterator[Page]:
    if endpoint.paginated:
        yield from client.paginate(endpoint.path, endpoint.params, max_records=endpoint.max_records)
        return
    data, timestamp, nbytes = client.get_list(endpoint.path, endpoint.params or None)
    yield Page(records=data, offset=0, timestamp_ms=timestamp, body_bytes=nbytes)


def _first_rejects(quarantine: pa.Table, rejected: set[str], report: DatasetReport) -> pa.Table:
    if quarantine.num_rows == 0:
        return quarantine
    raw = quarantine.column("record_json").to_pylist()
    keep = [r not in rejected for r in raw]
    rejected.update(raw)
    report.duplicates += keep.count(False)
    return quarantine.filter(pa.array(keep)) if not all(keep) else quarantine


def _raw_key(record: Any, key: tuple[str, ...]) -> tuple[Any, ...] | None:
    if not isinstance(record, dict):
        return None
    values = tuple(record.get(k) for k in key)
    return values if all(isinstance(v, str) for v in values) else None


def _copy_stats(report: DatasetReport, stats: CallStats) -> None:
    report.calls, report.failed_calls, report.retries = stats.calls, stats.failed_calls, stats.retries
    report.bytes, report.credits = stats.bytes, stats.credits
