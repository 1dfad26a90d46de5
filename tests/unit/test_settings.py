"""Settings from the environment, and the scope they give the markets listing."""

from __future__ import annotations

import pytest

from flows.coincap.endpoints import scoped_requests
from flows.settings import Settings


def test_scope_lists_are_comma_separated_in_the_environment(monkeypatch):
    monkeypatch.setenv("COINCAP_MARKETS_EXCHANGES", "binance, kraken")
    monkeypatch.setenv("COINCAP_MARKETS_QUOTES", "tether")
    settings = Settings()
    assert settings.markets_exchange_ids == ["binance", "kraken"]
    requests = list(scoped_requests("markets", settings))
    assert [r.params for r in requests] == [
        {"exchangeId": "binance", "quoteId": "tether"},
        {"exchangeId": "kraken", "quoteId": "tether"},
    ]
    assert [r.params for r in scoped_requests("assets", settings)] == [{}]


def test_unscoped_markets_is_one_listing():
    assert [r.params for r in scoped_requests("markets", Settings())] == [{}]


def test_base_url_is_normalised_and_checked(monkeypatch):
    monkeypatch.setenv("COINCAP_API_BASE_URL", " https://rest.coincap.io/v3/ ")
    assert Settings().api_base_url == "https://rest.coincap.io/v3"
    monkeypatch.setenv("COINCAP_API_BASE_URL", "rest.coincap.io/v3")
    with pytest.raises(ValueError, match="must start with http"):
        Settings()


def test_bigquery_datasets_share_one_prefix(monkeypatch):
    monkeypatch.setenv("BQ_DATASET_PREFIX", "cc_")
    assert [Settings().bq_dataset(layer) for layer in ("raw", "marts")] == ["cc_raw", "cc_marts"]
