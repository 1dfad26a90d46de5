"""Credit planning: the projected bill matches what runs really cost, and the default schedule fits Free."""

from __future__ import annotations

import pytest

from flows.ingest.extract import extract_dataset
from flows.ops.credit_plan import dataset_credits, plan, records_in_scope, runs_per_month, smallest_plan
from flows.paths import PROJECT_ROOT
from flows.settings import Settings
from flows.snapshot_id import Snapshot
from flows.standin import Catalog, StubServer
from tests.conftest import API_KEY, fast_settings

ROOT = PROJECT_ROOT


def test_default_schedule_fits_the_free_plan():
    costs = plan(ROOT / "prefect.yaml", Settings())
    total = sum(c.credits_per_month for c in costs)
    assert smallest_plan(total) == "Free", [(c.name, c.credits_per_month) for c in costs]
    assert {c.name for c in costs if c.credits_per_month > 0} == {"snapshot", "reference-data"}


def test_unscoped_schedule_needs_a_paid_plan(tmp_path):
    yaml_file = tmp_path / "prefect.yaml"
    yaml_file.write_text(
        "deployments:\n"
        "  - name: everything-daily\n"
        "    entrypoint: flows.snapshot:snapshot_flow\n"
        "    schedules: [{cron: '0 0 * * *', timezone: UTC}]\n"
    )
    (cost,) = plan(yaml_file, Settings())
    assert 30 <= cost.runs_per_month <= 31
    assert cost.detail["markets"] > 13_000  # ~100k markets: the reason scope is a first-class setting
    assert smallest_plan(cost.credits_per_month) == "Professional"  # ~14,400 credits a day


def test_runs_per_month_counts_a_year_of_cron():
    assert runs_per_month("0 0 * * *") == pytest.approx(365 / 12)
    assert runs_per_month("10 0 * * 1") == pytest.approx(52 / 12, rel=0.03)


@pytest.mark.parametrize("dataset", ["assets", "rates", "exchanges", "markets"])
def test_estimate_is_close_to_what_a_run_really_costs(tmp_path, dataset, monkeypatch):
    catalog = Catalog.synthetic(n_assets=3000, n_exchanges=200, n_markets=20_000, seed=3)
    with StubServer(catalog, api_keys={API_KEY}) as stub:
        settings = fast_settings(tmp_path, stub.base_url)
        report, staged = extract_dataset(dataset, Snapshot.now(), settings=settings)
        staged.discard()
    # the planner assumes CoinCap's full lists: give it this catalog's sizes
    monkeypatch.setattr(
        "flows.ops.credit_plan.UNIVERSE",
        {"assets": 3000, "rates": len(catalog.rates), "exchanges": 200, "markets": 20_000},
    )
    assert records_in_scope(dataset, settings) == report.served
    estimate = dataset_credits(dataset, settings, {dataset: report.bytes / report.served})
    assert estimate == pytest.approx(report.credits, rel=0.05)


def test_top_n_assets_fetches_only_n_records_and_pays_for_only_those(tmp_path):
    catalog = Catalog.synthetic(n_assets=3000, n_exchanges=10, n_markets=100, seed=3)
    with StubServer(catalog, api_keys={API_KEY}) as stub:
        settings = fast_settings(tmp_path, stub.base_url, COINCAP_ASSETS_LIMIT=250, COINCAP_PAGE_LIMIT=200)
        report, staged = extract_dataset("assets", Snapshot.now(), settings=settings)
        staged.discard()
        assert stub.stats.requests["/v3/assets"] == 2  # 200 + 50, no closing call
    assert report.served == report.valid == 250
    assert dataset_credits("assets", settings, {"assets": report.bytes / report.served}) == pytest.approx(
        report.credits, rel=0.05
    )
