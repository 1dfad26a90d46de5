"""The snapshot datasets, named once.

Every snapshot reads these four CoinCap listings under one snapshot id, in this order (a run publishes them in it).
The rest of what the pipeline knows about a dataset hangs off its name: its endpoint (`flows.coincap.endpoints.
ENDPOINTS`), its contract and natural key (`flows.contracts.datasets.CONTRACTS`), its lake prefix
(`coincap/<name>/`) and its staging model (`stg_coincap__<name>`). History and the price stream are datasets of
their own kind (not snapshots) and are not listed here.

This module imports nothing of the project, so every layer (the stand-in included) may read it.
"""

from __future__ import annotations

from typing import Literal, get_args

Dataset = Literal["assets", "rates", "exchanges", "markets"]
SNAPSHOT_DATASETS: tuple[Dataset, ...] = get_args(Dataset)

# Which datasets each flow refreshes (by the flow function's name, as `prefect.yaml` entrypoints name them).
FLOW_DATASETS: dict[str, tuple[Dataset, ...]] = {
    "snapshot_flow": SNAPSHOT_DATASETS,
    **{f"{d}_flow": (d,) for d in SNAPSHOT_DATASETS},
}
