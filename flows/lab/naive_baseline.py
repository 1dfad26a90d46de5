"""The naive baseline the benchmark compares against: how CoinCap seed projects load a snapshot.

`requests.get` per page (the same server and paging as the pipeline: `limit=2000&offset=…` until a short page),
`response.json()`, `pd.json_normalize(data)`, then `DataFrame.to_sql(..., method=None)`, which inserts row by
row (`executemany`) into SQLite. Written honestly, as such a project would be, and not slowed down on purpose;
it validates nothing, keeps every number as the string CoinCap sent, and never deduplicates.

Two things any such loader has to do to load v3 data at all, and does here:
- `max_level=0`: flattening the assets' `tokens` object makes one `tokens.<chain id>` column per chain, a
  different set on every page, which `to_sql(if_exists="append")` cannot append;
- nested values (`tokens`) are stored as JSON text: SQLite cannot bind a dict or a list.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import requests

from flows.coincap.endpoints import ENDPOINTS
from flows.datasets import SNAPSHOT_DATASETS

PAGE_LIMIT = 2000
PAGINATED = {dataset: endpoint.paginated for dataset, endpoint in ENDPOINTS.items()}  # CoinCap v3's listings


@dataclass
class NaiveResult:
    """What the baseline loaded, and its seconds per stage (they add up to `wall_s`, give or take a commit)."""

    records: int  # received from the API
    rows: int  # in the SQLite tables afterwards
    calls: int
    fetch_s: float  # requests.get + response.json()
    normalize_s: float  # pd.json_normalize (+ nested values to JSON text)
    insert_s: float  # DataFrame.to_sql
    wall_s: float


def load_snapshot(
    base_url: str,
    api_key: str,
    database: Path,
    *,
    datasets: Sequence[str] = SNAPSHOT_DATASETS,
    page_limit: int = PAGE_LIMIT,
    timeout_s: float = 60.0,
) -> NaiveResult:
    """Load each dataset into a table of the same name in the SQLite file `database`, page by page."""
    headers = {"Authorization": f"Bearer {api_key}"}
    fetch_s = normalize_s = insert_s = 0.0
    records = calls = 0
    started = time.perf_counter()
    con = sqlite3.connect(database)
    try:
        for dataset in datasets:
            offset = 0
            while True:
                t0 = time.perf_counter()
                params = {"limit": page_limit, "offset": offset} if PAGINATED[dataset] else None
                response = requests.get(f"{base_url.rstrip('/')}/{dataset}", params=params, headers=headers,
                                        timeout=timeout_s)  # fmt: skip
                response.raise_for_status()
                data = response.json()["data"]
                calls += 1
                t1 = time.perf_counter()
                frame = pd.json_normalize(data, max_level=0)
                for column in frame.columns[frame.dtypes == "object"]:  # pandas 3 keeps text in its own dtype
                    if frame[column].map(lambda v: isinstance(v, dict | list)).any():
                        frame[column] = frame[column].map(_as_json)
                t2 = time.perf_counter()
                if len(frame):
                    frame.to_sql(dataset, con, if_exists="append", index=False, method=None)
                t3 = time.perf_counter()
                fetch_s += t1 - t0
                normalize_s += t2 - t1
                insert_s += t3 - t2
                records += len(data)
                if not PAGINATED[dataset] or len(data) < page_limit:
                    break
                offset += page_limit
        wall_s = time.perf_counter() - started
        rows = sum(_count(con, dataset) for dataset in datasets)
    finally:
        con.close()
    return NaiveResult(records, rows, calls, fetch_s, normalize_s, insert_s, wall_s)


def _as_json(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict | list) else value


def _count(con: sqlite3.Connection, table: str) -> int:
    exists = con.execute("select 1 from sqlite_master where type = 'table' and name = ?", (table,)).fetchone()
    return int(con.execute(f'select count(*) from "{table}"').fetchone()[0]) if exists else 0
