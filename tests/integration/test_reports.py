"""The report marts (dbt/models/reports, rpt_*) on DuckDB, end to end: hand-made lake snapshots whose latest-of-the-day
choices, closest-in-time prices, shares and gaps are known → `run_dbt` → the marts, checked against Python.

One scenario (module fixture):
1. four days of snapshots, built on a warehouse without the ops tables (the two views build on their stand-ins);
2. the ops tables filled (run metrics, two data-quality runs), the latest snapshot re-run with other values, one
   more day, built incrementally;
3. a `--full-refresh` build of the same lake (and the same ops rows) into a second DuckDB file.
The Looker Studio definition (looker/report.yaml) is checked against the built columns here too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from flows.ops.looker import load_report
from flows.settings import Settings
from flows.warehouse.dbt import DbtOutcome, run_dbt
from flows.warehouse.local_duckdb import LocalWarehouse
from tests.lake_fixtures import RATES, asset, market, num, write_snapshot

pytestmark = pytest.mark.slow

# The reports and what they read; the data tests of the reports only (the upstream ones are
# tests/integration/test_dbt_build.py's).
SELECT = (
    "--select", "+path:models/reports,resource_type:model", "path:models/reports,resource_type:test",
    "--indirect-selection", "empty",
)  # fmt: skip
DAILY = {  # report table -> its grain
    "rpt_market_overview_daily": ("report_date", "asset_id"),
    "rpt_asset_daily": ("report_date", "asset_id"),
    "rpt_exchange_daily": ("report_date", "exchange_id"),
    "rpt_market_pairs_daily": ("report_date", "exchange_id", "base_asset_id", "quote_asset_id"),
}
VIEWS = {
    "rpt_pipeline_health_daily": ("report_date", "step"),
    "rpt_data_quality": ("run_id", "check_name"),
}
DAY_A, DAY_B, DAY_C, DAY_D = date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3), date(2026, 11, 4)


# ------------------------------------------------------------------------------------------------ the lake


@dataclass
class Snap:
    """One snapshot as written: assets (id, rank, price[, symbol]), exchanges (id -> 24h volume), markets
    (exchange, base, quote, price, 24h volume). An empty list writes a 0-row file, as a scoped run does."""

    ts: datetime
    assets: list[tuple[Any, ...]] = field(default_factory=list)
    exchanges: dict[str, float] = field(default_factory=dict)
    markets: list[tuple[str, str, str, float, float]] = field(default_factory=list)

    @property
    def day(self) -> date:
        return self.ts.date()

    def asset_records(self) -> list[dict[str, Any]]:
        return [asset(a[0], a[1], a[2], **({"symbol": a[3]} if len(a) > 3 else {})) for a in self.assets]

    def exchange_records(self) -> list[dict[str, Any]]:
        return [
            {"exchangeId": e, "name": e.title(), "rank": str(i), "percentTotalVolume": "1", "volumeUsd": num(v),
             "tradingPairs": str(10 * i), "socket": False, "exchangeUrl": f"https://{e}.example/", "updated": 0}
            for i, (e, v) in enumerate(self.exchanges.items(), start=1)
        ]  # fmt: skip

    def market_records(self) -> list[dict[str, Any]]:
        return [{**market(e, b, q, p), "volumeUsd24Hr": num(v)} for e, b, q, p, v in self.markets]

    def write(self, lake: Path) -> str:
        return write_snapshot(
            lake, self.ts, assets=self.asset_records(), rates=list(RATES), exchanges=self.exchange_records(),
            markets=self.market_records(),
        )  # fmt: skip


def at(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


FIRST = [
    Snap(at(DAY_A, 0), [("bitcoin", 1, 100.0), ("ethereum", 2, 10.0)], {"binance": 300, "kraken": 100},
         [("binance", "bitcoin", "tether", 101, 30), ("binance", "ethereum", "tether", 10, 10),
          ("kraken", "bitcoin", "united-states-dollar", 99, 5)]),
    # the day's latest: everything below reads this one; kraken has no market in it (0), coinbase is not listed
    Snap(at(DAY_A, 12), [("bitcoin", 1, 110.0), ("ethereum", 2, 11.0), ("solana", 3, 5.0)],
         {"binance": 200, "kraken": 200},
         [("binance", "bitcoin", "tether", 111, 60), ("binance", "ethereum", "tether", 11.5, 20),
          ("coinbase", "solana", "united-states-dollar", 5.5, 1)]),
    # day B: assets at 00:00 and 12:00, exchanges and markets at 10:00 only: the markets' asset prices come from
    # the assets snapshot closest in time that lists the asset (12:00; dogecoin only at 00:00; unknowncoin never)
    Snap(at(DAY_B, 0), [("bitcoin", 1, 120.0), ("ethereum", 2, 12.0), ("dogecoin", 4, 0.1)]),
    Snap(at(DAY_B, 10), [], {"binance": 500, "kraken": 0},
         [("binance", "bitcoin", "tether", 125, 40), ("binance", "dogecoin", "tether", 0.11, 2),
          ("binance", "unknowncoin", "tether", 3.0, 1), ("kraken", "ethereum", "united-states-dollar", 13, 3)]),
    Snap(at(DAY_B, 12), [("bitcoin", 1, 130.0), ("ethereum", 2, 13.0)]),
    Snap(at(DAY_C, 6), [("bitcoin", 1, 140.0), ("ethereum", 2, 14.0)], {"binance": 100, "kraken": 300},
         [("binance", "bitcoin", "tether", 141, 10)]),
]  # fmt: skip
# A re-run of day C's snapshot (same id, other values, ethereum gone), and day D: no markets at all, and bitcoin's
# ticker changed (past days keep the ticker of their own snapshots).
RERUN_C = Snap(at(DAY_C, 6), [("bitcoin", 1, 150.0)], {"binance": 100, "kraken": 300},
               [("binance", "bitcoin", "tether", 149, 10), ("kraken", "bitcoin", "tether", 152, 30)])  # fmt: skip
DAY_D_SNAP = Snap(at(DAY_D, 9), [("bitcoin", 1, 160.0, "XBT"), ("ethereum", 2, 16.0)], {"binance": 50, "kraken": 150})
FINAL = [*FIRST[:-1], RERUN_C, DAY_D_SNAP]


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


RUNS = [  # started_at in UTC; 23:30 and 00:15 straddle a UTC midnight
    {"snapshot_id": "20261103T233000Z", "step": "assets", "status": "completed", "started_at": _ts("2026-11-03 23:30"),
     "seconds": 1.5, "served": 5, "valid": 4, "quarantined": 1, "duplicates": 0, "calls": 1, "credits": 3,
     "bytes": 5000},
    {"snapshot_id": "20261103T234500Z", "step": "assets", "status": "failed", "started_at": _ts("2026-11-03 23:45"),
     "error": "boom 1"},
    {"snapshot_id": "20261104T001500Z", "step": "assets", "status": "failed", "started_at": _ts("2026-11-04 00:15"),
     "error": "boom 2"},
    {"snapshot_id": "20261104T010000Z", "step": "assets", "status": "failed", "started_at": _ts("2026-11-04 01:00"),
     "error": "boom 3"},
    {"snapshot_id": "20261104T010000Z", "step": "dbt", "status": "completed", "started_at": _ts("2026-11-04 01:05"),
     "seconds": 8.0},
]  # fmt: skip


def _check(run_id: str, checked_at: str, name: str, status: str) -> dict[str, Any]:
    return {
        "run_id": run_id, "checked_at": _ts(checked_at), "check_name": name, "category": name.split(".")[0],
        "dataset": "assets", "severity": "warn" if status == "warn" else "error", "status": status,
        "observed": 1.0, "threshold": 0.0, "failing_rows": 0 if status == "pass" else 2, "detail": "d",
        "description": "what it checks",
    }  # fmt: skip


CHECKS = [  # a full quality run, then a freshness-only one (the watchdog's)
    _check("r1", "2026-11-04 01:00", "freshness.assets", "pass"),
    _check("r1", "2026-11-04 01:00", "validity.no_negative_prices", "fail"),
    _check("r2", "2026-11-04 02:00", "freshness.assets", "warn"),
]


# ------------------------------------------------------------------------------------------------ the builds


def _settings(data_dir: Path) -> Settings:
    return Settings(_env_file=None, PIPELINE_DATA_DIR=data_dir, PIPELINE_TARGET="local")  # type: ignore[call-arg]


def _connect(settings: Settings) -> duckdb.DuckDBPyConnection:
    # not read_only: dbt-duckdb keeps its connection open in this process (see tests/integration/test_dbt_build.py)
    return duckdb.connect(str(settings.duckdb_path))


def _rows(settings: Settings, table: str, order: Iterable[str]) -> tuple[list[str], list[tuple[Any, ...]]]:
    with _connect(settings) as con:
        rel = con.sql(f"select * from marts.{table} order by {', '.join(order)}")
        return rel.columns, rel.fetchall()


def _describe(settings: Settings, table: str) -> list[tuple[str, str]]:
    with _connect(settings) as con:
        return [(r[0], r[1]) for r in con.sql(f"describe marts.{table}").fetchall()]


def _record_ops(settings: Settings) -> None:
    store = LocalWarehouse(settings.duckdb_path)
    store.record_runs(RUNS)
    store.record_checks(CHECKS)


@dataclass
class Scenario:
    incremental: Settings
    full: Settings
    builds: dict[str, DbtOutcome]
    stand_in_views: dict[str, list[tuple[str, str]]]  # view -> (column, type) when built without the ops tables
    stand_in_counts: dict[str, int]
    first_latest_days: dict[str, set[date]]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    base = tmp_path_factory.mktemp("reports")
    incremental, full = _settings(base / "incremental"), _settings(base / "full")
    for snap in FIRST:
        snap.write(incremental.lake_dir)
    builds = {"first": run_dbt(incremental, "build", *SELECT)}
    stand_in_views = {view: _describe(incremental, view) for view in VIEWS}
    with _connect(incremental) as con:
        stand_in_counts = {view: con.sql(f"select count(*) from marts.{view}").fetchone()[0] for view in VIEWS}
        first_latest = {
            t: {r[0] for r in con.sql(f"select report_date from marts.{t} where is_latest_day").fetchall()}
            for t in ("rpt_market_overview_daily", "rpt_exchange_daily", "rpt_market_pairs_daily")
        }

    _record_ops(incremental)
    RERUN_C.write(incremental.lake_dir)
    DAY_D_SNAP.write(incremental.lake_dir)
    builds["incremental"] = run_dbt(incremental, "build", *SELECT)

    full.data_dir.mkdir(parents=True)
    (full.data_dir / "lake").symlink_to(incremental.lake_dir, target_is_directory=True)
    _record_ops(full)
    builds["full"] = run_dbt(full, "build", "--full-refresh", *SELECT)
    return Scenario(incremental, full, builds, stand_in_views, stand_in_counts, first_latest)


def test_every_report_builds_and_passes_its_data_tests(scenario: Scenario) -> None:
    for step, outcome in scenario.builds.items():
        assert outcome.ok, (step, outcome.failures)
        assert outcome.statuses["fail"] == outcome.statuses["error"] == 0, step
    results = json.loads((scenario.full.data_dir / "dbt" / "target" / "run_results.json").read_text())
    statuses = {r["unique_id"].split(".")[2]: r["status"] for r in results["results"]}
    assert {name: statuses.get(name) for name in [*DAILY, *VIEWS]} == dict.fromkeys([*DAILY, *VIEWS], "success")
    report_tests = [k for k in statuses if k not in DAILY and k not in VIEWS and "rpt_" in k]
    assert len(report_tests) >= 40 and all(statuses[k] == "pass" for k in report_tests)


def test_views_build_on_empty_stand_ins_with_the_columns_of_the_ops_tables(scenario: Scenario) -> None:
    # a fresh warehouse: no ops tables yet, the views still build, empty, with exactly the columns and types they
    # have once the pipeline has created the tables (so dashboards never see a different shape)
    assert scenario.stand_in_counts == dict.fromkeys(VIEWS, 0)
    for view in VIEWS:
        assert scenario.stand_in_views[view] == _describe(scenario.incremental, view), view


# ------------------------------------------------------------------------------------------------ expectations


def _latest_per_day(snaps: list[Snap], kind: str) -> dict[date, Snap]:
    """The day's latest snapshot that has rows of `kind` (a 0-row file leaves no trace in the marts)."""
    latest: dict[date, Snap] = {}
    for snap in sorted(snaps, key=lambda s: s.ts):
        if getattr(snap, kind):
            latest[snap.day] = snap
    return latest


