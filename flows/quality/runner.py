"""A quality run: the dbt data tests and the Python checks of a snapshot (or each dataset's latest), one report.

A check that trips does not drop data: the snapshot stays landed and modeled, the result says what is wrong (with
up to five failing keys), and the flows log it and alert. Results are stored per quality run in `ops.dq_results`,
which the health page reads (rpt_data_quality).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import flows.quality.checks  # noqa: F401 - registers the Python checks
from flows.errors import ConfigError, PipelineError
from flows.quality.context import DATASETS, Context, Snap, snap_of
from flows.quality.dbt_results import (
    DbtTest,
    check_results,
    dbt_categories,
    declared_checks,
    results_after_build,
    run_tests,
    target_dir,
)
from flows.quality.registry import CHECKS, Check, Probe
from flows.quality.report import CATEGORIES, CheckResult, QualityReport, one_line, rounded, status_of
from flows.settings import Settings


def run_checks(
    settings: Settings,
    *,
    snapshot_id: str | None = None,
    flow_run_id: str | None = None,
    categories: set[str] | None = None,
    store: bool = True,
    after_build: bool = False,
) -> QualityReport:
    """Run the checks (of `categories`, default all) on a snapshot, or on each dataset's latest snapshot.

    The dbt data tests run with `dbt test`, unless `after_build`: then the `dbt build` that just built the snapshot
    ran them, and its results are read (they are tested again only if it did not). A check that cannot run is
    reported with status `error` and its one-line reason; the others still run. With `store`, the results are
    appended to ops.dq_results. Raises only when the warehouse cannot be reached.
    """
    from flows.warehouse.factory import warehouse

    wanted = set(categories or CATEGORIES)
    unknown = wanted - set(CATEGORIES)
    if unknown:
        raise ConfigError(
            f"Unknown check category {', '.join(sorted(unknown))}.", f"Choose from {', '.join(CATEGORIES)}."
        )
    if snapshot_id is not None:
        snap_of("assets", snapshot_id)  # validates the id before it goes into SQL: a SnapshotIdError says why not
    store_ = warehouse(settings)
    if store:
        store_.ensure_ops_tables()  # pipeline_runs is read by checks; dq_results is written below
    store_.query("select 1")  # one clear line if the warehouse is missing or unreachable
    checked_at = datetime.now(UTC)
    ctx = Context(settings, now=checked_at, snapshot_id=snapshot_id, query=store_.query)
    dbt_results = dbt_checks(ctx, dbt_categories(wanted), after_build)
    report = evaluate(ctx, [c for c in CHECKS if c.category in wanted])
    for result, snapshot in dbt_results:
        report.results.append(result)
        report.snapshots[result.check_name] = snapshot
    report.results.sort(key=lambda r: CATEGORIES.index(r.category))
    report.run_id = f"dq-{checked_at:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    if store:
        store_.record_checks(report.rows(flow_run_id))
    return report


def dbt_checks(ctx: Context, categories: Sequence[str], after_build: bool) -> list[tuple[CheckResult, str | None]]:
    """The dbt data tests of `categories` as checks: the build's results, or a `dbt test` run now."""
    if not categories:
        return []
    tests: list[DbtTest] = []
    if after_build:
        tests = results_after_build(ctx.settings, categories)
    if not tests:
        try:
            tests = run_tests(ctx.settings, ctx.snapshot_id, categories)
        except PipelineError as exc:
            # every check the project declares (as of its last parse) could not run, for one reason
            declared = {n: c for n, c in declared_checks(target_dir(ctx.settings)).items() if c in categories}
            if not declared:
                raise
            detail = one_line(f"could not run: {exc}")
            return [(CheckResult(name, category, "all", "error", "error", None, None, None, detail, ""),
                     ctx.snapshot_id) for name, category in sorted(declared.items())]  # fmt: skip
    return check_results(tests, ctx)


def evaluate(ctx: Context, checks: Sequence[Check]) -> QualityReport:
    """Run the Python `checks` in `ctx`; each failure to run becomes that check's `error` result."""
    results: list[CheckResult] = []
    snapshots: dict[str, str | None] = {}
    for c in checks:
        try:
            built = c.build(ctx)
            if built is None:
                continue  # the dataset is not in this snapshot
            if isinstance(built, Probe):
                names, rows = ctx.query(built.sql)
                outcome = built.judge(names, rows)
            else:
                outcome = built
        except Exception as exc:  # one check's failure never stops the others
            results.append(CheckResult(c.name, c.category, c.dataset, c.severity, "error", None, None, None,
                                       one_line(f"could not run: {reason(exc)}"), c.description))  # fmt: skip
            snapshots[c.name] = ctx.snapshot_id
            continue
        results.append(CheckResult(c.name, c.category, c.dataset, c.severity, status_of(c.severity, outcome.tripped),
                                   rounded(outcome.observed), outcome.threshold, outcome.failing_rows,
                                   one_line(outcome.detail), c.description))  # fmt: skip
        snapshots[c.name] = outcome.snapshot_id
    snapshot_id = ctx.snapshot_id
    if snapshot_id is None:
        try:
            checked = {t.snapshot_id for t in ctx.checked_targets()}
        except Exception:  # noqa: BLE001 - the checks that read them said why
            checked = set()
        snapshot_id = checked.pop() if len(checked) == 1 else None
    return QualityReport("", snapshot_id, ctx.now, results, snapshots)


def reason(exc: BaseException) -> str:
    """A check's failure to run, in one line."""
    if isinstance(exc, PipelineError):
        return str(exc)
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def compile_checks(settings: Settings, targets: dict[str, Snap], now: datetime | None = None) -> dict[str, str]:
    """The SQL each Python check would run for these snapshots, without a warehouse (for tests and review)."""
    ctx = Context(settings, now=now or datetime.now(UTC), snapshot_id=None)
    ctx.current.update({d: targets.get(d) for d in DATASETS})
    ctx.ever_landed = set(DATASETS)
    out = {}
    for c in CHECKS:
        built = c.build(ctx) if c.name != "freshness.lake_sources" else None
        if isinstance(built, Probe):
            out[c.name] = built.sql
    return out
