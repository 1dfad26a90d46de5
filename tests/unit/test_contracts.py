"""Contracts: exact parsing of CoinCap numbers, quarantine reasons, schema derivation."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pyarrow as pa
import pytest

from flows.contracts.checks import pandera_schema
from flows.contracts.columns import DECIMAL_TYPE, QUARANTINE_SCHEMA
from flows.contracts.datasets import ASSETS, CONTRACTS, EXCHANGES, MARKETS, RATES
from flows.contracts.parsing import parse_decimal
from flows.contracts.validate import validate_records

NOW = datetime(2026, 11, 21, 5, 30, tzinfo=UTC)


def asset(**overrides):
    record = {
        "id": "bitcoin", "rank": "1", "symbol": "BTC", "name": "Bitcoin",
        "supply": "19965971.000000000000000000", "maxSupply": None,
        "marketCapUsd": "1751239275575.199951171875000000", "volumeUsd24Hr": "41020315364.905166625976562500",
        "priceUsd": "87711.199999999997089617", "changePercent24Hr": "-2.4410536133077088",
        "vwap24Hr": "88305.90262468117", "explorer": "https://blockchain.info/", "tokens": {},
    }  # fmt: skip
    record.update(overrides)
    return record


def run(records, contract=ASSETS):
    return validate_records(contract, records, snapshot_id="20261121T053000Z", snapshot_ts=NOW)


def test_eighteen_decimals_survive_exactly():
    result = run([asset()])
    row = result.valid.to_pylist()[0]
    assert row["priceUsd"] == Decimal("87711.199999999997089617")
    assert row["marketCapUsd"] == Decimal("1751239275575.199951171875")
    assert result.valid.schema.field("priceUsd").type == DECIMAL_TYPE
    assert result.n_quarantined == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", None), (None, None), ("0.000000000000000001", Decimal("1E-18")), (1.5, Decimal("1.5")),
     ("21.379485735166293542000000000000000000", Decimal("21.379485735166293542")), (0.1, Decimal("0.1")),
     # real exchange data carries 22 significant decimals: rounded half-to-even at the 18th
     ("0.0057091272847070105261000000000000000000", Decimal("0.005709127284707011")),
     ("0.0000000000000000005", Decimal("0")), ("0.0000000000000000015", Decimal("0.000000000000000002"))],
)  # fmt: skip
def test_numeric_forms_parse_exactly(value, expected):
    assert parse_decimal(value) == expected
    row = run([asset(vwap24Hr=value)]).valid.to_pylist()[0]
    assert row["vwap24Hr"] == expected


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"priceUsd": "abc"}, "priceUsd: not a number"),
        ({"priceUsd": "-1"}, "priceUsd: failed greater_than_or_equal_to"),
        ({"priceUsd": ["1"]}, "priceUsd: expected a numeric string, not a JSON array"),
        ({"supply": "123456789012345678901234"}, "supply: more than 20 integer digits"),
        ({"priceUsd": "NaN"}, "priceUsd: not a finite number"),
        ({"rank": "first"}, "rank: not an integer"),
        ({"rank": True}, "rank: expected an integer, not a JSON boolean"),
        ({"name": ""}, "name: required field is empty"),
        ({"symbol": None}, "symbol: required field is null"),
        ({"tokens": []}, "tokens: expected a JSON object"),
        ({"id": 7}, "id: expected a string"),
    ],
)
def test_invalid_values_are_quarantined_with_their_reason(overrides, reason):
    result = run([asset(), asset(**{"id": "ethereum", **overrides})])
    assert result.n_valid == 1, "the valid row is never held back"
    assert result.valid.column("id").to_pylist() == ["bitcoin"]
    (bad,) = result.quarantine.to_pylist()
    assert reason in bad["reason"]
    assert bad["dataset"] == "assets"
    assert f'"id":{json.dumps(overrides.get("id", "ethereum"))}' in bad["record_json"]


def test_missing_required_field_quarantines_and_missing_optional_does_not():
    no_price = asset(id="x")
    del no_price["priceUsd"]
    no_optional = asset(id="y")
    for name in ("supply", "maxSupply", "vwap24Hr", "explorer", "tokens", "changePercent24Hr"):
        del no_optional[name]
    result = run([no_price, no_optional])
    assert result.valid.column("id").to_pylist() == ["y"]
    assert result.quarantine.column("reason").to_pylist() == ["priceUsd: missing required field"]


def test_new_fields_are_kept_and_reported():
    result = run([asset(launchDate="2009-01-03", score="9")])
    assert result.new_fields == {"launchDate", "score"}
    assert result.valid.column("extra_fields").to_pylist() == ['{"launchDate": "2009-01-03", "score": "9"}']


def test_non_object_records_and_duplicate_keys_in_a_page():
    result = run([asset(), "oops", asset(rank="2")])
    assert result.n_valid == 1
    reasons = result.quarantine.column("reason").to_pylist()
    assert any("not an object" in r for r in reasons)
    assert any("duplicate key ('bitcoin',)" in r for r in reasons)
    assert result.quarantine.schema.equals(QUARANTINE_SCHEMA)


def test_every_contract_derives_pandera_and_arrow_schemas_from_one_definition():
    for contract in CONTRACTS.values():
        arrow = contract.arrow_schema()
        schema = pandera_schema(contract)
        assert [c.name for c in contract.columns] == list(schema.columns) == arrow.names[: len(contract.columns)]
        for col in contract.columns:
            assert arrow.field(col.name).type == col.arrow_type
            assert arrow.field(col.name).nullable == (not col.required) == schema.columns[col.name].nullable
        assert {"snapshot_id", "snapshot_ts", "api_timestamp", "extra_fields"} <= set(arrow.names)


def test_other_datasets_accept_documented_shapes():
    rate = {"id": "euro", "symbol": "EUR", "currencySymbol": None, "type": "fiat", "rateUsd": "1.08"}
    assert run([rate, {**rate, "id": "x", "type": "stock"}], RATES).n_valid == 1
    exchange = {"exchangeId": "itbit", "name": "Itbit", "rank": "33", "percentTotalVolume": None, "volumeUsd": None,
                "tradingPairs": "0", "socket": None, "exchangeUrl": "https://www.itbit.com/", "updated": 0}  # fmt: skip
    result = run([exchange, {**exchange, "exchangeId": "b", "socket": "yes"}], EXCHANGES)
    assert result.n_valid == 1 and "socket: expected a boolean" in result.quarantine.column("reason")[0].as_py()
    market = {"exchangeId": "binanceus", "rank": "97", "baseSymbol": "XRP", "baseId": "ripple", "quoteSymbol": "USD",
              "quoteId": "united-states-dollar", "priceQuote": "0.0000000000000000", "priceUsd": "0.0000000000000000",
              "volumeUsd24Hr": "0.0000000000000000", "percentExchangeVolume": "0.0000000000000000",
              "tradesCount24Hr": None, "updated": 1726084607513}  # fmt: skip
    result = run([market, {**market, "quoteId": "tether", "updated": 1.5}], MARKETS)
    assert result.n_valid == 1
    assert result.valid.schema.field("updated").type == pa.int64()