def _expected_overview(snaps: list[Snap]) -> dict[tuple[date, str], dict[str, Any]]:
    rows = {}
    for day, snap in _latest_per_day(snaps, "assets").items():
        records = snap.asset_records()
        total = float(sum(Decimal(r["marketCapUsd"]) for r in records))
        for r in records:
            rows[(day, r["id"])] = {
                "snapshot_id": snap.ts.strftime("%Y%m%dT%H%M%SZ"),
                "asset_symbol": r["symbol"],
                "asset_rank": int(r["rank"]),
                "price_usd": float(r["priceUsd"]),
                "market_cap_usd": float(r["marketCapUsd"]),
                "dominance_pct": 100 * float(r["marketCapUsd"]) / total,
                "total_market_cap_usd": total,
            }
    return rows


def _expected_exchanges(snaps: list[Snap]) -> dict[tuple[date, str], dict[str, Any]]:
    exchanges, markets = _latest_per_day(snaps, "exchanges"), _latest_per_day(snaps, "markets")
    rows: dict[tuple[date, str], dict[str, Any]] = {}
    for day in sorted(set(exchanges) | set(markets)):
        listed = exchanges[day].exchanges if day in exchanges else {}
        day_markets = markets[day].markets if day in markets else []
        for exchange in set(listed) | {m[0] for m in day_markets}:
            mine = [m for m in day_markets if m[0] == exchange]
            rows[(day, exchange)] = {
                "exchange_name": exchange.title() if exchange in listed else exchange,
                "volume_usd_24h": listed.get(exchange),
                "volume_share_pct": 100 * listed[exchange] / sum(listed.values()) if exchange in listed else None,
                "markets_count": float(len(mine)) if day in markets else None,
                "markets_volume_usd_24h": float(sum(m[4] for m in mine)) if day in markets else None,
            }
    return rows


