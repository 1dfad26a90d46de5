"""Data-quality checks: a good snapshot raises nothing, a bad one trips exactly the right checks, results are stored.

Snapshots go through the real flow (local CoinCap stand-in → lake → dbt build, whose data tests check what reads
one model → the Python checks, what crosses systems). The bad snapshot comes from `Catalog.with_bad_values`: every
record passes its contract (Pandera rejects negatives at ingestion, tested elsewhere) but values are wrong. Checks
the stand-in cannot reach (negative prices, duplicate keys) are tripped by editing the marts of a copy of the demo
warehouse; then `dbt test` runs the data tests again.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlglot
from sqlglot import exp

from flows import quality
from flows.paths import PROJECT_ROOT
from flows.quality import CHECKS, CheckResult, QualityReport, Snap, compile_checks, run_checks
from flows.quality.dbt_results import DbtTest, check_name_of, check_results, declared_checks, read_tests, target_dir
from flows.settings import Settings, use_settings
from flows.snapshot import SnapshotSummary, snapshot_flow
from flows.standin import Catalog, StubServer
from flows.warehouse.local_duckdb import LocalWarehouse
from tests.bq_emulator import PROJECT, BigQueryEmulator, bq_emulator  # noqa: F401 - session fixture
from tests.conftest import API_KEY, fast_settings

pytestmark = pytest.mark.slow

ROOT = PROJECT_ROOT

# What `Catalog.with_bad_values` breaks, and the checks that must say so (nothing else may trip).
BAD_FAILS = {
    "completeness.asset_ranks_contiguous": "rank_gap",
    "completeness.markets_known_exchanges": "unknown_exchange",
    "validity.change_percent_range": "change_out_of_range",
    "validity.timestamps_not_in_future": "market_in_future",
    "consistency.market_cap_matches_price_supply": "market_cap_off",
    "consistency.market_prices_match_asset": "market_price_off",
    "consistency.rates_match_assets": "rate_off",
    "consistency.exchange_volume_shares": "exchange_share_off",
}
BAD_WARNS = {
    "validity.supply_within_max_supply": "supply_above_max",
    "consistency.vwap_within_24h_range": "vwap_off",
    "uniqueness.asset_symbol_collisions": "symbol_collision",
    "anomaly.price_jump": "price_jump",
    "anomaly.volume_spike": "volume_spike",
}


def snapshot_id(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ")


def statuses(report: QualityReport) -> dict[str, str]:
    return {r.check_name: r.status for r in report.results}


def by_name(report: QualityReport) -> dict[str, CheckResult]:
    return {r.check_name: r for r in report.results}


class Webhook:
    """A chat webhook on 127.0.0.1 that records what is posted to it."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/quality"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Run:
    settings: Settings
    summary: SnapshotSummary


