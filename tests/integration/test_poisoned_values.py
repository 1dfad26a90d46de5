"""No value can break the build (issue 11, finding 3 and the numbers of finding 7).

1. The contracts quarantine, with a reason, every value a warehouse cannot use, and land its valid neighbours:
   numbers only as plain ASCII digits, negatives stay negative, USD amounts the marts can sum, Unix-millisecond
   times between 2009 and now + 1 day. Hypothesis generates more: valid or quarantined with a reason, never an
   exception, and a record's verdict never depends on the records beside it (Arrow's fast path and the exact
   per-value path agree).
2. The dbt staging models cast defensively: a lake file that bypassed the contract (2**63 - 1 as a time, 20-digit
   market caps) makes the DuckDB build warn, not fail, and the next clean run succeeds without touching the lake.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.contracts.columns import EPOCH_MS_MIN, MAX_USD, epoch_ms_bounds
from flows.contracts.datasets import ASSET_HISTORY, ASSETS, CONTRACTS, EXCHANGES, MARKETS, PRICES_STREAM
from flows.contracts.validate import check_records, plausible_api_timestamp, validate_records
from flows.ingest.stream_lake import parse_message
from flows.paths import PROJECT_ROOT

ROOT = PROJECT_ROOT
NOW = datetime.now(UTC)
NOW_MS = int(NOW.timestamp() * 1000)
DAY_MS = 86_400_000
INT64_MAX = 2**63 - 1
YEAR_9999_MS = 253_402_300_799_000  # 9999-12-31T23:59:59Z


def asset(**overrides: Any) -> dict[str, Any]:
    record = {
        "id": "ethereum", "rank": "2", "symbol": "ETH", "name": "Ethereum", "supply": "120000000.5",
        "maxSupply": None, "marketCapUsd": "354000000000.25", "volumeUsd24Hr": "12000000000.125",
        "priceUsd": "2950.500000000000000001", "changePercent24Hr": "-1.25", "vwap24Hr": "2960.75",
        "explorer": "https://etherscan.io/", "tokens": {},
    }  # fmt: skip
    record.update(overrides)
    return record


def exchange(**overrides: Any) -> dict[str, Any]:
    record = {
        "exchangeId": "kraken", "name": "Kraken", "rank": "2", "percentTotalVolume": "5.5", "volumeUsd": "1234.5",
        "tradingPairs": "600", "socket": False, "exchangeUrl": "https://www.kraken.com/", "updated": NOW_MS - 60_000,
    }  # fmt: skip
    record.update(overrides)
    return record


def point(**overrides: Any) -> dict[str, Any]:
    record = {"asset_id": "bitcoin", "history_interval": "d1", "priceUsd": "87711.2", "time": NOW_MS - 5 * DAY_MS}
    record.update(overrides)
    return record


def _id(value: Any) -> str:
    """A test id for a value (repr() of a 5,000-digit integer raises), the same in every process: a time derived
    from now is named by its offset from now (pytest-xdist's workers must collect the same ids)."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"int-of-{value.bit_length()}-bits"
    if isinstance(value, int | str) and 10 <= len(text := str(value)) <= 20 and text.isdigit():
        for unit, scale in (("ms", 1), ("s", 1000), ("us", 1 / 1000), ("ns", 1 / 1_000_000)):
            offset = int(text) * scale - NOW_MS
            if abs(offset) < 10 * DAY_MS:
                days = round(offset / DAY_MS)  # rounded first: -0.2 days and +0.2 days are both "+0d"
                return f"now{days:+d}d-in-{unit}" + ("-as-text" if isinstance(value, str) else "")
    return repr(value)[:30]


def check(contract, neighbour: dict[str, Any], hostile: dict[str, Any]):
    """The valid neighbour and the hostile record, validated in one page."""
    return validate_records(
        contract, [neighbour, hostile], snapshot_id="20261121T053000Z", snapshot_ts=NOW, api_timestamp=NOW
    )


def assert_quarantined(result, column: str, reason: str, key: str) -> None:
    assert result.n_valid == 1, "the valid neighbour lands"
    (bad,) = result.quarantine.to_pylist()
    assert bad["reason"].startswith(f"{column}: ") and reason in bad["reason"], bad["reason"]
    assert key in bad["record_json"]


# ---------------------------------------------------------------------------------------------- 1. contracts

NOT_A_NUMBER = "not a number (plain ASCII digits expected)"
NOT_AN_INTEGER = "not an integer (plain ASCII digits expected)"
BEYOND_SUMS = "beyond what the warehouse can sum"
HOSTILE_DECIMALS = [
    (" 1 ", NOT_A_NUMBER),
    ("1 ", NOT_A_NUMBER),
    ("1\n", NOT_A_NUMBER),
    ("1_000", NOT_A_NUMBER),
    ("１２３", NOT_A_NUMBER),  # full-width digits: Decimal() takes them
    ("١٢٣", NOT_A_NUMBER),  # Arabic-Indic digits
    ("۱۲۳", NOT_A_NUMBER),  # Extended Arabic-Indic digits
    ("+1", NOT_A_NUMBER),
    ("0x10", NOT_A_NUMBER),
    ("1,000", NOT_A_NUMBER),
    ("NaN", "not a finite number"),
    ("-Infinity", "not a finite number"),
    ("inf", "not a finite number"),
    ("sNaN", "not a finite number"),
    ("1e400", "more than 20 integer digits"),
    ("1e999999999999999999999", "not a number"),
    ("9" * 100_000, "more than 20 integer digits"),
    ("0." + "0" * 100_000 + "1", ""),  # rounds to 0: valid (asserted below)
    ("1" + "0" * 5000, "more than 20 integer digits"),
    (10**5000, "more than 20 integer digits"),  # a JSON integer Python will not even print
    ("-1", "failed greater_than_or_equal_to(0)"),
    # negatives stay negative: below 0, even when they round to 0 at 18 decimals
    ("-1e-30", "below 0, though it rounds to -0 at 18 decimals"),
    ("-0.0000000000000000001", "below 0, though it rounds to -0 at 18 decimals"),
    ("-0.0000000000000000000000000000000000000000001", "below 0, though it rounds to -0"),
    # what the marts sum (flows/contracts/columns.py, MAX_USD)
    ("1000000000000000", BEYOND_SUMS),
    ("1e15", BEYOND_SUMS),
    ("99999999999999999999", BEYOND_SUMS),  # 20 digits: the type holds it, a sum of two overflows
    ("99999999999999999999.999999999999999999", BEYOND_SUMS),
]


@pytest.mark.parametrize(("value", "reason"), [c for c in HOSTILE_DECIMALS if c[1]], ids=_id)
def test_hostile_decimals_are_quarantined_with_a_reason(value, reason):
    result = check(ASSETS, asset(), asset(id="hostile", priceUsd=value))
    assert_quarantined(result, "priceUsd", reason, '"id":"hostile"')


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("-0", Decimal(0)),  # not negative
        ("0." + "0" * 100_000 + "1", Decimal(0)),
        ("999999999999999.999999999999999999", Decimal("999999999999999.999999999999999999")),  # below 1e15
        ("1.5e-7", Decimal("1.5E-7")),  # exponents are plain ASCII too (CoinCap sends them for tiny prices)
        (".5", Decimal("0.5")),
        (2950, Decimal(2950)),  # a JSON number
    ],
    ids=_id,
)
def test_plain_ascii_numbers_still_land_exactly(value, expected):
    result = check(ASSETS, asset(), asset(id="plain", priceUsd=value))
    assert result.n_quarantined == 0, result.quarantine.to_pylist()
    assert result.valid.column("priceUsd").to_pylist()[1] == expected


