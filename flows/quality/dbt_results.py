"""The data-quality checks that are dbt data tests: run them, and read their results into the quality report.

A check that reads one model's rows is a dbt test (dbt/tests/generic/dq_*.sql, wired in the model's yml), so it
shows in `dbt build`, the docs and the lineage on both engines. Its name says which check it is:
`dq_<category>__<check>[__<dataset>]` is check `<category>.<check>` (several tests, one per model, may make up one
check, e.g. `validity.ranks_positive`). From dbt's artifacts (run_results.json, manifest.json):
- the status: a test that warned or failed tripped its check; one dbt could not run makes it `error`;
- the severity: `meta.dq_severity`, `error` unless the yml says `warn` (in dbt every such test has severity warn,
  so a trip never stops the build: the data is landed and modeled, and flagged);
- the threshold: the test argument named by `meta.dq_threshold` (set by the generic test itself);
- the observed value and a few failing keys: from the test's stored failures (columns `failing_key` and
  `observed`), aggregated as `meta.dq_observed` says (min, max, sum or count).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flows.errors import PipelineError
from flows.quality.context import Context, dataset_of_model
from flows.quality.report import CATEGORIES, ERROR, WARN, CheckResult, one_line, rounded, status_of
from flows.settings import Settings

SNAPSHOT_ENV = "PIPELINE_DQ_SNAPSHOT_ID"  # the snapshot the tests read (dbt/macros/data_quality/dq_snapshot.sql)
SAMPLES = 5
_TEST_NAME = re.compile(r"dq_([a-z]+)__([a-z0-9]+(?:_[a-z0-9]+)*)(?:__([a-z0-9_]+))?")


def check_name_of(test_name: str) -> str | None:
    """`dq_validity__ranks_positive__assets` -> `validity.ranks_positive`; None for other tests."""
    match = _TEST_NAME.fullmatch(test_name)
    if match is None or match.group(1) not in CATEGORIES or match.group(1) == "freshness":
        return None  # freshness follows the schedules: flows/quality/checks.py
    return f"{match.group(1)}.{match.group(2)}"


def dbt_categories(categories: set[str]) -> list[str]:
    """The categories among `categories` that dbt tests check (all but freshness)."""
    return [c for c in CATEGORIES if c in categories and c != "freshness"]


@dataclass(frozen=True)
class DbtTest:
    """One data-quality test's result in one dbt invocation."""

    name: str
    check_name: str
    dataset: str | None
    severity: str
    description: str
    threshold: float | None
    observed_by: str  # min | max | sum | count
    status: str  # dbt's: pass, warn, fail, error, skipped
    failures: int
    message: str
    relation: str | None  # the table of its stored failures

    @property
    def category(self) -> str:
        return self.check_name.split(".")[0]


def target_dir(settings: Settings) -> Path:
    """Where dbt writes its artifacts for these settings (flows/warehouse/dbt.py: `--target-path`)."""
    return settings.data_dir.resolve() / "dbt" / "target"


def read_tests(target: Path, command: str | None = None) -> list[DbtTest]:
    """The data-quality tests in the run results of the last dbt invocation that wrote `target` (none unless it was
    `command`, when given)."""
    try:
        run_results = json.loads((target / "run_results.json").read_text())
        nodes = json.loads((target / "manifest.json").read_text())["nodes"]
        results = run_results["results"]
    except (OSError, ValueError, KeyError):
        return []
    if command is not None and (run_results.get("args") or {}).get("which") != command:
        return []
    tests = []
    for result in results:
        node = nodes.get(result.get("unique_id"), {})
        check_name = check_name_of(node.get("name", "")) if node.get("resource_type") == "test" else None
        if check_name is None:
            continue
        meta = node.get("config", {}).get("meta") or {}
        attached = node.get("attached_node") or next(iter(node.get("depends_on", {}).get("nodes") or []), "")
        threshold = meta.get("dq_threshold")
        tests.append(
            DbtTest(
                name=node["name"],
                check_name=check_name,
                dataset=dataset_of_model(attached.split(".")[-1]),
                severity=WARN if meta.get("dq_severity") == WARN else ERROR,
                description=one_line(node.get("description") or ""),
                threshold=None if threshold in (None, "") else float(threshold),
                observed_by=str(meta.get("dq_observed") or "count"),
                status=str(result.get("status")),
                failures=int(result.get("failures") or 0),
                message=str(result.get("message") or ""),
                relation=result.get("relation_name") or node.get("relation_name"),
            )
        )
    return tests


