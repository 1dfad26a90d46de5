"""Logs without secrets, JSON lines for Cloud Logging, and the `snapshot-summary` artifact in Prefect.

The console script runs a real snapshot with a known key in JSON mode (stand-in and Prefect server on
127.0.0.1): every stderr line is a JSON object and neither the key nor the webhook URL appears anywhere, a
failing run included. Logs shipped to the Prefect API are scrubbed too. The artifact is read back from the
server.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from flows.ops.observability import (
    JsonLinesHandler,
    install_redaction,
    redact,
    redact_url,
    register_secret,
    severity,
    snapshot_markdown,
)
from flows.orchestration.artifacts import ARTIFACT_KEY
from flows.orchestration.logs import configure_logging
from flows.paths import PROJECT_ROOT
from flows.settings import Settings, use_settings
from flows.warehouse.dbt import DbtOutcome
from tests.conftest import fast_settings
from tests.integration.test_alerts import TOKEN, Webhook, bad_report

ROOT = PROJECT_ROOT
KEY = "known-key-9c41e7d2"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide handlers: put them back for the rest of the session."""

    def loggers() -> list[logging.Logger]:
        found = [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
        return [logging.getLogger(), *found]

    saved = {lg.name: list(lg.handlers) for lg in loggers()}
    package_level = logging.getLogger("flows").level
    yield
    for lg in loggers():
        lg.handlers[:] = saved.get(lg.name, [h for h in lg.handlers if not isinstance(h, JsonLinesHandler)])
    logging.getLogger("flows").setLevel(package_level)
    logging.captureWarnings(False)


def _json_settings(tmp_path: Path, **extra: Any) -> Settings:
    return fast_settings(tmp_path / "data", "http://127.0.0.1:1/v3", COINCAP_API_KEY=KEY, PIPELINE_LOG_FORMAT="json",
                         **extra)  # fmt: skip


# ------------------------------------------------------------------------------------------------ redaction


def test_redact_removes_registered_secrets_and_credential_shapes() -> None:
    register_secret("my-long-api-key-123")
    register_secret("https://chat.example.com/services/T1/B2/abcdefSECRET")
    register_secret("short")  # too short to be treated as a secret: it would garble ordinary words
    cases = {
        "key my-long-api-key-123 used": "key *** used",
        "posting to https://chat.example.com/services/T1/B2/abcdefSECRET now": "posting to *** now",
        "path /services/T1/B2/abcdefSECRET leaked": "path *** leaked",
        "Authorization: Bearer eyJhbGciOi.payload.sig": "Authorization: Bearer ***",
        "headers {'authorization': 'Bearer abc.def.ghi'}": "headers {'authorization': '***'}",
        "GET https://rest.coincap.io/v3/assets?apiKey=zzz999&limit=5": "GET https://rest.coincap.io/v3/assets?apiKey=***&limit=5",
        "env COINCAP_API_KEY=abc123 key=hunter22 token=t0k3n": "env COINCAP_API_KEY=*** key=*** token=***",
        '{"api_key": "s3cr3t-value"}': '{"api_key": "***"}',
        "https://hooks.slack.com/services/T000/B000/XXXXXXXX failed": "https://hooks.slack.com/*** failed",
        "a short word stays": "a short word stays",
        "monkey=banana stays": "monkey=banana stays",
    }  # fmt: skip
    for raw, clean in cases.items():
        assert redact(raw) == clean, raw
    assert redact_url("https://hooks.slack.com/services/T/B/C?x=1") == "https://hooks.slack.com/***"
    assert redact_url("http://127.0.0.1:8080/hooks/abc") == "http://127.0.0.1:8080/***"


def test_every_record_is_scrubbed_whatever_logger_it_comes_from() -> None:
    install_redaction()
    register_secret(KEY)
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    names = ("prefect.flow_runs", "httpx", "some.library", "flows.ingest.extract")
    for name in names:
        logging.getLogger(name).addHandler(handler)
    try:
        logging.getLogger("prefect.flow_runs").warning("key is %s", KEY)
        logging.getLogger("httpx").warning("GET /v3/assets headers={'Authorization': 'Bearer %s'}", KEY)
        logging.getLogger("some.library").warning(f"inline {KEY}")
        try:
            raise RuntimeError(f"request with {KEY} failed")
        except RuntimeError:
            logging.getLogger("flows.ingest.extract").exception("extract failed")
    finally:
        for name in names:
            logging.getLogger(name).removeHandler(handler)
    out = buffer.getvalue()
    assert KEY not in out
    assert out.count("***") == 4 and "RuntimeError: request with *** failed" in out and "Traceback" in out


def test_run_logs_sent_to_the_prefect_api_are_scrubbed(prefect_api, tmp_path, restore_logging) -> None:
    from prefect import flow, get_run_logger
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    configure_logging(_json_settings(tmp_path), stream=io.StringIO())

    @flow(log_prints=True)
    def leaky() -> None:
        get_run_logger().info("calling CoinCap with key %s", KEY)
        print(f"print() is logged too: Authorization: Bearer {KEY}")

    state = leaky(return_state=True)
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        for _ in range(50):
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
            if any("print() is logged" in log.message for log in logs):
                break
            time.sleep(0.1)
    messages = [log.message for log in logs]
    assert any("calling CoinCap with key ***" in m for m in messages), messages
    assert any("Authorization: Bearer ***" in m for m in messages), messages
    assert not any(KEY in m for m in messages)


# ------------------------------------------------------------------------------------------------ JSON lines


def test_severity_uses_cloud_logging_names() -> None:
    levels = (5, logging.DEBUG, logging.INFO, 25, logging.WARNING, logging.ERROR, logging.CRITICAL)
    assert [severity(n) for n in levels] == ["DEFAULT", "DEBUG", "INFO", "INFO", "WARNING", "ERROR", "CRITICAL"]


def test_json_mode_writes_one_object_per_line_with_run_ids(prefect_api, tmp_path, restore_logging) -> None:
    from prefect import flow, get_run_logger, task

    buffer = io.StringIO()
    configure_logging(_json_settings(tmp_path), stream=buffer)
    configure_logging(_json_settings(tmp_path), stream=buffer)  # idempotent: still one handler per logger
    root_json = [h for h in logging.getLogger().handlers if isinstance(h, JsonLinesHandler)]
    assert len(root_json) == 1

    @task
    def step() -> None:
        logging.getLogger("flows.ingest.extract").info(
            "plain logger in a task", extra={"dataset": "assets", "pages": 3}
        )

    @flow(name="json-logs")
    def job() -> None:
        get_run_logger().warning("multi\nline message")
        step()
        try:
            raise ValueError(f"boom {KEY}")
        except ValueError:
            get_run_logger().exception("it failed")

    state = job(return_state=True)
    logging.getLogger("flows.outside").info("no run here")
    lines = buffer.getvalue().splitlines()
    entries = [json.loads(line) for line in lines]  # every line parses
    assert KEY not in buffer.getvalue()
    run_id = str(state.state_details.flow_run_id)

    by_message = {e["message"]: e for e in entries}
    warning = by_message["multi\nline message"]
    assert warning["severity"] == "WARNING" and warning["logger"] == "prefect.flow_runs"
    assert warning["flow_run_id"] == run_id and warning["flow_name"] == "json-logs"
    assert warning["timestamp"].endswith("Z") and datetime.fromisoformat(warning["timestamp"]).tzinfo is not None
    plain = by_message["plain logger in a task"]
    assert plain["flow_run_id"] == run_id and plain["task_run_id"] and plain["task_run_name"].startswith("step")
    assert plain["dataset"] == "assets" and plain["pages"] == 3  # extra fields kept, typed
    assert plain["logging.googleapis.com/sourceLocation"]["function"] == "step"
    failed = by_message["it failed"]
    assert failed["severity"] == "ERROR" and "ValueError: boom ***" in failed["exception"]
    assert "flow_run_id" not in by_message["no run here"]
    assert any(e["logger"] == "prefect.flow_runs" and "Finished in state" in e["message"] for e in entries)


def test_text_mode_leaves_prefect_s_console_alone(tmp_path, restore_logging) -> None:
    configure_logging(fast_settings(tmp_path / "data", "http://127.0.0.1:1/v3"))
    assert not any(isinstance(h, JsonLinesHandler) for h in logging.getLogger().handlers)


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("COINCAP_", "PIPELINE_"))}
    full.update(env)
    return subprocess.Popen([sys.executable, "-m", "flows.cli", *args], cwd=cwd, env=full, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def _finish(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    stdout, stderr = process.communicate(timeout=180)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_a_json_mode_run_logs_only_json_and_never_the_key(prefect_api, tmp_path, stub) -> None:
    from flows.standin import Catalog, StubServer

    with Webhook() as webhook, StubServer(Catalog.demo(), api_keys={KEY}) as api:
        env = {
            "PREFECT_API_URL": prefect_api,
            "PYTHONPATH": str(ROOT),
            "PIPELINE_DATA_DIR": str(tmp_path / "data"),
            "PIPELINE_LOG_FORMAT": "json",
            "PIPELINE_ALERT_WEBHOOK_URL": webhook.url,
            "COINCAP_API_KEY": KEY,
            "COINCAP_API_BASE_URL": api.base_url,
            "COINCAP_BACKOFF_BASE": "0.01",
            "COINCAP_MAX_ATTEMPTS": "2",
        }
        # Both at once (separate data folders): a good snapshot, and one the stand-in refuses the key for.
        good_run = _cli(["run", "--no-transform"], env, tmp_path)
        bad_run = _cli(["run", "--no-transform", "-d", "assets"],
                       {**env, "COINCAP_API_BASE_URL": stub.base_url, "PIPELINE_DATA_DIR": str(tmp_path / "bad")},
                       tmp_path)  # fmt: skip
        good, bad = _finish(good_run), _finish(bad_run)
        posts = webhook.wait_for(1, 5)

    assert good.returncode == 0, good.stderr[-3000:]
    assert bad.returncode == 3, bad.stderr[-3000:]
    for result in (good, bad):
        output = result.stdout + result.stderr
        assert KEY not in output and TOKEN not in output
        entries = [json.loads(line) for line in result.stderr.splitlines()]  # every log line is JSON
        assert entries and all({"timestamp", "severity", "logger", "message"} <= set(e) for e in entries)
    good_entries = [json.loads(line) for line in good.stderr.splitlines()]
    assert any(e.get("task_run_name") == "extract-assets" and "valid" in e["message"] for e in good_entries)
    assert "snapshot" in good.stdout and "assets" in good.stdout  # the summary table is still for people

    bad_entries = [json.loads(line) for line in bad.stderr.splitlines()]
    (error,) = [e for e in bad_entries if e["logger"] == "flows.cli"]
    assert error["severity"] == "ERROR" and error["exit_code"] == 3
    assert error["message"].startswith("error: CoinCap rejected the API key")
    assert any(e["logger"] == "flows.ops.alerts" and "alert sent to the webhook at http://127.0.0.1" in e["message"]
               for e in bad_entries)  # fmt: skip
    (post,) = posts  # the stub refused the key: the failure hook posted the one-line error
    assert "CoinCap rejected the API key" in post["text"] and KEY not in json.dumps(post)


# --------------------------------------------------------------------------------------------- the artifact


def _report(dataset: str, **counts: Any) -> SimpleNamespace:
    values = dict(served=0, valid=0, quarantined=0, duplicates=0, calls=0, credits=0, seconds=0.0, new_fields=[])
    values.update(counts)
    return SimpleNamespace(dataset=dataset, **values)


def test_the_markdown_reports_datasets_dbt_quality_and_locations() -> None:
    summary = SimpleNamespace(
        snapshot_id="20261121T053000Z",
        reports=[
            _report(
                "assets",
                served=101,
                valid=100,
                quarantined=1,
                duplicates=2,
                calls=1,
                credits=16,
                seconds=0.3,
                new_fields=["tokenAddress"],
            ),
            _report("markets", served=80, valid=80, calls=1, credits=11, seconds=0.2),
        ],  # fmt: skip
        dbt=DbtOutcome("build", 8.1, Counter({"pass": 138, "success": 14})),
        lake_uri="/data/lake",
        warehouse_uri="/data/warehouse.duckdb",
        seconds=10.04,
        quality=bad_report(),
    )
    md = snapshot_markdown(summary)
    assert "# Snapshot `20261121T053000Z`" in md
    assert "| assets | 101 | 100 | 1 | 2 | 1 | 16 | 0.3 |" in md
    assert "| **total** | **181** | **180** | **1** | **2** | **2** | **27** | **10.0** |" in md
    assert "assets: tokenAddress" in md
    assert "**ok** in 8.1 s: 138 pass, 14 success" in md
    assert "**FAILED**" in md and "`validity.no_negative_prices` | assets | fail | 3 | 0 | 3 |" in md
    assert "`anomaly.price_jump`" in md and "completeness.assets_row_count" not in md
    assert "- lake: `/data/lake`" in md and "- warehouse: `/data/warehouse.duckdb`" in md
    assert "/data/lake/quarantine/" in md

    quiet = SimpleNamespace(**{**vars(summary), "dbt": None, "quality": None})
    del quiet.quality  # before SnapshotSummary has the field
    md = snapshot_markdown(quiet)
    assert "No data-quality checks ran" in md and "Not run in this flow run" in md


def test_each_snapshot_run_leaves_its_summary_artifact(prefect_api, settings) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    from flows.snapshot import snapshot_flow

    state = snapshot_flow(snapshot_id="20261121T053000Z", datasets=["assets", "rates"], transform=False,
                          return_state=True)  # fmt: skip
    summary = state.result()
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[ARTIFACT_KEY]), flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])
            )
        )
    assert artifact.type == "markdown" and artifact.key == ARTIFACT_KEY
    assert artifact.description.startswith("Snapshot 20261121T053000Z: ")
    md = artifact.data
    assert md == snapshot_markdown(summary)
    for report in summary.reports:
        assert f"| {report.dataset} | {report.served:,} | {report.valid:,} | " in md
    assert settings.lake_dir.as_posix() in md and str(settings.duckdb_path) in md
    use_settings(None)