def test_negative_below_rounding_is_refused_only_where_the_column_must_be_non_negative():
    result = check(ASSETS, asset(), asset(id="x", changePercent24Hr="-1e-30"))
    assert result.n_quarantined == 0
    assert result.valid.column("changePercent24Hr").to_pylist()[1] == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # Arrow's string->decimal cast wraps around on these shapes (the first came out as -4.07e17, the second
        # as -6.1e19), and its round leaves x.999...9|6 unrounded: the exact Decimal path decides instead
        ("2995941398199999949.70404523408332527456", Decimal("2995941398199999949.704045234083325275")),
        ("-94999999996999309921995", None),
        ("799999999999.99999999999999999959414486540195639", Decimal("800000000000")),
        ("9799999999999999.9999999999999999995", Decimal("9800000000000000")),  # a tie, to even
        ("0E30", Decimal(0)),
        ("1E+19", Decimal("10000000000000000000")),
        ("0.0057091272847070105261000000000000000000", Decimal("0.005709127284707011")),  # real CoinCap data
    ],
)
def test_vectorised_parsing_is_exact_where_arrow_alone_is_not(value, expected):
    result = check(ASSETS, asset(), asset(id="x", supply=value))  # supply: no bound but the type's
    if expected is None:
        assert result.n_valid == 1 and result.n_quarantined == 1
    else:
        assert result.n_quarantined == 0, result.quarantine.to_pylist()
        assert result.valid.column("supply").to_pylist()[1] == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (" 1 ", NOT_AN_INTEGER),
        ("1_000", NOT_AN_INTEGER),
        ("１２３", NOT_AN_INTEGER),
        ("١٢٣", NOT_AN_INTEGER),
        ("0x10", NOT_AN_INTEGER),  # Arrow's cast takes it as 16
        ("+7", NOT_AN_INTEGER),
        ("7\n", NOT_AN_INTEGER),
        ("1e3", NOT_AN_INTEGER),
        ("9" * 100_000, "integer out of range"),
        ("9223372036854775808", "integer out of range"),
        (10**30, "integer out of range"),
        (10**13, BEYOND_SUMS),  # a count the warehouse could not sum over 100,000 rows
        (1.5, "expected an integer, not a JSON number"),
        (True, "expected an integer, not a JSON boolean"),
    ],
    ids=_id,
)
def test_hostile_integers_are_quarantined_with_a_reason(value, reason):
    result = check(EXCHANGES, exchange(), exchange(exchangeId="hostile", tradingPairs=value))
    assert_quarantined(result, "tradingPairs", reason, '"exchangeId":"hostile"')


