"""Backfill price history from `/assets/{slug}/history` into the lake: chunked, resumable, credit-aware.

What the API forces, and what this module does about it:
- every call costs 1 credit plus 1 per 2,500 bytes, and a history point is ~95 bytes: three years of daily
  points for 2,000 assets is ~8,000 calls and ~110,000 credits. `estimate_backfill_credits` prices a backfill
  before any call, and `max_credits` is a budget the run never crosses (it stops before a call that could);
- nobody documents the longest start-end range one request may cover, so each asset's range is cut into
  chunks of at most 1,440 points (`INTERVALS`) and every chunk's point count is checked: a server-side cap
  would show up as a "truncated" warning, not as silent gaps;
- a delisted asset answers 404: recorded once under `coincap/asset_history_skipped/`, never asked again.

Chunks sit on a fixed grid (`backfill_plan.py`), one object each in the lake. A chunk whose object exists is
finished and never fetched again, so a killed backfill resumes where it stopped; a chunk still open (its last
interval not yet over) is fetched again and replaces its object.

The engine has no Prefect: the caller (the flow in `flows/backfill.py`, the CLI, a benchmark, a test) builds the
settings and the lake once and passes them in. The run's threads are in `backfill_run.py`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime

from flows.coincap.budget import CallStats, CreditBudget, CreditMeter, OverBudget
from flows.coincap.client import CoinCapClient
from flows.coincap.paging import STALLED_PAGES, ignores_offset
from flows.errors import ConfigError
from flows.ingest.backfill_plan import (
    ENVELOPE_BYTES,
    SLUG,
    BackfillPlan,
    check_range,
    check_slug,
    default_range,
    plan_backfill,
)
from flows.ingest.backfill_report import BackfillReport
from flows.ingest.backfill_run import BackfillProgress, BackfillRun
from flows.lake.storage import LakeStorage
from flows.settings import Settings
from flows.snapshot_id import Snapshot

log = logging.getLogger(__name__)

# Worst case of one /assets page when the asset list itself is fetched: a v3 asset is ~380 bytes, the largest seen
# (many chain tokens) 710. A page is refused past this many bytes per asset, and reserved at it.
MAX_BYTES_PER_ASSET = 1_500
# Calls per minute by default: CoinCap allows 600 on every plan; leave room for scheduled snapshots.
DEFAULT_CALLS_PER_MINUTE = 500
DEFAULT_WORKERS = 6


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
                    if isinstance(slug, str) and SLUG.match(slug):
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
    storage: LakeStorage,
    workers: int = DEFAULT_WORKERS,
    calls_per_minute: float | None = DEFAULT_CALLS_PER_MINUTE,
    retry_delisted: bool = False,
    now: datetime | None = None,
) -> BackfillReport:
    """Backfill `interval` history of `assets` (None: every asset /assets lists) for UTC days start..end into
    the lake `storage`.

    Resumable and idempotent: finished chunks in the lake are skipped without a call. With `max_credits` the
    run stops cleanly before a call whose worst case could cross it. Auth and quota errors stop at once.
    """
    started = time.perf_counter()
    default_start, default_end = default_range()
    start, end = start or default_start, end or default_end
    check_range(interval, start, end)
    if max_credits is not None and max_credits < 0:
        raise ConfigError(f"--max-credits cannot be negative (got {max_credits}).", "Pass a budget in credits.")
    now_dt = now or datetime.now(UTC)
    now_ms = int(now_dt.timestamp() * 1000)
    report = BackfillReport(run_id=Snapshot.now().id, interval=interval, start=start, end=end, max_credits=max_credits)
    meter = CreditMeter()
    budget = CreditBudget(max_credits, meter)
    ids = _list_assets(settings, budget) if assets is None else [check_slug(a) for a in assets]
    plan = plan_backfill(storage, ids, interval, start, end, now_ms, retry_delisted=retry_delisted)
    estimate = plan.estimate
    log.info("%s", estimate.describe())
    report.assets = estimate.assets
    report.chunks_total = estimate.chunks_total
    report.chunks_skipped = estimate.chunks_landed
    report.delisted_known = plan.delisted_known
    report.estimated_credits = estimate.credits
    run = BackfillRun(
        settings,
        storage,
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


def _finish(report: BackfillReport, plan: BackfillPlan, meter: CreditMeter, started: float, run: BackfillRun) -> None:
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
