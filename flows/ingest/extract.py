"""Extract one dataset for one snapshot: page by page, de-duplicated, validated, staged, then published.

Memory stays flat as the data grows: each page is validated and written as it arrives; only the natural keys
already landed are held (packed, ~8 bytes each), to drop records that reappear on a later page when ranks shift
between fetches. The next page is fetched in a background thread while the current one is validated and written,
so waiting for CoinCap overlaps with our own work; at most one page is ever requested ahead.

Paging must make progress: a listing whose full pages stop bringing records it has not served before is a server
that ignores `offset`, and the extract stops with one line instead of paging, and paying, forever. A top-N scope
(COINCAP_ASSETS_LIMIT) lands N records at most, however many the server sends. Both are the paging guard's
(`flows/ingest/paging_guard.py`); the keys it and the de-duplication compare are `flows/ingest/keys.py`'s.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from flows.coincap.budget import CallStats, CreditMeter
from flows.coincap.client import CoinCapClient, Page
from flows.coincap.endpoints import Endpoint, scoped_requests
from flows.contracts.columns import QUARANTINE_SCHEMA
from flows.contracts.datasets import CONTRACTS
from flows.contracts.validate import check_records, plausible_api_timestamp
from flows.ingest.keys import LandedKeys, PageKeys
from flows.ingest.paging_guard import PagingGuard
from flows.lake.parquet import ZONE_DATA, ZONE_QUARANTINE, StagedParquet, snapshot_key
from flows.lake.storage import LakeStorage
from flows.settings import Settings
from flows.snapshot_id import Snapshot

ProgressFn = Callable[[str, int, int], None]  # (dataset, pages so far, records so far)
# Pages are validated in batches of about this many records: Pandera's cost is mostly per call (~8 ms), so a
# batch pays it once instead of once per 2,000-record page. Results are the same as page by page.
_BATCH_RECORDS = 20_000
# How long closing the prefetcher waits for a fetch it cancelled (the cancel shuts its socket: it ends at once).
_CLOSE_WAIT_S = 5.0


@dataclass
class StagedFiles:
    """Finished local files waiting to be published, and lake objects to remove when they are."""

    puts: list[tuple[Path, str]] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    published: list[str] = field(default_factory=list)

    def publish(self, storage: LakeStorage) -> list[str]:
        """Publish every file (each atomically) and apply the deletes; return the keys written.

        `put_file` consumes the staged file, so a retry after a failed write (the publish task retries) must
        re-send only what is still staged: each file leaves `puts` once it is in the lake.
        """
        while self.puts:
            path, key = self.puts[0]
            storage.put_file(path, key)
            self.puts.pop(0)
            self.published.append(key)
        for key in self.deletes:
            storage.delete(key)
        return list(self.published)

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
    stage_seconds: dict[str, float] | None = None,
    meter: CreditMeter | None = None,
) -> tuple[DatasetReport, StagedFiles]:
    """Fetch every page of `dataset` and validate each record into staged lake files (not yet published).

    Publishing is the caller's step, so a snapshot lands only when all its datasets succeeded. `stage_seconds`,
    if given, accumulates busy seconds per stage, for the benchmark: fetch (HTTP and JSON parsing, in the fetching
    thread), fetch_wait (this thread waiting for a page), validate and lake (in the validating thread).
    `meter`, if given, counts the calls (the caller reads what a failed attempt spent from it).
    """
    contract = CONTRACTS[dataset]
    report = DatasetReport(dataset=dataset, snapshot_id=snapshot.id)
    started = time.perf_counter()
    meter = meter if meter is not None else CreditMeter()
    staging = settings.data_dir.resolve() / "staging"
    landed = LandedKeys(contract.key)
    rejected: set[str] = set()  # raw JSON of quarantined records: one served twice is quarantined once
    new_fields: set[str] = set()

    staged = StagedFiles()
    clock = _StageClock(stage_seconds)
    client = CoinCapClient(settings, meter=meter)
    pages = _Prefetcher(
        _endpoint_pages(client, scoped_requests(dataset, settings)),
        name=f"fetch-{dataset}",
        clock=clock,
        cancel=client.abort,
    )
    paging = PagingGuard(dataset, contract.key)
    good_file = StagedParquet(contract.arrow_schema(), staging)
    bad_file = StagedParquet(QUARANTINE_SCHEMA, staging)
    batch = _Batch()  # pages fetched, not yet handed to the validator
    validator = _InOrder(name=f"validate-{dataset}")  # validates and writes one batch at a time, in order

    def validate_and_write(held: _Batch) -> None:
        """Validate a batch's pages, in order, with exactly the outcome of validating them one by one."""
        with clock("validate"):
            checked = check_records(contract, held.records(), page_sizes=[len(p.records) for p in held.pages])
            rows: list[int] = []
            stamps: list[datetime | None] = []
            page_of_reject: list[int] = []
            offset = 0
            for number, (page, keys) in enumerate(zip(held.pages, held.keys, strict=True)):
                seen = landed.contains(keys)
                fresh = [offset + i for i, known in enumerate(seen) if not known]
                report.duplicates += len(page.records) - len(fresh)
                # landed before the next page is looked at, as when each page is validated on its own
                landed.add(keys, [i - offset for i in fresh if checked.passes(i)])
                rows += fresh
                api_ts = plausible_api_timestamp(page.timestamp_ms)  # None for year 9999, seconds, 2**63 - 1
                stamps += [api_ts] * len(fresh)
                page_of_reject += [number] * sum(1 for i in fresh if not checked.passes(i))
                offset += len(page.records)
            result = checked.select(rows, snapshot_id=snapshot.id, snapshot_ts=snapshot.ts, api_timestamp=stamps)
            rejects = _first_rejects(result.quarantine, page_of_reject, rejected, report)
            new_fields.update(result.new_fields)
        with clock("lake"):
            good_file.write(result.valid)
            bad_file.write(rejects)

    def hand_over() -> None:
        """Queue the held pages for validation (after the batch before them) while fetching goes on."""
        nonlocal batch
        if batch.pages:
            validator.submit(validate_and_write, batch)
            batch = _Batch()

    try:
        while True:
            with clock("fetch_wait"):
                item = pages.next()
            if item is None:
                break
            validator.raise_failure()  # a failed batch stops the run at once, not at the end
            endpoint, page = item
            with clock("validate"):
                keys = landed.encode(page.records)
                # trims what a top-N scope did not ask for; raises when the listing stopped making progress
                page, keys = paging.check(endpoint, page, keys, landed)
            report.pages += 1
            report.served += len(page.records)
            pages.request_next()  # only now: a page that stops the run above never costs a call ahead
            batch.add(page, keys)
            if batch.size >= _BATCH_RECORDS:
                hand_over()
            if progress:
                progress(dataset, report.pages, report.served)
        hand_over()
        validator.wait()
        pages.close()

        data_key = snapshot_key(ZONE_DATA, dataset, snapshot.id, snapshot.ts)
        quarantine_key = snapshot_key(ZONE_QUARANTINE, dataset, snapshot.id, snapshot.ts)
        with clock("lake"):
            good_file.close()
            bad_file.close()
        staged.puts.append((good_file.path, data_key))
        if bad_file.rows:
            staged.puts.append((bad_file.path, quarantine_key))
        else:
            bad_file.discard()
            staged.deletes.append(quarantine_key)  # a re-run that now has no rejects must not keep old ones
    except BaseException:
        validator.close()  # the writers are the validator's until its batch is done
        good_file.discard()
        bad_file.discard()
        raise
    finally:
        validator.close()
        pages.close()  # cancels a page still in flight: a stuck server never holds the run
        client.close()
    report.files = [key for _, key in staged.puts]
    report.valid, report.quarantined = good_file.rows, bad_file.rows
    report.new_fields = sorted(new_fields)
    _copy_stats(report, meter.total())
    report.seconds = time.perf_counter() - started
    return report, staged


