"""Secrets never persist: the key is checked and stripped at load, and one redaction reaches everything a run
keeps or sends.

The canary test runs the console script against a hostile stand-in (it quotes the caller's key and a URL
password in its error bodies, and fails some calls), with a key carrying a trailing newline and a webhook that
fails, with Prefect's home (its temporary server's SQLite database), the data folder and the captured output in
one temporary folder; then it reads every file left there, as bytes and decoded (Parquet, DuckDB, SQLite), for
the canary values.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckdb
import pytest
from pydantic import SecretStr, ValidationError

from flows.errors import ApiError, ConfigError, PipelineError
from flows.ops.observability import RedactedError, redact, redacted_errors, register_secret, scrub_exception
from flows.paths import PROJECT_ROOT
from flows.settings import Settings, check_secrets, use_settings
from tests.integration.test_alerts import Reply, Webhook

ROOT = PROJECT_ROOT
CANARY_KEY = "canary-key-5e0f7b1c9a"
HOOK_SECRET = "T0CANARY/B0CANARY/canaryHookSecret4d2e"
URL_PASSWORD = "canary-url-pw-77a1"


def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


# ------------------------------------------------------------------------------------------ at settings load


def test_a_key_with_a_trailing_newline_is_stripped_and_said_once(caplog) -> None:
    from flows.settings import flush_notices

    key = "strip-me-1a2b3c"
    settings = _settings(COINCAP_API_KEY=f"  {key}\n")
    assert settings.api_key_value == key
    with caplog.at_level("WARNING", logger="flows.settings"):
        flush_notices()
        _settings(COINCAP_API_KEY=f"{key}\n")
        flush_notices()
    lines = [r.getMessage() for r in caplog.records if r.name == "flows.settings"]
    assert len(lines) <= 1  # once per process (an earlier test may have flushed it already)
    assert all("stripped" in line and "printf %s" in line and key not in line for line in lines)
    assert _settings(COINCAP_API_KEY=" \n").api_key_value is None  # blank is unset


@pytest.mark.parametrize(
    "bad", ["inner space-key9", "inner\nnewline9", "tab\tinside99", "nonascii-ключ9", "nul\x00key99"]
)
def test_a_key_with_whitespace_or_control_characters_inside_is_refused_without_quoting_it(
    bad: str, monkeypatch
) -> None:
    from flows.cli.options import load_settings

    pieces = [p for p in bad.replace("\x00", " ").split() if len(p) >= 5]
    with pytest.raises(ValidationError) as caught:
        _settings(COINCAP_API_KEY=bad)
    text = str(caught.value)
    assert "COINCAP_API_KEY" in text and "set it without them" in text
    assert not any(p in text for p in pieces)

    monkeypatch.setenv("COINCAP_API_KEY", bad.replace("\x00", "\x01"))  # the environment cannot hold a NUL
    with pytest.raises(ConfigError) as error:
        load_settings()
    line = str(error.value)  # what the CLI prints after "error:", exit 2
    assert "\n" not in line and error.value.exit_code == 2
    assert line.startswith("Invalid setting COINCAP_API_KEY: it contains a space, newline")
    assert not any(p in line for p in pieces)


def test_a_base_url_with_credentials_is_refused_and_never_shown(monkeypatch) -> None:
    url = f"https://svc:{URL_PASSWORD}@rest.example.com/v3"
    with pytest.raises(ValidationError) as caught:
        _settings(COINCAP_API_BASE_URL=url)
    assert "contains credentials" in str(caught.value) and URL_PASSWORD not in str(caught.value)
    with pytest.raises(ValidationError) as caught:
        _settings(COINCAP_API_BASE_URL=f"ftp://svc:{URL_PASSWORD}@rest.example.com/v3")
    assert URL_PASSWORD not in str(caught.value)

    # CLI flags are applied with model_copy (no validation): use_settings checks again.
    copied = _settings().model_copy(update={"api_base_url": url})
    with pytest.raises(ConfigError) as error:
        use_settings(copied)
    assert "contains credentials" in str(error.value) and URL_PASSWORD not in str(error.value)
    copied = _settings().model_copy(update={"api_key": SecretStr("copied-key-123\n")})
    check_secrets(copied)
    assert copied.api_key_value == "copied-key-123"
    use_settings(None)


def test_the_secret_manager_value_gets_the_same_checks(monkeypatch) -> None:
    """Cloud Run hands the secret's latest version to the jobs as COINCAP_API_KEY (the job template's secret
    reference): the value `echo $KEY | gcloud secrets versions add` stored is stripped like any other."""
    template = json.loads((ROOT / "deployments" / "cloud-run-v2-job-template.json").read_text())
    assert "COINCAP_API_KEY" in template["variables"]["properties"]["env_from_secrets"]["default"]
    monkeypatch.setenv("COINCAP_API_KEY", "sm-key-0d9c8b\n")
    assert Settings(_env_file=None).api_key_value == "sm-key-0d9c8b"  # type: ignore[call-arg]
    monkeypatch.setenv("COINCAP_API_KEY", "sm key 0d9c8b\n")
    with pytest.raises(ValidationError, match="inside the key"):
        Settings(_env_file=None)  # type: ignore[call-arg]


# ------------------------------------------------------------------------------------------------ redaction


def test_redact_covers_key_variants_webhooks_bearer_tokens_and_url_credentials() -> None:
    register_secret("variant+key/with=chars\n")
    register_secret("https://chat.example.net/services/T1/B1/variantHookToken")
    cases = {
        "header 'Bearer variant+key/with=chars\\n'": "header 'Bearer ***'",
        "GET /v3/assets?apiKey=variant%2Bkey%2Fwith%3Dchars": "GET /v3/assets?apiKey=***",
        "q=variant%2Bkey%2Fwith%3Dchars&x=1": "q=***&x=1",
        "posted to https://chat.example.net/services/T1/B1/variantHookToken": "posted to ***",
        "Authorization: Bearer abc.def-123": "Authorization: Bearer ***",
        "token Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig": "token Bearer ***",
        f"GET https://svc:{URL_PASSWORD}@rest.example.com/v3/assets": "GET https://***@rest.example.com/v3/assets",
        "postgresql://admin:pw-123@db:5432/x failed": "postgresql://***@db:5432/x failed",
        "https://discord.com/api/webhooks/123/abcDEF": "https://discord.com/api/webhooks/***",
        "mail me at someone@example.com": "mail me at someone@example.com",
        "https://example.com/path@v2": "https://example.com/path@v2",
    }  # fmt: skip
    for raw, clean in cases.items():
        assert redact(raw) == clean, raw


def test_exceptions_leave_tasks_and_flows_redacted() -> None:
    register_secret(CANARY_KEY)
    error = ApiError(f"CoinCap refused exchanges with HTTP 400 (key Bearer {CANARY_KEY}).", "Check it.")
    with pytest.raises(ApiError) as caught, redacted_errors():
        raise error
    assert caught.value is error  # same type and object: retry rules and exit codes are kept
    assert CANARY_KEY not in str(error) and CANARY_KEY not in error.what and "***" in error.what
    assert all(CANARY_KEY not in a for a in error.args)

    class Opaque(Exception):  # builds its text from an attribute scrub_exception cannot see through
        def __init__(self, box: dict[str, str]) -> None:
            super().__init__()
            self.box = box

        def __str__(self) -> str:
            return f"failed with {self.box['key']}"

    replaced = scrub_exception(Opaque({"key": CANARY_KEY}))
    assert isinstance(replaced, RedactedError) and str(replaced) == "Opaque: failed with ***"

    try:
        try:
            raise ValueError(f"inner {CANARY_KEY}")
        except ValueError as inner:
            raise PipelineError("outer", "todo") from inner
    except PipelineError as outer:
        scrub_exception(outer)
        assert CANARY_KEY not in str(outer.__cause__)


def test_both_warehouse_writers_store_redacted_error_and_detail(tmp_path: Path, monkeypatch) -> None:
    from flows.warehouse.bigquery import BigQueryWarehouse
    from flows.warehouse.local_duckdb import LocalWarehouse

    register_secret(CANARY_KEY)
    now = datetime.now(UTC)
    run = {"snapshot_id": "20261121T053000Z", "step": "assets", "status": "failed", "started_at": now,
           "error": f"HTTP 400 (key Bearer {CANARY_KEY}) via https://svc:{URL_PASSWORD}@h/v3"}  # fmt: skip
    check = {"run_id": "dq-1", "checked_at": now, "check_name": "validity.x", "category": "validity",
             "dataset": "assets", "severity": "error", "status": "error",
             "detail": f"could not run: {CANARY_KEY}", "description": f"about {CANARY_KEY}"}  # fmt: skip

    local = LocalWarehouse(tmp_path / "warehouse.duckdb")
    local.record_runs([run])
    local.record_checks([check])
    con = duckdb.connect(str(local.path), read_only=True)
    stored = [*con.execute("select error from ops.pipeline_runs").fetchall(),
              *con.execute("select detail, description from ops.dq_results").fetchall()]  # fmt: skip
    con.close()
    assert "***" in stored[0][0] and CANARY_KEY not in str(stored) and URL_PASSWORD not in str(stored)

    inserted: list[list[dict[str, Any]]] = []

    class Client:
        def insert_rows_json(self, table_id: str, rows: list[dict[str, Any]], **_: Any) -> list[Any]:
            inserted.append(rows)
            return []

    store = BigQueryWarehouse(_settings(PIPELINE_TARGET="gcp", GCP_PROJECT_ID="example-project"))
    store._client = Client()  # type: ignore[assignment]
    monkeypatch.setattr(store, "_ensure_runs_table", lambda: False)
    monkeypatch.setattr(store, "_ensure_dq_table", lambda: False)
    store.record_runs([run])
    store.record_checks([check])
    text = json.dumps(inserted)
    assert len(inserted) == 2 and "***" in text and CANARY_KEY not in text and URL_PASSWORD not in text


def test_alert_events_and_error_lines_are_redacted(monkeypatch) -> None:
    import prefect.events

    from flows.ops.alerts import Alert, error_line
    from flows.orchestration.alerting import emit_alert_event

    register_secret(CANARY_KEY)
    emitted: list[dict[str, Any]] = []
    monkeypatch.setattr(prefect.events, "emit_event", lambda **kw: emitted.append(kw))
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:1/api"}):
        emit_alert_event(Alert("data_quality", f"t {CANARY_KEY}", f"x {CANARY_KEY}", "error",
                          {"snapshot": "20261121T053000Z", "failing checks": f"c {CANARY_KEY}"}))  # fmt: skip
    assert emitted and CANARY_KEY not in json.dumps(emitted, default=str)
    # Redacted before the cut to one line: a key straddling the cut would leave its first characters.
    line = error_line(RuntimeError("x" * 490 + CANARY_KEY))
    assert CANARY_KEY[:8] not in line


# ---------------------------------------------------------------------------------------- the canary run


class EchoingApi:
    """A hostile CoinCap in front of the stand-in: error bodies quote the caller's Authorization header and a
    URL with a password; `refuse` paths answer 400 that way, `busy_once` paths a 503 first."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.split("/v3")[0]
        self.refuse: set[str] = set()
        self.busy_once: set[str] = set()
        self._lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                auth = self.headers.get("Authorization", "")
                name = self.path.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
                echo = f"{auth} via https://svc:{URL_PASSWORD}@internal.example.com/v3"
                with api._lock:
                    busy = name in api.busy_once
                    api.busy_once.discard(name)
                if name in api.refuse:
                    return self._send(400, json.dumps({"error": f"key {echo} is not enabled for {name}"}).encode())
                if busy:
                    return self._send(503, json.dumps({"error": f"upstream busy for {echo}"}).encode())
                request = urllib.request.Request(api.upstream + self.path, headers={"Authorization": auth})
                try:
                    with urllib.request.urlopen(request, timeout=10) as answer:
                        self._send(answer.status, answer.read())
                except urllib.error.HTTPError as exc:
                    self._send(exc.code, exc.read())
                except OSError:
                    self._send(502, b"bad gateway")

            def _send(self, status: int, body: bytes) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v3"

    def __enter__(self) -> EchoingApi:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _cli(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.CompletedProcess[str]:
    """The console script in a fresh process; stdout and stderr are also written to `log` (.out, .err)."""
    result = subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=cwd, env=env, text=True,
                            capture_output=True, timeout=900)  # fmt: skip
    log.parent.mkdir(parents=True, exist_ok=True)
    log.with_suffix(".out").write_text(result.stdout)
    log.with_suffix(".err").write_text(result.stderr)
    return result


