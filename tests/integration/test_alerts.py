"""Alerts through a Slack-compatible webhook: a real HTTP server on 127.0.0.1 takes the posts.

Delivery retries 5xx/429/network errors within bounds and honours Retry-After; it never raises and logs one
warning line when it gives up, without the webhook URL. A bad quality report posts exactly one message
naming its failing checks; a clean one posts nothing. A failing flow's hook posts the error's one line.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from flows.errors import AuthError
from flows.ops import alerts
from flows.ops.alerts import Alert, DeliveryPolicy, post_webhook, quality_alert, slack_message, stale_alert
from flows.orchestration.alerting import failure_alert, send_alert
from flows.quality import CheckResult, QualityReport
from flows.settings import Settings, use_settings
from tests.conftest import API_KEY, fast_settings
from tests.tools import cli_env

TOKEN = "T0000/B0000/XyZsecretWebhookToken42"


# ------------------------------------------------------------------------------------- a local webhook server


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


class Webhook:
    """A Slack-style incoming webhook on 127.0.0.1: replies from a script (then 200 ok), records every post."""

    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.posts: list[dict[str, Any]] = []
        self.times: list[float] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with webhook._lock:
                    webhook.times.append(time.monotonic())
                    webhook.headers.append(dict(self.headers))
                    webhook.posts.append(json.loads(body or b"null"))
                    reply = webhook.script.pop(0) if webhook.script else Reply()
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (read timeout)
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/{TOKEN}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Webhook:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, n: int, timeout_s: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while len(self.posts) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.posts)


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    with Webhook() as hook:
        yield hook


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again on exit: nothing listens there


def _settings(tmp_path: Path, url: str | None) -> Settings:
    return fast_settings(tmp_path / "data", "http://127.0.0.1:1/v3", PIPELINE_ALERT_WEBHOOK_URL=url)


FAST = DeliveryPolicy(attempts=4, connect_timeout_s=0.5, read_timeout_s=0.5, backoff_base_s=0.05, backoff_max_s=0.1)


# ------------------------------------------------------------------------------------------ quality reports


def _check(name: str, status: str, dataset: str = "assets", **kw: Any) -> CheckResult:
    category = name.split(".")[0]
    severity = "warn" if status == "warn" else "error"
    values: dict[str, Any] = dict(observed=0.0, threshold=0.0, failing_rows=0, detail="", description=name)
    values.update(kw)
    return CheckResult(check_name=name, category=category, dataset=dataset, severity=severity, status=status,
                       **values)  # fmt: skip


def bad_report() -> QualityReport:
    return QualityReport(
        run_id="dq-run-1",
        snapshot_id="20261121T053000Z",
        checked_at=datetime(2026, 11, 21, 5, 31, tzinfo=UTC),
        results=[
            _check("completeness.assets_row_count", "pass", observed=250, threshold=1),
            _check("validity.no_negative_prices", "fail", observed=3, threshold=0, failing_rows=3,
                   detail="3 rows with price_usd < 0: bitcoin, ethereum, tether"),
            _check("uniqueness.markets_natural_key", "fail", "markets", observed=2, threshold=0, failing_rows=2,
                   detail="2 duplicate keys: binance/bitcoin/tether"),
            _check("anomaly.price_jump", "warn", observed=0.61, threshold=0.5, failing_rows=1,
                   detail="dogecoin moved 61% since the previous snapshot"),
            _check("consistency.rates_vs_assets", "error", "rates", observed=None, threshold=None,
                   failing_rows=None, detail="could not run: table missing"),
        ],
    )  # fmt: skip


def good_report() -> QualityReport:
    return QualityReport(
        run_id="dq-run-2",
        snapshot_id="20261121T053000Z",
        checked_at=datetime(2026, 11, 21, 5, 31, tzinfo=UTC),
        results=[
            _check("completeness.assets_row_count", "pass", observed=250, threshold=1),
            _check("validity.no_negative_prices", "pass"),
        ],  # fmt: skip
    )


# --------------------------------------------------------------------------------------------------- tests


def test_the_message_is_slack_block_kit_within_slack_s_limits() -> None:
    alert = Alert("data_quality", "T" * 400, "line <one> & *two*\n" * 400, "error",
                  {f"field {i}": "v" * 3000 for i in range(14)})  # fmt: skip
    message = slack_message(alert)
    assert message["text"].startswith(":rotating_light: TTT") and len(message["text"]) <= 3000
    header, body, facts, context = message["blocks"]
    assert header["type"] == "header" and header["text"]["type"] == "plain_text"
    assert len(header["text"]["text"]) <= 150
    assert body["type"] == "section" and len(body["text"]["text"]) <= 3000
    assert "&lt;one&gt; &amp; *two*" in body["text"]["text"]  # Slack's control characters escaped, emphasis kept
    assert facts["type"] == "section" and len(facts["fields"]) == 10
    assert all(len(f["text"]) <= 2000 and f["type"] == "mrkdwn" for f in facts["fields"])
    assert context["type"] == "context" and "coincap-pipeline" in context["elements"][0]["text"]
    assert "data_quality" in context["elements"][0]["text"] and "UTC" in context["elements"][0]["text"]


def test_a_bad_report_posts_exactly_one_message_naming_the_failing_checks(tmp_path, webhook) -> None:
    report = bad_report()
    assert [r.check_name for r in report.failed] == [
        "validity.no_negative_prices", "uniqueness.markets_natural_key", "consistency.rates_vs_assets",
    ]  # fmt: skip
    alert = quality_alert(report)
    assert alert is not None and alert.kind == "data_quality" and alert.severity == "error"
    assert send_alert(alert, _settings(tmp_path, webhook.url)) is True
    (post,) = webhook.posts
    text = json.dumps(post)
    for name in ("validity.no_negative_prices", "uniqueness.markets_natural_key", "consistency.rates_vs_assets"):
        assert name in post["text"] and name in text
    assert "anomaly.price_jump" in text  # warnings ride along, marked as such
    assert "completeness.assets_row_count" not in text  # passing checks are not news
    assert "20261121T053000Z" in text and "bitcoin, ethereum" in text  # snapshot and sample failing keys
    assert report.summary_line() in post["blocks"][1]["text"]["text"]
    assert webhook.headers[0]["Content-Type"] == "application/json"


def test_a_good_report_posts_nothing(tmp_path, webhook) -> None:
    report = good_report()
    assert report.ok and not report.warned
    assert quality_alert(report) is None
    assert send_alert(quality_alert(report), _settings(tmp_path, webhook.url)) is False  # the pipeline's call
    time.sleep(0.2)
    assert webhook.posts == []


def test_news_warnings_alert_as_warnings_and_standing_quirks_do_not() -> None:
    report = good_report()
    # CoinCap's data always has some (tickers shared by several tokens, supply above max supply): not news.
    report.results.append(_check("uniqueness.asset_symbol_collisions", "warn", failing_rows=12))
    report.results.append(_check("validity.supply_within_max_supply", "warn", failing_rows=1))
    assert report.ok and len(report.warned) == 2 and quality_alert(report) is None
    report.results.append(_check("anomaly.price_jump", "warn", observed=0.61, threshold=0.5, failing_rows=1))
    alert = quality_alert(report)
    assert alert is not None and alert.severity == "warning" and "anomaly.price_jump" in alert.title
    assert alerts.F_FAILING not in alert.fields and alert.fields[alerts.F_WARNINGS] == "anomaly.price_jump"
    assert "• `uniqueness.asset_symbol_collisions`" not in alert.text  # named in the summary line only


def test_500_then_200_is_retried_and_delivered_once(tmp_path, webhook) -> None:
    webhook.script = [Reply(500, b"upstream error"), Reply(503, b"")]
    assert send_alert(failure_alert("snapshot", "run-1", "boom"), _settings(tmp_path, webhook.url)) is True
    assert len(webhook.posts) == 3 and webhook.posts[0] == webhook.posts[2]  # the same message each time
    gaps = [b - a for a, b in zip(webhook.times, webhook.times[1:], strict=False)]
    assert all(g >= 0.45 for g in gaps), gaps  # backoff (1 s, 2 s with jitter down to half) between attempts


def test_429_retry_after_is_honoured(tmp_path, webhook) -> None:
    webhook.script = [Reply(429, b"rate_limited", {"Retry-After": "1"})]
    assert send_alert(failure_alert("snapshot", "run-1", "boom"), _settings(tmp_path, webhook.url)) is True
    assert len(webhook.posts) == 2
    assert webhook.times[1] - webhook.times[0] >= 0.95  # waited as told, not the 0.5-1 s backoff


def test_a_retry_after_too_long_gives_up_at_once_with_one_warning(tmp_path, webhook, caplog) -> None:
    webhook.script = [Reply(429, b"rate_limited", {"Retry-After": "3600"})]
    caplog.set_level(logging.INFO, logger="flows.ops.alerts")
    started = time.monotonic()
    assert send_alert(failure_alert("snapshot", "run-1", "boom"), _settings(tmp_path, webhook.url)) is False
    assert time.monotonic() - started < 2 and len(webhook.posts) == 1
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "asked to wait 3600 s" in warning.getMessage() and TOKEN not in warning.getMessage()


def test_a_client_error_is_not_retried(tmp_path, webhook) -> None:
    webhook.script = [Reply(404, b"no_service")]
    assert send_alert(failure_alert("snapshot", "run-1", "boom"), _settings(tmp_path, webhook.url)) is False
    assert len(webhook.posts) == 1


def test_timeouts_and_5xx_are_bounded_by_the_policy(webhook) -> None:
    webhook.script = [Reply(200, b"ok", delay_s=1.0)] + [Reply(502)] * 10
    delivery = post_webhook(webhook.url, {"text": "x"}, FAST)
    assert not delivery.ok and delivery.attempts == FAST.attempts == len(webhook.posts)
    assert delivery.status == 502
    deadline = DeliveryPolicy(attempts=50, backoff_base_s=0.2, backoff_max_s=0.2, deadline_s=0.5)
    webhook.posts.clear()
    webhook.script = [Reply(500)] * 60
    started = time.monotonic()
    assert not post_webhook(webhook.url, {"text": "x"}, deadline).ok
    assert time.monotonic() - started < 1.5 and len(webhook.posts) < 10  # the deadline, not 50 attempts


def test_an_unreachable_webhook_never_raises_and_logs_one_line_without_the_url(tmp_path, monkeypatch, caplog):
    url = f"http://127.0.0.1:{_closed_port()}/services/{TOKEN}"
    delivery = post_webhook(url, {"text": "x"}, FAST)
    assert not delivery.ok and delivery.attempts == FAST.attempts and delivery.status is None
    assert "ConnectError" in delivery.reason

    monkeypatch.setattr(alerts, "DELIVERY", FAST)
    caplog.set_level(logging.INFO)
    assert send_alert(failure_alert("snapshot", "run-1", AuthError("Bad key.", "Fix it.")),
                      _settings(tmp_path, url)) is False  # fmt: skip
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "flows.ops.alerts"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    line = warnings[0].getMessage()
    assert "after 4 attempts" in line and "PIPELINE_ALERT_WEBHOOK_URL" in line and "\n" not in line
    assert "127.0.0.1" in line  # where it tried, so the user can tell
    assert all(TOKEN not in r.getMessage() for r in caplog.records)


def test_without_a_webhook_the_alert_is_only_logged(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="flows.ops.alerts")
    alert = quality_alert(bad_report())
    assert send_alert(alert, _settings(tmp_path, None)) is False
    (logged,) = [r for r in caplog.records if r.name == "flows.ops.alerts"]
    assert logged.levelno == logging.ERROR and "validity.no_negative_prices" in logged.getMessage()
    assert logged.alert_kind == "data_quality"  # type: ignore[attr-defined]


def test_send_alert_never_raises(tmp_path, monkeypatch, caplog) -> None:
    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the formatter broke")

    monkeypatch.setattr(alerts, "slack_message", explode)
    assert send_alert(failure_alert("x", None, "y"), _settings(tmp_path, "http://127.0.0.1:9/hook")) is False
    assert any("alert not sent (RuntimeError: the formatter broke)" in r.getMessage() for r in caplog.records)


def test_failure_alert_is_one_line_naming_flow_run_and_error() -> None:
    alert = failure_alert("snapshot", "8d76e6c5", AuthError("CoinCap rejected the API key (HTTP 401).",
                                                            "Set COINCAP_API_KEY to a valid key."))  # fmt: skip
    assert alert.kind == "run_failed" and alert.severity == "error" and alert.title == "Flow run failed: snapshot"
    assert alert.text == "CoinCap rejected the API key (HTTP 401). Set COINCAP_API_KEY to a valid key."
    assert alert.fields["flow run"] == "8d76e6c5"
    assert failure_alert("x", None, ValueError("first\nsecond")).text == "ValueError: first"
    assert failure_alert("x", None, KeyError()).text == "KeyError"
    leaky = failure_alert("x", None, "GET https://api/x?key=abc123 failed; Authorization: Bearer sk_live_12345")
    assert "abc123" not in leaky.text and "sk_live_12345" not in leaky.text


def test_ops_builds_and_delivers_without_prefect_and_the_flows_add_its_event_and_run_page(tmp_path, webhook):
    import subprocess
    import sys

    # flows.ops alone never loads Prefect, even in JSON log mode
    code = (
        "import sys, flows.ops.alerts, flows.ops.preflight, flows.ops.observability as o\n"
        "o.configure_logging()\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('prefect', 'prefect_gcp')], 'prefect loaded'"
    )
    env = cli_env(tmp_path, PIPELINE_LOG_FORMAT="json")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr[-2000:]

    emitted: list[Alert] = []
    alert = alerts.failure_alert("snapshot", "run-1", "boom", logs_url="http://ui/runs/flow-run/run-1")
    assert alert.fields["logs"] == "http://ui/runs/flow-run/run-1"
    assert alerts.deliver_alert(alert, _settings(tmp_path, webhook.url), emit=emitted.append) is True
    assert emitted == [alert] and len(webhook.posts) == 1
    assert "logs" not in failure_alert("snapshot", None, "boom").fields  # no run, no page


def test_stale_alert_names_datasets_and_checks() -> None:
    results = [
        _check("freshness.assets_snapshot_age", "fail", observed=30.5, threshold=26, detail="latest 30.5 h ago"),
        _check("freshness.markets_snapshot_age", "warn", "markets", observed=200, threshold=192),
        _check("freshness.rates_snapshot_age", "pass", "rates"),
    ]
    alert = stale_alert(results)
    assert alert.kind == "stale" and alert.severity == "error"
    assert alert.fields[alerts.F_DATASETS] == "assets, markets"
    assert "freshness.assets_snapshot_age" in alert.text and "latest 30.5 h ago" in alert.text
    assert "rates_snapshot_age" not in alert.text
    assert stale_alert([results[1]]).severity == "warning"


def test_a_failing_pipeline_flow_alerts_through_its_hook(prefect_api, tmp_path, stub, webhook) -> None:
    from flows.settings import use_settings
    from flows.snapshot import assets_flow

    settings = fast_settings(tmp_path / "data", stub.base_url, COINCAP_API_KEY="wrong-key-abcdef",
                             PIPELINE_ALERT_WEBHOOK_URL=webhook.url)  # fmt: skip
    use_settings(settings)
    try:
        state = assets_flow(return_state=True)
    finally:
        use_settings(None)
    assert state.is_failed()
    (post,) = webhook.wait_for(1, 10)
    assert post["blocks"][0]["text"]["text"].endswith("Flow run failed: assets")
    assert "CoinCap rejected the API key" in post["text"]
    facts = {f["text"].split("\n")[0]: f["text"].split("\n", 1)[1] for f in post["blocks"][2]["fields"]}
    assert facts["*flow run*"] == str(state.state_details.flow_run_id)
    assert "wrong-key-abcdef" not in json.dumps(post)


@pytest.mark.slow
def test_the_watchdog_alerts_on_stale_data_and_a_good_snapshot_raises_nothing(prefect_api, tmp_path, webhook):
    from flows.snapshot import snapshot_flow
    from flows.standin import Catalog, StubServer
    from flows.warehouse.factory import warehouse
    from flows.watchdog import watchdog_flow

    with StubServer(Catalog.demo(), api_keys={API_KEY}) as api:
        settings = fast_settings(tmp_path / "data", api.base_url, PIPELINE_ALERT_WEBHOOK_URL=webhook.url)
        use_settings(settings)
        try:
            summary = snapshot_flow(datasets=["assets", "rates"])  # dbt build and quality checks included
            assert summary.quality is not None and summary.quality.ok  # (the demo data has standing warnings)
            fresh = watchdog_flow()
            assert fresh.results and all(r.category == "freshness" and r.status == "pass" for r in fresh.results)
            time.sleep(0.2)
            assert webhook.posts == [], "a good snapshot and fresh data raise nothing"

            use_settings(settings.model_copy(update={"dq_freshness_hours": 0.001}))  # everything is stale now
            stale = watchdog_flow()
        finally:
            use_settings(None)
    assert {r.status for r in stale.results} == {"fail"}
    (post,) = webhook.wait_for(1, 5)
    assert post["text"].startswith(":rotating_light: Stale data: assets, lake, rates not refreshed in time")
    assert "freshness.assets" in post["text"] and "is older than 0.001 h" in post["text"]
    _, rows = warehouse(settings).query(
        f"select status, count(*) from ops.dq_results where run_id = '{stale.run_id}' group by status"
    )
    assert dict(rows) == {"fail": len(stale.results)}  # the watchdog's results are kept for the health page
