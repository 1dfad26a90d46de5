"""`coincap-pipeline check-sql`: every statement BigQuery will run, analyzed offline by Google's ZetaSQL analyzer.

What is analyzed, in the order BigQuery would see it:
- `model`: every dbt model as compiled for the first build (CREATE TABLE/VIEW), and `data-test`: every data test;
- `model-incremental`: every model as compiled for an incremental run (partition lookups, temporary tables);
- `preflight`: each model's SELECT, as preflight dry-runs it;
- `hook`: dbt's on-run-start/end hooks, if the project has any;
- `quality`: every data-quality query (the checks, the lookups that find the snapshots they read, and the reads
  of the data-quality tests' stored failures);
- `cli`: the queries commands run on the warehouse (`plan-credits`' bytes per record);
- `looker`: every query the Looker Studio report's charts and controls issue (looker/report.yaml);
- `readme`: the `coincap-pipeline sql` examples README.md shows for the gcp target.
The catalog starts from the raw external tables (the schemas Terraform uses, with their hive partition columns)
and the ops tables; each model's output columns join it as the analyzer resolves them. No credentials, no network.
"""

from __future__ import annotations

import re
import shlex
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows.ops.sql_check.analyzer import Catalog, SqlAnalyzer, bigquery_aliases
from flows.paths import PROJECT_ROOT
from flows.settings import Settings

if TYPE_CHECKING:
    from flows.ops.sql_check.dbt_offline import OfflineBuild

KINDS = ("hook", "model", "data-test", "model-incremental", "preflight", "quality", "cli", "looker", "readme")
_PACKAGE_ROOT = PROJECT_ROOT


@dataclass(frozen=True)
class Statement:
    kind: str
    name: str
    sql: str


@dataclass(frozen=True)
class Problem:
    """A statement the analyzer rejected: which, of what kind, and the analyzer's own message."""

    kind: str
    name: str
    message: str

    def line(self) -> str:
        return f"{self.name} ({self.kind}): {self.message}"


@dataclass
class CheckReport:
    counts: Counter[str] = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)
    dumped: list[Path] = field(default_factory=list)
    skipped: int = 0  # statements that read a table whose CREATE was rejected

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        parts = ", ".join(f"{self.counts[k]} {k}" for k in KINDS if self.counts[k])
        verdict = "all accepted" if self.ok else f"{len(self.problems)} rejected"
        if self.skipped:
            verdict += f", {self.skipped} more read what a rejected statement creates"
        return f"check-sql: {sum(self.counts.values())} statements analyzed ({parts}); {verdict}"


def raw_catalog(settings: Settings) -> Catalog:
    """The tables that exist before dbt runs: the raw external tables as Terraform defines them (the contracts'
    schemas plus the hive partition columns BigQuery adds from the path) and the ops tables the pipeline writes."""
    from flows.contracts.bigquery import hive_partition_columns, lake_tables, schema_fields
    from flows.warehouse.bigquery import DQ_TABLE_NAME, RUNS_TABLE_NAME, dq_columns, runs_columns
    from flows.warehouse.dbt import LAYERS

    catalog = Catalog(
        project=settings.gcp_project or "example-project",
        default_dataset=settings.bq_dataset("marts"),
        datasets={settings.bq_dataset(layer) for layer in LAYERS},  # Terraform creates them
    )
    for name, schema in lake_tables().items():
        fields = [*schema_fields(schema), *hive_partition_columns(name)]
        catalog.add_schema(settings.bq_dataset("raw"), name, fields)
    for table, columns in ((RUNS_TABLE_NAME, runs_columns()), (DQ_TABLE_NAME, dq_columns())):
        fields = [{"name": n, "type": t, "mode": m} for n, t, m in columns]
        catalog.add_schema(settings.bq_dataset("ops"), table, fields)
    return catalog


def offline_settings(settings: Settings) -> Settings:
    """The settings check-sql compiles with: the gcp target, a project name even when none is configured, and a
    work folder of its own (the local target's dbt state, kept for partial parsing, is left alone)."""
    from flows.settings import Target

    return settings.model_copy(
        update={
            "target": Target.gcp,
            "gcp_project": settings.gcp_project or "example-project",
            "data_dir": settings.data_dir / "check-sql",
        }
    )