def _expected_pairs(snaps: list[Snap]) -> dict[tuple[date, str, str, str], dict[str, Any]]:
    rows = {}
    for day, snap in _latest_per_day(snaps, "markets").items():
        asset_snaps = [s for s in snaps if s.day == day and s.assets]
        for exchange, base, quote, price, volume in snap.markets:
            listing = [s for s in asset_snaps if any(a[0] == base for a in s.assets)]
            closest = min(listing, key=lambda s: (abs((s.ts - snap.ts).total_seconds()), s.ts), default=None)
            asset_price = next(a[2] for a in closest.assets if a[0] == base) if closest else None
            exchange_volume = sum(m[4] for m in snap.markets if m[0] == exchange)
            rows[(day, exchange, base, quote)] = {
                "pair": f"{base[:3].upper()}/{quote[:3].upper()}",
                "price_usd": price,
                "volume_share_of_exchange_pct": 100 * volume / exchange_volume,
                "asset_price_usd": asset_price,
                "price_deviation_pct": 100 * (price / asset_price - 1) if asset_price else None,
            }
    return rows


def _close(actual: Any, expected: Any) -> bool:
    if actual is None or expected is None:
        return actual is expected
    if isinstance(expected, float):
        return math.isclose(actual, expected, rel_tol=1e-12, abs_tol=1e-12)
    return actual == expected


