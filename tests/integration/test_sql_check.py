"""`coincap-pipeline check-sql`: Google's ZetaSQL analyzer (BigQuery's front end) checks every BigQuery-bound
statement offline.

What differs from BigQuery here, and why the checks still hold:
- BigQuery's INT64 aliases (`bigint`, `int`, ...) are unknown to ZetaSQL: check-sql rewrites them to INT64 before
  analysis (outside literals and comments), and the dump holds the rewritten text.
- The analyzer checks names and types under GoogleSQL's rules with BigQuery's product mode; it does not know
  BigQuery's quotas, option values, or required partition filters (preflight's dry run on a real project does).

The independent check below builds its catalog only from terraform/ (the external tables' schema files and the
hive keys in their `source_uri_prefix`) and the ops tables' DDL, through zetasql's own Python API, and analyzes
the dumped files in the order check-sql wrote them: nothing of flows/ops/sql_check takes part in it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flows.ops.sql_check.analyzer import Catalog, SqlAnalyzer, bigquery_aliases, zeta_type
from flows.ops.sql_check.check import (
    CheckReport,
    Statement,
    analyze,
    check_sql,
    offline_settings,
    raw_catalog,
    readme_statements,
)
from flows.paths import PROJECT_ROOT
from flows.settings import Settings

ROOT = PROJECT_ROOT
PROJECT = "example-project"


@pytest.fixture(scope="module")
def checked(
    bigquery_offline: tuple[Settings, Any], tmp_path_factory: pytest.TempPathFactory
) -> tuple[CheckReport, Path]:
    settings, build = bigquery_offline
    dump = tmp_path_factory.mktemp("check-sql-dump")
    return check_sql(settings, build=build, dump_dir=dump), dump


@pytest.fixture(scope="module")
def analyzer_catalog() -> Catalog:
    settings = offline_settings(Settings(_env_file=None, PIPELINE_TARGET="gcp", GCP_PROJECT_ID=PROJECT))  # type: ignore[call-arg]
    return raw_catalog(settings)


# ------------------------------------------------------------------------------------------------ on main


@pytest.mark.slow
def test_check_sql_accepts_every_statement_bigquery_would_run(checked, bigquery_offline) -> None:
    report, _ = checked
    _, build = bigquery_offline
    assert report.ok, "\n".join(p.line() for p in report.problems)
    nodes = build.manifest["nodes"].values()
    models = [n for n in nodes if n["resource_type"] == "model"]
    data_tests = [n for n in nodes if n["resource_type"] == "test"]
    assert report.counts["model"] == len(models) >= 20
    stored = [n for n in data_tests if n["config"].get("store_failures")]  # CREATE TABLE of the failures, then a count
    assert report.counts["data-test"] == len(data_tests) + len(stored) > 150
    assert report.counts["model-incremental"] >= len(models)  # incremental tables send several statements
    assert report.counts["preflight"] == len(models)

    from flows.ops.looker import load_report
    from flows.quality import CHECKS

    sql_checks = [c for c in CHECKS if c.name != "freshness.lake_sources"]  # that one runs dbt source freshness
    sources_with_freshness = 5  # the four snapshot datasets and the price stream
    assert report.counts["quality"] >= len(sql_checks) + sources_with_freshness
    charts = sum(len(p.charts) for p in load_report().pages)
    assert report.counts["looker"] > charts
    assert report.counts["readme"] >= 1


@pytest.mark.slow
def test_the_dump_holds_every_statement_as_analyzed_in_order(checked) -> None:
    report, dump = checked
    order = (dump / "order.txt").read_text().split()
    assert len(order) == sum(report.counts.values()) == len(set(order))
    assert {p.split("/")[0] for p in order} == {k for k, n in report.counts.items() if n}
    first = (dump / "model" / "int_asset_snapshots_daily.sql").read_text().strip()
    assert first.startswith(f"create or replace view `{PROJECT}`.`coincap_staging`.`int_asset_snapshots_daily`")
    assert "cast(null as timestamp) as first_snapshot_ts" in first
    assert not re.search(r"\bas bigint\b", first, re.I)  # the INT64 alias, rewritten as analyzed


@pytest.mark.slow
def test_every_dumped_statement_passes_an_independent_analysis(checked) -> None:
    """Bar: each dumped statement is also accepted by the analyzer with a catalog from terraform/ and the ops DDL."""
    from zetasql.core.exceptions import ServerError

    _, dump = checked
    service, options, catalog = _independent_analyzer()
    registered = None
    rejected = []
    for relative in (dump / "order.txt").read_text().split():
        sql = (dump / relative).read_text()
        if registered is None:
            registered = service.register_catalog(simple_catalog=catalog.proto()).registered_id
        try:
            resolved = service.analyze(sql_statement=sql, options=options, registered_catalog_id=registered)
        except ServerError as exc:
            rejected.append(f"{relative}: {exc}")
            continue
        if catalog.add_created(resolved.resolved_statement):
            service.unregister_catalog(registered_id=registered)
            registered = None
    assert rejected == []


# ------------------------------------------------------------------------------------------------ can fail


@pytest.mark.slow
def test_check_sql_fails_on_a_planted_bigquery_type_error(tmp_path: Path) -> None:
    """The bug that broke every first BigQuery build: a bare NULL through a CTE into a UNION ALL with TIMESTAMPs.
    DuckDB and sqlglot accept it; the command must not."""
    project = tmp_path / "dbt"
    shutil.copytree(ROOT / "dbt", project, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    model = project / "models" / "intermediate" / "int_asset_snapshots_daily.sql"
    text = model.read_text()
    planted = text.replace("cast(null as {{ dbt.type_timestamp() }}) as first_snapshot_ts", "null as first_snapshot_ts")
    assert planted != text
    model.write_text(planted)
    env = {**os.environ, "PIPELINE_DBT_PROJECT_DIR": str(project), "PIPELINE_DATA_DIR": str(tmp_path / "data")}
    env.pop("PIPELINE_TARGET", None)
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "check-sql", "--dump", str(tmp_path / "dump")],
        env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 7, done.stdout + done.stderr
    assert (
        "int_asset_snapshots_daily (model): Column 4 in UNION ALL has incompatible types: TIMESTAMP, INT64"
        in done.stdout
    ), done.stdout
    assert "int_asset_snapshots_daily (model-incremental)" in done.stdout
    assert "more read what a rejected statement creates" in done.stdout  # fct_asset_daily etc., said once
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: Google's SQL analyzer rejected") and "--dump DIR" in last, done.stderr
    assert (tmp_path / "dump" / "model" / "int_asset_snapshots_daily.sql").exists()


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        (  # BigQuery types a bare NULL in a CTE as INT64
            "with h as (select asset_id, null as ts from `example-project`.`coincap_staging`.`v`)"
            " select asset_id, ts from `example-project`.`coincap_staging`.`v` union all select * from h",
            "Column 2 in UNION ALL has incompatible types: TIMESTAMP, INT64",
        ),
        ("select 1 as one where 1 = 0", "Query without FROM clause cannot have a WHERE clause"),
        ("select median(price) from `example-project.coincap_staging.v`", "Function not found: median"),
        ("select asset_id from coincap_staging.v where ts > 5", "No matching signature for operator >"),
        ("select avg(asset_id) from coincap_staging.v", "No matching signature for aggregate function AVG"),
        ("select nope from `example-project`.`coincap_staging`.`v`", "Unrecognized name: nope"),
        ("select cast(1 as int32)", "Type not found: int32"),  # BigQuery's external product mode
    ],
)
def test_the_analyzer_rejects_what_bigquery_rejects(analyzer_catalog: Catalog, sql: str, message: str) -> None:
    catalog = _with_view(analyzer_catalog)
    outcome = SqlAnalyzer(catalog).analyze(bigquery_aliases(sql))
    assert outcome.error is not None and message in outcome.error, outcome.error


def test_names_resolve_the_ways_bigquery_resolves_them(analyzer_catalog: Catalog) -> None:
    catalog = _with_view(analyzer_catalog)
    analyzer = SqlAnalyzer(catalog)
    for table in (
        "`example-project`.`coincap_staging`.`v`",
        "`example-project.coincap_staging.v`",
        "coincap_staging.v",
        "`example-project`.coincap_raw.assets",
    ):
        assert analyzer.analyze(f"select * from {table}").error is None, table
    assert analyzer.analyze("select * from v").error is not None  # staging is not the default dataset
    partitions = (
        "select max(partition_id) from `example-project`.`coincap_marts`.INFORMATION_SCHEMA.PARTITIONS"
        " where table_name = 'x' and total_rows > 0"
    )
    assert analyzer.analyze(partitions).error is None
    # the hive partition columns are there, typed as Terraform's source_uri_prefix declares them
    assert analyzer.analyze("select 1 from coincap_raw.assets where dt >= date '2026-01-01'").error is None
    history = "select 1 from coincap_raw.asset_history where `interval` = 'd1' and asset = 'bitcoin'"
    assert analyzer.analyze(history).error is None


def test_a_created_view_carries_its_resolved_types_downstream(analyzer_catalog: Catalog) -> None:
    catalog = _with_view(analyzer_catalog)
    analyzer = SqlAnalyzer(catalog)
    created = analyzer.analyze(
        "create or replace view `example-project`.`coincap_marts`.`w` as "
        "select asset_id, cast(null as int64) as n from `example-project`.`coincap_staging`.`v`"
    )
    assert created.error is None and created.created == (PROJECT, "coincap_marts", "w")
    assert analyzer.analyze("select asset_id from w where n = 1").error is None  # marts: the default dataset
    assert "No matching signature" in (analyzer.analyze("select 1 from w where n = current_date()").error or "")


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("cast(x as bigint)", "cast(x as INT64)"),
        ("cast(x as BIGINT), cast(y as integer)", "cast(x as INT64), cast(y as INT64)"),
        ("select 'bigint' as t -- a bigint\n", "select 'bigint' as t -- a bigint\n"),
        ('select """int""", `int`', 'select """int""", `int`'),
        ("select interval_x, point, intx", "select interval_x, point, intx"),
    ],
)
def test_integer_aliases_are_rewritten_only_in_code(sql: str, expected: str) -> None:
    assert bigquery_aliases(sql) == expected


def test_a_looker_chart_that_averages_text_is_caught(analyzer_catalog: Catalog) -> None:
    from dataclasses import replace

    from flows.ops.looker import Metric, load_report, report_queries

    report = load_report()
    page = report.pages[0]
    chart = replace(page.charts[0], metrics=(Metric(field="asset_symbol", aggregation="avg"),))
    broken = replace(report, pages=(replace(page, charts=(chart,)),))
    catalog = _with_view(analyzer_catalog)
    catalog.add("coincap_marts", "rpt_market_overview_daily", [("report_date", zeta_type("DATE")),
                ("asset_symbol", zeta_type("STRING")), ("is_latest_day", zeta_type("BOOL"))])  # fmt: skip
    (sql,) = report_queries(broken, PROJECT, "coincap_marts").values()
    _, problems, _, _ = analyze([Statement("looker", "planted", sql)], catalog)
    assert [p.message for p in problems] == [
        "No matching signature for aggregate function AVG for argument types: STRING. Supported signatures: "
        "AVG(INT64); AVG(UINT64); AVG(DOUBLE); AVG(NUMERIC); AVG(BIGNUMERIC); AVG(INTERVAL) [at 1:8]"
    ] or "AVG" in problems[0].message


def test_readme_examples_are_found_and_a_wrong_one_is_caught(tmp_path: Path, analyzer_catalog: Catalog) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        "PIPELINE_TARGET=gcp .venv/bin/coincap-pipeline sql"
        ' "select * from coincap_raw.assets where dt >= current_date() - 7"\n'
        "PIPELINE_TARGET=gcp coincap-pipeline sql 'select no_such_column from coincap_raw.assets'\n"
        'coincap-pipeline sql "select * from marts.local_only"\n'  # the local target: not BigQuery's
    )
    found = readme_statements(readme)
    assert list(found) == ["example_1", "example_2"]
    _, problems, _, _ = analyze([Statement("readme", n, s) for n, s in found.items()], _with_view(analyzer_catalog))
    assert [(p.name, p.message.split(" [")[0]) for p in problems] == [
        ("example_2", "Unrecognized name: no_such_column")
    ]


def test_the_catalog_s_raw_tables_are_terraform_s(analyzer_catalog: Catalog) -> None:
    """check-sql builds its raw tables from the contracts; Terraform reads committed files generated from them.
    Both must give the same columns, partition keys included."""
    terraform = _terraform_tables()
    for (_, dataset, name), columns in analyzer_catalog.tables.items():
        if dataset != "coincap_raw":
            continue
        assert [c for c, _ in columns] == [f["name"] for f in terraform[name]], name
        assert [t.SerializeToString() for _, t in columns] == [
            zeta_type(f["type"], f["mode"]).SerializeToString() for f in terraform[name]
        ], name
    assert set(terraform) == {n for (_, d, n) in analyzer_catalog.tables if d == "coincap_raw"}


# ------------------------------------------------------------------------------------------------ helpers


def _with_view(base: Catalog) -> Catalog:
    catalog = Catalog(base.project, base.default_dataset, tables=dict(base.tables), datasets=set(base.datasets))
    catalog.add("coincap_staging", "v", [("asset_id", zeta_type("STRING")), ("ts", zeta_type("TIMESTAMP")),
                                         ("price", zeta_type("FLOAT64"))])  # fmt: skip
    return catalog


_HIVE_KEY = re.compile(r"\{(\w+):(\w+)\}")


def _terraform_tables() -> dict[str, list[dict[str, str]]]:
    """Raw external tables as Terraform defines them: each schema file plus the hive keys its table declares."""
    main = (ROOT / "terraform" / "modules" / "bigquery" / "main.tf").read_text()
    history = re.search(r'history_table\s*=\s*"(\w+)"', main).group(1)  # type: ignore[union-attr]
    prefixes = re.findall(r'source_uri_prefix\s*=\s*"([^"]+)"', main)
    keys_for: dict[str, list[tuple[str, str]]] = {}
    for prefix in prefixes:
        keys = _HIVE_KEY.findall(prefix)
        keys_for["history" if "history_table" in prefix else "each"] = keys
    tables = {}
    for path in sorted((ROOT / "terraform" / "modules" / "bigquery" / "schemas").glob("*.json")):
        fields = json.loads(path.read_text())
        keys = keys_for["history" if path.stem == history else "each"]
        tables[path.stem] = [*fields, *({"name": k, "type": t, "mode": "NULLABLE"} for k, t in keys)]
    return tables


class _IndependentCatalog:
    """Tables by (project, dataset, name) as zetasql's own SimpleCatalog models, nested the way names resolve."""

    def __init__(self, language: Any) -> None:
        self.language = language
        self.tables: dict[tuple[str, str, str], list[tuple[str, Any]]] = {}

    def add(self, dataset: str, name: str, columns: list[tuple[str, Any]], project: str = PROJECT) -> None:
        self.tables[(project, dataset, name)] = columns

    def add_created(self, resolved: Any) -> bool:
        stmt = resolved
        kind = type(stmt).__name__
        if kind not in {"ResolvedCreateTableAsSelectStmt", "ResolvedCreateViewStmt"}:
            return False
        if kind == "ResolvedCreateViewStmt":
            columns = [(c.name, c.column.type) for c in stmt.output_column_list]
        else:
            columns = [(c.name, c.type) for c in stmt.column_definition_list]
        parts = [p for part in stmt.name_path for p in part.split(".")]
        self.add(parts[-2], parts[-1], columns, project=parts[0] if len(parts) == 3 else PROJECT)
        return True

    def proto(self) -> Any:
        from zetasql.types import SimpleCatalog, SimpleColumn, SimpleTable, ZetaSQLBuiltinFunctionOptions

        def table(name: str, columns: list[tuple[str, Any]]) -> Any:
            return SimpleTable(name=name, column=[SimpleColumn(name=c, type=t) for c, t in columns])

        partitions = table("PARTITIONS", [(c, _simple(t)) for c, t in [
            ("table_name", "STRING"), ("partition_id", "STRING"), ("total_rows", "INT64")]])  # fmt: skip
        datasets: dict[str, list[Any]] = {}
        dotted = []
        for (project, dataset, name), columns in self.tables.items():
            datasets.setdefault(dataset, []).append(table(name, columns))
            dotted.append(table(f"{project}.{dataset}.{name}", columns))
            if dataset == "coincap_marts":
                dotted.append(table(name, columns))  # the `sql` command's default dataset
        schemas = [
            SimpleCatalog(name=d, table=ts, catalog=[SimpleCatalog(name="INFORMATION_SCHEMA", table=[partitions])])
            for d, ts in datasets.items()
        ]
        return SimpleCatalog(
            name="independent",
            table=dotted,
            catalog=[SimpleCatalog(name=PROJECT, catalog=schemas), *schemas],
            builtin_function_options=ZetaSQLBuiltinFunctionOptions(language_options=self.language),
        )


