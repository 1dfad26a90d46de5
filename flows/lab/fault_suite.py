"""Fault-injection suite: the snapshot and backfill flows against a faulty local CoinCap and a failing lake.

Each scenario runs the real flow (Prefect tasks, client, contracts, staged Parquet, lake; dbt where it builds) in a
fresh data folder against the local stand-in with one fault on, then accounts for every record: served by the API,
landed in the lake (and the marts), quarantined with a reason, duplicated, lost, and how long recovery took.

    python -m flows.lab.fault_suite                    # the results table (exit 1 on any loss, duplicate or surprise)
    python -m flows.lab.fault_suite --json             # per scenario and dataset, as JSON
    python -m flows.lab.fault_suite --write docs/fault-suite.md

tests/test_fault_suite.py runs it in CI. Retries are made quick (millisecond backoff, task retries without their
production delays of 5-300 s), so the suite takes 1.5 to 2.5 minutes on 2 cores; the one dbt build is a third of it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import pyarrow.parquet as pq

from flows.errors import StorageError
from flows.lake.storage import LakeStorage, LocalStorage, StorageWrapper
from flows.paths import PROJECT_ROOT
from flows.settings import Settings
from flows.standin import DATASETS, NATURAL_KEYS, Catalog, Faults, StubServer
from flows.standin.faults import drift_record, drifts

SNAPSHOT_DATASETS = DATASETS  # assets, rates, exchanges, markets
SNAPSHOT_ID = "20261121T060000Z"
API_KEY = "fault-suite-key"
HISTORY = "asset_history"
HISTORY_KEY = ("asset_id", "time")
HISTORY_YEARS = 2  # d1 chunks are 365 days on a fixed grid: 3 chunks per asset
HISTORY_ASSETS = 8  # the backfill flow paces itself at 500 calls a minute: 24 chunks take ~3 s
PROJECT_ROOT = PROJECT_ROOT

# What a scenario's first run may end as. A completed run absorbed the fault (client retries, task retries);
# otherwise the fault is cleared (quota reset, storage back, process restarted) and the next run must complete.
COMPLETED = "completed"


def failed_then_recovered(error: str) -> str:
    return f"failed ({error}), then recovered"


KILLED_THEN_RECOVERED = "killed (SIGKILL), then recovered"


# ---------------------------------------------------------------------------------------------- lake doubles


class FaultyStorage(StorageWrapper):
    """A `LakeStorage` around a real lake whose `at`-th write (counting writes under `prefix`) misbehaves once.

    - `fail`: raise `StorageError` without writing (a failed upload: the lake keeps the old object or none);
    - `fail_after_write`: write, then raise (the object landed but the acknowledgement was lost);
    - `pause`: block before writing, after touching `marker` (a process to be SIGKILLed mid-publish).
    """

    def __init__(
        self,
        inner: LakeStorage,
        *,
        at: int,
        action: Literal["fail", "fail_after_write", "pause"] = "fail",
        prefix: str = "",
        marker: Path | None = None,
        pause_limit_s: float = 120.0,
    ) -> None:
        if at < 1:
            raise ValueError("at counts writes from 1")
        if action == "pause" and marker is None:
            raise ValueError("a pausing storage needs a marker file to touch")
        super().__init__(inner)
        self.at = at
        self.action = action
        self.prefix = prefix
        self.marker = marker
        self.pause_limit_s = pause_limit_s
        self.writes = 0  # writes under `prefix` attempted, the faulty one included
        self.fired = 0
        self.fired_at: float | None = None  # time.time() of the faulty write
        self._lock = threading.Lock()  # the backfill writes from several threads

    def put_file(self, local_path: Path, key: str) -> None:
        if key.startswith(self.prefix):
            with self._lock:
                self.writes += 1
                hit = self.writes == self.at
                if hit:
                    self.fired += 1
                    self.fired_at = time.time()
            if hit and self.action == "fail":
                raise StorageError(f"Injected failure writing {key}.", "Re-run: the lake keeps whole objects only.")
            if hit and self.action == "pause":
                assert self.marker is not None
                self.marker.write_text(key)
                time.sleep(self.pause_limit_s)  # the suite kills the process long before
                os._exit(3)  # never resume a write the suite meant to interrupt
            self.inner.put_file(local_path, key)
            if hit:
                raise StorageError(f"Injected failure after writing {key}.", "Re-run: the write may have landed.")
            return
        self.inner.put_file(local_path, key)


@contextlib.contextmanager
def lake_storage_override(storage: LakeStorage) -> Iterator[None]:
    """Make every `lake_storage(settings)` call of the flows return `storage` (a test double around the lake)."""
    from flows.lake import factory

    real = factory.lake_storage
    modules = [m for name, m in list(sys.modules.items()) if name.startswith("flows.") and m is not None]
    patched = [m for m in modules if getattr(m, "lake_storage", None) is real]
    for module in patched:
        module.lake_storage = lambda _settings: storage  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for module in patched:
            module.lake_storage = real  # type: ignore[attr-defined]


@contextlib.contextmanager
def quick_task_retries() -> Iterator[None]:
    """Keep every Prefect task's retry count but drop its delay (5 s to 300 s in production)."""
    from prefect import Task

    import flows.backfill
    import flows.snapshot

    saved: list[tuple[Any, str, Any]] = []
    for module in (flows.snapshot, flows.backfill):
        for name, task in list(vars(module).items()):
            if isinstance(task, Task) and task.retries:
                saved.append((module, name, task))
                setattr(module, name, task.with_options(retry_delay_seconds=0, retry_jitter_factor=None))
    try:
        yield
    finally:
        for module, name, task in saved:
            setattr(module, name, task)


