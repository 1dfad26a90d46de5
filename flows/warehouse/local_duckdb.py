"""The local warehouse: the DuckDB file dbt builds, the run-metrics table, and ad-hoc SQL."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import duckdb

from flows.errors import ConfigError, PipelineError

RUNS_SCHEMA = "ops"
RUNS_TABLE = f"{RUNS_SCHEMA}.pipeline_runs"

_RUNS_DDL = f"""
create schema if not exists {RUNS_SCHEMA};
create table if not exists {RUNS_TABLE} (
    flow_run_id varchar,
    snapshot_id varchar not null,
    step varchar not null,           -- a dataset name, or 'dbt'
    status varchar not null,         -- completed | failed
    started_at timestamptz not null,
    seconds double,
    served bigint,
    duplicates bigint,
    valid bigint,
    quarantined bigint,
    pages bigint,
    calls bigint,
    failed_calls bigint,
    retries bigint,
    bytes bigint,
    credits bigint,
    new_fields varchar[],
    files varchar[],
    error varchar,
    recorded_at timestamptz default current_timestamp
);
"""

_COLUMNS = (
    "flow_run_id", "snapshot_id", "step", "status", "started_at", "seconds", "served", "duplicates", "valid",
    "quarantined", "pages", "calls", "failed_calls", "retries", "bytes", "credits", "new_fields", "files", "error",
)  # fmt: skip


class LocalWarehouse:
    """DuckDB access. Connections are short-lived: DuckDB allows one writer, and dbt is that writer during a build."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def uri(self) -> str:
        return str(self.path)

    def _connect(self, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.ConnectionException:
            # dbt-duckdb keeps its read-write connection open in this process after a build, and DuckDB
            # then refuses a second one with a different configuration: share its configuration instead.
            con = duckdb.connect(str(self.path))
        except duckdb.IOException as exc:
            raise PipelineError(
                f"Cannot open the warehouse {self.path} ({str(exc).splitlines()[0]}).",
                "Another process may hold it (a running pipeline or SQL shell): close it and retry.",
            ) from None
        con.execute("set TimeZone = 'UTC'")
        return con

    def record_runs(self, rows: Iterable[dict[str, Any]]) -> None:
        """Append rows to the run-metrics table; a re-run adds rows (runs are events, not state)."""
        rows = list(rows)
        if not rows:
            return
        con = self._connect()
        try:
            con.execute(_RUNS_DDL)
            placeholders = ", ".join("?" for _ in _COLUMNS)
            con.executemany(
                f"insert into {RUNS_TABLE} ({', '.join(_COLUMNS)}) values ({placeholders})",
                [[row.get(c) for c in _COLUMNS] for row in rows],
            )
        finally:
            con.close()

    def query(self, sql: str, params: Sequence[Any] | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run read-only SQL; return (column names, rows). A SQL error becomes one readable line."""
        if not self.path.exists():
            raise ConfigError(
                f"No local warehouse at {self.path} yet.", "Run `coincap-pipeline run` first to build it."
            )
        con = self._connect(read_only=True)
        try:
            cursor = con.execute(sql, params or [])
            names = [d[0] for d in cursor.description or []]
            return names, cursor.fetchall()
        except duckdb.Error as exc:
            raise PipelineError(f"SQL error: {str(exc).splitlines()[0]}", "Fix the query and run it again.") from None
        finally:
            con.close()
