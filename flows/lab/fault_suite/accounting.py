"""The fault suite's accounting: every record the stand-in served, against what the lake (and the marts) hold.

A record's identity is its natural key, or its raw JSON when the key is broken. A dataset's `Tally` says how many
records were served, landed, quarantined (with a reason), duplicated, lost, invented or misrouted.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from flows.settings import Settings
from flows.standin import DATASETS, NATURAL_KEYS, Catalog, Faults
from flows.standin.faults import drift_record, drifts

SNAPSHOT_DATASETS = DATASETS  # assets, rates, exchanges, markets
SNAPSHOT_ID = "20261121T060000Z"
HISTORY = "asset_history"
HISTORY_KEY = ("asset_id", "time")


def identity(record: Any, key: Sequence[str]) -> tuple[Any, ...]:
    """A served, landed or quarantined record's identity: its natural key, or its raw JSON when the key is broken."""
    if isinstance(record, dict):
        values = tuple(record.get(k) for k in key)
        if all((isinstance(v, str) and v != "") or type(v) is int for v in values):
            return values
    return ("<raw>", json.dumps(record, sort_keys=True, default=str, ensure_ascii=False, separators=(",", ":")))


@dataclass
class Tally:
    """One dataset's accounting after a scenario (record identities, see `identity`)."""

    dataset: str
    served: int = 0  # distinct records the API sent whole (HTTP 200, full body), over every run of the scenario
    landed: int = 0  # rows in the lake for the snapshot / the history range
    landed_distinct: int = 0
    quarantined: int = 0  # rows in quarantine
    quarantined_distinct: int = 0
    without_reason: int = 0  # quarantined rows whose reason is empty
    lost: int = 0  # served, neither landed nor quarantined
    invented: int = 0  # landed or quarantined, never served
    misrouted: int = 0  # a valid record quarantined, or an invalid one landed
    beyond_scope: int = 0  # served past what a top-N scope asked for (over-delivered): trimmed, neither landed nor lost
    marts: int | None = None  # rows in the marts after dbt, when the scenario builds them
    marts_distinct: int | None = None
    examples: list[str] = field(default_factory=list)  # a few lost or misrouted identities

    @property
    def duplicates(self) -> int:
        return (self.landed - self.landed_distinct) + (self.quarantined - self.quarantined_distinct)


Quarantined = tuple[tuple[Any, ...], str, str]  # (identity, reason, raw JSON as stored)


def _tally(
    dataset: str,
    served: set[tuple[Any, ...]],
    landed: list[tuple[Any, ...]],
    quarantined: list[Quarantined],
    must_reject: set[tuple[Any, ...]],
) -> Tally:
    landed_set = set(landed)
    quarantined_set = {q for q, _, _ in quarantined}
    lost = served - landed_set - quarantined_set
    # A record the API repeated within one page lands once; its copy is quarantined as a duplicate key, by design.
    wrongly_rejected = {
        q
        for q, reason, _ in quarantined
        if q not in must_reject and not (q in landed_set and reason.startswith("duplicate key"))
    }
    misrouted = (landed_set & must_reject) | wrongly_rejected
    return Tally(
        dataset=dataset,
        served=len(served),
        landed=len(landed),
        landed_distinct=len(landed_set),
        quarantined=len(quarantined),
        quarantined_distinct=len({raw for _, _, raw in quarantined}),
        without_reason=sum(1 for _, reason, _ in quarantined if not reason),
        lost=len(lost),
        invented=len((landed_set | quarantined_set) - served),
        misrouted=len(misrouted),
        examples=[repr(x)[:160] for x in sorted(lost | misrouted, key=repr)[:3]],
    )


def read_rows(path: Path, columns: list[str]) -> list[dict[str, Any]]:
    """These columns of a lake Parquet file, row by row."""
    return pq.read_table(path, columns=columns).to_pylist()


def split_scope(records: Sequence[Any], key: Sequence[str], wanted: int) -> tuple[list[Any], list[Any]]:
    """The records a top-N scope takes from a listing served in this order, and those past it (trimmed).

    The extract's rule (`flows/ingest/paging_guard.py`, `PagingGuard._trim`): a record is "taken" when its key
    (every key field a string) is new to the listing, or when it has no key; the records from the one that would
    make more than `wanted` taken on are not asked for. Repeats of records already taken, later on, are harmless
    (deduplicated), so by identity the split is exact. One listing: a scoped scenario must complete in its first
    run.
    """
    seen: set[tuple[Any, ...]] = set()
    taken = 0
    for i, record in enumerate(records):
        values = tuple(record.get(k) for k in key) if isinstance(record, dict) else None
        known = values if values is not None and all(type(v) is str for v in values) else None
        new = known is not None and known not in seen
        if taken + (new or known is None) > wanted:
            return list(records[:i]), list(records[i:])
        taken += new or known is None
        if known is not None:
            seen.add(known)
    return list(records), []


def account_snapshot(
    lake: Path,
    snapshot_id: str,
    served: dict[str, list[Any]],
    must_reject: dict[str, set[tuple[Any, ...]]],
    datasets: Sequence[str] = SNAPSHOT_DATASETS,
    scopes: dict[str, int] | None = None,
) -> list[Tally]:
    """Tally each dataset of one snapshot: what the API served against the lake's data and quarantine objects.

    `scopes`: dataset -> N of a top-N scope (COINCAP_ASSETS_LIMIT). What the API served past it (over-delivered) is
    counted apart (`beyond_scope`): landing it would be an invention, not landing it no loss."""
    tallies = []
    for dataset in datasets:
        key = NATURAL_KEYS[dataset]
        landed = [
            identity(row, key)
            for path in sorted((lake / "coincap" / dataset).glob(f"dt=*/{snapshot_id}.parquet"))
            for row in read_rows(path, list(key))
        ]
        quarantined = [
            (identity(json.loads(row["record_json"]), key), row["reason"] or "", row["record_json"])
            for path in sorted((lake / "quarantine" / dataset).glob(f"dt=*/{snapshot_id}.parquet"))
            for row in read_rows(path, ["record_json", "reason"])
        ]
        records = served.get(dataset, [])
        beyond: list[Any] = []
        if scopes and dataset in scopes:
            records, beyond = split_scope(records, key, scopes[dataset])
        served_ids = {identity(r, key) for r in records}
        tally = _tally(dataset, served_ids, landed, quarantined, must_reject.get(dataset, set()))
        tally.beyond_scope = len({identity(r, key) for r in beyond} - served_ids)
        tallies.append(tally)
    return tallies


