"""The dbt project on the BigQuery target without BigQuery: dbt's own runner with a stubbed connection.

`compile_offline(settings)` runs dbt for real on the gcp target (profile, materializations, dispatched macros);
only the connection is replaced: a small in-memory catalog answers dbt's API calls, and every SQL statement dbt
would send is recorded instead of run. Two passes: a first build (the raw external tables and the ops tables
exist, as after `terraform apply`; nothing dbt builds does: CREATE TABLE/VIEW, data tests) and an incremental
run (every table exists: insert_overwrite with copy jobs). No credentials, no network.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from unittest import mock

from flows.settings import Settings
from flows.warehouse.dbt import DbtOutcome, run_dbt

LATEST_LOADED_DAY = "2026-11-20"  # what the stub answers when a model asks for its latest loaded partition
OPS_TABLES = ("pipeline_runs", "dq_results")  # written by the pipeline, not by dbt; read by report views


@dataclass
class FakeCatalog:
    """What dbt asks the BigQuery API, answered from memory; `tables` maps 'dataset.table' to a Table."""

    project: str
    columns: dict[str, list[str]]  # model alias -> its documented columns
    tables: dict[str, Any] = field(default_factory=dict)
    statements: list[tuple[str, str]] = field(default_factory=list)  # (node unique id, SQL)
    copies: list[tuple[list[str], str, str]] = field(default_factory=list)  # (sources, destination, disposition)

    def add(self, dataset: str, name: str, kind: str) -> None:
        from google.cloud import bigquery

        base = re.sub(r"__dbt_tmp[0-9]*$", "", name)  # a temporary table has its model's columns
        schema = [bigquery.SchemaField(c, "STRING") for c in self.columns.get(base, [])]
        table = bigquery.Table(f"{self.project}.{dataset}.{name}", schema=schema)
        table._properties["type"] = kind.upper()
        self.tables[f"{dataset}.{name}"] = table


class FakeClient:
    """The few `google.cloud.bigquery.Client` calls dbt makes outside queries."""

    def __init__(self, catalog: FakeCatalog) -> None:
        self.catalog = catalog

    def get_table(self, ref: Any, **_: Any) -> Any:
        from google.api_core.exceptions import NotFound

        key = f"{ref.dataset_id}.{ref.table_id}"
        if key not in self.catalog.tables:
            raise NotFound(f"Not found: Table {self.catalog.project}:{key}")
        return copy.deepcopy(self.catalog.tables[key])

    def list_tables(self, dataset: Any, **_: Any) -> list[Any]:
        return [t for key, t in self.catalog.tables.items() if key.split(".")[0] == dataset.dataset_id]

    def list_routines(self, dataset: Any, **_: Any) -> list[Any]:
        return []

    def get_routine(self, ref: Any, **_: Any) -> Any:
        from google.api_core.exceptions import NotFound

        raise NotFound(f"Not found: Routine {ref}")

    def list_datasets(self, project: str | None = None, **_: Any) -> list[Any]:
        from google.cloud import bigquery

        datasets = sorted({k.split(".")[0] for k in self.catalog.tables})
        return [bigquery.Dataset(f"{self.catalog.project}.{d}") for d in datasets]

    def create_dataset(self, dataset: Any, **_: Any) -> Any:
        return dataset

    def update_table(self, table: Any, fields: list[str], **_: Any) -> Any:
        return table

    def delete_table(self, ref: Any, **_: Any) -> None:
        return None

    def copy_table(self, sources: list[Any], destination: Any, job_config: Any, **_: Any) -> Any:
        self.catalog.copies.append(([s.table_id for s in sources], destination.table_id, job_config.write_disposition))
        return mock.Mock()  # a copy job: .result() returns at once

    def close(self) -> None:
        return None

    def query(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"dbt sent a query outside the stubbed execute: {args} {kwargs}")


_CREATED = re.compile(r"create or replace (table|view) `[^`]+`\.`([^`]+)`\.`([^`]+)`", re.IGNORECASE)


@contextmanager
def stubbed_bigquery(catalog: FakeCatalog) -> Iterator[None]:
    """Patch dbt-bigquery's connection: a FakeClient as the handle, statements recorded instead of run."""
    from dbt.adapters.bigquery.connections import BigQueryAdapterResponse, BigQueryConnectionManager
    from dbt.adapters.contracts.connection import ConnectionState
    from dbt_common.clients import agate_helper

    def open_connection(cls: type, connection: Any) -> Any:
        connection.handle = FakeClient(catalog)
        connection.state = ConnectionState.OPEN
        return connection

    def execute(self: Any, sql: str, auto_begin: bool = False, fetch: bool | None = None, limit: Any = None) -> Any:
        node = self.get_thread_connection().name
        catalog.statements.append((node, sql))
        for kind, dataset, name in _CREATED.findall(sql):
            if f"{dataset}.{name}" not in catalog.tables:
                catalog.add(dataset, name, kind)
        if fetch and node.startswith("test."):  # a data test: no failures
            row = {"failures": 0, "should_warn": False, "should_error": False}
            table = agate_helper.table_from_data_flat([row], list(row))
        elif fetch and node.startswith("source."):  # dbt source freshness: loaded just now
            now = datetime.now(UTC)
            row = {"max_loaded_at": now, "snapshotted_at": now}
            table = agate_helper.table_from_data_flat([row], list(row))
        elif fetch:  # latest_loaded_day's partition query, or the partitions of a temporary table to copy
            day = date.fromisoformat(LATEST_LOADED_DAY)
            table = agate_helper.table_from_data_flat([{"day": day}], ["day"])
        else:
            table = agate_helper.empty_table()
        return BigQueryAdapterResponse(_message="OK"), table

    with (
        mock.patch.object(BigQueryConnectionManager, "open", classmethod(open_connection)),
        mock.patch.object(BigQueryConnectionManager, "execute", execute),
    ):
        yield


