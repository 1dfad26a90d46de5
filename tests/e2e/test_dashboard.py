"""The local dashboard: numbers and charts rendered right, safe with hostile names, graceful without data, and,
built from a real pipeline run (offline demo + simulated days + a bad snapshot), every page renders its charts
with data in headless Chromium, with no console error and no request leaving 127.0.0.1."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from flows.dashboard import charts
from flows.dashboard import formatting as fmt
from flows.dashboard.browser import PageCheck, check_page, chromium, chromium_path
from flows.dashboard.pages import asset_slug
from flows.dashboard.reader import open_reader
from flows.dashboard.server import CONTENT_SECURITY_POLICY, DashboardServer
from flows.dashboard.site import PAGE_NAMES, DashboardSite, build_dashboard
from flows.errors import ConfigError
from flows.paths import PROJECT_ROOT

ROOT = PROJECT_ROOT
TODAY = date(2026, 11, 21)
XSS_NAME = '<script>alert("name")</script><img src=x onerror=alert(1)>'
XSS_DETAIL = "bad <b>row</b> \"quoted\" <img src=x onerror=alert('detail')>"


# ---------------------------------------------------------------------------------------------- browser


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium; skipped when absent, unless COINCAP_REQUIRE_BROWSER=1 (then it is a failure)."""
    required = os.environ.get("COINCAP_REQUIRE_BROWSER") == "1"
    reason = None
    if chromium_path() is None:
        reason = "install chromium: apt-get install chromium"
    else:
        try:
            import playwright  # noqa: F401
        except ImportError:
            reason = "install Playwright for Python: pip install playwright (no `playwright install` needed)"
    if reason:
        if required:
            pytest.fail(reason)
        pytest.skip(reason)
    with chromium() as b:
        yield b


def assert_clean(check: PageCheck) -> None:
    assert check.problems == [], f"{check.url}: {check.problems}"


# ------------------------------------------------------------------------------------- a warehouse by hand


