"""What a backfill did: the CLI's summary, the flow's return value, a row of the run-metrics table."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from flows.ingest.backfill_plan import skipped_key
from flows.lake.history import DATASET


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