def _compare(settings: Settings, table: str, expected: dict[tuple[Any, ...], dict[str, Any]]) -> None:
    columns, rows = _rows(settings, table, DAILY[table])
    by_name = [dict(zip(columns, r, strict=True)) for r in rows]
    actual = {tuple(row[k] for k in DAILY[table]): row for row in by_name}
    assert len(actual) == len(rows)
    assert sorted(actual) == sorted(expected)
    mismatches = [
        f"{key} {column}: dbt {actual[key][column]!r} != python {value!r}"
        for key, row in expected.items()
        for column, value in row.items()
        if not _close(actual[key][column], value)
    ]
    assert not mismatches, "\n".join(mismatches)


# ------------------------------------------------------------------------------------------------ the marts


def test_market_overview_is_the_days_latest_snapshot_with_dominance(scenario: Scenario) -> None:
    expected = _expected_overview(FINAL)
    _compare(scenario.incremental, "rpt_market_overview_daily", expected)
    # day B's latest assets snapshot is 12:00 (no dogecoin), not the 10:00 markets-only one
    assert {k[1] for k in expected if k[0] == DAY_B} == {"bitcoin", "ethereum"}
    with _connect(scenario.incremental) as con:
        sums = con.sql("select sum(dominance_pct) from marts.rpt_market_overview_daily group by report_date").fetchall()
    assert all(math.isclose(s, 100.0, rel_tol=1e-12) for (s,) in sums)


