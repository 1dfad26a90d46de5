"""Pick the warehouse for the configured target."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from flows.settings import Settings, Target
from flows.warehouse.local_duckdb import LocalWarehouse


class Warehouse(Protocol):
    """What the pipeline and the CLI use: the run-metrics table and ad-hoc SQL."""

    @property
    def uri(self) -> str: ...

    def record_runs(self, rows: Iterable[dict[str, Any]]) -> None: ...

    def record_checks(self, rows: Iterable[dict[str, Any]]) -> None: ...

    def ensure_ops_tables(self) -> None: ...

    def query(self, sql: str, params: Sequence[Any] | None = None) -> tuple[list[str], list[tuple[Any, ...]]]: ...


def warehouse(settings: Settings) -> Warehouse:
    """The warehouse for `settings.target`: DuckDB locally, BigQuery on gcp (its client is created on first use)."""
    if settings.target is Target.gcp:
        from flows.warehouse.bigquery import BigQueryWarehouse  # google-cloud-bigquery takes ~1 s to import

        return BigQueryWarehouse(settings)
    return LocalWarehouse(settings.duckdb_path)
