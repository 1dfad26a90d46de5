"""The benchmark: its minimum-credit arithmetic, the naive baseline, the table, and one tiny run end to end."""

from __future__ import annotations

import json
import math
import random
import sqlite3
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.coincap.client import CoinCapClient
from flows.errors import ConfigError
from flows.lab import benchmark as bench
from flows.lab.naive_baseline import load_snapshot
from flows.standin import Catalog, StubServer
from tests.conftest import API_KEY, fast_settings

NOW = datetime(2026, 11, 21, 5, 30, tzinfo=UTC)


def test_minimum_pages_and_credits_on_a_hand_checked_case():
    assert [bench.minimum_pages(n) for n in (0, 1, 1999, 2000, 2001, 4000, 100_000)] == [1, 1, 1, 1, 2, 2, 50]
    # 4,100 records: pages of 2,000, 2,000 and 100 records, of 5,000, 4,999 and 2,500 bytes:
    # (1 + 5000 // 2500) + (1 + 4999 // 2500) + (1 + 2500 // 2500) = 3 + 2 + 2
    cost = bench.minimum_cost(4100, [5000, 4999, 2500])
    assert (cost.records, cost.calls, cost.bytes, cost.credits) == (4100, 3, 12_499, 7)
    with pytest.raises(ValueError, match="take 3 pages"):
        bench.minimum_cost(4100, [5000, 5000])