def run_tests(settings: Settings, snapshot_id: str | None, categories: Sequence[str]) -> list[DbtTest]:
    """`dbt test` on the data-quality tests of `categories`, reading `snapshot_id` (else each model's latest)."""
    from flows.warehouse.dbt import invoke_dbt

    if not categories:
        return []
    selectors = [f"dq_{c}__*" for c in categories]
    os.environ[SNAPSHOT_ENV] = snapshot_id or ""
    try:
        result, _ = invoke_dbt(settings, "test", "--select", *selectors)
    finally:
        os.environ.pop(SNAPSHOT_ENV, None)
    if result.exception is not None or (not result.success and not getattr(result.result, "results", None)):
        reason = (str(result.exception or "no result; see the dbt log").strip().splitlines() or ["?"])[0]
        raise PipelineError(
            f"dbt test did not run the data-quality tests ({reason}).",
            f"See {settings.data_dir.resolve() / 'dbt' / 'logs' / 'dbt.log'}.",
        )
    return read_tests(target_dir(settings))


@dataclass(frozen=True)
class Failures:
    """What a test's stored failures say: how many, the aggregate of `observed`, and the worst few keys."""

    rows: int
    observed: float | None
    samples: list[str]


def failures_sql(relation: str, observed_by: str) -> str:
    """The query that reads a test's stored failures: the worst few keys, their count and the aggregates."""
    order = "asc" if observed_by == "min" else "desc"
    return (
        "select failing_key, observed, count(*) over () as failing_rows, min(observed) over () as lowest,"
        " max(observed) over () as highest, sum(observed) over () as total"
        f" from {relation} order by observed {order}, failing_key limit {SAMPLES}"
    )


def stored_failures_statements(manifest: dict[str, Any]) -> dict[str, str]:
    """Per data-quality test of a dbt manifest, the query that reads its stored failures (for check-sql)."""
    return {
        node["name"]: failures_sql(node["relation_name"], str((node["config"].get("meta") or {}).get("dq_observed")))
        for node in manifest["nodes"].values()
        if node.get("resource_type") == "test" and check_name_of(node["name"]) and node.get("relation_name")
    }


def read_failures(test: DbtTest, ctx: Context) -> Failures:
    """The stored failures of a test that tripped (a small table dbt wrote beside the ops tables)."""
    if not test.relation:
        return Failures(test.failures, None, [])
    names, rows = ctx.query(failures_sql(test.relation, test.observed_by))
    if not rows:
        return Failures(0, None, [])
    first = dict(zip(names, rows[0], strict=True))
    count = int(first["failing_rows"])
    aggregate = {"min": first["lowest"], "max": first["highest"], "sum": first["total"], "count": count}
    observed = aggregate.get(test.observed_by, count)
    return Failures(count, None if observed is None else float(observed), [str(r[0]) for r in rows])


def combine(observed_by: str, values: list[float]) -> float | None:
    if not values:
        return None
    if observed_by == "min":
        return min(values)
    if observed_by == "max":
        return max(values)
    return sum(values)