SECONDS = "seconds, not milliseconds?"
HOSTILE_TIMES = [
    (INT64_MAX, "a time beyond year 9999 is later than now + 1 day"),
    (YEAR_9999_MS, "9999-12-31T23:59:59Z is later than now + 1 day"),
    (NOW_MS // 1000, SECONDS),
    (1_500_000_000, SECONDS),  # 2017 in seconds
    (NOW_MS * 1000, "microseconds, not milliseconds?"),
    (NOW_MS * 1_000_000, "nanoseconds, not milliseconds?"),
    (NOW_MS + 2 * DAY_MS, "is later than now + 1 day"),
    (EPOCH_MS_MIN - 1, "is before 2009-01-01"),
    (1, "is before 2009-01-01"),
    (-1, "is before 2009-01-01"),
    (str(NOW_MS // 1000), SECONDS),  # as a string
]


@pytest.mark.parametrize(("value", "reason"), HOSTILE_TIMES, ids=_id)
def test_implausible_times_are_quarantined_with_a_reason(value, reason):
    result = check(EXCHANGES, exchange(), exchange(exchangeId="hostile", updated=value))
    assert_quarantined(result, "updated", reason, '"exchangeId":"hostile"')
    result = check(ASSET_HISTORY, point(), point(time=value))
    assert result.n_valid == 1
    (why,) = result.quarantine.column("reason").to_pylist()
    assert why.startswith("time: ") and reason in why


def test_plausible_times_land_and_zero_means_unknown_only_where_coincap_says_so():
    ok = [EPOCH_MS_MIN, NOW_MS, NOW_MS + DAY_MS - 60_000, 0]
    result = validate_records(
        EXCHANGES, [exchange(exchangeId=f"e{i}", updated=v) for i, v in enumerate(ok)], snapshot_id="s", snapshot_ts=NOW
    )
    assert result.n_quarantined == 0 and result.valid.column("updated").to_pylist() == ok
    assert check(MARKETS, *[_market(updated=0), _market(quoteId="eur", updated=0)]).n_quarantined == 0
    history = check(ASSET_HISTORY, point(), point(time=0))
    assert "time: 1970-01-01T00:00:00Z is before 2009-01-01" in history.quarantine.column("reason")[0].as_py()


def _market(**overrides: Any) -> dict[str, Any]:
    record = {
        "exchangeId": "binance", "rank": "1", "baseSymbol": "BTC", "baseId": "bitcoin", "quoteSymbol": "USDT",
        "quoteId": "tether", "priceQuote": "87711.2", "priceUsd": "87711.2", "volumeUsd24Hr": "1000.5",
        "percentExchangeVolume": "1.25", "tradesCount24Hr": "4321", "updated": NOW_MS,
    }  # fmt: skip
    record.update(overrides)
    return record


@pytest.mark.parametrize(
    "stamp", [INT64_MAX, YEAR_9999_MS, NOW_MS // 1000, -1, True, "1763703000000", 10**400], ids=_id
)
def test_an_implausible_api_timestamp_is_dropped_never_raised(stamp):
    assert plausible_api_timestamp(stamp) is None
    assert plausible_api_timestamp(NOW_MS) == datetime.fromtimestamp(NOW_MS / 1000, UTC)
    year_9999 = datetime(9999, 12, 31, tzinfo=UTC)
    result = validate_records(ASSETS, [asset()], snapshot_id="s", snapshot_ts=NOW, api_timestamp=year_9999)
    assert result.valid.column("api_timestamp").to_pylist() == [None]
    checked = check_records(ASSETS, [asset(), asset(id="x")])
    picked = checked.select(None, snapshot_id="s", snapshot_ts=NOW, api_timestamp=[NOW, year_9999])
    assert picked.valid.column("api_timestamp").to_pylist() == [NOW, None]


# ---------------------------------------------------------------------------------------------- Hypothesis

# Anything JSON can carry in a numeric field, and the spellings that fool int()/Decimal()/Arrow.
_DIGITS = st.sampled_from("0123456789")
_UNICODE_DIGITS = st.characters(categories=["Nd"])  # every script's decimal digits
_ascii_number = st.from_regex(r"-?[0-9]{1,30}(\.[0-9]{1,45})?([eE][-+]?[0-9]{1,3})?", fullmatch=True)
_hostile_text = st.one_of(
    _ascii_number,
    st.builds(lambda pad, s: pad + s + pad, st.sampled_from([" ", "\t", "\n", "\u00a0", "\u3000"]), _ascii_number),
    st.builds(lambda a, b: a + "_" + b, st.text(_DIGITS, min_size=1, max_size=5), st.text(_DIGITS, min_size=1)),
    st.text(_UNICODE_DIGITS, min_size=1, max_size=25),
    st.sampled_from(["NaN", "-nan", "Infinity", "-inf", "sNaN", "0x1F", "1e400", "-1e-30", "+5", ".", "-", ""]),
    st.text(max_size=40),
    st.integers(min_value=1, max_value=400).map(lambda n: "9" * n),
)
_json_value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    _hostile_text,
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_HYPOTHESIS = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
_WIDE = Context(prec=200)
_QUANTUM = Decimal("1e-18")


def _reference_decimal(value: Any) -> Decimal | None | str:
    """What the contract must make of a decimal field: the exact value, or "refuse"."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return "refuse"
    if isinstance(value, int):
        exact = Decimal(value)
    else:
        text = value if isinstance(value, str) else repr(value)
        if not re.fullmatch(r"-?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?", text):
            return "refuse"
        try:
            exact = Decimal(text)
        except InvalidOperation:
            return "refuse"
    if not exact.is_finite() or exact < 0 or abs(exact) >= MAX_USD:
        return "refuse"
    return exact.quantize(_QUANTUM, rounding=ROUND_HALF_EVEN, context=_WIDE)


@_HYPOTHESIS
@given(values=st.lists(_json_value, min_size=1, max_size=6))
def test_generated_amounts_are_exact_or_quarantined_with_a_reason_never_an_exception(values):
    records = [asset(id=f"a{i}", marketCapUsd=v) for i, v in enumerate(values)]
    checked = check_records(ASSETS, records)
    for i, value in enumerate(values):
        expected = _reference_decimal(value)
        if expected == "refuse":
            assert not checked.passes(i) and checked.reasons[i][0].startswith("marketCapUsd: ")
        else:
            assert checked.passes(i), checked.reasons.get(i)
            assert checked.parsed.column("marketCapUsd")[i].as_py() == expected


@_HYPOTHESIS
@given(values=st.lists(_json_value, min_size=1, max_size=6))
def test_generated_times_are_plausible_milliseconds_or_quarantined_with_a_reason(values):
    records = [exchange(exchangeId=f"e{i}", updated=v) for i, v in enumerate(values)]
    result = validate_records(EXCHANGES, records, snapshot_id="s", snapshot_ts=NOW)
    assert result.n_valid + result.n_quarantined == len(records)
    assert all(result.quarantine.column("reason").to_pylist())
    low, high = epoch_ms_bounds()
    for updated in result.valid.column("updated").to_pylist():
        assert updated is None or updated == 0 or low <= updated <= high


@_HYPOTHESIS
@given(
    value=_json_value, others=st.lists(_json_value, max_size=4), column=st.sampled_from(["vwap24Hr", "supply", "rank"])
)
def test_a_verdict_never_depends_on_the_neighbours(value, others, column):
    """Arrow's vectorised path (a clean column) and the exact per-value path (a column with one odd value)
    give every record the same verdict and the same value."""
    alone = check_records(ASSETS, [asset(id="v", **{column: value})])
    crowd = check_records(ASSETS, [asset(id="v", **{column: value})] + [
        asset(id=f"o{i}", **{column: v}) for i, v in enumerate(others)
    ])  # fmt: skip
    assert alone.passes(0) == crowd.passes(0)
    assert alone.reasons.get(0) == crowd.reasons.get(0)
    assert alone.parsed.column(column)[0].as_py() == crowd.parsed.column(column)[0].as_py()


@_HYPOTHESIS
@given(st.lists(st.dictionaries(st.sampled_from(sorted(EXCHANGES.field_names)), _json_value), max_size=5))
def test_any_generated_record_is_landed_or_quarantined_never_an_exception(records):
    result = validate_records(EXCHANGES, records, snapshot_id="s", snapshot_ts=NOW)
    assert result.n_valid + result.n_quarantined == len(records)
    assert all(result.quarantine.column("reason").to_pylist())
    for row in result.quarantine.column("record_json").to_pylist():
        json.loads(row)


@_HYPOTHESIS
@given(st.dictionaries(st.text(max_size=12), _json_value, max_size=5))
def test_any_generated_stream_message_lands_plausible_ticks_or_quarantines_with_a_reason(message):
    ticks, rejects = parse_message(json.dumps(message))
    assert len(ticks) + len(rejects) == len(message)
    assert all(r.reason for r in rejects)
    for asset_id, price in ticks:
        assert asset_id and 0 <= price < MAX_USD
        assert _reference_decimal(message[asset_id]) == price


def test_a_stream_price_the_warehouse_cannot_sum_is_quarantined():
    ticks, rejects = parse_message(json.dumps({"bitcoin": "1" + "0" * 16, "ethereum": "2950.5"}))
    assert [t[0] for t in ticks] == ["ethereum"]
    assert rejects[0].reason.startswith("price_usd: magnitude not below 1e+15")


# ---------------------------------------------------------------------------------------------- contract = SQL

STAGING = ROOT / "dbt" / "models" / "staging" / "coincap"
STAGING_OF = {
    "assets": "stg_coincap__assets.sql",
    "rates": "stg_coincap__rates.sql",
    "exchanges": "stg_coincap__exchanges.sql",
    "markets": "stg_coincap__markets.sql",
    "asset_history": "stg_coincap__asset_history.sql",
    "prices_stream": "stg_coincap__prices_stream.sql",
}


def test_the_sql_guards_use_the_contracts_bounds():
    ms_macro = (ROOT / "dbt" / "macros" / "cross_db" / "ms_to_timestamp.sql").read_text()
    assert f">= {EPOCH_MS_MIN} and" in ms_macro
    amount_macro = (ROOT / "dbt" / "macros" / "plausible_amount.sql").read_text()
    assert f"< cast({int(MAX_USD)} as" in amount_macro
    contracts = {**CONTRACTS, "asset_history": ASSET_HISTORY, "prices_stream": PRICES_STREAM}
    assert set(contracts) == set(STAGING_OF)
    for dataset, contract in contracts.items():
        sql = (STAGING / STAGING_OF[dataset]).read_text()
        for col in contract.columns:
            if col.max_abs == MAX_USD:
                assert f"plausible_amount('{col.name}')" in sql, f"{dataset}.{col.name}: not guarded in staging"
            if col.epoch_ms:
                assert f"ms_to_timestamp('{col.name}')" in sql or f"ms_to_timestamp('nullif({col.name}, 0)')" in sql
        # no cast in staging can fail on a value: lake columns go through safe casts (typed NULLs may use cast)
        plain = re.findall(r"cast\((?!null\b)(\w+) as", sql)
        assert not [c for c in plain if c != "dt"], f"{dataset}: plain casts of lake columns {plain}"


# ---------------------------------------------------------------------------------------------- 2. end to end


@dataclass
class Poisoned:
    poisoned: Any  # DbtOutcome of the build after the poisoned files landed
    clean: Any  # DbtOutcome of the next clean run's build
    warned: list[str]
    db: Path
    snapshot_id: str
    day: str
    capless_snapshot_id: str


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Poisoned]:
    from flows.settings import Settings
    from flows.warehouse.dbt import run_dbt
    from tests.lake_fixtures import generate_history, lake_file, snapshot_id_of, write_history, write_snapshot

    data = tmp_path_factory.mktemp("poisoned") / "data"
    config = Settings(_env_file=None, PIPELINE_DATA_DIR=data, PIPELINE_TARGET="local")
    lake = config.lake_dir
    first = generate_history(range(2))
    write_history(lake, first)

    # A snapshot written straight into the lake, bypassing the contracts, as a bug or a hand edit could.
    ts = first[-1].ts + timedelta(hours=3)
    meta = {"snapshot_id": snapshot_id_of(ts), "snapshot_ts": ts, "api_timestamp": None, "extra_fields": None}
    twenty_digits = Decimal("99999999999999999999.5")

    def write(dataset: str, rows: list[dict[str, Any]]) -> None:
        path = lake_file(lake, dataset, ts)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist([{**meta, **r} for r in rows], schema=CONTRACTS[dataset].arrow_schema())
        pq.write_table(table, path)

    def lake_asset(asset_id: str, rank: int, cap: Decimal, price: Decimal = Decimal("2")) -> dict[str, Any]:
        return {"id": asset_id, "rank": rank, "symbol": asset_id[:3].upper(), "name": asset_id, "priceUsd": price,
                "marketCapUsd": cap, "volumeUsd24Hr": cap, "supply": Decimal(1)}  # fmt: skip

    write("assets", [
        lake_asset("bitcoin", 1, Decimal("1700000000000.5")),
        lake_asset("ethereum", 2, Decimal("350000000000.25")),
        lake_asset("hugecoin", 3, twenty_digits),  # two 20-digit market caps: their sum overflows DECIMAL(38, 18)
        lake_asset("hugetoken", 4, twenty_digits),
        lake_asset("priceless", 5, Decimal(1), price=Decimal("99999999999999999999")),  # no usable price
    ])  # fmt: skip
    write("rates", [{"id": "euro", "symbol": "EUR", "type": "fiat", "rateUsd": twenty_digits}])
    write("exchanges", [
        {"exchangeId": "binance", "name": "Binance", "rank": 1, "updated": INT64_MAX},  # epoch_ms failed on it
        {"exchangeId": "kraken", "name": "Kraken", "rank": 2, "updated": YEAR_9999_MS},
    ])  # fmt: skip
    markets = [
        {"exchangeId": "binance", "rank": 1, "baseSymbol": "BTC", "baseId": "bitcoin", "quoteSymbol": "USDT",
         "quoteId": "tether", "priceUsd": Decimal("2"), "volumeUsd24Hr": twenty_digits, "updated": 1_763_703_000},
        {"exchangeId": "kraken", "rank": 1, "baseSymbol": "ETH", "baseId": "ethereum", "quoteSymbol": "USD",
         "quoteId": "united-states-dollar", "priceUsd": Decimal("2"), "updated": INT64_MAX},
    ]  # fmt: skip
    write("markets", markets)
    # and history points: 2**63 - 1 as a time, and a price no sum can take
    history = lake / "coincap" / "asset_history" / "interval=d1" / "asset=bitcoin" / "0_1.parquet"
    history.parent.mkdir(parents=True)
    points = [
        {"asset_id": "bitcoin", "history_interval": "d1", "priceUsd": Decimal("80000"), "time": INT64_MAX},
        {"asset_id": "bitcoin", "history_interval": "d1", "priceUsd": twenty_digits, "time": 1_759_104_000_000},
        {"asset_id": "bitcoin", "history_interval": "d1", "priceUsd": Decimal("80000"), "time": 1_759_190_400_000},
    ]
    meta_history = {**meta, "snapshot_ts": ts}
    table = pa.Table.from_pylist([{**meta_history, **p} for p in points], schema=ASSET_HISTORY.arrow_schema())
    pq.write_table(table, history)

    poisoned_build = run_dbt(config, "build", raise_on_failure=False)
    results = json.loads((data / "dbt" / "target" / "run_results.json").read_text())
    warned = [r["unique_id"] for r in results["results"] if r["status"] == "warn"]

    # The next clean run: another day of snapshots; nobody touches the lake. Its last snapshot of the day lists no
    # market cap at all (the API may leave it null): the day's total is then unknown, a warning, not a failure.
    day_two = generate_history(range(2, 3))
    write_history(lake, day_two)
    capless_ts = day_two[-1].ts + timedelta(minutes=30)
    capless = write_snapshot(lake, capless_ts, assets=[
        {"id": "bitcoin", "rank": "1", "symbol": "BTC", "name": "Bitcoin", "priceUsd": "80000", "marketCapUsd": None},
        {"id": "ethereum", "rank": "2", "symbol": "ETH", "name": "Ethereum", "priceUsd": "3000", "marketCapUsd": None},
    ])  # fmt: skip
    clean_build = run_dbt(config, "build", raise_on_failure=False)
    yield Poisoned(
        poisoned_build, clean_build, warned, config.duckdb_path, meta["snapshot_id"], ts.date().isoformat(), capless
    )


@pytest.mark.slow
def test_a_poisoned_lake_file_warns_and_never_fails_a_build(poisoned: Poisoned) -> None:
    assert poisoned.poisoned.ok, poisoned.poisoned.failures
    assert poisoned.clean.ok, poisoned.clean.failures
    # the source tests say which lake values staging had to drop
    for column in ("assets_marketCapUsd", "assets_priceUsd", "rates_rateUsd", "exchanges_updated", "markets_updated"):
        assert any(f"source_accepted_range_coincap_{column}" in w for w in poisoned.warned), poisoned.warned


@pytest.mark.slow
def test_poisoned_values_become_null_and_valid_neighbours_are_kept(poisoned: Poisoned) -> None:
    with duckdb.connect(str(poisoned.db)) as con:

        def rows(sql: str) -> list[tuple]:
            return con.execute(sql, [poisoned.snapshot_id]).fetchall()

        caps = dict(rows("select asset_id, market_cap_usd from staging.stg_coincap__assets where snapshot_id = ?"))
        assert caps == {"bitcoin": Decimal("1700000000000.5"), "ethereum": Decimal("350000000000.25"),
                        "hugecoin": None, "hugetoken": None}, "a row without a usable price is left out"  # fmt: skip
        totals = rows("select distinct total_market_cap_usd from marts.rpt_market_overview_daily where snapshot_id = ?")
        assert totals == [(1700000000000.5 + 350000000000.25,)], "the valid caps, summed without overflow"
        assert rows("select rate_id from staging.stg_coincap__rates where snapshot_id = ?") == []
        exchanges = rows("select exchange_id, updated_at from staging.stg_coincap__exchanges where snapshot_id = ?")
        assert sorted(exchanges) == [("binance", None), ("kraken", None)]
        markets = rows(
            "select exchange_id, volume_usd_24h, updated_at from staging.stg_coincap__markets where snapshot_id = ?"
        )
        assert sorted(markets) == [("binance", None, None), ("kraken", None, None)]
    with duckdb.connect(str(poisoned.db)) as con:
        history = con.execute("select price_time_ms, price_usd from staging.stg_coincap__asset_history").fetchall()
        assert history == [(1_759_190_400_000, Decimal("80000"))]
        capless = con.execute(
            "select distinct total_market_cap_usd, dominance_pct from marts.rpt_market_overview_daily "
            "where snapshot_id = ?",
            [poisoned.capless_snapshot_id],
        ).fetchall()
        assert capless == [(None, None)], "a day without any market cap has no total, and the build still passes"