def _simple(kind: str) -> Any:
    from zetasql.api import TypeFactory
    from zetasql.types import TypeKind

    names = {"STRING": "TYPE_STRING", "INT64": "TYPE_INT64", "INTEGER": "TYPE_INT64", "FLOAT64": "TYPE_DOUBLE",
             "FLOAT": "TYPE_DOUBLE", "BOOL": "TYPE_BOOL", "BOOLEAN": "TYPE_BOOL", "BIGNUMERIC": "TYPE_BIGNUMERIC",
             "NUMERIC": "TYPE_NUMERIC", "DATE": "TYPE_DATE", "TIMESTAMP": "TYPE_TIMESTAMP"}  # fmt: skip
    return TypeFactory.create_simple_type(getattr(TypeKind, names[kind]))


def _independent_analyzer() -> tuple[Any, Any, _IndependentCatalog]:
    from zetasql.api import TypeFactory
    from zetasql.core.local_service import ZetaSqlLocalService
    from zetasql.types import AnalyzerOptions, ProductMode

    from flows.contracts.ops_tables import DQ_DDL, RUNS_DDL
    from flows.ops.sql_check.analyzer import wasm_client  # only the loaded WebAssembly module is shared

    service = ZetaSqlLocalService.__new__(ZetaSqlLocalService)
    service.wasm_client = wasm_client(Settings(_env_file=None).cache_dir)  # type: ignore[call-arg]
    language = service.get_language_options(maximum_features=True)
    language.product_mode = ProductMode.PRODUCT_EXTERNAL
    language.supported_statement_kinds = []
    catalog = _IndependentCatalog(language)
    for name, fields in _terraform_tables().items():
        columns = []
        for f in fields:
            kind = _simple(f["type"])
            columns.append((f["name"], TypeFactory.create_array_type(kind) if f["mode"] == "REPEATED" else kind))
        catalog.add("coincap_raw", name, columns)
    for ddl in (RUNS_DDL, DQ_DDL):
        catalog.add("coincap_ops", *_duckdb_table(ddl))
    return service, AnalyzerOptions(language_options=language, default_timezone="UTC"), catalog


