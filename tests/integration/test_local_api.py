"""The local CoinCap v3 stand-in, exercised over real sockets on 127.0.0.1 with `requests`."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import pytest
import requests

from flows.coincap.credits import credits_for
from flows.standin import NATURAL_KEYS, Catalog, Faults, StubServer, serve_in_subprocess
from flows.standin.catalog import SAMPLES_DIR

KEY = "test-key"
TIMEOUT = 5


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.synthetic(n_assets=300, n_exchanges=25, n_markets=5000, seed=7, history_days=3)


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        s.headers["Authorization"] = f"Bearer {KEY}"
        yield s


def paginate(session: requests.Session, url: str, limit: int, **params: Any) -> list[dict[str, Any]]:
    """Fetch every page the way a correct client does: offset += limit until a short page."""
    rows: list[dict[str, Any]] = []
    offset = 0
    while True:
        r = session.get(url, params={**params, "limit": limit, "offset": offset}, timeout=TIMEOUT)
        r.raise_for_status()
        page = r.json()["data"]
        rows.extend(page)
        if len(page) < limit:
            return rows
        offset += limit


def keys(dataset: str, records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [tuple(r.get(k) for k in NATURAL_KEYS[dataset]) for r in records]


# ---- catalogs ---------------------------------------------------------------------------------------------


def test_demo_catalog_is_small_v3_shaped_and_consistent() -> None:
    demo = Catalog.demo()
    assert sum(p.stat().st_size for p in Path(SAMPLES_DIR).iterdir()) < 200_000
    assert len(demo.assets) == 100 and all(isinstance(a["tokens"], dict) for a in demo.assets)
    assert all("id" not in e and e["exchangeId"] for e in demo.exchanges)
    asset_ids = {a["id"] for a in demo.assets}
    quote_ids = asset_ids | {r["id"] for r in demo.rates}
    exchange_ids = {e["exchangeId"] for e in demo.exchanges}
    assert demo.markets and all(
        m["exchangeId"] in exchange_ids and m["baseId"] in asset_ids and m["quoteId"] in quote_ids for m in demo.markets
    )
    assert {"priceUsd", "time", "date"} == set(demo.history["bitcoin"][0])


def test_synthetic_is_deterministic_fast_and_realistic() -> None:
    started = time.perf_counter()
    big = Catalog.synthetic()
    elapsed = time.perf_counter() - started
    assert elapsed < 10, f"100k markets took {elapsed:.1f} s"  # ~1 s here; loose for slow CI
    assert (len(big.assets), len(big.exchanges), len(big.markets)) == (3000, 200, 100_000)
    for dataset in ("assets", "rates", "exchanges", "markets"):
        records = big.records(dataset)
        assert len(set(keys(dataset, records))) == len(records), f"{dataset} natural keys are not unique"
    assert re.fullmatch(r"\d+\.\d{18}", big.assets[0]["priceUsd"])
    assert any(a["maxSupply"] is None for a in big.assets) and any(a["vwap24Hr"] is None for a in big.assets)
    assert any(m["tradesCount24Hr"] is None for m in big.markets)
    assert any(e["updated"] == 0 for e in big.exchanges)
    assert [a["rank"] for a in big.assets[:3]] == ["1", "2", "3"]

    small = dict(n_assets=200, n_exchanges=20, n_markets=3000, history_days=2, invalid_fraction=0.05)
    assert Catalog.synthetic(seed=1, **small) == Catalog.synthetic(seed=1, **small)
    assert Catalog.synthetic(seed=1, **small).markets != Catalog.synthetic(seed=2, **small).markets


def _valid(dataset: str, record: dict[str, Any]) -> bool:
    """What a contract would check: keys present, numbers numeric and not negative, rank an integer."""
    numeric = {"assets": "priceUsd", "rates": "rateUsd", "exchanges": "volumeUsd", "markets": "priceUsd"}[dataset]
    if any(not isinstance(record.get(k), str) for k in NATURAL_KEYS[dataset]):
        return False
    if "rank" in record and not str(record["rank"]).isdigit():
        return False
    value = record.get(numeric)
    if value is None:
        return dataset == "exchanges"  # volumeUsd is nullable
    try:
        return isinstance(value, str) and Decimal(value) >= 0
    except InvalidOperation:
        return False


def test_invalid_keys_name_exactly_the_invalid_records() -> None:
    cat = Catalog.synthetic(n_assets=400, n_exchanges=40, n_markets=4000, seed=3, invalid_fraction=0.05)
    for dataset in ("assets", "rates", "exchanges", "markets"):
        records = cat.records(dataset)
        bad = [i for i, r in enumerate(records) if not _valid(dataset, r)]
        assert bad == cat.invalid_keys[dataset], dataset
        assert len(bad) == max(1, round(len(records) * 0.05))
        assert set(cat.invalid_kinds[dataset]) == set(bad)
    kinds = set(cat.invalid_kinds["assets"].values())
    assert {"negative_price", "non_numeric_price", "missing_id", "price_wrong_type", "bad_rank"} <= kinds
    assert Catalog.synthetic(n_assets=50, n_exchanges=5, n_markets=100).invalid_keys["assets"] == []


# ---- routes -----------------------------------------------------------------------------------------------


def test_listing_detail_and_errors(catalog: Catalog, session: requests.Session) -> None:
    with StubServer(catalog, api_keys={KEY}) as srv:
        base = srv.base_url
        r = session.get(f"{base}/assets", timeout=TIMEOUT)
        assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
        assert int(r.headers["Content-Length"]) == len(r.content)
        body = r.json()
        assert body["data"] == catalog.assets[:100] and isinstance(body["timestamp"], int)
        assert session.get(f"{base}/exchanges", timeout=TIMEOUT).json()["data"] == catalog.exchanges[:10]
        slug = catalog.assets[5]["id"]
        assert session.get(f"{base}/assets/{slug}", timeout=TIMEOUT).json()["data"] == catalog.assets[5]
        ids = f"{catalog.assets[2]['id']},{catalog.assets[0]['id']}"
        got = session.get(f"{base}/assets", params={"ids": ids}, timeout=TIMEOUT).json()["data"]
        assert [a["id"] for a in got] == [catalog.assets[0]["id"], catalog.assets[2]["id"]]
        found = session.get(f"{base}/assets", params={"search": "btc"}, timeout=TIMEOUT).json()["data"]
        assert found[0]["id"] == "bitcoin"

        exchange_id = catalog.exchanges[0]["exchangeId"]
        rows = paginate(session, f"{base}/markets", 2000, exchangeId=exchange_id, quoteSymbol="usdt")
        assert rows == [m for m in catalog.markets if m["exchangeId"] == exchange_id and m["quoteId"] == "tether"]
        rows = paginate(session, f"{base}/markets", 2000, assetId="tether")
        assert len(rows) == sum("tether" in (m["baseId"], m["quoteId"]) for m in catalog.markets)
        asset_markets = session.get(f"{base}/assets/bitcoin/markets", timeout=TIMEOUT).json()["data"]
        assert asset_markets and {m["baseId"] for m in asset_markets} == {"bitcoin"}
        rates = session.get(f"{base}/rates", params={"ids": "euro,bitcoin"}, timeout=TIMEOUT).json()["data"]
        assert {r["id"] for r in rates} == {"euro", "bitcoin"}
        assert len(session.get(f"{base}/rates", timeout=TIMEOUT).json()["data"]) == len(catalog.rates)

        for path, params, status, error in [
            ("/assets", {"limit": 2001}, 400, "Invalid query parameters"),
            ("/markets", {"limit": "ten"}, 400, "Invalid query parameters"),
            ("/assets", {"offset": "-1"}, 400, "Invalid query parameters"),
            ("/nowhere", {}, 404, "Not found"),
            ("/assets/no-such-coin", {}, 404, "no-such-coin not found"),
            ("/exchanges/nope", {}, 404, "Exchange not found"),
            ("/rates/nope", {}, 404, "Conversion rate not found"),
        ]:
            r = session.get(f"{base}{path}", params=params, timeout=TIMEOUT)
            assert (r.status_code, r.json()["error"]) == (status, error), path
        assert session.get(f"{base}/markets", params={"limit": 2000}, timeout=TIMEOUT).status_code == 200


def test_history_interval_and_start_end(catalog: Catalog, session: requests.Session) -> None:
    points = catalog.history["bitcoin"]
    with StubServer(catalog, api_keys={KEY}) as srv:
        url = f"{srv.base_url}/assets/bitcoin/history"
        start, end = points[5]["time"], points[20]["time"]
        got = session.get(url, params={"interval": "h1", "start": start, "end": end}, timeout=TIMEOUT)
        assert got.json()["data"] == points[5:21]
        daily = session.get(url, params={"interval": "d1"}, timeout=TIMEOUT).json()["data"]
        assert daily and all(p["time"] % 86_400_000 == 0 for p in daily)
        for params in ({}, {"interval": "w1"}, {"interval": "h1", "start": start}):
            r = session.get(url, params=params, timeout=TIMEOUT)
            assert (r.status_code, r.json()) == (400, {"error": "Invalid query parameters"})
        r = session.get(f"{srv.base_url}/assets/gone-coin/history", params={"interval": "d1"}, timeout=TIMEOUT)
        assert (r.status_code, r.json()) == (404, {"error": "Asset history not found"})


def test_auth_bearer_or_query_key(catalog: Catalog) -> None:
    with StubServer(catalog, api_keys={KEY}) as srv:
        url = f"{srv.base_url}/rates"
        for headers, params in [({}, {}), ({"Authorization": "Bearer wrong"}, {}), ({}, {"apiKey": "wrong"})]:
            r = requests.get(url, headers=headers, params=params, timeout=TIMEOUT)
            assert (r.status_code, r.json()) == (401, {"error": "Unauthorized: invalid API key"})
        assert requests.get(url, headers={"Authorization": f"Bearer {KEY}"}, timeout=TIMEOUT).ok
        assert requests.get(url, params={"apiKey": KEY}, timeout=TIMEOUT).ok
    with StubServer(catalog) as open_srv:  # no keys configured: demo mode accepts anything
        assert requests.get(f"{open_srv.base_url}/rates", timeout=TIMEOUT).ok


# ---- pagination faults ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "faults",
    [Faults(), Faults(rank_shift=3), Faults(duplicate_rows=2), Faults(rank_shift=5, duplicate_rows=4)],
)
def test_union_of_pages_is_the_catalog(catalog: Catalog, session: requests.Session, faults: Faults) -> None:
    with StubServer(catalog, faults=faults, api_keys={KEY}) as srv:
        for dataset, limit in (("markets", 700), ("assets", 64), ("exchanges", 7)):
            rows = paginate(session, f"{srv.base_url}/{dataset}", limit)
            expected = keys(dataset, catalog.records(dataset))
            assert set(keys(dataset, rows)) == set(expected), dataset
            repeats = len(rows) - len(expected)
            assert repeats > 0 if faults.rank_shift or faults.duplicate_rows else repeats == 0
            assert srv.stats.served[dataset] == rows  # what was served is exactly what arrived
            assert srv.stats.served_keys(dataset) == set(expected)


def test_rank_shift_moves_rows_across_the_page_boundary(catalog: Catalog, session: requests.Session) -> None:
    with StubServer(catalog, faults=Faults(rank_shift=2), api_keys={KEY}) as srv:
        url = f"{srv.base_url}/assets"
        first = session.get(url, params={"limit": 10, "offset": 0}, timeout=TIMEOUT).json()["data"]
        second = session.get(url, params={"limit": 10, "offset": 10}, timeout=TIMEOUT).json()["data"]
        assert len(second) == 10
        assert {a["id"] for a in first[-2:]} <= {a["id"] for a in second[:4]}
        assert second[0]["id"] == catalog.assets[10]["id"]  # order drifted, not just shifted


# ---- error faults -----------------------------------------------------------------------------------------


def test_quota_exhausted_403_and_429(catalog: Catalog, session: requests.Session) -> None:
    with StubServer(catalog, faults=Faults(quota_exhausted=True), api_keys={KEY}) as srv:
        r = session.get(f"{srv.base_url}/assets", timeout=TIMEOUT)
        assert (r.status_code, r.json()) == (403, {"error": "Forbidden: Monthly usage limit exceeded"})
        srv.faults.quota_status = 429
        r = session.get(f"{srv.base_url}/assets", timeout=TIMEOUT)
        assert (r.status_code, r.json()) == (429, {"error": "Monthly usage limit exceeded"})
        assert "Retry-After" not in r.headers


def test_rate_limit_has_retry_after(catalog: Catalog, session: requests.Session) -> None:
    with StubServer(catalog, faults=Faults(p_429=1.0, retry_after_s=0.5), api_keys={KEY}) as srv:
        r = session.get(f"{srv.base_url}/assets", timeout=TIMEOUT)
        assert r.status_code == 429 and r.headers["Retry-After"] == "0.5"
        assert r.json() == {"error": "Rate limit exceeded: 600 requests per minute"}
        srv.faults = Faults()  # faults can be switched off at runtime
        assert session.get(f"{srv.base_url}/assets", timeout=TIMEOUT).ok


def test_fail_first_n_then_recover(catalog: Catalog, session: requests.Session) -> None:
    with StubServer(catalog, faults=Faults(fail_first_n=3), api_keys={KEY}) as srv:
        statuses = [session.get(f"{srv.base_url}/rates", timeout=TIMEOUT).status_code for _ in range(5)]
        assert statuses == [503, 503, 503, 200, 200]
        assert srv.stats.statuses[503] == 3 and len(srv.stats.served["rates"]) == 2 * len(catalog.rates)


def test_5xx_and_seeded_reproducibility(catalog: Catalog, session: requests.Session) -> None:
    with StubServer(catalog, faults=Faults(p_5xx=1.0)) as srv:
        codes = {session.get(f"{srv.base_url}/rates", timeout=TIMEOUT).status_code for _ in range(20)}
        assert codes <= {500, 502, 503} and 500 in codes
        r = next(
            r
            for r in (session.get(f"{srv.base_url}/rates", timeout=TIMEOUT) for _ in range(20))
            if r.status_code == 500
        )
        assert r.json() == {"error": "Internal server error"}

    def run() -> list[int]:
        with StubServer(catalog, faults=Faults(p_5xx=0.3, p_429=0.2, retry_after_s=0, seed=42)) as srv:
            return [session.get(f"{srv.base_url}/rates", timeout=TIMEOUT).status_code for _ in range(30)]

    first = run()
    assert first == run() and len(set(first)) > 1


def test_truncated_body_fails_in_the_client(catalog: Catalog, session: requests.Session) -> None:
    with StubServer(catalog, faults=Faults(p_truncate=1.0), api_keys={KEY}) as srv:
        with pytest.raises((requests.RequestException, ValueError)):
            session.get(f"{srv.base_url}/markets", params={"limit": 500}, timeout=TIMEOUT).json()
        assert srv.stats.truncations == 1 and "markets" not in srv.stats.served


def test_dropped_connection_raises_connection_error(catalog: Catalog, session: requests.Session) -> None:
    with StubServer(catalog, faults=Faults(p_drop=1.0), api_keys={KEY}) as srv:
        with pytest.raises(requests.ConnectionError):
            session.get(f"{srv.base_url}/assets", timeout=TIMEOUT)
        assert srv.stats.drops == 1


def test_garbage_and_deprecated_bodies(catalog: Catalog, session: requests.Session) -> None:
    with StubServer(catalog, faults=Faults(p_garbage=1.0), api_keys={KEY}) as srv:
        r = session.get(f"{srv.base_url}/assets", timeout=TIMEOUT)
        assert r.status_code == 200
        with pytest.raises(ValueError):
            r.json()
        srv.faults = Faults(deprecated=True)
        r = session.get(f"{srv.base_url}/assets", timeout=TIMEOUT)
        assert r.status_code == 200 and r.json()["data"]["message"].startswith("We are deprecating this version")
        assert isinstance(r.json()["timestamp"], int)


def test_delay_and_credits(catalog: Catalog, session: requests.Session) -> None:
    with StubServer(catalog, faults=Faults(delay_s=0.2), api_keys={KEY}) as srv:
        started = time.perf_counter()
        sizes = [len(session.get(f"{srv.base_url}/markets", params={"limit": 1000}, timeout=TIMEOUT).content)]
        assert time.perf_counter() - started >= 0.2
        srv.faults.delay_s = 0
        sizes.append(len(session.get(f"{srv.base_url}/nowhere", timeout=TIMEOUT).content))
        assert srv.stats.credits == sum(credits_for(n) for n in sizes)
        assert srv.stats.bytes_served == sum(sizes)
        assert srv.stats.requests["/v3/markets"] == 1 and srv.stats.total_requests == 2
    assert credits_for(0) == 1 and credits_for(2499) == 1 and credits_for(2500) == 2


def test_stop_cuts_keep_alive_connections(catalog: Catalog, session: requests.Session) -> None:
    srv = StubServer(catalog, api_keys={KEY}).start()
    assert session.get(f"{srv.base_url}/rates", timeout=TIMEOUT).ok
    srv.stop()
    with pytest.raises(requests.ConnectionError):
        session.get(f"{srv.base_url}/rates", timeout=TIMEOUT)


# ---- hostile mode -----------------------------------------------------------------------------------------


def test_hostile_mode_offset_values_over_delivery_redirects_and_bomb(
    catalog: Catalog, session: requests.Session
) -> None:
    faults = Faults(ignore_offset=True, drift_values=True, over_deliver=3)
    with StubServer(catalog, faults=faults, api_keys={KEY}) as srv:
        url = f"{srv.base_url}/assets"
        first, second = (session.get(url, params={"limit": 10, "offset": o}, timeout=TIMEOUT).json()["data"]
                         for o in (0, 10))  # fmt: skip
        assert len(first) == len(second) == 13  # 3 beyond the limit
        assert [a["id"] for a in first] == [a["id"] for a in second] == [a["id"] for a in catalog.assets[:13]]
        assert first[0]["priceUsd"] != second[0]["priceUsd"], "values move between two calls"
        assert first[0]["rank"] == second[0]["rank"] == catalog.assets[0]["rank"], "only decimals move"

        srv.faults = Faults(redirect="other-host")
        r = session.get(url, params={"limit": 5}, timeout=TIMEOUT, allow_redirects=False)
        assert r.status_code == 307 and r.headers["Location"].startswith(f"http://localhost:{srv.port}/v3/assets?")
        srv.faults = Faults(redirect="same-host")
        r = session.get(url, params={"limit": 5}, timeout=TIMEOUT)
        assert len(r.json()["data"]) == 5 and [x.status_code for x in r.history] == [307]
        assert srv.stats.total_requests == 5 and srv.stats.injected["redirect (same host)"] == 1

        srv.faults = Faults(gzip_bomb_mb=5)
        r = session.get(url, timeout=TIMEOUT, stream=True)
        assert r.headers["Content-Encoding"] == "gzip, gzip" and int(r.headers["Content-Length"]) < 1000
        assert r.json() == {"data": [], "timestamp": 1763700000000} and len(r.content) > 5 * 1024 * 1024

        srv.faults = Faults(trickle_s=0.02)  # 16 bytes every 20 ms: the read timeout, per read, never trips
        started = time.perf_counter()
        r = session.get(url, params={"limit": 1}, timeout=(TIMEOUT, 0.5))
        assert r.json()["data"][0]["id"] == catalog.assets[0]["id"]
        assert time.perf_counter() - started > 0.5 and srv.stats.injected["trickled answer"] == 1


# ---- separate process -------------------------------------------------------------------------------------


def test_serve_in_subprocess_and_sigterm() -> None:
    proc, base_url = serve_in_subprocess(
        markets=3000, assets=300, exchanges=20, api_key=KEY, faults=Faults(fail_first_n=1)
    )
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v3", base_url)
        headers = {"Authorization": f"Bearer {KEY}"}
        assert requests.get(f"{base_url}/markets", headers=headers, timeout=TIMEOUT).status_code == 503
        r = requests.get(f"{base_url}/markets", params={"limit": 2000}, headers=headers, timeout=TIMEOUT)
        assert r.status_code == 200 and len(r.json()["data"]) == 2000
        stats = requests.get(base_url.removesuffix("/v3") + "/_stub/stats", timeout=TIMEOUT).json()
        assert stats["statuses"] == {"503": 1, "200": 1} and stats["served_records"] == {"markets": 2000}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