def collect(
    settings: Settings, *, build: OfflineBuild | None = None, progress: Callable[[str], None] = lambda _: None
) -> list[Statement]:
    """Every BigQuery-bound statement, in the order to analyze it (see the module doc)."""
    from flows.ops.sql_check.dbt_offline import compile_offline
    from flows.warehouse.dbt import models_in_order

    if build is None:
        progress("compiling the dbt project for BigQuery (first build and incremental run, connection stubbed)")
        build = compile_offline(settings)
    failures = build.first.failures + build.incremental.failures
    if failures:
        from flows.errors import TransformError

        raise TransformError(
            f"dbt could not compile the project for BigQuery: {failures[0]}.", "Fix the model, then re-run check-sql."
        )
    statements: list[Statement] = []
    for node, sql in build.first_sql:
        kind = {"model": "model", "test": "data-test"}.get(node.split(".")[0])
        if kind:
            statements.append(Statement(kind, _node_name(node), sql))
        elif not node.startswith("create_"):  # dbt's `create schema if not exists` aside: on-run-start/end hooks
            statements.append(Statement("hook", node, sql))
    for node, sql in build.incremental_sql:
        if node.startswith("model."):
            statements.append(Statement("model-incremental", _node_name(node), sql))
    for node, sql in build.freshness_sql:
        if node.startswith("source."):
            statements.append(Statement("quality", f"source_freshness.{node.split('.')[-1]}", sql))
    preflight_sql, _ = models_in_order(build.manifest)  # what preflight dry-runs
    statements += [Statement("preflight", name, sql) for name, sql in preflight_sql.items()]
    statements += [Statement("quality", name, sql) for name, sql in quality_statements(settings).items()]
    from flows.quality.dbt_results import stored_failures_statements  # read after each data-quality test

    failures = stored_failures_statements(build.manifest)
    statements += [Statement("quality", f"stored_failures.{name}", sql) for name, sql in failures.items()]
    from flows.ops.credit_plan import measured_runs_sql

    statements.append(Statement("cli", "plan_credits.measured", measured_runs_sql(settings)))
    statements += [Statement("looker", name, sql) for name, sql in looker_statements(settings).items()]
    statements += [Statement("readme", name, sql) for name, sql in readme_statements(settings=settings).items()]
    return statements


def _node_name(unique_id: str) -> str:
    """`model.coincap.fct_rates` -> fct_rates; a test node -> its name, without the hash dbt appends."""
    parts = unique_id.split(".")
    return parts[2] if len(parts) > 2 else unique_id


def quality_statements(settings: Settings, now: datetime | None = None) -> dict[str, str]:
    """Every data-quality query on the gcp target: the lookups that find the snapshots, and each check."""
    from flows.quality import DATASETS, Context, Snap, compile_checks

    now = now or datetime(2026, 11, 21, 6, tzinfo=UTC)
    recorded: list[str] = []

    def record(sql: str) -> tuple[list[str], list[tuple[object, ...]]]:
        recorded.append(sql)
        return [], []

    for snapshot_id in (None, f"{now:%Y%m%dT%H%M%SZ}"):
        ctx = Context(settings, now=now, snapshot_id=snapshot_id, query=record)
        ctx.landed_datasets()
        for dataset in DATASETS:
            ctx.target(dataset)
    queries = {f"lookup_{i + 1}": sql for i, sql in enumerate(dict.fromkeys(recorded))}

    def snap(dataset: str, at: datetime) -> Snap:
        return Snap(dataset, f"{at:%Y%m%dT%H%M%SZ}", at.date(), at)

    queries.update(compile_checks(settings, {d: snap(d, now) for d in DATASETS}, now=now))
    return queries


def looker_statements(settings: Settings) -> dict[str, str]:
    from flows.ops.looker import load_report, report_queries

    project = settings.gcp_project or "example-project"
    return report_queries(load_report(), project, settings.bq_dataset("marts"))


_SQL_EXAMPLE = re.compile(r"PIPELINE_TARGET=gcp\s+\S*coincap-pipeline sql (\"[^\"]+\"|'[^']+')")


_DEFAULT_DATASET = re.compile(r"\bcoincap_(raw|staging|marts|ops)\b")


def readme_statements(readme: Path | None = None, *, settings: Settings | None = None) -> dict[str, str]:
    """The `coincap-pipeline sql` examples README.md gives for the gcp target (run with the marts dataset as
    the default dataset, as the `sql` command does), with the default datasets' names renamed to the settings'
    (`BQ_DATASET_PREFIX`), as a user with another prefix would type them."""
    text = (readme or _PACKAGE_ROOT / "README.md").read_text(encoding="utf-8")
    examples = [shlex.split(m)[0] for m in _SQL_EXAMPLE.findall(text)]
    if settings is not None:
        examples = [_DEFAULT_DATASET.sub(lambda m: settings.bq_dataset(m.group(1)), sql) for sql in examples]
    return {f"example_{i + 1}": sql for i, sql in enumerate(examples)}


_CREATES = re.compile(r"^\s*create\s+(?:or\s+replace\s+)?(?:temp\w*\s+)?(?:table|view)\s+([`\w.-]+)", re.I | re.M)
_NOT_FOUND = re.compile(r"^Table not found: (\S+)")


def _plain(path: str) -> str:
    """`project`.`dataset`.`table`, `project.dataset.table` and dataset.table alike -> dataset.table."""
    return ".".join(path.replace("`", "").lower().split(".")[-2:])


_TMP_SUFFIX = re.compile(r"__dbt_tmp[0-9]*$")


