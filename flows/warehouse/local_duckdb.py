"""The local warehouse: the DuckDB file dbt builds, the run-metrics table, and ad-hoc SQL."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import duckdb

from flows.contracts.ops_tables import DQ_COLUMNS, DQ_DDL, DQ_TABLE, RUN_COLUMNS, RUNS_DDL, RUNS_TABLE
from flows.errors import ConfigError, PipelineError
from flows.lake.storage import not_writable
from flows.redaction import redact_row

# How long a connection waits for another process to release the file before giving up with one line.
LOCK_WAIT_S = 15.0


class LocalWarehouse:
    """DuckDB access. Connections are short-lived: DuckDB allows one writer, and dbt is that writer during a build."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def uri(self) -> str:
        return str(self.path)

    def _connect(self, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            permanent = not_writable(exc, self.path.parent)
            if permanent is not None:
                raise permanent from None
            raise
        deadline = time.monotonic() + LOCK_WAIT_S
        delay = 0.05
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only)
                break
            except duckdb.ConnectionException:
                # dbt-duckdb keeps its read-write connection open in this process after a build, and DuckDB
                # then refuses a second one with a different configuration: share its configuration instead.
                con = duckdb.connect(str(self.path))
                break
            except duckdb.IOException as exc:
                # A read-only or full folder is no lock: one line naming it, at once (waiting does not change it).
                permanent = not_writable(exc, self.path)
                if permanent is not None:
                    raise permanent from None
                # Another process (the dashboard, a SQL shell, a parallel run) holds the file for a moment: wait a
                # little, since its connections are short-lived too.
                if "lock" in str(exc).lower() and time.monotonic() < deadline:
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                raise PipelineError(
                    f"Cannot open the warehouse {self.path} ({str(exc).splitlines()[0]}).",
                    "Another process may hold it (a running pipeline or SQL shell): close it and retry.",
                ) from None
        con.execute("set TimeZone = 'UTC'")
        return con

    def record_runs(self, rows: Iterable[dict[str, Any]]) -> None:
        """Append rows to the run-metrics table; a re-run adds rows (runs are events, not state)."""
        self._append(RUNS_DDL, RUNS_TABLE, RUN_COLUMNS, rows)

    def ensure_ops_tables(self) -> None:
        """Create the ops tables (run metrics, data-quality results) if missing, so dbt's views on them build."""
        con = self._connect()
        try:
            con.execute(RUNS_DDL)
            con.execute(DQ_DDL)
        finally:
            con.close()

    def record_checks(self, rows: Iterable[dict[str, Any]]) -> None:
        """Append data-quality results (one row per check per quality run) to ops.dq_results."""
        self._append(DQ_DDL, DQ_TABLE, DQ_COLUMNS, rows)

    def _append(self, ddl: str, table: str, columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> None:
        rows = [redact_row(row) for row in rows]  # error and detail texts: never a key or credential on disk
        if not rows:
            return
        con = self._connect()
        try:
            con.execute(ddl)
            placeholders = ", ".join("?" for _ in columns)
            con.executemany(
                f"insert into {table} ({', '.join(columns)}) values ({placeholders})",
                [[row.get(c) for c in columns] for row in rows],
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
