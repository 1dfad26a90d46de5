"""Where price history lives in the lake: `coincap/asset_history/interval=<i>/asset=<id>/<start>_<end>.parquet`.

The backfill writes these files; the dbt build needs the prefix to hold at least one (BigQuery's external table
fails on an empty prefix), which `ensure_history_readable` guarantees with a zero-row placeholder.
"""

from __future__ import annotations

from pathlib import Path

from flows.contracts.datasets import ASSET_HISTORY
from flows.lake.parquet import ZONE_DATA, StagedParquet
from flows.lake.storage import LakeStorage

DATASET = "asset_history"
SKIPPED_DATASET = "asset_history_skipped"

# A zero-row file (schema only) for a lake without history: BigQuery's external table fails on an empty prefix.
# `_placeholder` can never be an asset id (ids start with a letter or digit), so no backfill reads or replaces it.
PLACEHOLDER_KEY = f"{ZONE_DATA}/{DATASET}/interval=d1/asset=_placeholder/0_0.parquet"


def ensure_history_readable(storage: LakeStorage, staging_dir: Path) -> list[str]:
    """Write the placeholder when the lake has no history file yet; return the keys written."""
    if storage.list(f"{ZONE_DATA}/{DATASET}/"):
        return []
    StagedParquet(ASSET_HISTORY.arrow_schema(), staging_dir).publish(storage, PLACEHOLDER_KEY)
    return [PLACEHOLDER_KEY]