def _endpoint_pages(client: CoinCapClient, endpoints: Iterator[Endpoint]) -> Iterator[tuple[Endpoint, Page]]:
    for endpoint in endpoints:
        for page in _pages(client, endpoint):
            yield endpoint, page


def _pages(client: CoinCapClient, endpoint: Endpoint) -> Iterator[Page]:
    if endpoint.paginated:
        yield from client.paginate(endpoint.path, endpoint.params, max_records=endpoint.max_records)
        return
    data, timestamp, nbytes = client.get_list(endpoint.path, endpoint.params or None)
    yield Page(records=data, offset=0, timestamp_ms=timestamp, body_bytes=nbytes)


class _Prefetcher:
    """Advances a page iterator in a background thread, at most one page ahead, when the consumer asks.

    `next()` returns the next item (None at the end) and re-raises whatever the fetch raised, in order; the
    consumer calls `request_next()` once it has looked at the current page and wants another, so the requests are
    the same, in the same order, as without prefetching: only the fetch overlaps the consumer's other work.
    """

    def __init__(
        self, items: Iterator[Any], *, name: str, clock: _StageClock, cancel: Callable[[], None] | None = None
    ) -> None:
        self._items = items
        self._cancel = cancel
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._pending: Future[Any] | None = None
        self._finished = False
        self._clock = clock

    def request_next(self) -> None:
        if self._pending is None and not self._finished:
            self._pending = self._pool.submit(self._fetch)

    def _fetch(self) -> Any:
        with self._clock("fetch"):
            return next(self._items, None)

    def next(self) -> Any:
        self.request_next()
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        while True:
            try:
                # a timed wait keeps this thread able to take an asynchronous exception (Prefect's task timeout)
                item = pending.result(timeout=1.0)
                break
            except FutureTimeout:
                continue
            except BaseException:
                self._finished = True
                raise
        self._finished = item is None
        return item

    def close(self) -> None:
        """Stop fetching. A fetch in flight is cancelled (`cancel` shuts its sockets and ends its retries), so
        closing never waits on a stuck server; the run already stopped, its first error counts."""
        pending, self._pending = self._pending, None
        self._finished = True
        if pending is not None and not pending.cancel() and not pending.done():
            if self._cancel is not None:
                self._cancel()
            with contextlib.suppress(BaseException):
                pending.result(timeout=_CLOSE_WAIT_S)
        # a fetch still running past that (no cancel given) is left to its own deadline, not waited on
        self._pool.shutdown(wait=pending is None or pending.done())