def fake_warehouse(path: Path, *, days: int = 3, hostile: bool = False) -> None:
    """The report marts and ops tables with the shared spec's columns, filled by hand (no pipeline)."""
    name = XSS_NAME if hostile else "Bitcoin"
    con = duckdb.connect(str(path))
    con.execute("set TimeZone = 'UTC'")
    con.execute("create schema marts; create schema ops")
    con.execute(
        """
        create table marts.rpt_market_overview_daily (report_date date, snapshot_id varchar, asset_id varchar,
            asset_symbol varchar, asset_name varchar, asset_rank bigint, price_usd double, market_cap_usd double,
            volume_usd_24h double, change_percent_24h double, dominance_pct double, total_market_cap_usd double,
            total_volume_usd_24h double);
        create table marts.rpt_asset_daily (report_date date, asset_id varchar, asset_symbol varchar,
            asset_name varchar, open_price_usd double, high_price_usd double, low_price_usd double,
            close_price_usd double, moving_avg_7d double, moving_avg_30d double, volatility_30d double,
            volatility_30d_annualised double, volume_usd_24h double, market_cap_usd double, pct_change_1d double,
            pct_change_7d double, pct_change_30d double, price_source varchar, snapshot_count double);
        create table marts.rpt_exchange_daily (report_date date, exchange_id varchar, exchange_name varchar,
            exchange_rank bigint, volume_usd_24h double, volume_share_pct double, trading_pairs double,
            markets_count double, markets_volume_usd_24h double);
        create table marts.rpt_market_pairs_daily (report_date date, exchange_id varchar, base_asset_id varchar,
            quote_asset_id varchar, base_symbol varchar, quote_symbol varchar, pair varchar, price_usd double,
            volume_usd_24h double, volume_share_of_exchange_pct double, asset_price_usd double,
            price_deviation_pct double);
        create table ops.pipeline_runs (flow_run_id varchar, snapshot_id varchar, step varchar, status varchar,
            started_at timestamptz, seconds double, served bigint, duplicates bigint, valid bigint,
            quarantined bigint, pages bigint, calls bigint, failed_calls bigint, retries bigint, bytes bigint,
            credits bigint, new_fields varchar[], files varchar[], error varchar, recorded_at timestamptz);
        create table ops.dq_results (run_id varchar, flow_run_id varchar, snapshot_id varchar,
            checked_at timestamptz, check_name varchar, category varchar, dataset varchar, severity varchar,
            status varchar, observed double, threshold double, failing_rows bigint, detail varchar,
            description varchar);
        """
    )
    assets = [("bitcoin", "BTC", name, 80_000.0, 1.6e12), ("ethereum", "ETH", "Ethereum", 3_000.0, 3.6e11)]
    total = sum(a[4] for a in assets)
    for d in range(days):
        day = TODAY - timedelta(days=days - 1 - d)
        snapshot = f"{day:%Y%m%d}T060000Z"
        for rank, (asset_id, symbol, asset_name, price, cap) in enumerate(assets, start=1):
            p = price * (1 + 0.01 * d)
            con.execute(
                "insert into marts.rpt_market_overview_daily values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [day, snapshot, asset_id, symbol, asset_name, rank, p, cap, cap / 50, 1.5 - rank, cap / total * 100,
                 total, total / 50],
            )  # fmt: skip
            con.execute(
                "insert into marts.rpt_asset_daily values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [day, asset_id, symbol, asset_name, p, p * 1.02, p * 0.98, p, p, p, 0.02, 0.38, cap / 50, cap,
                 1.0, None, None, "snapshots", 1],
            )  # fmt: skip
        con.execute(
            "insert into marts.rpt_exchange_daily values (?, 'binance', ?, 1, 9e9, 90, 1500, 2, 5e8), "
            "(?, 'kraken', 'Kraken', 2, 1e9, 10, 600, 1, 1e8)",
            [day, name if hostile else "Binance", day],
        )
        con.execute(
            "insert into marts.rpt_market_pairs_daily values "
            "(?, 'binance', 'bitcoin', 'tether', 'BTC', 'USDT', 'BTC/USDT', 80000, 4e8, 80, 80000, 0), "
            "(?, 'kraken', 'ethereum', 'united-states-dollar', 'ETH', 'USD', 'ETH/USD', 3030, 1e8, 100, 3000, 1)",
            [day, day],
        )
        started = datetime(day.year, day.month, day.day, 6, tzinfo=UTC)
        for step, credits in (("assets", 16), ("markets", 11), ("dbt", None)):
            con.execute(
                "insert into ops.pipeline_runs (flow_run_id, snapshot_id, step, status, started_at, valid, "
                "quarantined, served, credits) values (?, ?, ?, 'completed', ?, ?, ?, ?, ?)",
                [f"run-{d}", snapshot, step, started, 100 if credits else None, 2 if step == "assets" else 0,
                 102 if credits else None, credits],
            )  # fmt: skip
        con.execute(
            "insert into ops.dq_results values (?, null, ?, ?, 'validity.no_negative_prices', 'validity', 'assets',"
            " 'error', ?, ?, 0, ?, ?, 'Prices are never negative')",
            [f"dq-{d}", snapshot, started + timedelta(minutes=5), "fail" if d == days - 1 else "pass",
             3.0 if d == days - 1 else 0.0, 3 if d == days - 1 else 0, XSS_DETAIL if hostile else "3 negative"],
        )  # fmt: skip
    failed_at = datetime(TODAY.year, TODAY.month, TODAY.day, 5, tzinfo=UTC)
    con.execute(
        "insert into ops.pipeline_runs (flow_run_id, snapshot_id, step, status, started_at, error) values "
        "('run-x', '20261121T050000Z', 'assets', 'failed', ?, ?)",
        [failed_at, XSS_DETAIL if hostile else "CoinCap credit quota exhausted (HTTP 403). Wait for the reset."],
    )
    con.close()


# ------------------------------------------------------------------------------------------- formatting


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, "–"), (float("nan"), "–"), (0, "$0"), (987, "$987"), (1234, "$1.2K"), (999_960, "$1.0M"),
     (1.2e9, "$1.2B"), (-2.5e9, "-$2.5B"), (3.34e12, "$3.3T")],
)  # fmt: skip
def test_compact_usd(value, expected):
    assert fmt.usd_compact(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(84022.2946, "$84,022.29"), (91.028, "$91.03"), (1.00041, "$1.0004"), (0.513525, "$0.5135"),
     (0.0000123456, "$0.00001235"), (0, "$0.00"), (None, "–")],
)  # fmt: skip
def test_price_keeps_the_digits_its_size_needs(value, expected):
    assert fmt.price(value) == expected


def test_percentages_and_durations():
    assert fmt.pct(3.456) == "3.5%"
    assert fmt.pct(-0.04, signed=True) == "+0.0%", "never -0.0%"
    assert fmt.pct(-1.26, 2, signed=True) == "-1.26%"
    assert fmt.duration(45) == "45 s" and fmt.duration(7500) == "2 h 5 min" and fmt.duration(3 * 86400) == "3 d"


