"""Pick the warehouse for the configured target."""

from __future__ import annotations

from flows.errors import ConfigError
from flows.settings import Settings, Target
from flows.warehouse.local_duckdb import LocalWarehouse


def warehouse(settings: Settings) -> LocalWarehouse:
    """The warehouse for `settings.target`."""
    if settings.target is Target.local:
        return LocalWarehouse(settings.duckdb_path)
    raise ConfigError(
        f"The {settings.target.value} warehouse is not available in this version.",
        "Set PIPELINE_TARGET=local (or leave it unset).",
    )