def test_measured_minimum_is_the_pages_that_carry_records_priced_on_their_real_bytes():
    # 8 markets in pages of 4: exactly two full pages, so a client that does not know the count needs a third,
    # empty one to learn it was the last. The minimum does not count it; our client pays it.
    catalog = Catalog.synthetic(n_assets=5, n_exchanges=3, n_markets=8, n_rates=3, seed=4)
    with StubServer(catalog, api_keys={API_KEY}) as srv:
        minimum = bench.measure_minimum(srv.base_url, API_KEY, page_limit=4)
        markets = minimum["markets"]
        assert (markets.records, markets.calls) == (8, 2)
        page_bytes = []
        for offset in (0, 4):
            request = urllib.request.Request(
                f"{srv.base_url}/markets?limit=4&offset={offset}", headers={"Authorization": f"Bearer {API_KEY}"}
            )
            with urllib.request.urlopen(request) as response:
                page_bytes.append(len(response.read()))
        assert markets.bytes == sum(page_bytes)
        assert markets.credits == sum(1 + b // 2500 for b in page_bytes)
        assert (minimum["assets"].calls, minimum["rates"].calls, minimum["exchanges"].calls) == (2, 1, 1)

        srv.stats.reset()
        settings = fast_settings(Path("/nonexistent"), srv.base_url, COINCAP_PAGE_LIMIT=4)
        with CoinCapClient(settings) as client:
            pages = list(client.paginate("/markets"))
        assert [len(p.records) for p in pages] == [4, 4, 0]
        assert srv.stats.credits == markets.credits + 1, "the empty page is the only call over the minimum"


def test_naive_baseline_inserts_exactly_the_served_rows(tmp_path):
    catalog = Catalog.synthetic(n_assets=2300, n_exchanges=12, n_markets=2600, seed=9)  # assets and markets page
    with StubServer(catalog, api_keys={API_KEY}) as srv:
        result = load_snapshot(srv.base_url, API_KEY, tmp_path / "naive.sqlite")
        served = dict(srv.stats.served_counts)
        calls = srv.stats.total_requests
    expected = {d: len(catalog.records(d)) for d in ("assets", "rates", "exchanges", "markets")}
    assert served == expected
    assert (result.records, result.rows, result.calls) == (sum(expected.values()),) * 2 + (calls,)
    assert result.calls == 2 + 1 + 1 + 2  # pages of 2,000: assets 2, rates 1, exchanges 1, markets 2
    assert min(result.fetch_s, result.normalize_s, result.insert_s) > 0
    assert result.wall_s >= result.fetch_s + result.normalize_s + result.insert_s
    with sqlite3.connect(tmp_path / "naive.sqlite") as con:
        for dataset, n in expected.items():
            assert con.execute(f"select count(*) from {dataset}").fetchone()[0] == n
        rows = con.execute("select exchangeId, baseId, quoteId, priceUsd, updated from markets").fetchall()
        tokens = [t for (t,) in con.execute("select tokens from assets")]
    assert sorted(rows) == sorted(
        (m["exchangeId"], m["baseId"], m["quoteId"], m["priceUsd"], m["updated"]) for m in catalog.markets
    ), "every served market, values as served"
    assert sorted(tokens) == sorted(json.dumps(a["tokens"]) for a in catalog.assets), "nested values as JSON text"


def _run(pipeline: str, records: int, *, naive: bool) -> bench.RunResult:
    return bench.RunResult(
        pipeline=pipeline, records=records, rows=records, fetch_s=0.5, validate_s=None if naive else 1.25,
        normalize_s=2.0 if naive else None, write_s=0.25, wall_s=2.0 if not naive else 4.0,
        dbt_s=None if naive else 9.5, peak_rss_mib=200.4, peak_rss_dbt_mib=None if naive else 380.0, cpu_s=1.9,
        calls=55, credits=13_888,
    )  # fmt: skip


def test_markdown_table_renders_one_row_per_pipeline_and_the_history():
    minimum = {"markets": bench.DatasetMinimum(records=100_000, calls=50, bytes=0, credits=13_000)}
    size = bench.SizeResult(
        markets=100_000, assets=3000, exchanges=200, records=100_000, minimum=minimum,
        ours=_run("ours", 100_000, naive=False), naive=_run("naive", 100_000, naive=True),
    )  # fmt: skip
    skipped = bench.SizeResult(
        markets=1_000_000, assets=3000, exchanges=200, records=1_000_000, minimum=minimum,
        ours=_run("ours", 1_000_000, naive=False), naive=None, naive_skipped="skipped: projected 400 s",
    )  # fmt: skip
    history = bench.HistoryResult(
        assets=3000, years=3, points=3_288_000, wall_s=82.2, cpu_s=70.0, peak_rss_mib=290.0, calls=12_002,
        credits=140_000, min_calls=3002, min_credits=128_000,
    )  # fmt: skip
    report = bench.BenchmarkReport(
        machine="Test CPU, 2 cores", started_at="2026-11-21T00:00:00+00:00", seconds=1.0, repeat=3,
        sizes=[size, skipped], history=history,
    )  # fmt: skip
    lines = bench.markdown_table(report).splitlines()
    assert lines[0] == bench.TABLE_HEADER and lines[1] == bench.TABLE_RULE
    columns = lines[0].count("|")
    assert all(line.count("|") == columns for line in lines), "every row has every column"
    assert lines[2] == (
        "| 100,000 | ours | 100,000 | 0.50 | 1.25 | — | 0.25 | 2.00 | 3,000,000 | 9.5 | 11.5 | 200 MiB "
        "| 55 (50) | 13,888 (13,000) | 1.068 |"
    )
    assert lines[3].startswith("| 100,000 | naive | 100,000 | 0.50 | — | 2.00 | 0.25 | 4.00 | 1,500,000 | — | — |")
    assert lines[5].startswith("| 1,000,000 | naive | 1,000,000 | skipped: projected 400 s |")
    assert lines[6].startswith("| history | ours (backfill) | 3,288,000 |") and lines[6].endswith("| 1.094 |")
    assert any("Test CPU, 2 cores" in line for line in bench.summary_lines(report))


@pytest.mark.parametrize(("text", "sizes"), [("1k,10k,100k,1M", [1000, 10_000, 100_000, 1_000_000]), ("250", [250])])
def test_sizes_parse(text, sizes):
    assert bench.parse_sizes(text) == sizes


@pytest.mark.parametrize("text", ["", "ten", "1.5", "0", "2k,x"])
def test_bad_sizes_are_one_clear_error(text):
    with pytest.raises(ConfigError, match="--sizes|whole number|not a number"):
        bench.parse_sizes(text)


@pytest.mark.slow
def test_tiny_benchmark_runs_end_to_end_through_the_command(tmp_path):
    out, plot = tmp_path / "bench.json", tmp_path / "bench.svg"
    result = CliRunner().invoke(
        app,
        ["benchmark", "--sizes", "150", "--assets", "40", "--exchanges", "6", "--repeat", "1",
         "--history-assets", "4", "--history-years", "1", "--json", str(out), "--plot", str(plot)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == bench.TABLE_HEADER
    data = json.loads(out.read_text())
    (size,) = data["sizes"]
    served = 40 + 6 + 150  # + rates
    assert size["records"] > served and size["min_calls"] == 4
    for name in ("ours", "naive"):
        run = size[name]
        assert run["records"] == size["records"], f"{name}: every served record"
        assert run["rows"] == size["records"], f"{name}: every record landed (the synthetic data is all valid)"
        assert run["calls"] == size["min_calls"] and run["credits"] == size["min_credits"], f"{name}: minimum cost"
        assert run["wall_s"] > 0 and run["fetch_s"] > 0 and run["write_s"] > 0 and run["cpu_s"] > 0
        assert run["peak_rss_mib"] > 50 and run["records_per_min"] > 0
    assert size["ours"]["validate_s"] > 0 and size["ours"]["dbt_s"] > 0 and size["ours"]["to_marts_s"] > 0
    assert size["ours"]["peak_rss_dbt_mib"] >= size["ours"]["peak_rss_mib"]
    assert size["naive"]["normalize_s"] > 0 and size["naive"]["dbt_s"] is None
    history = data["history"]
    assert history["points"] == 4 * 366 and history["min_calls"] == 1 + 4
    assert history["calls"] >= history["min_calls"] and history["credits"] >= history["min_credits"]
    assert history["wall_s"] > 0 and history["peak_rss_mib"] > 50
    assert data["table"] == "\n".join(result.stdout.splitlines()[: 2 + 2 + 1])
    svg = plot.read_text()
    assert svg.startswith("<svg") and svg.count("<circle") == 4, "a point per size, pipeline and chart"
    assert math.isclose(size["ours"]["records_per_min"], size["records"] / size["ours"]["wall_s"] * 60, rel_tol=0.01)


# ---- the hot paths the benchmark led to: faster, with exactly the old outcome


def _messy_records(seed: int) -> list:
    """Markets with every kind of trouble: bad values, missing and null keys, repeats, non-objects, new fields."""
    rng = random.Random(seed)
    records: list = [dict(m) for m in Catalog.synthetic(n_assets=60, n_exchanges=8, n_markets=700, seed=seed).markets]
    for record in rng.sample(records, 120):
        field = rng.choice(["exchangeId", "baseId", "priceUsd", "rank", "updated", "volumeUsd24Hr", "launchDate"])
        choice = rng.random()
        if choice < 0.2:
            record.pop(field, None)
        else:
            record[field] = rng.choice([None, "", "abc", "-1", 5, 1.5, True, [], {}, "1e400", "dup"])
    records += [dict(r) for r in rng.sample(records[:400], 80)]  # served again
    rng.shuffle(records)
    for at in rng.sample(range(len(records)), 4):
        records.insert(at, rng.choice([1, "text", None, [1]]))
    return records


def _raw_key(record) -> tuple | None:
    if not isinstance(record, dict):
        return None
    key = tuple(record.get(k) for k in ("exchangeId", "baseId", "quoteId"))
    return key if all(isinstance(v, str) for v in key) else None


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pages_checked_in_one_batch_get_exactly_the_verdicts_of_page_by_page(seed):
    from flows.contracts.datasets import MARKETS
    from flows.contracts.validate import check_records, validate_records

    rng = random.Random(seed)
    records = _messy_records(seed)
    sizes = []
    while sum(sizes) < len(records):
        sizes.append(min(len(records) - sum(sizes), rng.randint(1, 150)))
    checked = check_records(MARKETS, records, page_sizes=sizes)
    keys = [k for k in map(_raw_key, records) if k is not None]
    landed = set(rng.sample(keys, len(keys) // 3))  # keys of earlier pages: their records are dropped, not checked
    offset = 0
    for size in sizes:
        fresh = [offset + i for i in range(size) if _raw_key(records[offset + i]) not in landed]
        alone = validate_records(MARKETS, [records[i] for i in fresh], snapshot_id="S", snapshot_ts=NOW)
        batched = checked.select(fresh, snapshot_id="S", snapshot_ts=NOW, api_timestamp=[None] * len(fresh))
        assert batched.valid.equals(alone.valid, check_metadata=True)
        assert batched.quarantine.equals(alone.quarantine)
        assert batched.new_fields == alone.new_fields
        offset += size
    reasons = " ".join(checked.select(None, snapshot_id="S", snapshot_ts=NOW).quarantine.column("reason").to_pylist())
    assert "duplicate key" in reasons and "missing required field" in reasons and "not an object" in reasons


@pytest.mark.parametrize("bits", [64 // 3, 2])  # 2 bits: most keys do not fit and take the exact fallback
def test_landed_keys_are_exact_packed_or_not(bits):
    from flows.ingest.keys import LandedKeys

    rng = random.Random(bits)
    records = _messy_records(bits)
    landed = LandedKeys(("exchangeId", "baseId", "quoteId"))
    landed._bits = bits
    landed._MERGE_AT = 16  # merge into the sorted array often
    reference: set = set()
    for start in range(0, len(records), 50):
        page = records[start : start + 50]
        keys = landed.encode(page)
        assert landed.contains(keys) == [_raw_key(r) in reference for r in page]
        chosen = [i for i, r in enumerate(page) if _raw_key(r) is not None and rng.random() < 0.7]
        landed.add(keys, chosen)
        reference.update(_raw_key(page[i]) for i in chosen)
    assert landed.contains(landed.encode(records)) == [_raw_key(r) in reference for r in records]