# ------------------------------------------------------------------------------------------------ charts


def test_ticks_cover_the_data_with_round_steps():
    ticks = charts.nice_ticks(83_800, 84_700)
    assert ticks[0] <= 83_800 and ticks[-1] >= 84_700
    steps = {round(b - a, 6) for a, b in zip(ticks, ticks[1:], strict=False)}
    assert len(steps) == 1 and steps.pop() in (100, 200, 250, 500)
    assert all(t == int(t) for t in charts.nice_ticks(0, 8, integers=True)), "counts get whole-number ticks"
    assert [charts.axis_formatter([80_000, 82_500, 85_000], "$")(t) for t in (80_000, 82_500)] == ["$80.0K", "$82.5K"]
    label = charts.axis_formatter(charts.nice_ticks(0.9995, 1.0005), prefix="$")
    assert len({label(t) for t in charts.nice_ticks(0.9995, 1.0005)}) == len(charts.nice_ticks(0.9995, 1.0005))


def test_time_chart_draws_every_point_with_a_tooltip_and_escapes_names():
    days = [TODAY - timedelta(days=i) for i in range(5, 0, -1)]
    html = charts.time_chart(
        "t",
        days,
        [charts.Series("<b>close</b>", [1.0, 2.0, None, 4.0, 5.0], "#000"),
         charts.Series("volume", [10, 20, 30, 40, 50], "#111", "bar")],
        label="x <y>",
    )  # fmt: skip
    assert html.count('class="mark bar"') == 5
    assert html.count('class="mark line"') == 2, "a gap (None) splits the line"
    assert html.count('class="hit"') == 5
    assert "<b>" not in html and "&lt;b&gt;close&lt;/b&gt;" in html and 'aria-label="x &lt;y&gt;"' in html
    assert charts.time_chart("e", [], [], label="none") == ""
    assert charts.time_chart("e", days, [charts.Series("s", [None] * 5, "#000")], label="nulls") == ""


def test_positive_data_never_gets_a_negative_axis():
    days = [TODAY - timedelta(days=i) for i in range(3, 0, -1)]
    html = charts.time_chart("cap", days, [charts.Series("cap", [2.6e12, 2.7e12, 2.65e12], "#000", "area")], label="")
    labels = re.findall(r'class="axis"[^>]*text-anchor="end">([^<]+)<', html)
    assert labels and not any(label.startswith("-") for label in labels), labels


def test_bar_chart_and_donut():
    bars = [charts.Bar("up", 2.0), charts.Bar("down <x>", -3.0)]
    html = charts.bar_chart("b", bars, label="", value_format=lambda v: fmt.pct(v, signed=True))
    assert html.count('class="mark bar"') == 2 and "down &lt;x&gt;" in html and "-3.0%" in html
    donut = charts.donut("d", [("a", 3.0, "#000"), ("b", 1.0, "#111"), ("zero", 0.0, "#222")], label="",
                         value_format=fmt.usd_compact)  # fmt: skip
    assert donut.count('class="mark slice"') == 2 and "75.0%" in donut and "zero" not in donut
    assert charts.donut("one", [("all", 5.0, "#000")], label="", value_format=str).count("mark slice") == 1


# --------------------------------------------------------------------------------------- pages and site


def test_hostile_names_are_escaped_everywhere(tmp_path):
    fake_warehouse(tmp_path / "w.duckdb", hostile=True)
    result = build_dashboard(tmp_path / "w.duckdb", tmp_path / "site")
    html = "\n".join(p.read_text() for p in result.out_dir.rglob("*.html"))
    assert "<script>alert" not in html and "<img src=x" not in html and "<b>row</b>" not in html
    assert "&lt;script&gt;alert(&quot;name&quot;)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(&#x27;detail&#x27;)&gt;" in html
    scripts = re.findall(r"<script[^>]*>", html)
    assert scripts and all(re.fullmatch(r'<script src="[^"]+\.js" defer>', s) for s in scripts), "no inline script"
    assert " style=" not in html, "no inline style: the server's CSP forbids them"
    listing = (result.out_dir / "assets" / "asset-list.js").read_text()
    assert listing.isascii() and "<" not in listing


def test_asset_file_names_are_safe_and_distinct():
    assert asset_slug("bitcoin") == "bitcoin"
    odd = ["../../etc/passwd", "Bitcoin", "bitcoin cash", "bitcoin-cash", "日本"]
    slugs = [asset_slug(a) for a in odd]
    assert all(re.fullmatch(r"[a-z0-9-]+", s) for s in slugs) and len(set(slugs)) == len(odd)