class _Batch:
    """Pages fetched but not yet validated, with their encoded keys."""

    def __init__(self) -> None:
        self.pages: list[Page] = []
        self.keys: list[PageKeys] = []
        self.size = 0

    def add(self, page: Page, keys: PageKeys) -> None:
        self.pages.append(page)
        self.keys.append(keys)
        self.size += len(page.records)

    def records(self) -> list[Any]:
        return [r for page in self.pages for r in page.records]


class _InOrder:
    """Runs jobs in a background thread, in the order submitted, at most one at a time: `submit` waits for the
    previous job, so memory holds two batches at most (one validating, one filling). A job's failure is raised
    in the caller's thread."""

    def __init__(self, *, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._jobs: list[tuple[Future[None], _Batch]] = []

    def submit(self, job: Callable[[_Batch], None], batch: _Batch) -> None:
        self.wait()
        self._jobs.append((self._pool.submit(job, batch), batch))

    def raise_failure(self) -> None:
        while self._jobs and self._jobs[0][0].done():
            self._wait_first()

    def wait(self) -> None:
        while self._jobs:
            self._wait_first()

    def _wait_first(self) -> None:
        future = self._jobs[0][0]
        while True:
            try:
                future.result(timeout=1.0)  # timed, so this thread can still take Prefect's task timeout
                break
            except FutureTimeout:
                continue
            finally:
                if future.done():
                    self._jobs.pop(0)

    def close(self) -> None:
        """Let a running job finish (its files are discarded afterwards); drop the queued ones."""
        for future, _ in self._jobs:
            future.cancel()
        self._pool.shutdown(wait=True)
        self._jobs.clear()


class _StageClock:
    """Accumulates busy seconds per stage into a dict (from any thread), or does nothing when there is no dict."""

    def __init__(self, totals: dict[str, float] | None) -> None:
        self._totals = totals
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        if self._totals is None:
            yield
            return
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            with self._lock:
                self._totals[stage] = self._totals.get(stage, 0.0) + elapsed


def _first_rejects(quarantine: pa.Table, page_of_row: list[int], rejected: set[str], report: DatasetReport) -> pa.Table:
    """Drop rejects already quarantined on an earlier page (the same raw record, served again)."""
    if quarantine.num_rows == 0:
        return quarantine
    raw = quarantine.column("record_json").to_pylist()
    keep = []
    start = 0
    while start < len(raw):
        end = start
        while end < len(raw) and page_of_row[end] == page_of_row[start]:
            end += 1
        page = raw[start:end]
        keep += [r not in rejected for r in page]  # repeats within one page were kept, and still are
        rejected.update(page)
        start = end
    report.duplicates += keep.count(False)
    return quarantine.filter(pa.array(keep)) if not all(keep) else quarantine


def _copy_stats(report: DatasetReport, stats: CallStats) -> None:
    report.calls, report.failed_calls, report.retries = stats.calls, stats.failed_calls, stats.retries
    report.bytes, report.credits = stats.bytes, stats.credits