def _duckdb_table(ddl: str) -> tuple[str, list[tuple[str, Any]]]:
    """An ops table's columns read from its DuckDB DDL by DuckDB itself, mapped to BigQuery types."""
    import duckdb
    from zetasql.api import TypeFactory

    types = {"VARCHAR": "STRING", "BIGINT": "INT64", "INTEGER": "INT64", "DOUBLE": "FLOAT64", "BOOLEAN": "BOOL",
             "DATE": "DATE", "TIMESTAMP WITH TIME ZONE": "TIMESTAMP"}  # fmt: skip
    with duckdb.connect() as con:
        con.execute(ddl)
        ((schema, name),) = con.execute("select schema_name, table_name from duckdb_tables()").fetchall()
        described = con.execute(f"describe {schema}.{name}").fetchall()
    columns = []
    for column, kind, *_ in described:
        if kind.endswith("[]"):
            columns.append((column, TypeFactory.create_array_type(_simple(types[kind[:-2]]))))
        else:
            columns.append((column, _simple(types[kind])))
    return name, columns


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (["example-project", "coincap_marts", "t"], ("example-project", "coincap_marts", "t")),
        (["example-project.coincap_marts.t"], ("example-project", "coincap_marts", "t")),
        (["coincap_marts.t"], (PROJECT, "coincap_marts", "t")),
        (["coincap_marts", "t"], (PROJECT, "coincap_marts", "t")),
        (["t"], (PROJECT, "coincap_marts", "t")),
        (["example.com:proj-1", "coincap_marts", "t"], ("example.com:proj-1", "coincap_marts", "t")),
        (["example.com:proj-1.coincap_marts.t"], ("example.com:proj-1", "coincap_marts", "t")),
    ],
)
def test_created_tables_land_where_bigquery_puts_them(path: list[str], expected: tuple[str, str, str]) -> None:
    from flows.ops.sql_check.analyzer import table_path

    assert table_path(path, Catalog(PROJECT, default_dataset="coincap_marts")) == expected