def _drift(catalog: Catalog, created: tuple[str, str, str], columns: tuple[tuple[str, Any], ...]) -> str | None:
    """An incremental run's temporary table whose columns differ from its model's table (what dbt's
    on_schema_change='fail' and the partition copy jobs refuse), said in one line; else None."""
    project, dataset, name = created
    target = _TMP_SUFFIX.sub("", name)
    existing = catalog.tables.get((project, dataset, target)) if target != name else None
    if existing is None:
        return None
    before = {c: t.SerializeToString() for c, t in existing}
    after = {c: t.SerializeToString() for c, t in columns}
    if before == after:
        return None
    changed = sorted(c for c in before.keys() & after.keys() if before[c] != after[c])
    parts = [f"{what} {', '.join(cols)}" for what, cols in (
        ("adds", sorted(after.keys() - before.keys())), ("drops", sorted(before.keys() - after.keys())),
        ("retypes", changed)) if cols]  # fmt: skip
    return f"the incremental run {'; '.join(parts)} of {target} (its first build's columns)"


def analyze(
    statements: Iterable[Statement], catalog: Catalog, *, cache_dir: Path | None = None
) -> tuple[Counter[str], list[Problem], list[Statement], list[Statement]]:
    """Analyze statements in order. Returns counts per kind, the rejected statements, each statement as analyzed,
    and those skipped because they read a table whose CREATE was rejected (reported once, at its source)."""
    analyzer = SqlAnalyzer(catalog, cache_dir=cache_dir)
    counts: Counter[str] = Counter()
    problems: list[Problem] = []
    analyzed: list[Statement] = []
    skipped: list[Statement] = []
    rejected: set[str] = set()  # tables whose CREATE the analyzer rejected
    try:
        for statement in statements:
            sql = bigquery_aliases(statement.sql)
            before = dict(catalog.tables)
            outcome = analyzer.analyze(sql)
            counts[statement.kind] += 1
            analyzed.append(Statement(statement.kind, statement.name, sql))
            if not outcome.error and outcome.created:
                drift = _drift(Catalog(catalog.project, tables=before), outcome.created, outcome.columns)
                if drift:
                    problems.append(Problem(statement.kind, statement.name, drift))
            if not outcome.error:
                continue
            missing = _NOT_FOUND.match(outcome.error)
            if missing and _plain(missing.group(1)) in rejected:
                skipped.append(statement)
            else:
                problems.append(Problem(statement.kind, statement.name, outcome.error))
            rejected.update(_plain(m) for m in _CREATES.findall(sql))
    finally:
        analyzer.close()
    return counts, problems, analyzed, skipped


def prepare_dump(directory: Path) -> None:
    """Make `directory` ready for a dump before anything runs: writable, and empty or an earlier dump (whose files
    are removed, so no stale statement stays beside the new ones). One-line ConfigError otherwise."""
    import shutil

    from flows.errors import ConfigError

    try:
        if directory.exists() and any(directory.iterdir()):
            if not (directory / "order.txt").is_file():
                raise ConfigError(
                    f"--dump {directory} is not empty and holds no earlier check-sql dump.",
                    "Pass a new or empty folder.",
                )
            for kind in KINDS:
                shutil.rmtree(directory / kind, ignore_errors=True)
            (directory / "order.txt").unlink()
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"Cannot write the dump to {directory}: {exc.strerror or exc}.", "Pass a writable folder."
        ) from None


def dump(statements: Iterable[Statement], directory: Path) -> list[Path]:
    """Write each statement to `directory/<kind>/<name>.sql` (a second one of the same name gets `.2`, ...) and
    `directory/order.txt`, the files in the order they were analyzed."""
    written: list[Path] = []
    seen: Counter[tuple[str, str]] = Counter()
    for statement in statements:
        seen[(statement.kind, statement.name)] += 1
        n = seen[(statement.kind, statement.name)]
        path = directory / statement.kind / (f"{statement.name}.sql" if n == 1 else f"{statement.name}.{n}.sql")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(statement.sql, encoding="utf-8")  # exactly as analyzed
        written.append(path)
    (directory / "order.txt").write_text("".join(f"{p.relative_to(directory)}\n" for p in written), encoding="utf-8")
    return written


def check_sql(
    settings: Settings,
    *,
    dump_dir: Path | None = None,
    build: OfflineBuild | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> CheckReport:
    """Collect, analyze and (optionally) dump every BigQuery-bound statement; see the module doc.

    `build` reuses an offline dbt build made with `offline_settings(settings)`."""
    if dump_dir is not None:
        prepare_dump(dump_dir)  # before the minute of work, not after
    settings = offline_settings(settings)
    statements = collect(settings, build=build, progress=progress)
    progress(f"analyzing {len(statements)} statements with ZetaSQL (GoogleSQL, BigQuery's front end)")
    counts, problems, analyzed, skipped = analyze(statements, raw_catalog(settings), cache_dir=cache_dir(settings))
    report = CheckReport(counts=counts, problems=problems, skipped=len(skipped))
    if dump_dir is not None:
        report.dumped = dump(analyzed, dump_dir)
    return report


def cache_dir(settings: Settings) -> Path:
    """Where the compiled analyzer is kept between runs."""
    return settings.cache_dir.expanduser().resolve()