@pytest.fixture(scope="module")
def demo(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """The bundled demo (real recorded CoinCap responses) through the flow, dbt and the checks."""
    with StubServer(Catalog.demo(), api_keys={API_KEY}) as stub:
        settings = fast_settings(tmp_path_factory.mktemp("demo") / "data", stub.base_url)
        use_settings(settings)
        try:
            yield Run(settings, snapshot_flow())
        finally:
            use_settings(None)


@dataclass
class BadRun(Run):
    catalog: Catalog
    good_snapshot: str
    webhook_posts: list[dict[str, Any]]


@pytest.fixture(scope="module")
def bad(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BadRun]:
    """A good synthetic snapshot, then the same catalog with bad values an hour later (dbt and checks run then)."""
    now = datetime.now(UTC).replace(microsecond=0)
    good = Catalog.synthetic(n_assets=120, n_exchanges=12, n_markets=1200, seed=17,
                             as_of_ms=int((now - timedelta(minutes=10)).timestamp() * 1000))  # fmt: skip
    wrong = good.with_bad_values(as_of_ms=int((now - timedelta(minutes=10)).timestamp() * 1000))
    hook = Webhook()
    data = tmp_path_factory.mktemp("bad") / "data"
    try:
        with StubServer(good, api_keys={API_KEY}) as stub:
            settings = fast_settings(data, stub.base_url, PIPELINE_ALERT_WEBHOOK_URL=hook.url)
            use_settings(settings)
            first = snapshot_id(now - timedelta(hours=2))
            snapshot_flow(snapshot_id=first, transform=False)
            stub.catalog = wrong
            summary = snapshot_flow(snapshot_id=snapshot_id(now - timedelta(hours=1)))
            yield BadRun(settings, summary, wrong, first, hook.posts)
    finally:
        use_settings(None)
        hook.close()


# ---------------------------------------------------------------------------------------------- good snapshots


def test_the_demo_snapshot_passes_every_check_but_a_real_max_supply_defect(demo: Run) -> None:
    report = demo.summary.quality
    assert report is not None and report.snapshot_id == demo.summary.snapshot_id
    assert len(report.results) >= 30 and len({r.check_name for r in report.results}) == len(report.results)
    assert {r.category for r in report.results} == set(quality.CATEGORIES)
    assert report.ok, report.summary_line()
    # The one finding is real CoinCap data (2025-03): mantra-dao's circulating supply above its max supply.
    assert [(r.check_name, r.status) for r in report.warned] == [("validity.supply_within_max_supply", "warn")]
    assert "mantra-dao" in report.warned[0].detail and "floki-inu" not in report.warned[0].detail  # max 0 = none
    # Markets recorded in 2018 are too stale to compare with 2025 prices: left out, not failed.
    markets = by_name(report)["consistency.market_prices_match_asset"]
    assert (
        markets.status == "pass"
        and markets.detail == "no failing rows (dbt test dq_consistency__market_prices_match_asset)"
    )
    assert by_name(report)["consistency.rates_match_assets"].failing_rows == 0
    # The checks that read one model are the dbt build's data tests, which warned once; the report read them.
    assert demo.summary.dbt is not None and demo.summary.dbt.statuses["warn"] >= 1
    dbt_checks = set(declared_checks(target_dir(demo.settings)))
    assert len(dbt_checks) >= 20 and dbt_checks <= {r.check_name for r in report.results}
    assert not dbt_checks & {c.name for c in CHECKS}, "each check is a dbt test or Python's, not both"
    assert report.summary_line() == f"{len(report.results)} checks: {len(report.results) - 1} pass, 1 warn " \
        "(validity.supply_within_max_supply)"  # fmt: skip

    names, rows = LocalWarehouse(demo.settings.duckdb_path).query(
        "select check_name, status, snapshot_id, run_id, category, severity, detail, description"
        " from ops.dq_results order by check_name"
    )
    assert len(rows) == len(report.results), "every result stored once"
    stored = {r[0]: r for r in rows}
    assert {name: r[1] for name, r in stored.items()} == statuses(report)
    assert not [r for r in rows if r[1] in ("fail", "error")], "nothing stored as a failure"
    assert {r[3] for r in rows} == {report.run_id}
    assert stored["validity.no_negative_prices"][2] == report.snapshot_id
    assert stored["freshness.assets"][2] is None, "freshness is not tied to a snapshot"
    assert all(r[6] and "\n" not in r[6] and r[7] for r in rows)


def test_a_good_synthetic_snapshot_passes_every_check(bad: BadRun) -> None:
    # The bad snapshot came later: `dbt test` reads the snapshot asked for (PIPELINE_DQ_SNAPSHOT_ID), not the latest.
    report = run_checks(bad.settings, snapshot_id=bad.good_snapshot, store=False)
    assert report.snapshot_id == bad.good_snapshot
    assert [r for r in report.results if r.status != "pass"] == []
    assert bad.summary.quality is not None
    assert {r.check_name for r in report.results} == {r.check_name for r in bad.summary.quality.results}
    # the comparisons are dbt tests that ran on this snapshot
    for name in ("consistency.market_prices_match_asset", "consistency.rates_match_assets", "anomaly.price_jump"):
        assert by_name(report)[name].detail.startswith("no failing rows (dbt test dq_"), name
        assert report.snapshots[name] == bad.good_snapshot


# ---------------------------------------------------------------------------------------------- a bad snapshot


def test_a_bad_snapshot_trips_exactly_the_right_checks_and_names_the_culprits(bad: BadRun) -> None:
    report = bad.summary.quality
    assert report is not None, "the flow completed and carries the report"
    assert bad.summary.dbt is not None and bad.summary.dbt.ok, "bad values are landed and modeled, not dropped"
    found = statuses(report)
    assert {n for n, s in found.items() if s == "fail"} == set(BAD_FAILS)
    assert {n for n, s in found.items() if s == "warn"} == set(BAD_WARNS)
    assert "error" not in found.values()
    results = by_name(report)
    for name, kind in {**BAD_FAILS, **BAD_WARNS}.items():
        culprit = bad.catalog.bad_values[kind]
        key = re.search(r"rank (\d+)", culprit).group(0) if kind == "rank_gap" else culprit  # type: ignore[union-attr]
        assert key in results[name].detail, (name, results[name].detail)
        assert results[name].failing_rows and results[name].failing_rows >= 1
    assert "80" in results["anomaly.price_jump"].detail  # +80.0%
    assert not report.ok and report.summary_line().endswith(f"({', '.join(r.check_name for r in report.failed)})")
    # In `dbt build` each of those is a data test that warned (the build went on); the report read the build's.
    assert bad.summary.dbt.statuses["warn"] >= len(BAD_FAILS) + len(BAD_WARNS)


def test_the_bad_snapshot_alerts_the_webhook_and_shows_on_the_health_view(bad: BadRun) -> None:
    assert len(bad.webhook_posts) == 1, "one data-quality alert per quality run"
    text = json.dumps(bad.webhook_posts[0])
    assert all(name in text for name in BAD_FAILS)
    store = LocalWarehouse(bad.settings.duckdb_path)
    report = bad.summary.quality
    assert report is not None
    _, rows = store.query(
        f"select check_name, status from ops.dq_results where run_id = '{report.run_id}' and status <> 'pass'"
    )
    assert dict(rows) == {**dict.fromkeys(BAD_FAILS, "fail"), **dict.fromkeys(BAD_WARNS, "warn")}
    # The health page's view (dbt, built before the checks ran) reads the results as they land.
    _, latest = store.query(
        "select check_name, status from marts.rpt_data_quality where is_latest_run and status in ('fail', 'warn')"
    )
    assert set(latest) == set(rows)


def test_the_quality_command_prints_the_checks_and_exits_6_on_failure(
    bad: BadRun, demo: Run, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows import cli

    def run(*args: str) -> int:
        monkeypatch.setattr("sys.argv", ["coincap-pipeline", "quality", *args])
        try:
            cli.main()
        except SystemExit as exc:
            return int(exc.code or 0)
        return 0

    assert run("--data-dir", str(bad.settings.data_dir), "--no-store") == 6
    printed = capsys.readouterr()
    assert "consistency.market_cap_matches_price_supply" in printed.out
    assert "error: Data-quality checks failed: completeness.asset_ranks_contiguous" in " ".join(printed.err.split())

    before = LocalWarehouse(demo.settings.duckdb_path).query("select count(*) from ops.dq_results")[1][0][0]
    assert run("--data-dir", str(demo.settings.data_dir), "--category", "validity") == 0
    printed = capsys.readouterr()
    assert "1 warn (validity.supply_within_max_supply)" in printed.out
    after = LocalWarehouse(demo.settings.duckdb_path).query("select count(*) from ops.dq_results")[1][0][0]
    validity = [c for c in CHECKS if c.category == "validity"] + [
        name for name, category in declared_checks(target_dir(demo.settings)).items() if category == "validity"
    ]
    assert after - before == len(validity) >= 8, "stored by default"

    assert run("--data-dir", str(demo.settings.data_dir), "--category", "nonsense") == 2
    assert "Unknown check category nonsense" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["demo", "synthetic"])
def test_bad_values_pass_every_contract_and_leave_the_source_catalog_alone(name: str) -> None:
    from flows.contracts.datasets import CONTRACTS
    from flows.contracts.validate import validate_records

    source = Catalog.demo() if name == "demo" else Catalog.synthetic(n_assets=60, n_exchanges=8, n_markets=400, seed=3)
    pristine = json.dumps([source.records(d) for d in quality.DATASETS], sort_keys=True)
    wrong = source.with_bad_values()
    assert json.dumps([source.records(d) for d in quality.DATASETS], sort_keys=True) == pristine
    assert set(wrong.bad_values) == set(BAD_FAILS.values()) | set(BAD_WARNS.values())
    for dataset, contract in CONTRACTS.items():
        checked = validate_records(contract, wrong.records(dataset), snapshot_id="20261121T053000Z",
                                   snapshot_ts=datetime(2026, 11, 21, 5, 30, tzinfo=UTC))  # fmt: skip
        assert checked.n_quarantined == 0, f"{dataset}: the contracts would reject a bad value"
    assert len(wrong.assets) == len(source.assets) - 1  # the rank gap
    assert sum(m["exchangeId"] == wrong.bad_values["unknown_exchange"] for m in wrong.markets) >= 2


# ---------------------------------------------------------------------------------------------- the checks themselves


def demo_copy(demo: Run, tmp_path: Path) -> Settings:
    """Settings for a copy of the demo warehouse (and dbt's parse state), reading the demo's lake."""
    data = tmp_path / "data"
    data.mkdir()
    for suffix in ("", ".wal"):
        source = Path(f"{demo.settings.duckdb_path}{suffix}")
        if source.exists():
            shutil.copy(source, data / f"warehouse.duckdb{suffix}")
    (data / "lake").symlink_to(demo.settings.lake_dir)
    shutil.copytree(demo.settings.data_dir / "dbt" / "target", data / "dbt" / "target")  # partial parse: seconds
    return demo.settings.model_copy(update={"data_dir": data})


@pytest.fixture
def tampered(demo: Run, tmp_path: Path) -> Settings:
    """A copy of the demo warehouse with wrong rows written straight into the marts (no contract in the way)."""
    settings = demo_copy(demo, tmp_path)
    assets, markets = "marts.fct_asset_snapshots", "marts.fct_market_snapshots"
    with duckdb.connect(str(settings.duckdb_path)) as con:
        con.execute(f"update {assets} set price_usd = -1 where asset_id = 'dogecoin'")
        con.execute(f"update {assets} set market_cap_usd = -5 where asset_id = 'solana'")
        con.execute(f"insert into {assets} select * from {assets} where asset_id = 'tron'")
        con.execute("update marts.fct_rates set rate_usd = 0 where rate_id = 'euro'")
        con.execute(f"update {markets} set percent_exchange_volume = 150 where exchange_id = 'gemini'")
        con.execute(f"update {markets} set market_rank = 0 where exchange_id = 'kraken'")
    return settings


def test_defects_the_contracts_would_stop_are_caught_in_the_marts_too(tampered: Settings, demo: Run) -> None:
    report = run_checks(tampered, snapshot_id=demo.summary.snapshot_id, categories={"validity", "uniqueness"},
                        store=False)  # fmt: skip
    results = by_name(report)
    tripped = {n: (r.status, r.detail) for n, r in results.items() if r.status != "pass"}
    assert set(tripped) == {
        "validity.no_negative_prices", "validity.no_negative_amounts", "validity.rates_positive",
        "validity.market_values_in_range", "validity.ranks_positive", "validity.supply_within_max_supply",
        "uniqueness.asset_id_per_snapshot", "uniqueness.asset_rank_per_snapshot",
    }, tripped  # fmt: skip
    assert "dogecoin -1" in tripped["validity.no_negative_prices"][1]
    assert "solana" in tripped["validity.no_negative_amounts"][1]
    assert "euro 0" in tripped["validity.rates_positive"][1]
    assert "gemini/" in tripped["validity.market_values_in_range"][1]
    assert "markets kraken/" in tripped["validity.ranks_positive"][1]
    assert "tron x2" in tripped["uniqueness.asset_id_per_snapshot"][1]
    assert results["uniqueness.asset_id_per_snapshot"].observed == 1.0  # one extra row


def test_a_check_that_cannot_run_is_an_error_and_the_others_still_run(demo: Run, tmp_path: Path) -> None:
    settings = demo_copy(demo, tmp_path)
    with duckdb.connect(str(settings.duckdb_path)) as con:
        con.execute("alter table marts.fct_rates rename to fct_rates_gone")  # dbt tests and Python checks read it
    report = run_checks(settings, snapshot_id=demo.summary.snapshot_id, store=False)
    errors = {r.check_name: r.detail for r in report.results if r.status == "error"}
    assert set(errors) == {
        "freshness.rates", "validity.rates_positive", "consistency.rates_match_assets",
        "uniqueness.rate_id_per_snapshot",
        # these read every dataset of the snapshot
        "completeness.marts_match_lake", "completeness.row_count_stable", "validity.timestamps_not_in_future",
    }, errors  # fmt: skip
    for detail in errors.values():
        assert detail.startswith("could not run: ") and "fct_rates does not exist" in detail and "\n" not in detail
    assert statuses(report)["consistency.market_cap_matches_price_supply"] == "pass"
    assert not report.ok and "error" in report.summary_line()


# ---------------------------------------------------------------------------------------------- BigQuery SQL


def test_every_check_compiles_to_bigquery_sql_that_reads_only_its_partitions() -> None:
    settings = Settings(_env_file=None, PIPELINE_TARGET="gcp", GCP_PROJECT_ID="example-project",  # type: ignore[call-arg]
                        BQ_DATASET_PREFIX="coincap_")  # fmt: skip
    now = datetime(2026, 11, 21, 6, 0, tzinfo=UTC)

    def snap(dataset: str, ts: datetime) -> Snap:
        return Snap(dataset, snapshot_id(ts), ts.date(), ts)

    current = {d: snap(d, now - timedelta(hours=1)) for d in quality.DATASETS}
    compiled = compile_checks(settings, current, now=now)
    sql_checks = {c.name for c in CHECKS if c.name != "freshness.lake_sources"}
    assert set(compiled) == sql_checks, "every SQL check compiles with every dataset present"
    # Python checks only what crosses systems: what a model's rows say is dbt's (tests/generic/dq_*.sql)
    assert {c.category for c in CHECKS} == {"completeness", "freshness"}
    partition = {"fct_asset_snapshots", "fct_market_snapshots", "fct_rates", "fct_exchange_snapshots"}
    for name, sql in compiled.items():
        tree = sqlglot.parse_one(sql, read="bigquery", error_level=sqlglot.ErrorLevel.RAISE)
        assert not list(tree.find_all(exp.Command)), f"{name}: sqlglot could not parse part of it"
        tables = list(tree.find_all(exp.Table))
        assert tables, name
        for table in tables:
            assert table.catalog == "example-project", f"{name}: {table.sql('bigquery')} not qualified"
            assert table.db in ("coincap_marts", "coincap_staging", "coincap_ops"), f"{name}: {table.db}"
            if table.name not in partition | {"pipeline_runs"}:
                continue
            # a constant filter on the partition column in the WHERE of the query that reads the table
            select = table.find_ancestor(exp.Select)
            where = select.args.get("where") if select else None
            column = "started_at" if table.db == "coincap_ops" else "snapshot_date"
            filtered = {c.table for c in (where.find_all(exp.Column) if where else []) if c.name == column}
            assert table.alias_or_name in filtered or (not table.alias and "" in filtered), (
                f"{name}: reads {table.name} without a filter on {column}"
            )


def test_bigquery_stores_results_in_a_day_partitioned_table(bq_emulator: BigQueryEmulator) -> None:  # noqa: F811
    from flows.warehouse.bigquery import BigQueryWarehouse, dq_columns

    prefix = f"q{datetime.now(UTC):%H%M%S%f}_"
    bq_emulator.client().create_dataset(f"{PROJECT}.{prefix}ops")
    settings = Settings(_env_file=None, PIPELINE_TARGET="gcp", GCP_PROJECT_ID=PROJECT,  # type: ignore[call-arg]
                        BQ_DATASET_PREFIX=prefix, BQ_API_ENDPOINT=bq_emulator.endpoint)  # fmt: skip
    store = BigQueryWarehouse(settings, retry_deadline_s=5.0, request_timeout_s=5.0, query_timeout_s=20.0)
    created: list[Any] = []
    real_create = store.client.create_table

    def spy(table: Any, **kwargs: Any) -> Any:
        created.append(table)
        return real_create(table, **kwargs)

    store.client.create_table = spy  # type: ignore[method-assign]
    store.ensure_ops_tables()
    store.ensure_ops_tables()
    assert sorted(t.table_id for t in created) == ["dq_results", "pipeline_runs"], "created once each"
    dq = next(t for t in created if t.table_id == "dq_results")
    assert (dq.time_partitioning.type_, dq.time_partitioning.field) == ("DAY", "checked_at")
    columns = {name: (kind, mode) for name, kind, mode in dq_columns()}
    assert list(columns) == [
        "run_id", "flow_run_id", "snapshot_id", "checked_at", "check_name", "category", "dataset", "severity",
        "status", "observed", "threshold", "failing_rows", "detail", "description",
    ]  # fmt: skip
    assert columns["checked_at"] == ("TIMESTAMP", "REQUIRED") and columns["observed"] == ("FLOAT64", "NULLABLE")

    when = datetime(2026, 11, 21, 6, 0, tzinfo=UTC)
    report = QualityReport("dq-1", "20261121T053000Z", when, [
        CheckResult("validity.no_negative_prices", "validity", "assets", "error", "fail", -1.0, None, 2,
                    "2 of 100 assets have a negative price or VWAP: a -1, b -2", "No asset has a negative price."),
        CheckResult("freshness.assets", "freshness", "assets", "error", "pass", 1.5, 49.0, 0, "fresh", "Fresh."),
    ], {"freshness.assets": None})  # fmt: skip
    store.record_checks(report.rows("flow-run-1"))
    store.record_checks([])
    _, rows = store.query(
        f"select check_name, status, snapshot_id, observed, threshold, failing_rows, flow_run_id, checked_at"
        f" from {prefix}ops.dq_results order by check_name"
    )
    assert rows == [
        ("freshness.assets", "pass", None, 1.5, 49.0, 0, "flow-run-1", when),
        ("validity.no_negative_prices", "fail", "20261121T053000Z", -1.0, None, 2, "flow-run-1", when),
    ]


# ---------------------------------------------------------------------------------------------- freshness


def test_freshness_follows_the_schedules_and_the_dbt_sources_read_them() -> None:
    gcp = quality.freshness_thresholds(
        Settings(_env_file=None, PIPELINE_TARGET="gcp", GCP_PROJECT_ID="p")  # type: ignore[call-arg]
    )
    # prefect.yaml: reference data every day at 00:10 (snapshot on Mondays), markets only on Mondays
    assert {d: (f.run_gap_hours, f.error_hours, f.scheduled) for d, f in gcp.items()} == {
        "assets": (24.0, 49.0, True), "rates": (24.0, 49.0, True), "exchanges": (24.0, 49.0, True),
        "markets": (168.0, 337.0, True),
    }  # fmt: skip
    # Written once: the sources yml has no thresholds of its own, only the vars the pipeline passes.
    sources = (ROOT / "dbt/models/staging/coincap/_coincap__sources.yml").read_text()
    read = re.findall(r"var\('(freshness_\w+)'(, [^)]*)?\)", sources)
    assert {name for name, _ in read} == set(quality.dbt_freshness_vars(gcp))
    assert {default for _, default in read} == {", none"}, "no threshold written in the yml"
    from flows.quality.freshness import freshness_vars_args

    settings = Settings(_env_file=None, PIPELINE_TARGET="gcp", GCP_PROJECT_ID="p")  # type: ignore[call-arg]
    passed = json.loads(freshness_vars_args(settings).pop())
    assert passed == quality.dbt_freshness_vars(gcp) == {
        **{f"freshness_{d}_{k}": v for d in ("assets", "rates", "exchanges") for k, v in
           (("warn_hours", 25), ("error_hours", 49), ("days", 4))},
        "freshness_markets_warn_hours": 169, "freshness_markets_error_hours": 337, "freshness_markets_days": 16,
    }  # fmt: skip

    local = quality.freshness_thresholds(Settings(_env_file=None))  # type: ignore[call-arg]
    assert {f.error_hours for f in local.values()} == {49.0} and not any(f.scheduled for f in local.values())
    tuned = quality.freshness_thresholds(Settings(_env_file=None, PIPELINE_DQ_FRESHNESS_HOURS=12))  # type: ignore[call-arg]
    assert {f.error_hours for f in tuned.values()} == {12.0}


def test_a_stale_warehouse_fails_freshness_only(demo: Run) -> None:
    stale = demo.settings.model_copy(update={"dq_freshness_hours": 0.001})
    report = run_checks(stale, categories={"freshness"}, store=False)
    assert {r.check_name for r in report.results} == {f"freshness.{d}" for d in quality.DATASETS} | {
        "freshness.lake_sources"
    }
    assert all(r.status == "fail" for r in report.results), report.summary_line()
    assert "is older than 0.001 h" in by_name(report)["freshness.markets"].detail
    assert "stale: assets" in by_name(report)["freshness.lake_sources"].detail


def test_summary_line_names_failures_before_warnings() -> None:
    def result(name: str, status: str) -> CheckResult:
        return CheckResult(name, "validity", "assets", "error", status, None, None, 0, "", "")

    when = datetime(2026, 11, 21, tzinfo=UTC)
    report = QualityReport("r", None, when, [result("a.x", "pass"), result("b.y", "warn"), result("c.z", "fail")])
    assert report.summary_line() == "3 checks: 1 pass, 1 warn, 1 fail (c.z)"
    assert [r.check_name for r in report.failed] == ["c.z"] and not report.ok
    report = QualityReport("r", None, when, [result("a.x", "pass"), result("b.y", "warn")])
    assert report.summary_line() == "2 checks: 1 pass, 1 warn (b.y)" and report.ok


# ---------------------------------------------------------------------------------------------- dbt data tests


def test_a_dbt_test_that_warns_lands_in_dq_results_with_observed_threshold_and_failing_keys(bad: BadRun) -> None:
    report = bad.summary.quality
    assert report is not None
    _, rows = LocalWarehouse(bad.settings.duckdb_path).query(
        "select check_name, severity, status, observed, threshold, failing_rows, detail, snapshot_id"
        f" from ops.dq_results where run_id = '{report.run_id}'"
    )
    stored = {r[0]: r[1:] for r in rows}
    jump = bad.catalog.bad_values["price_jump"]
    # a warn-severity test: observed the largest move, against PIPELINE_DQ_PRICE_JUMP_PCT (a test argument)
    assert stored["anomaly.price_jump"][:5] == ("warn", "warn", 80.0, 50.0, 1), stored["anomaly.price_jump"]
    assert (
        f"{jump} 80.0%" in stored["anomaly.price_jump"][5]
        and "dq_anomaly__price_jump" in stored["anomaly.price_jump"][5]
    )
    assert stored["anomaly.price_jump"][6] == report.snapshot_id
    # an error-severity one: the build only warned (the data is modeled), the quality run fails
    cap = stored["consistency.market_cap_matches_price_supply"]
    assert cap[:2] == ("error", "fail") and cap[3] == 1.0 and cap[4] == 1 and round(cap[2]) == 200, cap
    assert bad.catalog.bad_values["market_cap_off"] in cap[5]
    # a passing test stores its threshold and no failing rows
    shares = stored["consistency.market_shares_per_exchange"]
    assert shares[:5] == ("error", "pass", None, 100.5, 0), shares
    # the failing keys come from the test's stored failures, which analysts can query too
    _, failures = LocalWarehouse(bad.settings.duckdb_path).query(
        "select failing_key, observed from ops.dq_anomaly__price_jump"
    )
    assert failures == [(f"{jump} 80.0%", 80.0)]


def test_a_planted_bad_row_trips_its_dbt_test(tampered: Settings, demo: Run) -> None:
    report = run_checks(tampered, snapshot_id=demo.summary.snapshot_id, categories={"consistency"}, store=False)
    assert {r.category for r in report.results} == {"consistency"}
    shares = by_name(report)["consistency.market_shares_per_exchange"]  # gemini's markets: 150% each
    assert (shares.status, shares.severity, shares.threshold) == ("fail", "error", 100.5), shares
    assert shares.observed is not None and shares.observed >= 150 and shares.failing_rows == 1
    assert shares.detail.startswith("1 failing (dq_consistency__market_shares_per_exchange): gemini ")
    # dogecoin's price of -1 and solana's market cap of -5 break price x supply too
    cap = by_name(report)["consistency.market_cap_matches_price_supply"]
    assert cap.status == "fail" and "dogecoin" in cap.detail and "solana" in cap.detail, cap
    assert {r.check_name for r in report.failed} == {shares.check_name, cap.check_name}


def test_dbt_test_names_are_check_names() -> None:
    assert check_name_of("dq_validity__no_negative_prices") == "validity.no_negative_prices"
    assert check_name_of("dq_validity__ranks_positive__markets") == "validity.ranks_positive"
    assert check_name_of("dq_completeness__row_count_stable__assets") == "completeness.row_count_stable"
    for other in ("not_null_fct_rates_rate_id", "dq_nonsense__x", "dq_freshness__assets", "dq_validity"):
        assert check_name_of(other) is None, other


def test_the_tests_of_one_check_make_one_result(tmp_path: Path) -> None:
    """Two datasets' tests of one check: the worst status, failing rows and keys of both, the observed aggregate."""
    nodes = {
        f"test.coincap.{name}.x": {"resource_type": "test", "name": name, "attached_node": f"model.coincap.{model}",
                                   "description": "Ranks are 1 or more.",
                                   "config": {"meta": {"dq_observed": "min", "dq_threshold": None}}}
        for name, model in (("dq_validity__ranks_positive__assets", "fct_asset_snapshots"),
                            ("dq_validity__ranks_positive__markets", "fct_market_snapshots"),
                            ("dq_anomaly__price_jump", "fct_asset_snapshots"))
    }  # fmt: skip
    nodes["test.coincap.dq_anomaly__price_jump.x"]["config"]["meta"].update(
        dq_observed="max", dq_threshold="50.0", dq_severity="warn"
    )
    results = [
        {"unique_id": "test.coincap.dq_validity__ranks_positive__assets.x", "status": "warn", "failures": 2,
         "relation_name": '"w"."ops"."a"'},
        {"unique_id": "test.coincap.dq_validity__ranks_positive__markets.x", "status": "warn", "failures": 1,
         "relation_name": '"w"."ops"."m"'},
        {"unique_id": "test.coincap.dq_anomaly__price_jump.x", "status": "pass", "failures": 0},
        {"unique_id": "model.coincap.fct_rates", "status": "success"},
    ]  # fmt: skip
    (tmp_path / "run_results.json").write_text(json.dumps({"results": results}))
    (tmp_path / "manifest.json").write_text(json.dumps({"nodes": nodes}))
    tests = read_tests(tmp_path)
    assert [(t.check_name, t.dataset, t.severity, t.threshold) for t in tests] == [
        ("validity.ranks_positive", "assets", "error", None), ("validity.ranks_positive", "markets", "error", None),
        ("anomaly.price_jump", "assets", "warn", 50.0),
    ]  # fmt: skip
    assert all(isinstance(t, DbtTest) for t in tests)
    assert read_tests(tmp_path, "build") == [], "results of no `dbt build` are not taken for the build's"

    failures = {'"w"."ops"."a"': [("btc 0", 0.0), ("eth -1", -1.0)], '"w"."ops"."m"': [("k/b/q -3", -3.0)]}

    def query(sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        rows = sorted(next(v for k, v in failures.items() if k in sql), key=lambda r: r[1])
        values = [r[1] for r in rows]
        names = ["failing_key", "observed", "failing_rows", "lowest", "highest", "total"]
        return names, [(*r, len(rows), min(values), max(values), sum(values)) for r in rows]

    day = datetime(2026, 11, 21, tzinfo=UTC)
    ctx = quality.Context(Settings(_env_file=None), now=day, snapshot_id=None, query=query)  # type: ignore[call-arg]
    ctx.current.update(
        assets=Snap("assets", "20261121T000000Z", date(2026, 11, 21), day),
        markets=Snap("markets", "20261120T000000Z", date(2026, 11, 20), day - timedelta(days=1)),
    )
    (jump, jump_snapshot), (ranks, ranks_snapshot) = check_results(tests, ctx)
    assert (ranks.check_name, ranks.dataset, ranks.status, ranks.observed, ranks.failing_rows) == (
        "validity.ranks_positive",
        "all",
        "fail",
        -3.0,
        3,
    )
    samples = "assets eth -1, assets btc 0, markets k/b/q -3"
    assert ranks.detail == f"3 failing (2 dbt tests dq_validity__ranks_positive__*): {samples}"
    assert ranks_snapshot is None, "two snapshots: the row names none"
    assert (jump.status, jump.severity, jump.threshold, jump.failing_rows, jump_snapshot) == (
        "pass",
        "warn",
        50.0,
        0,
        "20261121T000000Z",
    )
    # a dataset the snapshot under check does not hold is left out
    ctx.current["markets"] = None
    _, (ranks, _) = check_results(tests, ctx)
    assert (ranks.dataset, ranks.failing_rows) == ("assets", 2)


def test_the_price_jump_threshold_has_one_default() -> None:
    import yaml

    from flows.warehouse.dbt import dbt_vars

    dbt_default = yaml.safe_load((ROOT / "dbt" / "dbt_project.yml").read_text())["vars"]["dq_price_jump_pct"]
    assert dbt_default == Settings.model_fields["dq_price_jump_pct"].default, "dbt_project.yml's fallback"
    tuned = Settings(_env_file=None, PIPELINE_DQ_PRICE_JUMP_PCT=30)  # type: ignore[call-arg]
    assert dbt_vars(tuned)["dq_price_jump_pct"] == 30, "the setting reaches dbt's test argument"
    yml = (ROOT / "dbt" / "models" / "marts" / "fct_asset_snapshots.yml").read_text()
    assert "max_pct: \"{{ var('dq_price_jump_pct') }}\"" in yml


def test_no_sql_dialect_in_python() -> None:
    """Engine differences stay in dbt's dispatched macros: the Python checks' SQL is what both engines speak."""
    dialect = re.compile(r"approx_quantiles|median\(|timestamp_diff|date_diff|float64|varchar|::|string_agg|"
                         r"timestamptz|\bsafe_cast|try_cast|\bdateadd|\binterval\b", re.I)  # fmt: skip
    for path in sorted((ROOT / "flows" / "quality").glob("*.py")):
        code = "\n".join(line for line in path.read_text().splitlines() if not line.strip().startswith("#"))
        code = re.sub(r'"""[\s\S]*?"""', "", code)  # docstrings may name them
        assert not dialect.findall(code), f"{path.name}: {dialect.findall(code)}"
        assert len(path.read_text().splitlines()) <= 500, f"{path.name} is over 500 lines"