def _decoded(path: Path, scratch: Path) -> str:
    """The text inside files whose bytes may be compressed: Parquet columns, DuckDB tables, SQLite rows."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return str(pq.read_table(path).to_pylist())
    if path.suffix == ".duckdb":
        copy = scratch / f"{len(list(scratch.iterdir()))}.duckdb"
        shutil.copyfile(path, copy)  # a copy: reading must not change the file under test
        con = duckdb.connect(str(copy), read_only=True)
        try:
            tables = con.execute("select table_schema, table_name from information_schema.tables "
                                 "where table_type = 'BASE TABLE'").fetchall()  # fmt: skip
            return "\n".join(str(con.execute(f'select * from "{s}"."{t}"').fetchall()) for s, t in tables)
        finally:
            con.close()
    if path.suffix == ".db" and path.read_bytes()[:15] == b"SQLite format 3":
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return "\n".join(con.iterdump())
        finally:
            con.close()
    return ""


def leaks(root: Path, needles: dict[str, str], scratch: Path) -> list[str]:
    """`file: needle` for every file under `root` holding a needle, as bytes or decoded."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        text = _decoded(path, scratch)
        for name, needle in needles.items():
            if needle.encode() in data or needle in text:
                found.append(f"{path.relative_to(root)}: {name}")
    return found