def test_no_warehouse_and_missing_tables_show_a_no_data_panel(tmp_path):
    result = build_dashboard(tmp_path / "missing.duckdb", tmp_path / "a")
    for page in PAGE_NAMES:
        text = result.pages[page].read_text()
        assert 'class="empty"' in text and "No data yet" in text and "<code>coincap-pipeline run</code>" in text
    assert not (tmp_path / "missing.duckdb").exists(), "reading never creates the warehouse"

    con = duckdb.connect(str(tmp_path / "half.duckdb"))
    con.execute("create schema ops; create table ops.pipeline_runs (step varchar)")  # an older, other shape
    con.execute("create schema marts; create table marts.rpt_asset_daily (report_date date)")
    con.execute("insert into marts.rpt_asset_daily values (current_date)")
    con.close()
    result = build_dashboard(tmp_path / "half.duckdb", tmp_path / "b")
    overview = result.pages["overview"].read_text()
    assert "marts.rpt_market_overview_daily does not exist yet" in overview
    assert "is empty" in result.pages["health"].read_text()
    assert "Cannot read marts.rpt_asset_daily" in result.pages["asset"].read_text()


def test_server_sends_a_strict_policy_renders_unbuilt_assets_and_rebuilds_on_change(tmp_path):
    warehouse = tmp_path / "w.duckdb"
    fake_warehouse(warehouse)
    site = DashboardSite(warehouse, tmp_path / "site", asset_pages=1, on_demand=True)
    result = site.build()
    assert result.asset_pages == 1 and result.assets_listed == 2
    assert not (site.out_dir / "assets" / "ethereum.html").exists()
    with DashboardServer(
        site.out_dir, port=0, rebuild=site.build, watch=warehouse, render=site.render_missing, quiet_seconds=0
    ) as server:
        with urllib.request.urlopen(server.url) as response:
            assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
            assert response.headers["X-Content-Type-Options"] == "nosniff"
        with urllib.request.urlopen(server.url + "assets/ethereum.html") as response:
            assert "Ethereum (ETH)" in response.read().decode()
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(server.url + "assets/dogecoin.html")
        assert missing.value.code == 404

        con = duckdb.connect(str(warehouse))
        con.execute("update marts.rpt_market_overview_daily set total_market_cap_usd = 4.2e12")
        con.close()
        server.quiet_seconds = 60
        with urllib.request.urlopen(server.url) as response:
            assert "$4.20T" not in response.read().decode(), "a warehouse that just changed may be mid-run"
        server.quiet_seconds = 0
        with urllib.request.urlopen(server.url) as response:
            assert "$4.20T" in response.read().decode(), "a changed warehouse is rebuilt before serving"

    with DashboardServer(site.out_dir, port=0) as taken, pytest.raises(ConfigError, match="already in use"):
        DashboardServer(site.out_dir, port=taken.port)


