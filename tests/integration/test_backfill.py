"""The history backfill against the local CoinCap stand-in: chunking, resume, budget, delisted assets,
quarantine, the credit estimate, the dbt staging model, and kill-and-resume in real processes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

import flows.backfill as bf
from flows.contracts.datasets import ASSET_HISTORY
from flows.errors import ApiError, AuthError, QuotaExhausted, StorageError
from flows.ingest.backfill import backfill
from flows.ingest.backfill_plan import INTERVALS, Chunk, estimate_backfill_credits, plan_chunks, skipped_key
from flows.ingest.backfill_report import BackfillReport
from flows.lab.backfill_bench import benchmark_backfill
from flows.lab.backfill_bench import lake_points as bench_lake_points
from flows.lake.factory import lake_storage
from flows.lake.history import PLACEHOLDER_KEY, ensure_history_readable
from flows.lake.storage import LakeStorage, LocalStorage, StorageWrapper
from flows.settings import Settings
from flows.standin import Catalog, Faults, StubServer
from flows.standin.records import DEFAULT_AS_OF_MS
from tests.conftest import API_KEY, fast_settings

AS_OF = datetime.fromtimestamp(DEFAULT_AS_OF_MS / 1000, UTC)  # the stand-in's "now": its history ends that day
END = AS_OF.date()
START = END - timedelta(days=2 * 365)
N_ASSETS = 12
HISTORY_DAYS = 3 * 365  # more than asked for, so every chunk of the range is full up to AS_OF
DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.synthetic(
        n_assets=N_ASSETS, n_exchanges=3, n_markets=20, history_days=HISTORY_DAYS, history_assets=N_ASSETS,
        history_interval="d1",
    )  # fmt: skip


@pytest.fixture
def server(catalog: Catalog) -> Iterator[StubServer]:
    with StubServer(catalog, api_keys={API_KEY}) as srv:
        yield srv


@pytest.fixture
def settings(tmp_path: Path, server: StubServer) -> Settings:
    return fast_settings(tmp_path / "data", server.base_url, PIPELINE_TARGET="local")


def run(settings: Settings, assets: list[str] | None = None, **kwargs: Any) -> BackfillReport:
    """The engine as the flow calls it: the lake built once from the settings, unless a test passes its own."""
    kwargs.setdefault("calls_per_minute", None)
    kwargs.setdefault("now", AS_OF)
    storage = kwargs.pop("storage", None) or lake_storage(settings)
    start, end = kwargs.pop("start", START), kwargs.pop("end", END)
    return backfill(settings, assets, "d1", start, end, storage=storage, **kwargs)


def history_calls(server: StubServer) -> dict[str, int]:
    return {p.split("/")[-2]: n for p, n in server.stats.requests.items() if p.endswith("/history")}


def lake_keys(settings: Settings, prefix: str = "coincap/asset_history/") -> set[str]:
    return set(LocalStorage(settings.lake_dir).list(prefix))


def lake_points(settings: Settings) -> tuple[int, int]:
    return bench_lake_points(settings.lake_dir)


def expected_points(catalog: Catalog, assets: list[str]) -> int:
    """Points of the stand-in that fall inside the chunks a backfill of START..END covers."""
    now_ms = int(AS_OF.timestamp() * 1000)
    total = 0
    for asset in assets:
        chunks = plan_chunks(asset, "d1", START, END, now_ms)
        lo, hi = chunks[0].start_ms, chunks[-1].end_ms
        total += sum(lo <= p["time"] < hi for p in catalog.history[asset])
    return total


def ids(catalog: Catalog) -> list[str]:
    return [a["id"] for a in catalog.assets]


# ---- chunks -----------------------------------------------------------------------------------------------


def test_chunks_sit_on_a_fixed_grid_and_stay_small() -> None:
    now_ms = int(AS_OF.timestamp() * 1000)
    assert set(ASSET_HISTORY.by_name["history_interval"].isin or ()) == set(INTERVALS)
    for name, spec in INTERVALS.items():
        assert spec.points_per_chunk <= 1440, name
        a = plan_chunks("x", name, date(2025, 1, 10), date(2025, 2, 3), now_ms)
        b = plan_chunks("x", name, date(2025, 1, 20), date(2025, 3, 1), now_ms)
        assert all(c.start_ms % spec.chunk_ms == 0 and c.end_ms - c.start_ms == spec.chunk_ms for c in a + b)
        # two runs with different ranges cut the same chunks where they overlap: a point has one object
        shared = {c.start_ms for c in a} & {c.start_ms for c in b}
        assert shared and {c.key for c in a if c.start_ms in shared} == {c.key for c in b if c.start_ms in shared}
        assert [c.end_ms for c in a[:-1]] == [c.start_ms for c in a[1:]]
    chunk = plan_chunks("bitcoin", "d1", START, END, now_ms)[-1]
    assert chunk.key == f"coincap/asset_history/interval=d1/asset=bitcoin/{chunk.start_ms}_{chunk.end_ms}.parquet"
    assert chunk.params == {"interval": "d1", "start": chunk.start_ms, "end": chunk.end_ms - 1}
    assert chunk.is_open(chunk.end_ms) and not chunk.is_open(chunk.end_ms + DAY_MS)
    # nothing in the future is planned
    assert plan_chunks("x", "h1", END, END + timedelta(days=400), now_ms)[-1].start_ms < now_ms


# ---- resume, idempotence, open chunks ---------------------------------------------------------------------


class CrashingStorage(StorageWrapper):
    """The local lake, failing like a killed process after `crash_after` chunk objects."""

    def __init__(self, inner: LakeStorage, crash_after: int) -> None:
        super().__init__(inner)
        self.left = crash_after
        self.lock = threading.Lock()  # writes come from several threads

    def put_file(self, local_path: Path, key: str) -> None:
        if key.startswith("coincap/asset_history/"):
            with self.lock:
                if self.left <= 0:
                    raise StorageError("simulated crash", "re-run")
                self.left -= 1
        self.inner.put_file(local_path, key)


def test_resume_skips_finished_chunks_and_lands_each_point_once(
    settings: Settings, server: StubServer, catalog: Catalog
) -> None:
    assets = ids(catalog)
    crashing = CrashingStorage(LocalStorage(settings.lake_dir), crash_after=10)
    with pytest.raises(StorageError):
        run(settings, assets, workers=3, storage=crashing)
    landed = {
        key.rsplit("/", 2)[-2].removeprefix("asset=") + "/" + key.rsplit("/", 1)[-1] for key in lake_keys(settings)
    }
    assert len(landed) == 10

    before = history_calls(server)
    report = run(settings, assets, workers=3)
    after = history_calls(server)
    now_ms = int(AS_OF.timestamp() * 1000)
    for asset in assets:
        chunks = plan_chunks(asset, "d1", START, END, now_ms)
        missing = [c for c in chunks if f"{asset}/{c.start_ms}_{c.end_ms}.parquet" not in landed or c.is_open(now_ms)]
        assert after.get(asset, 0) - before.get(asset, 0) == len(missing), asset  # no finished chunk refetched
    total = len(assets) * len(plan_chunks("x", "d1", START, END, now_ms))
    assert report.chunks_total == total and report.chunks_skipped == 10 - report.chunks_refetched_open
    assert report.chunks_fetched == total - report.chunks_skipped and report.chunks_left == 0
    rows, distinct = lake_points(settings)
    assert rows == distinct == expected_points(catalog, assets)


def test_rerun_adds_nothing_and_refetches_only_open_chunks(
    settings: Settings, server: StubServer, catalog: Catalog
) -> None:
    assets = ids(catalog)[:4]
    first = run(settings, assets)
    keys = lake_keys(settings)
    assert first.points_landed == expected_points(catalog, assets) and len(keys) == first.chunks_fetched
    # AS_OF lies in each asset's last chunk, so that chunk is open: fetched again, its object replaced
    calls = sum(history_calls(server).values())
    second = run(settings, assets)
    assert lake_keys(settings) == keys
    assert second.chunks_fetched == second.chunks_refetched_open == len(assets)
    assert sum(history_calls(server).values()) - calls == len(assets)
    assert lake_points(settings)[0] == first.points_landed
    # once the chunks are closed, a re-run makes no call at all
    calls = sum(history_calls(server).values())
    third = run(settings, assets, now=datetime.now(UTC))
    assert third.chunks_fetched == 0 and third.calls == 0 and sum(history_calls(server).values()) == calls
    assert lake_keys(settings) == keys


# ---- credits ----------------------------------------------------------------------------------------------


def test_estimate_is_close_to_what_the_run_costs(settings: Settings, server: StubServer, catalog: Catalog) -> None:
    assets = ids(catalog)
    estimate = estimate_backfill_credits(assets, "d1", START, END, storage=lake_storage(settings), now=AS_OF)
    by_count = estimate_backfill_credits(len(assets), "d1", START, END, now=AS_OF)
    assert (by_count.credits, by_count.chunks_to_fetch) == (estimate.credits, estimate.chunks_to_fetch)
    report = run(settings, assets)
    assert report.estimated_credits == estimate.credits
    assert 0.8 <= report.credits_used / estimate.credits <= 1.25, (report.credits_used, estimate.credits)
    assert report.credits_used == server.stats.credits  # what the meter recorded is what the server billed
    assert estimate.worst_case_credits >= report.credits_used
    # after the run, only the open chunks are left to pay for
    again = estimate_backfill_credits(assets, "d1", START, END, storage=lake_storage(settings), now=AS_OF)
    assert again.chunks_to_fetch == len(assets) and again.chunks_landed == report.chunks_fetched - len(assets)


def test_budget_is_never_exceeded_and_the_run_stops_cleanly(
    settings: Settings, server: StubServer, catalog: Catalog
) -> None:
    assets = ids(catalog)
    budget = 150  # a full d1 chunk is ~14 credits; its worst case (160 bytes a point, retries) ~31
    report = run(settings, assets, max_credits=budget)
    assert report.stopped == "budget"
    assert report.credits_used <= budget and server.stats.credits <= budget
    assert report.chunks_fetched >= 3 and report.chunks_left > 0 and report.credits_left_estimate > 0
    assert report.chunks_fetched + report.chunks_left == report.chunks_total
    assert "stopped before exceeding --max-credits 150" in report.summary()
    # what landed is whole: every object holds every point of its chunk
    rows, distinct = lake_points(settings)
    assert rows == distinct == report.points_landed
    # the rest fits a larger budget and lands once
    rest = run(settings, assets, max_credits=10_000)
    assert rest.stopped is None and rest.chunks_left == 0
    assert lake_points(settings) == (expected_points(catalog, assets),) * 2
    # a budget too small for a single call fetches nothing
    nothing = run(settings, assets, max_credits=5, now=datetime.now(UTC), start=START - timedelta(days=800))
    assert nothing.stopped == "budget" and nothing.chunks_fetched == 0 and nothing.credits_used == 0


HOSTILE_BILLING = {
    # half the bodies cut: the server bills each whole answer it computed, however little of it arrived
    "truncated": Faults(p_truncate=0.5, seed=1),
    # errors and dropped connections, retried: every attempt is a request the budget must have room for
    "failing": Faults(p_5xx=0.3, p_drop=0.15, p_garbage=0.1, seed=2),
    # answers held past the read timeout: given up on, then retried
    "slow": Faults(p_slow=0.25, slow_s=2.5, seed=3),
    # billed far above the byte rule (one report saw ~12 credits a history call), and saying so in a header
    "dear": Faults(bill_floor=40, billing_header="X-Credits-Used", p_truncate=0.2, seed=4),
}


@pytest.mark.parametrize("kind", list(HOSTILE_BILLING))
def test_budget_holds_against_truncated_failing_slow_and_dear_answers(
    settings: Settings, server: StubServer, catalog: Catalog, kind: str
) -> None:
    assets = ids(catalog)
    budget = 200
    server.faults = HOSTILE_BILLING[kind]
    report = run(settings, assets, max_credits=budget)
    assert report.stopped == "budget" and report.chunks_fetched >= 1
    billed = server.stats.credits
    assert billed <= budget, f"{kind}: the server billed {billed} credits against a budget of {budget}"
    # the meter counts what the server billed (a cut body at its announced length, a dear one at its header)
    assert report.credits_used >= billed
    if kind != "slow":  # an answer given up on is never sent, so never billed, but the meter counts the request
        assert report.credits_used == billed
    rows, distinct = lake_points(settings)
    assert rows == distinct == report.points_landed


def test_listing_assets_stops_when_the_server_ignores_offset(tmp_path: Path, server: StubServer) -> None:
    settings = fast_settings(tmp_path / "data", server.base_url, COINCAP_PAGE_LIMIT=5)
    server.faults = Faults(ignore_offset=True, drift_values=True)  # the first page forever, values changing
    with pytest.raises(ApiError, match="the server ignores offset"):
        run(settings, None)
    assert server.stats.requests["/v3/assets"] == 3  # the first page, then two that bring nothing new


def test_listing_assets_counts_against_the_budget(settings: Settings, server: StubServer) -> None:
    report = run(settings, None, start=END - timedelta(days=30))
    assert report.assets == N_ASSETS and server.stats.requests["/v3/assets"] == 1
    assert report.credits_used == server.stats.credits
    with pytest.raises(Exception, match="too little to list /assets"):
        run(settings, None, max_credits=50)


# ---- delisted, invalid, fatal errors ----------------------------------------------------------------------


def test_delisted_asset_is_recorded_once_and_never_asked_again(settings: Settings, server: StubServer) -> None:
    report = run(settings, ["bitcoin", "gone-coin"])
    assert report.delisted == ["gone-coin"] and history_calls(server)["gone-coin"] == 1
    assert LocalStorage(settings.lake_dir).exists(skipped_key("d1", "gone-coin"))
    assert report.chunks_left == 0 and report.points_landed > 0
    again = run(settings, ["bitcoin", "gone-coin"], now=datetime.now(UTC))
    assert again.delisted == [] and again.delisted_known == ["gone-coin"]
    assert history_calls(server)["gone-coin"] == 1
    retried = run(settings, ["gone-coin"], retry_delisted=True)
    assert retried.delisted == ["gone-coin"] and history_calls(server)["gone-coin"] == 2


def test_invalid_points_are_quarantined_with_reasons(tmp_path: Path) -> None:
    day0 = (int(AS_OF.timestamp() * 1000) // DAY_MS - 20) * DAY_MS
    points: list[dict[str, Any]] = [
        {"priceUsd": f"{100 + i}.5", "time": day0 + i * DAY_MS, "date": "x"} for i in range(10)
    ]
    points[2] = {**points[2], "priceUsd": "-1.0"}
    points[5] = {**points[5], "priceUsd": "abc"}
    points.append(dict(points[7]))  # the same point twice: one lands, the copy is quarantined
    points[8] = {**points[8], "marketCapUsd": "5"}  # a field the contract does not know: kept, reported
    catalog = Catalog(assets=[{"id": "x"}], history={"x": points})
    with StubServer(catalog, api_keys={API_KEY}) as srv:
        settings = fast_settings(tmp_path / "data", srv.base_url)
        report = run(settings, ["x"], start=END - timedelta(days=30))
    assert (report.points_served, report.points_landed, report.points_quarantined) == (11, 8, 3)
    assert report.new_fields == ["marketCapUsd"]
    bad = LocalStorage(settings.lake_dir).list("quarantine/asset_history/")
    assert len(bad) == 1 and bad[0].startswith("quarantine/asset_history/interval=d1/asset=x/")
    with duckdb.connect() as con:
        reasons = [r[0] for r in con.sql(f"select reason from '{settings.lake_dir / bad[0]}' order by 1").fetchall()]
    assert any(r.startswith("priceUsd: failed greater_than_or_equal_to") for r in reasons)
    assert any(r.startswith("priceUsd: not a number") for r in reasons)
    assert any(r.startswith("duplicate key") for r in reasons)
    assert lake_points(settings) == (8, 8)


@pytest.mark.parametrize(
    ("faults", "keys", "error"),
    [(Faults(), {"other-key"}, AuthError), (Faults(quota_exhausted=True), {API_KEY}, QuotaExhausted)],
)
def test_auth_and_quota_errors_stop_at_once(
    tmp_path: Path, catalog: Catalog, faults: Faults, keys: set[str], error: type[Exception]
) -> None:
    with StubServer(catalog, faults=faults, api_keys=keys) as srv:
        settings = fast_settings(tmp_path / "data", srv.base_url)
        with pytest.raises(error):
            run(settings, ids(catalog), workers=3)
        assert srv.stats.total_requests <= 3  # at most the calls already in flight: none retried
    assert not lake_keys(settings)


def test_chunk_counts_flag_truncated_answers(tmp_path: Path, catalog: Catalog) -> None:
    cut = int(AS_OF.timestamp() * 1000) - 50 * DAY_MS  # as if the server stopped 50 days short
    truncated = [p for p in catalog.history["bitcoin"] if p["time"] < cut]
    with StubServer(Catalog(assets=[{"id": "bitcoin"}], history={"bitcoin": truncated}), api_keys={API_KEY}) as srv:
        report = run(fast_settings(tmp_path / "data", srv.base_url), ["bitcoin"])
    assert report.suspicious and all("truncated" in s for s in report.suspicious)


def test_backfill_into_gcs_resumes_from_the_bucket(
    tmp_path: Path, server: StubServer, catalog: Catalog, gcs_emulator: Any
) -> None:
    bucket = gcs_emulator.create_bucket()
    settings = fast_settings(
        tmp_path / "data", server.base_url, PIPELINE_TARGET="gcp", GCS_BUCKET=bucket, GCP_PROJECT_ID="example-project"
    )
    assets = ids(catalog)[:3]
    first = run(settings, assets, now=datetime.now(UTC))
    names = {b.name for b in gcs_emulator.client().list_blobs(bucket, prefix="coincap/asset_history/")}
    assert len(names) == first.chunks_fetched == first.chunks_total and first.points_landed == expected_points(
        catalog, assets
    )
    again = run(settings, assets, now=datetime.now(UTC))
    assert again.calls == 0 and again.chunks_skipped == first.chunks_total


# ---- dbt, Prefect, processes ------------------------------------------------------------------------------


def test_staging_model_builds_on_duckdb(settings: Settings, catalog: Catalog) -> None:
    from flows.warehouse.dbt import run_dbt

    empty = run_dbt(settings, "build", "--select", "stg_coincap__asset_history")  # no history yet: still builds
    assert empty.ok and empty.statuses["success"] == 1
    # the zero-row placeholder BigQuery needs before the first backfill is written once and read as nothing
    lake, staging = LocalStorage(settings.lake_dir), settings.data_dir / "staging"
    assert ensure_history_readable(lake, staging) == [PLACEHOLDER_KEY]
    assert ensure_history_readable(lake, staging) == []
    report = run(settings, ids(catalog)[:3])
    outcome = run_dbt(settings, "build", "--select", "stg_coincap__asset_history")
    assert outcome.ok and outcome.statuses["success"] == 1 and outcome.statuses["pass"] >= 5
    with duckdb.connect(str(settings.duckdb_path)) as con:
        count, dates, bad = con.sql(
            "select count(*), count(distinct (asset_id, price_date)), "
            "count(*) filter (where epoch_ms(price_ts) <> price_time_ms) "
            "from staging.stg_coincap__asset_history"
        ).fetchone()  # type: ignore[misc]
    assert count == dates == report.points_landed and bad == 0


def test_flow_parameters_are_typed() -> None:
    params = bf.backfill_flow.validate_parameters({"interval": "h1", "start": "2025-01-01", "max_credits": 10})
    assert params["interval"] == "h1" and params["start"] == date(2025, 1, 1)
    for bad in ({"interval": "w1"}, {"max_credits": 0}, {"start": "yesterday"}):
        with pytest.raises(Exception, match="invalid parameters"):
            bf.backfill_flow.validate_parameters(bad)


@pytest.mark.slow  # the session's Prefect test server starts in ~10-25 s when no other test has started it
def test_flow_lists_assets_backfills_and_records_metrics(prefect_api: str, tmp_path: Path, catalog: Catalog) -> None:
    from flows.settings import use_settings
    from flows.warehouse.local_duckdb import LocalWarehouse

    faults = Faults(p_5xx=0.1, seed=3)  # transient failures are retried inside the client, and metered
    with StubServer(catalog, faults=faults, api_keys={API_KEY}) as srv:
        settings = fast_settings(tmp_path / "data", srv.base_url)
        use_settings(settings)
        try:
            report = bf.backfill_flow(start=END - timedelta(days=60), end=END)
            assert report.assets == N_ASSETS and report.chunks_left == 0 and report.stopped is None
            assert report.credits_used == srv.stats.credits and report.retries > 0
            spent = srv.stats.credits
            capped = bf.backfill_flow(assets=ids(catalog)[:3], start=START, max_credits=60)
            assert capped.stopped == "budget" and 0 < srv.stats.credits - spent <= 60
        finally:
            use_settings(None)
    assert lake_points(settings) == (report.points_landed + capped.points_landed,) * 2
    _, rows = LocalWarehouse(settings.duckdb_path).query(
        "select step, status, valid, credits from ops.pipeline_runs where step like 'asset_history%' order by 4 desc"
    )
    assert rows[0] == ("asset_history:d1", "completed", report.points_landed, report.credits_used)
    assert len(rows) == 2


def test_kill_and_resume_in_real_processes() -> None:
    """The benchmark's harness at a small size: a run SIGKILLed part-way resumes without refetching."""
    result = benchmark_backfill(n_assets=40, years=2, workers=4, kill_at=0.3, server_delay_s=0.03, timed_run=False)
    assert result.chunks == 40 * 3 and result.points == 40 * (2 * 365 + 1)
    assert 0 < result.killed_after_chunks < result.chunks
    assert result.refetched_finished_chunks == 0 and result.resume_requests == result.resume_expected_requests
    assert result.points_after_resume == result.distinct_points_after_resume == result.points
    assert result.ok


def test_chunk_key_round_trip() -> None:
    chunk = Chunk("usd-coin", "h1", 0, INTERVALS["h1"].chunk_ms)
    assert chunk.quarantine_key.startswith("quarantine/asset_history/interval=h1/asset=usd-coin/")
    with pytest.raises(Exception, match="not a CoinCap asset id"):
        estimate_backfill_credits(["../etc"], "d1")