@pytest.fixture
def canary_env(tmp_path: Path) -> Iterator[tuple[dict[str, str], EchoingApi, Webhook]]:
    from flows.standin import Catalog, Faults, StubServer

    catalog = Catalog.synthetic(n_assets=60, n_exchanges=8, n_markets=400, seed=3)
    hostile_hook = f"no_such_hook: /services/{HOOK_SECRET}".encode()
    with (
        StubServer(catalog, faults=Faults(seed=3, p_5xx=0.05), api_keys={CANARY_KEY}) as stub,
        EchoingApi(stub.base_url) as api,
        Webhook() as hook,
    ):
        hook.url = f"http://127.0.0.1:{hook.server.server_address[1]}/services/{HOOK_SECRET}"
        hook.script = [Reply(404, hostile_hook) for _ in range(50)]  # fails, quoting its own URL
        env = {k: v for k, v in os.environ.items() if not k.startswith(("COINCAP_", "PIPELINE_", "PREFECT_"))}
        env.update({
            "PYTHONPATH": str(ROOT),
            # No PREFECT_API_URL: the CLI starts Prefect's temporary server, whose SQLite database is in this home.
            "PREFECT_HOME": str(tmp_path / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_ENABLED": "false",
            "PIPELINE_DATA_DIR": str(tmp_path / "data"),
            "PIPELINE_CACHE_DIR": str(tmp_path / "cache"),
            "PIPELINE_ALERT_WEBHOOK_URL": hook.url,
            "COINCAP_API_KEY": CANARY_KEY + "\n",  # `echo $KEY | gcloud secrets versions add ...`
            "COINCAP_API_BASE_URL": api.base_url,
            "COINCAP_BACKOFF_BASE": "0.01",
            "COINCAP_BACKOFF_MAX": "0.05",
            "COINCAP_MAX_ATTEMPTS": "8",
        })  # fmt: skip
        yield env, api, hook


def test_a_faulty_run_leaves_no_key_and_no_webhook_url_in_any_file(tmp_path: Path, canary_env) -> None:
    env, api, hook = canary_env
    work, logs = tmp_path / "cwd", tmp_path / "logs"
    work.mkdir()
    # 1. A snapshot with retried calls (5xx, and a 503 quoting the key), dbt, data quality, the artifact.
    api.busy_once.update({"assets", "markets"})
    first = _cli(["run"], env, work, logs / "run")
    assert first.returncode == 0, first.stderr[-3000:]
    # 2. In JSON logs: exchanges answers 400 quoting the key and a URL password; the run fails and alerts.
    api.refuse.add("exchanges")
    second = _cli(["run", "--no-transform", "-d", "assets", "-d", "exchanges"],
                  {**env, "PIPELINE_LOG_FORMAT": "json"}, work, logs / "failed-run")  # fmt: skip
    assert second.returncode == 3, second.stderr[-3000:]
    # 3. The dashboard, its health page showing the failure.
    dash = _cli(["dashboard", "--build-only", "--out", str(tmp_path / "dashboard")], env, work, logs / "dashboard")
    assert dash.returncode == 0, dash.stderr[-3000:]

    # The run went where a leak would show: the failure is stored, shown, alerted and in Prefect's database.
    con = duckdb.connect(str(tmp_path / "data" / "warehouse.duckdb"), read_only=True)
    errors = [e for (e,) in con.execute("select error from ops.pipeline_runs where status = 'failed'").fetchall()]
    retried = con.execute("select sum(failed_calls) from ops.pipeline_runs").fetchone()[0]
    checks = con.execute("select count(*) from ops.dq_results").fetchone()[0]
    con.close()
    assert any("HTTP 400" in e and "Bearer ***" in e for e in errors), errors
    assert retried > 0 and checks > 0
    health = "".join(p.read_text() for p in (tmp_path / "dashboard").rglob("*.html"))
    assert "HTTP 400" in health and "Bearer ***" in health
    assert hook.posts and any("HTTP 400" in json.dumps(p) for p in hook.posts)
    assert (tmp_path / "data" / "dbt" / "logs" / "dbt.log").exists()
    (prefect_db,) = (tmp_path / "prefect-home").glob("*.db")
    assert b"HTTP 400" in prefect_db.read_bytes() or "HTTP 400" in _decoded(prefect_db, tmp_path)
    # The stripped key is said once per command, in JSON lines in JSON mode.
    notices = [line for line in first.stderr.splitlines() if "COINCAP_API_KEY had whitespace" in line]
    assert len(notices) == 1, first.stderr[-3000:]
    (notice,) = [line for line in second.stderr.splitlines() if "COINCAP_API_KEY had whitespace" in line]
    assert json.loads(notice)["severity"] == "WARNING"

    scratch = tmp_path.parent / f"{tmp_path.name}-scratch"
    scratch.mkdir()
    found = leaks(tmp_path, {"key": CANARY_KEY, "webhook": HOOK_SECRET, "url password": URL_PASSWORD}, scratch)
    assert not found, found
