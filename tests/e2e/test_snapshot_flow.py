"""The snapshot flow end to end (without dbt) against a faulty local CoinCap: exactly once, nothing lost."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flows.errors import AuthError, QuotaExhausted
from flows.settings import use_settings
from flows.snapshot import snapshot_flow
from flows.standin import NATURAL_KEYS, Catalog, Faults, StubServer
from flows.warehouse.local_duckdb import LocalWarehouse
from tests.conftest import API_KEY, fast_settings

DATASETS = ("assets", "rates", "exchanges", "markets")


def lake_rows(lake: Path, zone: str, dataset: str) -> list[dict]:
    rows: list[dict] = []
    for path in sorted((lake / zone / dataset).glob("dt=*/*.parquet")):
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def parquet_files(lake: Path) -> list[Path]:
    return sorted(lake.rglob("*.parquet")) if lake.exists() else []


@pytest.fixture
def faulty_catalog() -> Catalog:
    return Catalog.synthetic(n_assets=2300, n_exchanges=30, n_markets=6100, seed=21, invalid_fraction=0.03)


def test_faulty_api_lands_every_valid_record_once_and_every_invalid_one_in_quarantine(
    prefect_api, tmp_path, faulty_catalog
):
    faults = Faults(p_5xx=0.10, p_429=0.05, retry_after_s=0.02, p_drop=0.03, p_truncate=0.03,
                    rank_shift=7, duplicate_rows=5, seed=8)  # fmt: skip
    with StubServer(faulty_catalog, faults=faults, api_keys={API_KEY}) as stub:
        settings = fast_settings(tmp_path / "data", stub.base_url, COINCAP_MAX_ATTEMPTS=10, COINCAP_PAGE_LIMIT=250)
        use_settings(settings)
        summary = snapshot_flow(snapshot_id="20261121T053000Z", transform=False)
        first = {p.relative_to(settings.lake_dir): p.read_bytes() for p in parquet_files(settings.lake_dir)}

        reports = {r.dataset: r for r in summary.reports}
        for dataset in DATASETS:
            records = faulty_catalog.records(dataset)
            invalid = set(faulty_catalog.invalid_keys[dataset])
            expected_valid = {
                tuple(r[k] for k in NATURAL_KEYS[dataset]) for i, r in enumerate(records) if i not in invalid
            }
            landed = [
                tuple(r[k] for k in NATURAL_KEYS[dataset]) for r in lake_rows(settings.lake_dir, "coincap", dataset)
            ]
            assert len(landed) == len(set(landed)), f"{dataset}: duplicates landed"
            assert set(landed) == expected_valid, f"{dataset}: lost or invented records"
            quarantined = lake_rows(settings.lake_dir, "quarantine", dataset)
            canon = lambda r: json.dumps(r, sort_keys=True, default=str)  # noqa: E731
            assert sorted(canon(json.loads(q["record_json"])) for q in quarantined) == sorted(
                canon(records[i]) for i in invalid
            ), f"{dataset}: quarantine holds exactly the invalid records, raw"
            assert len(quarantined) == len(invalid), f"{dataset}: quarantine count"
            assert all(q["reason"] for q in quarantined)
            assert reports[dataset].valid == len(expected_valid)
            assert reports[dataset].quarantined == len(invalid)
        injected = sum(n for code, n in stub.stats.statuses.items() if code >= 429) + stub.stats.drops
        assert injected + stub.stats.truncations >= 3, (
            "the faults really fired (each kind is pinned in test_coincap_client)"
        )
        assert sum(r.retries for r in summary.reports) > 0

        # Same snapshot again (faults and all): the same objects, byte for byte in content, nothing added.
        snapshot_flow(snapshot_id="20261121T053000Z", transform=False)
        again = {p.relative_to(settings.lake_dir): p for p in parquet_files(settings.lake_dir)}
        assert set(again) == set(first)
        for rel, path in again.items():
            assert pq.read_table(path).num_rows == pq.read_table(settings.lake_dir / rel).num_rows
    use_settings(None)


def test_invalid_parameters_are_refused_before_the_run(prefect_api, settings):
    from prefect.exceptions import ParameterTypeError

    with pytest.raises(ParameterTypeError):
        snapshot_flow(snapshot_id="yesterday", transform=False)
    with pytest.raises(ParameterTypeError):
        snapshot_flow(datasets=["candles"], transform=False)


@pytest.mark.parametrize(
    ("faults", "error"),
    [
        (Faults(quota_exhausted=True), QuotaExhausted),
        (Faults(quota_exhausted=True, quota_status=429), QuotaExhausted),
    ],
)
def test_quota_exhausted_publishes_nothing(prefect_api, settings, stub, faults, error):
    stub.faults = faults
    with pytest.raises(error):
        snapshot_flow(transform=False)
    assert parquet_files(settings.lake_dir) == []
    assert not any((settings.data_dir / "staging").glob("*")), "staged files are cleaned up"
    assert stub.stats.total_requests == 4, "one call per dataset, never retried"


def test_quota_running_out_mid_snapshot_publishes_nothing(prefect_api, settings, stub):
    # The quota runs out after a few calls: some datasets finish, the others stop mid-way; nothing is published.
    original = stub.catalog
    stub.faults = Faults(quota_after_calls=3)
    with pytest.raises(QuotaExhausted):
        snapshot_flow(transform=False)
    assert stub.stats.total_requests > 3  # the quota did run out mid-snapshot, not before it
    assert stub.catalog is original
    assert parquet_files(settings.lake_dir) == []


def test_bad_key_fails_without_retries(prefect_api, tmp_path, stub):
    use_settings(fast_settings(tmp_path / "d", stub.base_url, COINCAP_API_KEY="nope"))
    with pytest.raises(AuthError):
        snapshot_flow(transform=False)
    assert stub.stats.total_requests == 4
    assert parquet_files(tmp_path / "d" / "lake") == []
    use_settings(None)


def test_faulty_snapshot_reaches_the_marts_exactly_once_and_a_rerun_changes_no_count(prefect_api, tmp_path):
    catalog = Catalog.synthetic(n_assets=600, n_exchanges=25, n_markets=3000, seed=4, invalid_fraction=0.03)
    faults = Faults(p_5xx=0.10, p_429=0.05, retry_after_s=0.02, p_drop=0.03, p_truncate=0.03, rank_shift=3, seed=2)
    with StubServer(catalog, faults=faults, api_keys={API_KEY}) as stub:
        settings = fast_settings(tmp_path / "data", stub.base_url, COINCAP_MAX_ATTEMPTS=10, COINCAP_PAGE_LIMIT=500)
        use_settings(settings)
        summary = snapshot_flow(snapshot_id="20261121T060000Z")
        assert summary.dbt is not None and summary.dbt.ok
        warehouse = LocalWarehouse(settings.duckdb_path)

        def counts() -> dict[str, int]:
            sql = {
                "assets": "select count(distinct asset_id), count(*) from marts.fct_asset_snapshots",
                "markets": "select count(distinct (exchange_id, base_asset_id, quote_asset_id)), count(*) "
                "from marts.fct_market_snapshots",
                "rates": "select count(distinct rate_id), count(*) from marts.fct_rates",
                "exchanges": "select count(distinct exchange_id), count(*) from marts.dim_exchanges",
                "daily": "select count(distinct asset_id), count(*) from marts.fct_asset_daily",
            }
            result = {}
            for name, query in sql.items():
                (distinct, total), *_ = warehouse.query(query)[1]
                assert distinct == total, f"{name}: duplicates in the marts"
                result[name] = total
            return result

        first = counts()
        for dataset in DATASETS:
            expected = len(catalog.records(dataset)) - len(catalog.invalid_keys[dataset])
            assert first[dataset] == expected, dataset
        assert first["daily"] == first["assets"]

        snapshot_flow(snapshot_id="20261121T060000Z")
        assert counts() == first
        _, runs = warehouse.query("select step, status from ops.pipeline_runs order by recorded_at")
        assert runs.count(("dbt", "completed")) == 2 and runs.count(("markets", "completed")) == 2
    use_settings(None)


@pytest.mark.parametrize("with_invalid_record", [False, True])
def test_a_server_that_ignores_offset_stops_the_extract_with_one_line(tmp_path, with_invalid_record):
    """Every page is the first one: the extract must stop, not page forever (an invalid record never lands, so
    it never counts as seen; the repeat is still caught)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from flows.errors import ApiError
    from flows.ingest.extract import extract_dataset
    from flows.snapshot_id import Snapshot
    from flows.standin import Catalog

    records = [dict(r) for r in Catalog.demo().assets[:10]]
    if with_invalid_record:
        records[3]["priceUsd"] = "not a number"
    body = json.dumps({"timestamp": 1_763_700_000_000, "data": records}).encode()
    requests_seen: list[str] = []

    class SamePage(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            requests_seen.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), SamePage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = fast_settings(tmp_path, f"http://127.0.0.1:{server.server_port}", COINCAP_PAGE_LIMIT=10)
        with pytest.raises(ApiError, match="same full page of assets twice"):
            extract_dataset("assets", Snapshot.now(), settings=settings)
    finally:
        server.shutdown()
        server.server_close()
    assert len(requests_seen) == 2  # the first page, and its repeat: no call beyond it
