"""The dashboard's read-only access to the local DuckDB warehouse: the tables it reads, a `Reader` over them,
and `Unavailable`, the one line a section shows instead of its data (what is missing, what to run)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from flows.errors import PipelineError

RUN_HINT = "run `coincap-pipeline run`"
MARKET_OVERVIEW = "marts.rpt_market_overview_daily"
ASSET_DAILY = "marts.rpt_asset_daily"
EXCHANGE_DAILY = "marts.rpt_exchange_daily"
MARKET_PAIRS = "marts.rpt_market_pairs_daily"
PIPELINE_RUNS = "ops.pipeline_runs"
DQ_RESULTS = "ops.dq_results"

Row = dict[str, Any]


@dataclass(frozen=True)
class Unavailable:
    """A section with nothing to show, and the one line that says why and what to do."""

    reason: str


def snapshot_time(snapshot_id: str | None) -> datetime | None:
    """20261121T053000Z → 2026-11-21 05:30:00+00:00 (None if it is not a snapshot id)."""
    if not snapshot_id:
        return None
    try:
        return datetime.strptime(snapshot_id, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def _clean(value: Any) -> Any:
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Reader:
    """A read-only connection to the warehouse and the list of its tables."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        names = con.execute("select lower(table_schema || '.' || table_name) from information_schema.tables").fetchall()
        self.tables = {n for (n,) in names}

    def has(self, table: str) -> bool:
        return table.lower() in self.tables

    def rows(self, sql: str, params: list[Any] | None = None) -> list[Row]:
        cursor = self.con.execute(sql, params or [])
        names = [d[0] for d in cursor.description or []]
        return [{k: _clean(v) for k, v in zip(names, r, strict=True)} for r in cursor.fetchall()]

    def scalar(self, sql: str, params: list[Any] | None = None) -> Any:
        row = self.con.execute(sql, params or []).fetchone()
        return _clean(row[0]) if row else None


@contextmanager
def open_reader(path: Path) -> Iterator[Reader | None]:
    """Yield a reader over the DuckDB file, or None when it does not exist yet."""
    if not path.exists():
        yield None
        return
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.ConnectionException:
        # this process already holds the file read-write (dbt-duckdb after an in-process build): share it
        con = duckdb.connect(str(path))
    except duckdb.IOException as exc:
        raise PipelineError(
            f"Cannot open the warehouse {path} ({str(exc).splitlines()[0]}).",
            "A pipeline run may be writing it: wait for the run to finish and try again.",
        ) from None
    try:
        con.execute("set TimeZone = 'UTC'")
        con.execute("set enable_progress_bar = false")
        yield Reader(con)
    finally:
        con.close()


def missing(table: str) -> Unavailable:
    """The panel of a table that is not there: build it."""
    return Unavailable(f"{table} does not exist yet: {RUN_HINT} to build it.")


def empty(table: str) -> Unavailable:
    """The panel of a table with no rows yet: take a snapshot."""
    return Unavailable(f"{table} is empty: {RUN_HINT} to take a snapshot.")