def test_exchanges_join_the_days_latest_exchanges_and_markets_snapshots(scenario: Scenario) -> None:
    expected = _expected_exchanges(FINAL)
    _compare(scenario.incremental, "rpt_exchange_daily", expected)
    # the cases that make this more than a copy: an exchange only markets name, a listed exchange without markets
    # (0), a day without any markets snapshot (null)
    assert expected[(DAY_A, "coinbase")]["volume_usd_24h"] is None
    assert expected[(DAY_A, "kraken")]["markets_count"] == 0
    assert expected[(DAY_D, "binance")]["markets_count"] is None


def test_market_pairs_take_the_closest_assets_snapshot_of_the_day(scenario: Scenario) -> None:
    expected = _expected_pairs(FINAL)
    _compare(scenario.incremental, "rpt_market_pairs_daily", expected)
    assert expected[(DAY_B, "binance", "bitcoin", "tether")]["asset_price_usd"] == 130.0  # 12:00, 2 h from 10:00
    assert expected[(DAY_B, "binance", "dogecoin", "tether")]["asset_price_usd"] == 0.1  # only 00:00 lists it
    assert expected[(DAY_B, "binance", "unknowncoin", "tether")]["price_deviation_pct"] is None


def test_asset_daily_keeps_each_days_own_ticker(scenario: Scenario) -> None:
    columns, rows = _rows(scenario.incremental, "rpt_asset_daily", DAILY["rpt_asset_daily"])
    actual = {(r[0], r[1]): dict(zip(columns, r, strict=True)) for r in rows}
    assert actual[(DAY_C, "bitcoin")]["asset_symbol"] == "BIT"
    assert actual[(DAY_D, "bitcoin")]["asset_symbol"] == "XBT"
    day_a = actual[(DAY_A, "bitcoin")]
    assert (day_a["open_price_usd"], day_a["close_price_usd"], day_a["snapshot_count"]) == (100.0, 110.0, 2.0)
    assert actual[(DAY_C, "bitcoin")]["close_price_usd"] == 150.0  # the re-run replaced day C
    assert actual[(DAY_B, "bitcoin")]["moving_avg_7d"] == pytest.approx((110 + 130) / 2)
    assert actual[(DAY_B, "bitcoin")]["pct_change_1d"] == pytest.approx(100 * (130 / 110 - 1))
    assert (DAY_C, "ethereum") not in actual  # gone from the re-run snapshot


def test_is_latest_day_moves_to_the_newest_day(scenario: Scenario) -> None:
    assert scenario.first_latest_days == dict.fromkeys(
        ("rpt_market_overview_daily", "rpt_exchange_daily", "rpt_market_pairs_daily"), {DAY_C}
    )
    expected = {"rpt_market_overview_daily": {DAY_D}, "rpt_exchange_daily": {DAY_D}, "rpt_market_pairs_daily": {DAY_C}}
    with _connect(scenario.incremental) as con:
        for table, days in expected.items():
            latest = {r[0] for r in con.sql(f"select report_date from marts.{table} where is_latest_day").fetchall()}
            assert latest == days, table


@pytest.mark.parametrize("table", sorted([*DAILY, *VIEWS]))
def test_incremental_run_equals_full_refresh(scenario: Scenario, table: str) -> None:
    order = (DAILY | VIEWS)[table]
    assert _rows(scenario.incremental, table, order) == _rows(scenario.full, table, order)