def check_results(tests: list[DbtTest], ctx: Context) -> list[tuple[CheckResult, str | None]]:
    """The tests as checks of the report (with the snapshot each read), one per check name: tests of datasets the
    snapshot under check lacks are left out, and a check's status is the worst of its tests'."""
    by_check: dict[str, list[DbtTest]] = {}
    for test in sorted(tests, key=lambda t: t.name):
        if test.dataset is not None:
            try:
                if ctx.target(test.dataset) is None:
                    continue  # the dataset is not in this snapshot
            except Exception:  # noqa: BLE001 - dbt says what went wrong with the test itself
                pass
        by_check.setdefault(test.check_name, []).append(test)
    return [one_check(name, group, ctx) for name, group in by_check.items()]


def one_check(name: str, tests: list[DbtTest], ctx: Context) -> tuple[CheckResult, str | None]:
    first = tests[0]
    datasets = sorted({t.dataset or "all" for t in tests})
    dataset = datasets[0] if len(datasets) == 1 else "all"
    severity = ERROR if any(t.severity == ERROR for t in tests) else WARN
    threshold = next((t.threshold for t in tests if t.threshold is not None), None)
    description = first.description
    snapshot_id = ctx.snapshot_id
    if dataset != "all":
        try:
            target = ctx.target(dataset)
            snapshot_id = target.snapshot_id if target else snapshot_id
        except Exception:  # noqa: BLE001 - the check's own status says what went wrong
            pass
    names = first.name
    if len(tests) > 1:
        names = f"{len(tests)} dbt tests {os.path.commonprefix([t.name for t in tests])}*"
    broken = [t for t in tests if t.status not in ("pass", "warn", "fail")]
    if broken:
        detail = f"could not run: dbt test {broken[0].name} {broken[0].status}: {dbt_reason(broken[0].message)}"
        return CheckResult(name, first.category, dataset, severity, "error", None, None, None, one_line(detail),
                           description), snapshot_id  # fmt: skip
    tripped = [t for t in tests if t.status in ("warn", "fail")]
    if not tripped:
        detail = f"no failing rows ({'dbt test ' if len(tests) == 1 else ''}{names})"
        return CheckResult(name, first.category, dataset, severity, "pass", None, threshold, 0, detail,
                           description), snapshot_id  # fmt: skip
    failing, observed, samples = 0, [], []
    for test in tripped:
        found = read_failures(test, ctx)
        failing += found.rows or test.failures
        if found.observed is not None:
            observed.append(found.observed)
        prefix = f"{test.dataset} " if len(datasets) > 1 and test.dataset else ""
        samples += [prefix + s for s in found.samples]
    shown = ", ".join(samples[:SAMPLES]) + (", …" if failing > min(len(samples), SAMPLES) else "")
    detail = f"{failing:,} failing ({names}): {shown}" if shown else f"{failing:,} failing ({names})"
    result = CheckResult(name, first.category, dataset, severity, status_of(severity, True),
                         rounded(combine(first.observed_by, observed)), threshold, failing, one_line(detail),
                         description)  # fmt: skip
    return result, snapshot_id


def dbt_reason(message: str) -> str:
    """The line of a dbt error message that says what went wrong (`Catalog Error: Table ... does not exist!`)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    said = [line for line in lines[1:] if re.match(r"[\w ]*(Error|Exception)\b", line)]
    return (said or lines[1:2] or lines or ["no message"])[0]


def declared_checks(target: Path) -> dict[str, str]:
    """Every data-quality check the dbt project declares (manifest.json in `target`): check name -> category."""
    try:
        nodes = json.loads((target / "manifest.json").read_text())["nodes"]
    except (OSError, ValueError, KeyError):
        return {}
    names = (check_name_of(n["name"]) for n in nodes.values() if n.get("resource_type") == "test")
    return {name: name.split(".")[0] for name in names if name}


def results_after_build(settings: Settings, categories: Sequence[str]) -> list[DbtTest]:
    """The data-quality tests of the dbt build that just ran, if it ran them (else none: the last dbt invocation was
    no build)."""
    return [t for t in read_tests(target_dir(settings), "build") if t.category in categories]