# ---------------------------------------------------------------------------------------------- settings


def suite_settings(data_dir: Path, base_url: str, api_key: str = API_KEY, **overrides: object) -> Settings:
    """Settings for a scenario: the stand-in's URL and key, millisecond backoffs, short timeouts, small pages."""
    values: dict[str, object] = {
        "COINCAP_API_KEY": api_key,
        "COINCAP_API_BASE_URL": base_url,
        "PIPELINE_DATA_DIR": data_dir,
        "PIPELINE_TARGET": "local",
        "COINCAP_BACKOFF_BASE": 0.01,
        "COINCAP_BACKOFF_MAX": 0.05,
        "COINCAP_CONNECT_TIMEOUT": 1.0,
        "COINCAP_READ_TIMEOUT": 2.0,
        "COINCAP_MAX_ATTEMPTS": 8,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes `Settings()` in another process equal `settings`."""
    env: dict[str, str] = {}
    for name, info in Settings.model_fields.items():
        value = getattr(settings, name)
        if value is None or info.alias is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        elif isinstance(value, list):
            value = ",".join(value)
        elif hasattr(value, "value"):  # enums
            value = value.value
        env[info.alias] = str(value)
    return env


def _child_env(settings: Settings | None, api_url: str | None) -> dict[str, str]:
    prefixes = ("COINCAP_", "PIPELINE_", "GCP_", "GCS_", "BQ_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(settings_env(settings) if settings else {})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
    env.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


# ---------------------------------------------------------------------------------------------- accounting


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


def _read(path: Path, columns: list[str]) -> list[dict[str, Any]]:
    return pq.read_table(path, columns=columns).to_pylist()


def split_scope(records: Sequence[Any], key: Sequence[str], wanted: int) -> tuple[list[Any], list[Any]]:
    """The records a top-N scope takes from a listing served in this order, and those past it (trimmed).

    The extract's rule (`flows/ingest/extract.py`, `_PagingGuard._trim`):
    a record is "taken" when its key (every key field
    a string) is new to the listing, or when it has no key; the records from the one that would make more than
    `wanted` taken on are not asked for. Repeats of records already taken, later on, are harmless (deduplicated),
    so by identity the split is exact. One listing: a scoped scenario must complete in its first run.
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
            for row in _read(path, list(key))
        ]
        quarantined = [
            (identity(json.loads(row["record_json"]), key), row["reason"] or "", row["record_json"])
            for path in sorted((lake / "quarantine" / dataset).glob(f"dt=*/{snapshot_id}.parquet"))
            for row in _read(path, ["record_json", "reason"])
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
        for row in _read(path, list(HISTORY_KEY))
    ]
    quarantined = [
        (
            _history_identity(json.loads(row["record_json"]), path.parent.name.removeprefix("asset=")),
            row["reason"] or "",
            row["record_json"],
        )
        for path in sorted((lake / "quarantine" / HISTORY / f"interval={interval}").glob("asset=*/*.parquet"))
        for row in _read(path, ["record_json", "reason"])
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


# ---------------------------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    """One fault against one flow, and the outcome the pipeline is designed to reach."""

    name: str  # stable id (tests, --only)
    flow: Literal["snapshot", "backfill"]
    fault: str  # what is injected, for the table
    expect: str  # COMPLETED, failed_then_recovered(<error>) or KILLED_THEN_RECOVERED
    faults: Faults = field(default_factory=Faults)
    settings: dict[str, object] = field(default_factory=dict)
    storage_fault: tuple[int, Literal["fail", "fail_after_write"], str] | None = None  # (at, action, key prefix)
    kill: Literal["extract", "publish", "backfill"] | None = None
    publishes_nothing: bool = False  # the failed run must leave no lake object and no staged file
    marts: bool = False  # build the marts with dbt and count them
    baseline: bool = False  # no fault: a reference row
    note: str = ""  # why the outcome is what it is, when the table alone would not say
    # A designed stop (a server no client should follow): the first run's error is one line holding these words.
    stops_with: tuple[str, ...] = ()
    max_requests: int | None = None  # the first run sends at most this many requests, whatever the server does
    exact_credits: bool = False  # the run's metered credits equal what the stand-in billed (it says so in a header)

    @property
    def scopes(self) -> dict[str, int]:
        """Top-N scopes of this scenario's settings (dataset -> N)."""
        limit = self.settings.get("COINCAP_ASSETS_LIMIT")
        return {"assets": int(limit)} if isinstance(limit, int) else {}


def scenarios() -> list[Scenario]:
    """The suite: every fault of issue 6 against the snapshot flow, and the ones that matter to the backfill."""
    seed = 11
    return [
        Scenario("snapshot-baseline", "snapshot", "none (reference run)", COMPLETED, baseline=True),
        Scenario(
            "snapshot-5xx-storm", "snapshot", "14 consecutive 5xx after 3 requests, then 10% 5xx", COMPLETED,
            Faults(storm_after=3, storm_requests=14, p_5xx=0.1, seed=seed),
        ),
        Scenario(
            "snapshot-429-window", "snapshot", "per-window rate limit: 4 requests / 0.4 s, 429 + Retry-After",
            COMPLETED, Faults(rate_limit=4, rate_window_s=0.4, seed=seed),
        ),
        Scenario(
            "snapshot-quota", "snapshot", "monthly quota runs out after 5 calls (429, usage limit)",
            failed_then_recovered("QuotaExhausted"), Faults(quota_after_calls=5, quota_status=429, seed=seed),
            publishes_nothing=True,
        ),
        Scenario(
            "snapshot-slow", "snapshot", "25% of answers held 1.5 s (read timeout 1 s), all +20 ms", COMPLETED,
            Faults(p_slow=0.25, slow_s=1.5, delay_s=0.02, seed=seed), settings={"COINCAP_READ_TIMEOUT": 1.0},
        ),
        Scenario(
            "snapshot-drops", "snapshot", "25% of connections closed without an answer", COMPLETED,
            Faults(p_drop=0.25, seed=seed),
        ),
        Scenario(
            "snapshot-truncated", "snapshot", "25% of bodies cut in half (truncated JSON)", COMPLETED,
            Faults(p_truncate=0.25, seed=seed),
        ),
        Scenario(
            "snapshot-drift-new-fields", "snapshot", "schema drift: 30% of records carry 3 undocumented fields",
            COMPLETED, Faults(drift_new_fields=0.3, seed=seed),
        ),
        Scenario(
            "snapshot-drift-missing", "snapshot", "schema drift: 30% of records lack their nullable fields",
            COMPLETED, Faults(drift_missing_optional=0.3, seed=seed),
        ),
        Scenario(
            "snapshot-drift-types", "snapshot", "schema drift: 10% of records send a number as array/object/bool",
            COMPLETED, Faults(drift_wrong_type=0.1, seed=seed),
        ),
        Scenario(
            "snapshot-duplicates", "snapshot", "ranks shift 3 rows a page, 4 rows of the previous page repeated",
            COMPLETED, Faults(rank_shift=3, duplicate_rows=4, seed=seed),
        ),
        Scenario(
            "snapshot-kill-extract", "snapshot", "SIGKILL mid-extract (pages staged, API stuck), restart same id",
            KILLED_THEN_RECOVERED, Faults(hang_after=7, seed=seed), kill="extract",
        ),
        Scenario(
            "snapshot-kill-publish", "snapshot", "SIGKILL mid-publish (1 object written), restart same id",
            KILLED_THEN_RECOVERED, kill="publish", marts=True,
        ),
        Scenario(
            "snapshot-storage", "snapshot", "lake write #2 fails (nothing written) during publish",
            COMPLETED, storage_fault=(2, "fail", ""),
        ),
        # hostile mode: what no honest CoinCap does; bounded by the client and the extract, never followed
        Scenario(
            "snapshot-ignore-offset", "snapshot", "hostile: every page is the first one, values drift on every answer",
            failed_then_recovered("ApiError"), Faults(ignore_offset=True, drift_values=True, seed=seed),
            publishes_nothing=True, stops_with=("the server ignores offset",), max_requests=3 * 3 + 1,
            note="3 calls a paged listing, then one line",
        ),
        Scenario(
            "snapshot-over-deliver", "snapshot", "hostile: pages carry 7 rows beyond the limit asked for", COMPLETED,
            Faults(over_deliver=7, seed=seed),
        ),
        Scenario(
            "snapshot-over-deliver-top-n", "snapshot", "hostile: 7 rows beyond the limit, top-50 assets scope",
            COMPLETED, Faults(over_deliver=7, seed=seed), settings={"COINCAP_ASSETS_LIMIT": 50},
        ),
        Scenario(
            "snapshot-trickle", "snapshot", "hostile: answers trickle 16 bytes / 50 ms (deadline 0.5 s, 2 attempts)",
            failed_then_recovered("ApiUnavailable"), Faults(trickle_s=0.05, seed=seed),
            settings={"COINCAP_CALL_DEADLINE": 0.5, "COINCAP_MAX_ATTEMPTS": 2}, publishes_nothing=True,
            stops_with=("call deadline",), max_requests=4 * 3 * 2, note="3 task attempts x 2 calls a dataset",
        ),
        Scenario(
            "snapshot-gzip-bomb", "snapshot", "hostile: 200 answers are a gzip bomb of 64 MB (cap 1 MB)",
            failed_then_recovered("ApiError"), Faults(gzip_bomb_mb=64, seed=seed),
            settings={"COINCAP_MAX_BODY_BYTES": 2**20}, publishes_nothing=True, stops_with=("refused",),
            max_requests=4,
        ),
        Scenario(
            "snapshot-redirect-other-host", "snapshot", "hostile: every call redirected (307) to another host",
            failed_then_recovered("ApiError"), Faults(redirect="other-host", seed=seed), publishes_nothing=True,
            stops_with=("to another host", "not followed"), max_requests=4,
        ),
        Scenario(
            "snapshot-redirect-same-host", "snapshot", "every call redirected (307) once on the same host", COMPLETED,
            Faults(redirect="same-host", seed=seed), exact_credits=True,
        ),
        Scenario(
            "snapshot-dear-billing", "snapshot", "billing: 12 credits a call at least, said in X-Credits-Used",
            COMPLETED, Faults(bill_floor=12, billing_header="X-Credits-Used", seed=seed), exact_credits=True,
        ),
        Scenario(
            "backfill-5xx-storm", "backfill", "20 consecutive 5xx after 5 requests, then 10% 5xx", COMPLETED,
            Faults(storm_after=5, storm_requests=20, p_5xx=0.1, seed=seed),
        ),
        Scenario(
            "backfill-truncated", "backfill", "30% of bodies cut in half (truncated JSON)", COMPLETED,
            Faults(p_truncate=0.3, seed=seed),
        ),
        Scenario(
            "backfill-kill", "backfill", "SIGKILL after a third of the chunks landed, restart same range",
            KILLED_THEN_RECOVERED, Faults(delay_s=0.08, seed=seed), kill="backfill",
        ),
        Scenario(
            "backfill-storage", "backfill", "chunk write #10 lands but reports failure (lost ack)", COMPLETED,
            storage_fault=(10, "fail_after_write", f"coincap/{HISTORY}/"),
        ),
    ]  # fmt: skip


@dataclass
class ScenarioResult:
    """What one scenario did, and every way it fell short of the design (`problems`)."""

    name: str
    flow: str
    fault: str
    expected: str
    outcome: str = ""
    first_error: str | None = None
    tallies: list[Tally] = field(default_factory=list)
    injected: dict[str, int] = field(default_factory=dict)
    api_retries: int = 0
    first_run_requests: int = 0  # requests the stand-in received during the first run
    orphans: list[str] = field(default_factory=list)
    scratch_files: int = 0
    recover_s: float | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def total(self, name: str) -> int:
        return sum(getattr(t, name) for t in self.tallies)

    @property
    def marts(self) -> int | None:
        counted = [t.marts for t in self.tallies if t.marts is not None]
        return sum(counted) if counted else None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        for tally, row in zip(self.tallies, out["tallies"], strict=True):
            row["duplicates"] = tally.duplicates
        out.update({k: self.total(k) for k in ("served", "landed", "quarantined", "duplicates", "lost")})
        return out


class _Run:
    """The machinery of one scenario: its folder, stand-in, settings and flow runs."""

    def __init__(self, scenario: Scenario, root: Path, api_url: str | None) -> None:
        self.scenario = scenario
        self.root = root
        self.api_url = api_url
        self.data_dir = root / "data"
        self.result = ScenarioResult(scenario.name, scenario.flow, scenario.fault, scenario.expect)
        if scenario.note:
            self.result.notes.append(scenario.note)
        if scenario.flow == "snapshot":
            # seed 8: the catalog's "negative" corruption of a zero volume (seeds 3, 7, 10) is "-0", a valid value
            self.catalog = Catalog.synthetic(
                n_assets=100, n_exchanges=100, n_markets=100, seed=8, invalid_fraction=0.03
            )
            self.key = API_KEY
            # 40 a page: 3 pages each of assets, exchanges and markets, and rates in one call
            overrides: dict[str, object] = {"COINCAP_PAGE_LIMIT": 40}
        else:
            from flows.lab.backfill_bench import BENCH_KEY, _bench_range

            start, end = _bench_range(HISTORY_YEARS)
            self.history_range = (start, end)
            self.catalog = Catalog.synthetic(
                n_assets=HISTORY_ASSETS, n_exchanges=3, n_markets=20, seed=7, history_days=(end - start).days + 1,
                history_assets=HISTORY_ASSETS, history_interval="d1",
            )  # fmt: skip
            self.key = BENCH_KEY  # the key `python -m flows.lab.backfill_bench run` (the process killed) sends
            overrides = {}
        overrides.update(scenario.settings)
        self.server = StubServer(self.catalog, faults=replace(scenario.faults), api_keys={self.key})
        self.settings = suite_settings(self.data_dir, self.server.base_url, self.key, **overrides)
        # dataset -> records of the stand-in's log that count as served: after a designed stop that published
        # nothing, only those the next run was served (the stopped run's, values drifting, are not the same records)
        self.served_from: dict[str, int] = {}

    # ---- flows

    def run_flow(self, *, transform: bool = False) -> Any:
        from flows.settings import use_settings

        use_settings(self.settings)
        if self.scenario.flow == "snapshot":
            from flows.snapshot import snapshot_flow

            return snapshot_flow(snapshot_id=SNAPSHOT_ID, transform=transform)
        from flows import backfill

        start, end = self.history_range
        return backfill.backfill_flow(assets=None, interval="d1", start=start, end=end)

    def api_retries_of(self, summary: Any) -> int:
        """Calls the client retried in a completed run (a snapshot's per-dataset reports, or the backfill's)."""
        if self.scenario.flow == "snapshot":
            return sum(r.retries for r in summary.reports)
        return int(summary.retries)

    # ---- kills

    def child(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "wb") as out:
            return subprocess.Popen(
                args, cwd=self.root, env=_child_env(self.settings, self.api_url), stdout=out, stderr=subprocess.STDOUT
            )

    def kill_snapshot(self, where: Literal["extract", "publish"]) -> None:
        marker = self.root / "paused"
        args = [sys.executable, "-m", "flows.lab.fault_suite", "_child-snapshot", "--snapshot-id", SNAPSHOT_ID]
        if where == "publish":
            args += ["--pause-at-write", "2", "--marker", str(marker)]
        proc = self.child(args, self.root / "child.log")
        try:
            if where == "publish":
                reached = _wait(lambda: marker.exists(), proc)
            else:
                # pages already written to the staged files, the next answer stuck
                reached = _wait(
                    lambda: self.server.stats.injected["hung request"] > 0 and scratch_files(self.data_dir) > 0, proc
                )
            if not reached:
                self.result.problems.append(
                    f"the child exited ({proc.poll()}) before the kill point: {_tail(self.root)}"
                )
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        self.server.faults.hang_after = 0  # the stuck upstream recovers
        lake = self.settings.lake_dir
        published = snapshot_objects(lake, SNAPSHOT_ID)
        self.result.notes.append(
            f"killed with {len(published)} object(s) published and {scratch_files(self.data_dir)} staged file(s) open"
        )
        self.note_temporaries()

    def kill_backfill(self) -> None:
        from flows.lab.backfill_bench import _child_command

        chunks_dir = self.settings.lake_dir / "coincap" / HISTORY
        total_chunks = self.history_chunks()
        args = _child_command(self.server.base_url, self.data_dir, HISTORY_ASSETS, HISTORY_YEARS, workers=4)
        proc = self.child(args, self.root / "child.log")
        try:
            reached = _wait(lambda: _count_files(chunks_dir) >= total_chunks // 3, proc, poll_s=0.005)
            if not reached:
                self.result.problems.append(
                    f"the child exited ({proc.poll()}) before the kill point: {_tail(self.root)}"
                )
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        self.server.faults = Faults()  # no latency for the restart
        time.sleep(0.2)  # let the server finish answering what the killed process had asked
        self.landed_at_kill = {str(p.relative_to(chunks_dir)) for p in chunks_dir.rglob("*.parquet")}
        self.history_calls_at_kill = self.history_calls()
        self.result.notes.append(f"killed with {len(self.landed_at_kill)} of {total_chunks} chunks landed")
        self.note_temporaries()

    def note_temporaries(self) -> None:
        """Say when the kill interrupted a write into the lake (the final check then proves the restart swept it)."""
        left = orphans(self.settings.lake_dir)
        if left:
            self.result.notes.append(f"the kill left {len(left)} temporary object(s) in the lake")

    def history_chunks(self) -> int:
        """Chunks a backfill of the range plans for all the assets (they are all closed: the history ended)."""
        from flows.backfill import plan_chunks

        start, end = self.history_range
        now_ms = int(time.time() * 1000)
        return HISTORY_ASSETS * len(plan_chunks("x", "d1", start, end, now_ms))

    def history_calls(self) -> int:
        return sum(n for path, n in self.server.stats.requests.items() if path.endswith("/history"))


def _wait(
    condition: Callable[[], bool], proc: subprocess.Popen[bytes], timeout_s: float = 90.0, poll_s: float = 0.01
) -> bool:
    """Poll `condition` while `proc` runs; False if it exits (or time runs out) first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return condition()
        time.sleep(poll_s)
    return False


def _count_files(folder: Path) -> int:
    return sum(1 for _ in folder.rglob("*.parquet")) if folder.exists() else 0


def _tail(root: Path) -> str:
    log = root / "child.log"
    lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return lines[-1][:300] if lines else "no output"


def run_scenario(scenario: Scenario, workdir: Path, api_url: str | None = None) -> ScenarioResult:
    """Run one scenario in `workdir` (which must be empty) and account for it."""
    started = time.perf_counter()
    run = _Run(scenario, workdir, api_url)
    result = run.result
    completed = False
    with run.server, quick_task_retries():
        storage: FaultyStorage | None = None
        if scenario.storage_fault:
            at, action, prefix = scenario.storage_fault
            storage = FaultyStorage(LocalStorage(run.settings.lake_dir), at=at, action=action, prefix=prefix)
        failed: BaseException | None = None
        if scenario.kill == "backfill":
            run.kill_backfill()
        elif scenario.kill:
            run.kill_snapshot(scenario.kill)
        else:
            try:
                with lake_storage_override(storage) if storage else contextlib.nullcontext():
                    summary = run.run_flow(transform=scenario.marts)
                result.api_retries += run.api_retries_of(summary)
                completed = True
                result.outcome = COMPLETED
                if scenario.exact_credits:
                    _check_credits(run, summary)
                # absorbed in-run: the fault "cleared" with its last occurrence
                faults_at = [t for t in (run.server.stats.last_fault_at, storage and storage.fired_at) if t]
                if faults_at:
                    result.recover_s = round(max(0.0, time.time() - max(faults_at)), 2)
            except Exception as exc:
                failed = exc
                # a PipelineError's first sentence says what happened; the rest is advice
                what = getattr(exc, "what", None) or str(exc)
                result.first_error = f"{type(exc).__name__}: {what}".replace(f"{run.settings.lake_dir}/", "")
                result.notes.append(f"first run: {result.first_error[:160].rstrip('.')}")
                _check_failed_run(run, exc)
                _check_stop(run, exc)
            result.first_run_requests = run.server.stats.total_requests
            if scenario.max_requests is not None:
                if result.first_run_requests > scenario.max_requests:
                    result.problems.append(
                        f"the first run sent {result.first_run_requests} requests (at most {scenario.max_requests})"
                    )
                else:
                    result.notes.append(f"{result.first_run_requests} requests")
        if storage is not None and not storage.fired:
            result.problems.append("the storage fault never fired")
        elif storage is not None and completed:
            result.notes.append(f"write #{storage.at} raised StorageError; the task's retry completed the run")

        if not completed:  # clear the fault (quota reset, lake back, process restarted): the next run lands it all
            run.server.faults = Faults()
            if scenario.stops_with and scenario.publishes_nothing:
                run.served_from = {d: len(records) for d, records in run.server.stats.served.items()}
            cleared_at = time.time()
            try:
                summary = run.run_flow(transform=scenario.marts)
                result.api_retries += run.api_retries_of(summary)
                completed = True
                result.recover_s = round(time.time() - cleared_at, 2)
                if failed is None:
                    result.outcome = KILLED_THEN_RECOVERED
                else:
                    result.outcome = failed_then_recovered(type(failed).__name__)
            except Exception as exc:
                result.outcome = "failed, not recovered"
                result.problems.append(f"the run after the fault cleared failed: {type(exc).__name__}: {exc}")
        _account(run, completed)
    result.seconds = round(time.perf_counter() - started, 2)
    _judge(run)
    return result


def _check_stop(run: _Run, error: BaseException) -> None:
    """A designed stop says what happened in one line, with the words the scenario expects."""
    words = run.scenario.stops_with
    if not words:
        return
    text = str(error)
    if "\n" in text or "Traceback" in text:
        run.result.problems.append(f"the stop is not one line: {text[:200]!r}")
    missing = [w for w in words if w not in text]
    if missing:
        run.result.problems.append(f"the stop does not say {missing}: {text[:200]!r}")


def _check_credits(run: _Run, summary: Any) -> None:
    """The run metrics' credits (every call of every dataset, failed attempts included) are what the stand-in billed
    (it says so in the billing header; the scenario's only run)."""
    metered = sum(r.credits for r in summary.reports)
    billed = run.server.stats.credits
    if metered != billed:
        run.result.problems.append(f"the run metered {metered:,} credits, the stand-in billed {billed:,}")
    else:
        run.result.notes.append(f"{metered:,} credits metered, as billed")


def _check_failed_run(run: _Run, error: BaseException) -> None:
    """What a failed run left behind; a designed failure must publish nothing and leave nothing staged."""
    lake, result = run.settings.lake_dir, run.result
    published = snapshot_objects(lake, SNAPSHOT_ID) if run.scenario.flow == "snapshot" else []
    staged = scratch_files(run.data_dir)
    if run.scenario.publishes_nothing:
        if published:
            result.problems.append(f"the failed run published {len(published)} object(s): {published[:2]}")
        if staged:
            result.problems.append(f"the failed run left {staged} staged file(s)")
        return
    if published:
        result.notes.append(f"the failed run had published {len(published)} object(s)")


def _account(run: _Run, completed: bool) -> None:
    result, stats, lake = run.result, run.server.stats, run.settings.lake_dir
    result.injected = dict(stats.injected)
    result.orphans = orphans(lake)
    result.scratch_files = scratch_files(run.data_dir)
    if run.scenario.flow == "snapshot":
        rejects = must_reject_snapshot(run.catalog, run.scenario.faults)
        served = {d: records[run.served_from.get(d, 0) :] for d, records in stats.served.items()}
        result.tallies = account_snapshot(lake, SNAPSHOT_ID, served, rejects, scopes=run.scenario.scopes)
        for tally in result.tallies:
            if tally.beyond_scope:
                result.notes.append(f"{tally.dataset}: {tally.beyond_scope} served beyond the scope, trimmed")
        if run.scenario.marts and completed:
            count_marts(run.settings, SNAPSHOT_ID, result.tallies)
    else:
        rejects_history = must_reject_history(run.catalog, run.scenario.faults)
        result.tallies = [account_history(lake, "d1", stats.served, rejects_history)]
        if run.scenario.kill == "backfill":
            chunks_total = run.history_chunks()
            calls = run.history_calls() - run.history_calls_at_kill
            expected = chunks_total - len(run.landed_at_kill)
            if calls != expected:
                result.problems.append(
                    f"the restart made {calls} history calls for {expected} missing chunks (finished chunks refetched?)"
                )


def _judge(run: _Run) -> None:
    """Every way the scenario fell short: any loss, duplicate, orphan or outcome other than the designed one."""
    result, scenario = run.result, run.scenario
    problems = result.problems
    if result.outcome != scenario.expect:
        problems.append(f"outcome {result.outcome!r}, expected {scenario.expect!r}")
    if not (scenario.baseline or scenario.kill or scenario.storage_fault or result.injected):
        problems.append("the fault never fired")
    for tally in result.tallies:
        name = tally.dataset
        if tally.served == 0:
            problems.append(f"{name}: nothing was served")
        for what in ("duplicates", "lost", "invented", "misrouted", "without_reason"):
            if getattr(tally, what):
                problems.append(f"{name}: {getattr(tally, what)} {what.replace('_', ' ')} {tally.examples}")
        if tally.marts is not None and not tally.marts == tally.marts_distinct == tally.landed_distinct:
            problems.append(
                f"{name}: {tally.marts} rows ({tally.marts_distinct} distinct) in the marts, "
                f"{tally.landed_distinct} in the lake"
            )
    if scenario.marts and result.marts is None and not problems:
        problems.append("the marts were not counted")
    if result.orphans:
        problems.append(f"orphaned objects in the lake: {result.orphans[:3]}")
    if scenario.faults.drift_new_fields:
        _check_new_fields(run)


def _check_new_fields(run: _Run) -> None:
    """New fields are kept (in `extra_fields`) on the records that carried them."""
    from flows.standin.faults import NEW_FIELDS

    lake = run.settings.lake_dir
    for dataset in SNAPSHOT_DATASETS:
        rows = [
            row
            for path in (lake / "coincap" / dataset).glob(f"dt=*/{SNAPSHOT_ID}.parquet")
            for row in _read(path, ["extra_fields"])
        ]
        kept = [json.loads(r["extra_fields"]) for r in rows if r["extra_fields"]]
        if not kept or any(set(NEW_FIELDS) - set(extra) for extra in kept):
            run.result.problems.append(f"{dataset}: new fields not kept in extra_fields ({len(kept)} rows have some)")


# ---------------------------------------------------------------------------------------------- the suite


@dataclass
class SuiteResult:
    """Every scenario's result, and how long the suite took."""

    results: list[ScenarioResult]
    seconds: float
    machine: str
    load: float = 0.0  # the 1-minute load average when the suite ended: other work slows the timings

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def failures(self) -> list[str]:
        """One line per scenario that fell short, naming it."""
        return [f"{r.name}: {'; '.join(r.problems)}" for r in self.results if not r.ok]

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "seconds": self.seconds,
            "machine": self.machine,
            "load": self.load,
            "scenarios": [r.as_dict() for r in self.results],
        }


@contextlib.contextmanager
def prefect_api() -> Iterator[str]:
    """The Prefect API the flows (and the processes the suite kills) report to: the configured one, else a
    temporary local server, started once."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    configured = PREFECT_API_URL.value()
    if configured:
        yield str(configured)
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start(timeout=120)  # a first start migrates its database: slow on a busy machine
    with temporary_settings({PREFECT_API_URL: server.api_url}):
        yield server.api_url


def run_suite(
    only: Sequence[str] | None = None,
    *,
    workdir: Path | None = None,
    progress: Callable[[ScenarioResult], None] | None = None,
) -> SuiteResult:
    """Run the scenarios (all, or those named in `only`), each in a fresh folder under `workdir` (a temporary one)."""
    from flows.lab.benchmark import machine
    from flows.settings import current_settings, use_settings

    chosen = [s for s in scenarios() if not only or s.name in only]
    unknown = set(only or ()) - {s.name for s in scenarios()}
    if unknown:
        raise ValueError(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    previous = current_settings()
    started = time.perf_counter()
    results = []
    with contextlib.ExitStack() as stack:
        root = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="coincap-faults-")))
        api_url = stack.enter_context(prefect_api())
        try:
            for scenario in chosen:
                folder = root / scenario.name
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
                result = run_scenario(scenario, folder, api_url)
                results.append(result)
                if progress:
                    progress(result)
        finally:
            use_settings(previous)
    return SuiteResult(results, round(time.perf_counter() - started, 1), machine(), round(os.getloadavg()[0], 1))


# ---------------------------------------------------------------------------------------------- the table


def _injected_summary(result: ScenarioResult) -> str:
    parts = [f"{kind} ×{n:,}" for kind, n in sorted(result.injected.items(), key=lambda kv: -kv[1])]
    return ", ".join(parts)


def markdown_table(suite: SuiteResult) -> str:
    """The results table, one row per scenario."""
    head = (
        "| scenario | flow | fault injected | outcome | served | landed | quarantined | duplicates | losses "
        "| recover s | notes |\n|---|---|---|---|---:|---:|---:|---:|---:|---:|---|"
    )
    rows = [head]
    for r in suite.results:
        notes = []
        fired = _injected_summary(r)
        if fired:
            notes.append(f"fired: {fired}")
        if r.api_retries:
            notes.append(f"{r.api_retries:,} API retries")
        notes += r.notes
        if r.marts is not None:
            notes.append(f"marts: {r.marts:,} rows, as in the lake")
        if r.scratch_files:
            notes.append(f"{r.scratch_files} scratch file(s) left in data/staging")
        if r.problems:
            notes.append("**PROBLEMS: " + "; ".join(r.problems) + "**")
        landed = r.total("landed")
        rows.append(
            f"| {r.name} | {r.flow} | {r.fault} | {r.outcome} | {r.total('served'):,} | {landed:,} | "
            f"{r.total('quarantined'):,} | {r.total('duplicates'):,} | {r.total('lost'):,} | "
            f"{'' if r.recover_s is None else f'{r.recover_s:.1f}'} | {'; '.join(notes)} |"
        )
    return "\n".join(rows)


DOC_INTRO = """\
# Fault injection

`python -m flows.lab.fault_suite` runs the snapshot and backfill flows (Prefect tasks, client, contracts, staged
Parquet, lake; dbt where noted) against the local CoinCap stand-in and the local lake with one fault at a time, then
accounts for every record. `tests/test_fault_suite.py` runs the same suite in CI and fails on any loss, duplicate,
orphaned object, misrouted record or outcome other than the designed one, naming the scenario. Each scenario starts
from an empty data folder; snapshots are a synthetic catalog of 100 assets, 120 rates, 100 exchanges and 100 markets
(3% invalid on purpose) in pages of 40; backfills are 8 assets x 2 years of daily history (24 chunks).

- **served**: distinct records the API sent whole (HTTP 200, full body), over every run of the scenario, from the
  stand-in's own log (`ServerStats.served`); history points for the backfill.
- **landed**: rows in the lake for the snapshot (or the history range), read back from Parquet; where the marts
  are built, their rows are counted too and must equal the lake's.
- **quarantined**: rows in `quarantine/`, each with its reasons. The suite also checks they are exactly the
  records the contracts must reject (the catalog's invalid ones and those sent with a wrong type).
- **duplicates**: landed rows beyond one per natural key, plus quarantined rows beyond one per raw record.
- **losses**: served records neither landed nor quarantined; after a designed failure (quota), counted after the
  run that follows the fault clearing.
- **hostile rows** (`snapshot-ignore-offset` to `snapshot-dear-billing`): what no honest CoinCap does. A designed
  stop is one line naming what happened, within a bound of requests (noted), publishes nothing, and the next run
  against an honest server lands everything (a stopped run's records, values drifting, are not counted as served);
  the other rows land exactly, the billing rows with every credit metered as billed. Records served past a top-N
  scope (`COINCAP_ASSETS_LIMIT`) are noted apart: trimmed, neither landed nor counted as lost.
- **recover s**: seconds from the fault clearing (the last injected fault for faults absorbed in-run; the quota
  reset, the restored lake or the restart otherwise) to a completed run. Retries are quick here (10-50 ms backoff,
  task retries without their 5-300 s production delays), so these are lower bounds of what production waits.
"""


def markdown_doc(suite: SuiteResult) -> str:
    """docs/fault-suite.md: what the suite does, the table, and where it was measured."""
    verdict = "every scenario as designed" if suite.ok else f"{len(suite.failures())} scenario(s) fell short"
    return (
        f"{DOC_INTRO}\n{markdown_table(suite)}\n\n"
        f"Measured on {suite.machine} (load average {suite.load:g} at the end): {len(suite.results)} scenarios "
        f"in {suite.seconds:.0f} s, {verdict}.\n"
    )


# ---------------------------------------------------------------------------------------------- entry points


def _child_snapshot(argv: list[str]) -> int:
    """`_child-snapshot`: one snapshot run from the environment's settings, for a scenario to kill."""
    parser = argparse.ArgumentParser(prog="python -m flows.lab.fault_suite _child-snapshot")
    parser.add_argument("--snapshot-id", required=True)
    parser.add_argument("--pause-at-write", type=int, default=0, help="block at this lake write (1 = the first)")
    parser.add_argument("--marker", type=Path, help="file touched when the write blocks")
    args = parser.parse_args(argv)
    from flows.settings import use_settings
    from flows.snapshot import snapshot_flow

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    use_settings(settings)
    storage: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if args.pause_at_write:
        lake = FaultyStorage(
            LocalStorage(settings.lake_dir), at=args.pause_at_write, action="pause", marker=args.marker
        )
        storage = lake_storage_override(lake)
    with storage:
        snapshot_flow(snapshot_id=args.snapshot_id, transform=False)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the suite and print its table (or JSON); exit 1 when any scenario fell short."""
    argv = sys.argv[1:] if argv is None else argv
    # Prefect reads its settings at import: keep the flows' own logs out of the table unless asked for.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_UI_ENABLED", "false")
    if argv[:1] == ["_child-snapshot"]:
        return _child_snapshot(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m flows.lab.fault_suite", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    parser.add_argument("--write", type=Path, help="also write the markdown report here (docs/fault-suite.md)")
    parser.add_argument("--only", action="append", help="run only this scenario (repeatable)")
    parser.add_argument("--workdir", type=Path, help="keep each scenario's data folder here")
    args = parser.parse_args(argv)

    def progress(result: ScenarioResult) -> None:
        status = "ok" if result.ok else "PROBLEMS: " + "; ".join(result.problems)
        print(f"{result.name}: {result.outcome} in {result.seconds:.1f}s, {status}", file=sys.stderr, flush=True)

    with contextlib.redirect_stdout(sys.stderr):  # dbt prints its progress: stdout is the table (or JSON) only
        suite = run_suite(args.only, workdir=args.workdir, progress=progress)
    if args.write:
        args.write.write_text(markdown_doc(suite))
    if args.json:
        print(json.dumps(suite.as_dict(), indent=2, default=str))
    else:
        print(markdown_table(suite))
        print(f"\n{len(suite.results)} scenarios in {suite.seconds:.0f} s on {suite.machine}")
        for line in suite.failures():
            print(f"FAILED {line}")
    return 0 if suite.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