def test_the_incremental_build_ran_the_incremental_branch(scenario: Scenario) -> None:
    results = json.loads((scenario.incremental.data_dir / "dbt" / "target" / "run_results.json").read_text())
    compiled = {r["unique_id"].split(".")[-1]: r.get("compiled_code") or "" for r in results["results"]}
    for table in DAILY:
        assert "as loaded" in compiled[table], f"{table} was not built incrementally"


# ------------------------------------------------------------------------------------------------ the views


def test_pipeline_health_sums_each_utc_day_whatever_the_session_time_zone(scenario: Scenario) -> None:
    with _connect(scenario.incremental) as con:
        con.execute("set session TimeZone = 'Asia/Tokyo'")  # UTC+9: 23:30 UTC is already the next day there
        rel = con.sql("select * from marts.rpt_pipeline_health_daily order by report_date, step")
        rows = {(r[0], r[1]): dict(zip(rel.columns, r, strict=True)) for r in rel.fetchall()}
    assert sorted(rows) == [(DAY_C, "assets"), (DAY_D, "assets"), (DAY_D, "dbt")]
    day_c = rows[(DAY_C, "assets")]
    assert (day_c["runs"], day_c["failed_runs"], day_c["served"], day_c["valid"], day_c["quarantined"]) == (
        2.0, 1.0, 5.0, 4.0, 1.0,
    )  # fmt: skip
    assert (day_c["credits"], day_c["bytes"], day_c["calls"], day_c["seconds"]) == (3.0, 5000.0, 1.0, 1.5)
    assert day_c["last_success_at"] == _ts("2026-11-03 23:30") and day_c["last_error"] == "boom 1"
    day_d = rows[(DAY_D, "assets")]
    assert (day_d["runs"], day_d["failed_runs"], day_d["last_success_at"]) == (2.0, 2.0, None)
    assert day_d["last_failure_at"] == _ts("2026-11-04 01:00") and day_d["last_error"] == "boom 3"
    assert (rows[(DAY_D, "dbt")]["failed_runs"], rows[(DAY_D, "dbt")]["last_error"]) == (0.0, None)


def test_data_quality_marks_the_latest_run_and_each_checks_latest_result(scenario: Scenario) -> None:
    with _connect(scenario.incremental) as con:
        rows = con.sql(
            "select run_id, check_name, status, report_date, is_latest_run, is_latest_for_check"
            " from marts.rpt_data_quality order by run_id, check_name"
        ).fetchall()
    assert rows == [
        ("r1", "freshness.assets", "pass", DAY_D, False, False),
        ("r1", "validity.no_negative_prices", "fail", DAY_D, False, True),
        ("r2", "freshness.assets", "warn", DAY_D, True, True),
    ]


# ------------------------------------------------------------------------------------------------ Looker Studio


_LOOKER_TYPES = {  # field type in looker/report.yaml -> the DuckDB types a column of that kind may have
    "text": {"VARCHAR"},
    "number": {"DOUBLE", "BIGINT"},
    "currency_usd": {"DOUBLE"},
    "date": {"DATE"},
    "datetime": {"TIMESTAMP WITH TIME ZONE"},
    "boolean": {"BOOLEAN"},
}


def test_every_looker_field_is_a_column_of_its_built_model_and_back(scenario: Scenario) -> None:
    report = load_report()
    for ds in report.data_sources:
        columns = dict(_describe(scenario.incremental, ds.table))
        fields = {f.name: f for f in ds.fields}
        assert set(fields) == set(columns), f"{ds.alias} ({ds.table}): fields and columns differ"
        wrong = [f"{n}: {f.type} vs {columns[n]}" for n, f in fields.items() if columns[n] not in _LOOKER_TYPES[f.type]]
        assert not wrong, f"{ds.alias}: {wrong}"
        # every measure of the reports is a 64-bit float (rpt_data_quality passes ops.dq_results' columns through)
        if ds.table != "rpt_data_quality":
            assert all(columns[n] == "DOUBLE" for n, f in fields.items() if f.aggregation in {"sum", "avg"}), ds.alias