@dataclass
class OfflineBuild:
    """What dbt would send BigQuery on a first build and on an incremental run, per node, in execution order."""

    settings: Settings
    manifest: dict[str, Any]
    first: DbtOutcome
    incremental: DbtOutcome
    first_sql: list[tuple[str, str]]  # (node unique id, statement), in the order dbt sent them
    incremental_sql: list[tuple[str, str]]
    freshness_sql: list[tuple[str, str]]  # `dbt source freshness` (the data-quality freshness checks run it)
    copies: list[tuple[list[str], str, str]]  # copy jobs of the incremental run (sources, destination, disposition)

    def by_node(self, which: str) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = {}
        for node, sql in self.first_sql if which == "first" else self.incremental_sql:
            grouped.setdefault(node, []).append(sql)
        return grouped

    def node(self, name: str) -> dict[str, Any]:
        return next(n for n in self.manifest["nodes"].values() if n["resource_type"] == "model" and n["name"] == name)


def compile_offline(settings: Settings, *, raw_tables: list[str] | None = None) -> OfflineBuild:
    """Run the gcp target's first build and an incremental run with the connection stubbed; see the module doc.

    `raw_tables` are the external tables `terraform apply` created in the raw dataset (default: every lake table).
    Environment variables dbt needs are restored afterwards.
    """
    from flows.contracts.bigquery import lake_tables

    project = settings.gcp_project or "example-project"
    saved_env = dict(os.environ)  # run_dbt exports the gcp settings: the caller must not see them afterwards
    try:
        run_dbt(settings, "parse")
        target = settings.data_dir.resolve() / "dbt" / "target"
        parsed = json.loads((target / "manifest.json").read_text())
        models = [n for n in parsed["nodes"].values() if n["resource_type"] == "model"]
        catalog = FakeCatalog(project=project, columns={n["alias"]: list(n["columns"]) for n in models})
        for name in lake_tables() if raw_tables is None else raw_tables:
            catalog.add(settings.bq_dataset("raw"), name, "external")
        for ops_table in OPS_TABLES:
            catalog.add(settings.bq_dataset("ops"), ops_table, "table")
        with stubbed_bigquery(catalog):
            first = run_dbt(settings, "build", "--exclude-resource-type", "unit_test", raise_on_failure=False)
        first_sql = list(catalog.statements)
        catalog.statements.clear()
        with stubbed_bigquery(catalog):  # every table exists now: the incremental branch
            incremental = run_dbt(settings, "run", raise_on_failure=False)
        manifest = json.loads((target / "manifest.json").read_text())
        incremental_sql = list(catalog.statements)
        catalog.statements.clear()
        from flows.quality.freshness import freshness_vars_args  # the thresholds dbt reads as vars

        with stubbed_bigquery(catalog):
            freshness = run_dbt(settings, "source freshness", *freshness_vars_args(settings), raise_on_failure=False)
        incremental.failures += [f"source freshness: {f}" for f in freshness.failures]
        return OfflineBuild(
            settings, manifest, first, incremental, first_sql, incremental_sql, list(catalog.statements),
            catalog.copies,
        )  # fmt: skip
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