def test_an_incremental_run_that_retypes_a_column_is_caught(analyzer_catalog: Catalog) -> None:
    """dbt's on_schema_change='fail' (and the partition copy jobs) refuse a temporary table whose columns differ
    from the model's table: the stubbed connection cannot see that, the analyzer's types can."""
    table = "create or replace table `example-project`.`coincap_marts`"
    first = f"{table}.`fct_x` as select cast(1.5 as bignumeric) as r"
    later = f"{table}.`fct_x__dbt_tmp123` as select 1.5 as r"  # FLOAT64 now
    same = f"{table}.`fct_x__dbt_tmp456` as select cast(2 as bignumeric) as r"
    statements = [Statement("model", "fct_x", first), Statement("model-incremental", "fct_x", later),
                  Statement("model-incremental", "fct_x", same)]  # fmt: skip
    _, problems, _, _ = analyze(statements, _with_view(analyzer_catalog))
    assert [p.line() for p in problems] == [
        "fct_x (model-incremental): the incremental run retypes r of fct_x (its first build's columns)"
    ]


def test_readme_examples_follow_the_dataset_prefix(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text('PIPELINE_TARGET=gcp coincap-pipeline sql "select * from coincap_marts.t join coincap_ops.r"\n')
    prefixed = offline_settings(Settings(_env_file=None, GCP_PROJECT_ID=PROJECT, BQ_DATASET_PREFIX="cc_"))  # type: ignore[call-arg]
    assert readme_statements(readme, settings=prefixed) == {"example_1": "select * from cc_marts.t join cc_ops.r"}


def test_the_dump_folder_is_checked_before_the_work_and_an_old_dump_is_replaced(tmp_path: Path) -> None:
    from flows.errors import ConfigError
    from flows.ops.sql_check.check import dump, prepare_dump

    folder = tmp_path / "dump"
    dump([Statement("model", "a", "select 1"), Statement("model", "a", "select 2")], folder)
    assert (folder / "order.txt").read_text() == "model/a.sql\nmodel/a.2.sql\n"
    prepare_dump(folder)  # an earlier dump: its files go, so no stale statement stays beside new ones
    assert list(folder.iterdir()) == []
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty and holds no earlier check-sql dump"):
        prepare_dump(folder)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="Cannot write the dump"):
        prepare_dump(blocker / "sub")