def test_cli_builds_then_serves(tmp_path):
    fake_warehouse(tmp_path / "warehouse.duckdb")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COINCAP_", "PIPELINE_"))}
    env.update(PIPELINE_DATA_DIR=str(tmp_path), PYTHONPATH=str(ROOT))
    built = subprocess.run(
        [sys.executable, "-m", "flows.cli", "dashboard", "--build-only"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert f"dashboard: {tmp_path / 'dashboard' / 'index.html'}" in built.stdout
    assert "2 asset pages, 2 assets listed" in built.stdout

    refused = subprocess.run(
        [sys.executable, "-m", "flows.cli", "dashboard", "--build-only"],
        env={**env, "PIPELINE_TARGET": "gcp"}, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 2 and "looker-url" in refused.stderr

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serving = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "dashboard", "--port", str(port)],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health.html", timeout=2) as response:
                    assert "Pipeline health" in response.read().decode()
                    break
            except OSError:
                assert serving.poll() is None, serving.communicate()[1]
                assert time.monotonic() < deadline, "the dashboard never answered"
                time.sleep(0.2)
    finally:
        serving.terminate()
        serving.wait(timeout=10)


def test_pages_render_in_a_browser_without_errors_even_with_hostile_names(tmp_path, browser):
    fake_warehouse(tmp_path / "w.duckdb", hostile=True)
    result = build_dashboard(tmp_path / "w.duckdb", tmp_path / "site")
    dialogs: list[str] = []
    with DashboardServer(result.out_dir, port=0) as server:
        for page in PAGE_NAMES:
            check = check_page(browser, server.url + result.relative(page))
            assert_clean(check)
            assert check.charts and all(marks > 0 for marks in check.charts.values()), (page, check.charts)
        context = browser.new_context()
        tab = context.new_page()
        tab.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        tab.goto(server.url + result.relative("asset"))
        options = tab.locator("#asset-picker option").all_text_contents()
        assert XSS_NAME + " (BTC)" in options, "the name is shown as text"
        tab.select_option("#asset-picker", "ethereum")
        tab.wait_for_url("**/assets/ethereum.html")
        context.close()
    assert dialogs == [], "no script from the data ran"


# ----------------------------------------------------------------------- from a real pipeline run, end to end


@pytest.fixture(scope="module")
def demo_run(prefect_api, tmp_path_factory):
    """Offline demo through the real pipeline: yesterday (a failed run, then its snapshot), then today's
    snapshot deliberately bad, the dbt build and the data-quality checks the pipeline runs after it."""
    from flows.lab.demo_history import simulate_history

    started = time.perf_counter()
    history = simulate_history(tmp_path_factory.mktemp("demo") / "data", days=2, bad_day=0, failed_day=1, check_days=())
    print(f"simulated history in {time.perf_counter() - started:.1f} s")
    site = DashboardSite(history.settings.duckdb_path, history.settings.data_dir / "dashboard")
    return history, site.build()


@pytest.mark.slow
def test_every_page_of_a_real_run_renders_its_charts_with_the_warehouse_numbers(demo_run, browser):
    history, result = demo_run
    with DashboardServer(result.out_dir, port=0) as server:
        checks = {p: check_page(browser, server.url + result.relative(p)) for p in PAGE_NAMES}
    for page, check in checks.items():
        assert_clean(check)
        assert check.empty_panels == [], f"{page}: {check.empty_panels}"
        assert check.charts and all(marks > 0 for marks in check.charts.values()), (page, check.charts)
        assert check.tables and all(rows > 0 for rows in check.tables.values()), (page, check.tables)

    with open_reader(history.settings.duckdb_path) as reader:
        one = reader.scalar
        latest = "where report_date = (select max(report_date) from marts.rpt_market_overview_daily)"
        total = one(f"select max(total_market_cap_usd) from marts.rpt_market_overview_daily {latest}")
        assets = one(f"select count(*) from marts.rpt_market_overview_daily {latest}")
        close = one(
            "select close_price_usd from marts.rpt_asset_daily where asset_id = 'bitcoin' order by report_date desc"
        )
        days = one("select count(*) from marts.rpt_asset_daily where asset_id = 'bitcoin'")
        exchanges = one(
            "select count(*) from marts.rpt_exchange_daily "
            "where report_date = (select max(report_date) from marts.rpt_exchange_daily)"
        )
        quality = reader.rows(
            "select check_name, status from ops.dq_results where run_id = "
            "(select run_id from ops.dq_results order by checked_at desc limit 1)"
        )
        quarantined = one(
            "select sum(quarantined) from ops.pipeline_runs where snapshot_id = ?", [history.bad_snapshot_id]
        )

    overview, asset, exchange, health = (checks[p] for p in PAGE_NAMES)
    assert overview.kpis["total_market_cap"] == fmt.usd_compact(total, 2)
    assert overview.kpis["assets"] == f"{assets:,}"
    assert overview.tables["top-assets"] == min(50, assets)
    assert overview.charts["total-market-cap"] > 0 and overview.charts["sparklines"] > 0, "history: 2 days"
    assert asset.kpis["price"] == fmt.price(close)
    assert days == 2 and asset.tables["asset-days"] == 2
    assert exchange.kpis["exchanges"] == f"{exchanges:,}"

    # the bad snapshot: its quarantined rows, the failed run's one-line error, and today's failing checks
    assert quarantined > 0 and health.charts["rows-assets"] > 0
    assert health.tables["failures"] >= 1 and health.tables["quality-latest"] == len(quality)
    tripped = sorted(r["check_name"] for r in quality if r["status"] in ("fail", "warn"))
    assert tripped, "the spoiled snapshot trips checks"
    page = result.pages["health"].read_text()
    assert "quota exhausted" in page
    for name in tripped:
        assert name in page


@pytest.mark.slow
def test_screenshots_command_writes_one_png_per_page(demo_run, browser, tmp_path):
    from flows.dashboard.__main__ import screenshots

    history, _ = demo_run
    problems = screenshots(history.settings.data_dir, tmp_path, browser=browser)
    assert problems == []
    for page in PAGE_NAMES:
        png = (tmp_path / f"{page}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 20_000