def _history_identity(point: Any, asset: str) -> tuple[Any, ...]:
    if isinstance(point, dict):
        point = {k: v for k, v in point.items() if k not in ("asset_id", "history_interval")}
        return identity({**point, "asset_id": asset}, HISTORY_KEY)
    return identity(point, HISTORY_KEY)


def account_history(
    lake: Path, interval: str, served: dict[str, list[Any]], must_reject: set[tuple[Any, ...]]
) -> Tally:
    """Tally a backfill: every history point served against the lake's chunk objects and their quarantine."""
    data = lake / "coincap" / HISTORY / f"interval={interval}"
    landed = [
        identity(row, HISTORY_KEY)
        for path in sorted(data.glob("asset=*/*.parquet"))
        if path.parent.name != "asset=_placeholder"
        for row in read_rows(path, list(HISTORY_KEY))
    ]
    quarantined = [
        (
            _history_identity(json.loads(row["record_json"]), path.parent.name.removeprefix("asset=")),
            row["reason"] or "",
            row["record_json"],
        )
        for path in sorted((lake / "quarantine" / HISTORY / f"interval={interval}").glob("asset=*/*.parquet"))
        for row in read_rows(path, ["record_json", "reason"])
    ]
    served_ids = {
        _history_identity(point, name.removeprefix("history/"))
        for name, points in served.items()
        if name.startswith("history/")
        for point in points
    }
    return _tally(HISTORY, served_ids, landed, quarantined, must_reject)


def orphans(lake: Path) -> list[str]:
    """Lake files no reader should find: temporary objects of interrupted writes, Parquet files that do not read."""
    found = []
    for path in sorted(lake.rglob("*")) if lake.exists() else ():
        if not path.is_file():
            continue
        if path.name.startswith("."):
            found.append(str(path.relative_to(lake)))
        elif path.suffix == ".parquet":
            try:
                pq.read_metadata(path)
            except Exception:
                found.append(str(path.relative_to(lake)))
    return found


def scratch_files(data_dir: Path) -> int:
    """Files left in the local staging folder (never read by anything; a killed process leaves its own)."""
    staging = data_dir / "staging"
    return sum(1 for p in staging.rglob("*") if p.is_file()) if staging.exists() else 0


def snapshot_objects(lake: Path, snapshot_id: str) -> list[str]:
    """Lake objects (data and quarantine) of one snapshot."""
    return (
        sorted(str(p.relative_to(lake)) for p in lake.glob(f"*/*/dt=*/{snapshot_id}.parquet")) if lake.exists() else []
    )


def must_reject_snapshot(catalog: Catalog, faults: Faults) -> dict[str, set[tuple[Any, ...]]]:
    """Identities the contracts must quarantine: the catalog's invalid records and records sent with a wrong type."""
    out: dict[str, set[tuple[Any, ...]]] = {}
    for dataset in SNAPSHOT_DATASETS:
        invalid = set(catalog.invalid_keys[dataset])
        rejects = set()
        for i, record in enumerate(catalog.records(dataset)):
            if i not in invalid and not drifts(faults):
                continue
            sent, kinds = drift_record(dataset, i, record, faults)
            if i in invalid or "wrong_type" in kinds:
                rejects.add(identity(sent, NATURAL_KEYS[dataset]))
        out[dataset] = rejects
    return out


def must_reject_history(catalog: Catalog, faults: Faults) -> set[tuple[Any, ...]]:
    """History points the contract must quarantine: those sent with a wrong type."""
    rejects: set[tuple[Any, ...]] = set()
    if not drifts(faults):
        return rejects
    for slug in catalog.history:
        for point in catalog.history[slug]:
            sent, kinds = drift_record("history", f"{slug}/{point.get('time')}", point, faults)
            if "wrong_type" in kinds:
                rejects.add(_history_identity(sent, slug))
    return rejects


_MARTS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "assets": ("marts.fct_asset_snapshots", ("asset_id",), "snapshot_id"),
    "rates": ("marts.fct_rates", ("rate_id",), "snapshot_id"),
    "exchanges": ("marts.dim_exchanges", ("exchange_id",), "latest_snapshot_id"),
    "markets": ("marts.fct_market_snapshots", ("exchange_id", "base_asset_id", "quote_asset_id"), "snapshot_id"),
}


def count_marts(settings: Settings, snapshot_id: str, tallies: list[Tally]) -> None:
    """Fill each tally's rows (and distinct keys) in the marts dbt built from the snapshot."""
    from flows.warehouse.local_duckdb import LocalWarehouse

    warehouse = LocalWarehouse(settings.duckdb_path)
    for tally in tallies:
        table, key, snapshot_column = _MARTS[tally.dataset]
        sql = f"select count(*), count(distinct ({', '.join(key)})) from {table} where {snapshot_column} = ?"
        (rows, distinct), *_ = warehouse.query(sql, [snapshot_id])[1]
        tally.marts, tally.marts_distinct = int(rows), int(distinct)
