"""What a quality run reports: one `CheckResult` per check, gathered in a `QualityReport` (rows of ops.dq_results)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

CATEGORIES = ("completeness", "freshness", "validity", "consistency", "uniqueness", "anomaly")
ERROR, WARN = "error", "warn"
DQ_TABLE = "ops.dq_results"
STATUSES = ("pass", "warn", "fail", "error")


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check in one quality run (a row of ops.dq_results)."""

    check_name: str
    category: str
    dataset: str
    severity: str
    # pass | fail (an error-severity check tripped) | warn (a warn-severity one did) | error (could not run)
    status: str
    observed: float | None
    threshold: float | None
    failing_rows: int | None
    detail: str
    description: str


@dataclass
class QualityReport:
    """One quality run: every check's result, under one run id."""

    run_id: str
    snapshot_id: str | None
    checked_at: datetime
    results: list[CheckResult]
    # check name -> the snapshot it read (None for checks not tied to one): the snapshot_id column of its row
    snapshots: dict[str, str | None] = field(default_factory=dict, repr=False)

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.status in ("fail", "error")]

    @property
    def warned(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "warn"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary_line(self) -> str:
        """e.g. `22 checks: 20 pass, 1 warn, 1 fail (validity.no_negative_prices)`."""
        counts = {s: sum(1 for r in self.results if r.status == s) for s in STATUSES}
        parts = [f"{counts['pass']} pass"]
        parts += [f"{counts[s]} {s}" for s in ("warn", "fail", "error") if counts[s]]
        named = self.failed or self.warned
        names = f" ({', '.join(r.check_name for r in named)})" if named else ""
        noun = "check" if len(self.results) == 1 else "checks"
        return f"{len(self.results)} {noun}: {', '.join(parts)}{names}"

    def rows(self, flow_run_id: str | None) -> list[dict[str, Any]]:
        """The results as ops.dq_results rows."""
        return [
            {
                "run_id": self.run_id,
                "flow_run_id": flow_run_id,
                "snapshot_id": self.snapshots.get(r.check_name, self.snapshot_id),
                "checked_at": self.checked_at,
                "check_name": r.check_name,
                "category": r.category,
                "dataset": r.dataset,
                "severity": r.severity,
                "status": r.status,
                "observed": r.observed,
                "threshold": r.threshold,
                "failing_rows": r.failing_rows,
                "detail": r.detail,
                "description": r.description,
            }
            for r in self.results
        ]


def status_of(severity: str, tripped: bool) -> str:
    """A check's status: `pass`, or when it tripped `fail` (error severity) or `warn`."""
    if not tripped:
        return "pass"
    return "fail" if severity == ERROR else "warn"


def one_line(text: str, limit: int = 500) -> str:
    """`text` on one line, at most `limit` characters (the detail column)."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def fmt(value: float | None) -> str:
    """A number for a detail line: whole numbers with separators, else 4 significant digits."""
    if value is None:
        return "–"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.4g}" if abs(value) < 1e6 else f"{value:,.0f}"


def rounded(value: float | None) -> float | None:
    """An observed value as stored: 12 significant digits, None for no number (or NaN)."""
    if value is None or value != value:
        return None
    return float(f"{float(value):.12g}")
