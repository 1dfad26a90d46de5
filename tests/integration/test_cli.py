"""The console script as a user runs it: one line per failure, a non-zero exit, nothing half-written."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from flows.paths import PROJECT_ROOT
from flows.standin import Faults
from tests.conftest import API_KEY

ROOT = PROJECT_ROOT


def cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("COINCAP_")}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], cwd=cwd, env=full_env, capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr[-2000:]
    return lines[0]


def no_lake_files(data: Path) -> bool:
    return not list((data / "lake").rglob("*.parquet")) and not list((data / "staging").glob("*"))


@pytest.fixture
def env(prefect_api, tmp_path):
    return {
        "PREFECT_API_URL": prefect_api,
        "PIPELINE_DATA_DIR": str(tmp_path / "data"),
        "PYTHONPATH": str(ROOT),
        "COINCAP_BACKOFF_BASE": "0.01",
        "COINCAP_BACKOFF_MAX": "0.02",
        "COINCAP_MAX_ATTEMPTS": "3",
    }


def test_bad_key(env, stub, tmp_path):
    result = cli(
        ["run", "--no-transform"],
        {**env, "COINCAP_API_KEY": "wrong", "COINCAP_API_BASE_URL": stub.base_url},
        tmp_path,
    )
    assert result.returncode == 3
    assert "rejected the API key" in error_line(result) and "COINCAP_API_KEY" in error_line(result)
    assert no_lake_files(tmp_path / "data")


def test_exhausted_quota(env, stub, tmp_path):
    stub.faults = Faults(quota_exhausted=True)
    result = cli(
        ["run", "--no-transform"],
        {**env, "COINCAP_API_KEY": API_KEY, "COINCAP_API_BASE_URL": stub.base_url},
        tmp_path,
    )
    assert result.returncode == 3
    assert "quota exhausted" in error_line(result)
    assert stub.stats.total_requests == 4
    assert no_lake_files(tmp_path / "data")


def test_unreachable_host(env, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = cli(
        ["run", "--no-transform"],
        {**env, "COINCAP_API_KEY": "k", "COINCAP_API_BASE_URL": f"http://127.0.0.1:{port}/v3"},
        tmp_path,
    )
    assert result.returncode == 3
    assert "cannot connect" in error_line(result) and "COINCAP_API_BASE_URL" in error_line(result)
    assert no_lake_files(tmp_path / "data")


def test_wrong_base_url(env, stub, tmp_path):
    wrong = stub.base_url.removesuffix("/v3") + "/api/v2"
    result = cli(
        ["run", "--no-transform"],
        {**env, "COINCAP_API_KEY": API_KEY, "COINCAP_API_BASE_URL": wrong},
        tmp_path,
    )
    assert result.returncode == 3
    assert "404" in error_line(result) and "COINCAP_API_BASE_URL" in error_line(result)
    assert no_lake_files(tmp_path / "data")


def test_invalid_setting_is_one_line(env, tmp_path):
    result = cli(["run"], {**env, "COINCAP_API_BASE_URL": "ftp://x"}, tmp_path)
    assert result.returncode == 2
    assert "COINCAP_API_BASE_URL" in error_line(result)


def test_help_reads_well(tmp_path):
    result = cli(["--help"], {"PYTHONPATH": str(ROOT)}, tmp_path)
    assert result.returncode == 0
    for word in ("coincap-pipeline", "run", "sql", "Runs on your"):
        assert word in result.stdout


def test_sql_without_a_warehouse_says_what_to_do(env, tmp_path):
    result = cli(["sql", "select 1"], env, tmp_path)
    assert result.returncode == 2
    assert "coincap-pipeline run" in error_line(result)


# ---- what the CLI prints is redacted -------------------------------------------------------------------------

CANARY_KEY = "canary-key-3b8d1f07e2"
HOOK_URL = "https://hooks.example.test/services/T0CANARY/B0CANARY/cliHookSecret9f31"


def assert_no_canary(text: str) -> None:
    """Neither secret, nor a piece of one (a table cell cut at its column's width would print a prefix)."""
    assert CANARY_KEY[:10] not in text and "cliHookSecret" not in text, text


@pytest.fixture
def canary_env(tmp_path):
    """A warehouse to query, with COINCAP_API_KEY and the alert webhook URL set to canaries."""
    import duckdb

    data = tmp_path / "data"
    data.mkdir()
    duckdb.connect(str(data / "warehouse.duckdb")).close()
    return {"PYTHONPATH": str(ROOT), "PIPELINE_DATA_DIR": str(data), "COINCAP_API_KEY": CANARY_KEY,
            "PIPELINE_ALERT_WEBHOOK_URL": HOOK_URL}  # fmt: skip


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_query_results_holding_a_secret_are_printed_redacted(canary_env, tmp_path, fmt):
    # In a table, the long cell is cut at the terminal's width (120 when piped) in the middle of the key: the
    # printed text holds a piece of it, which only redacting before the layout catches.
    query = (f"select '{'x' * 100}{CANARY_KEY}{'y' * 100}' as v union all select '{HOOK_URL}' "
             f"union all select 'said {CANARY_KEY} twice: Authorization: Bearer {CANARY_KEY}'")  # fmt: skip
    result = cli(["sql", "--format", fmt, query], canary_env, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert_no_canary(result.stdout + result.stderr)
    assert "***" in result.stdout and "xxxxxxxxxx" in result.stdout


def test_errors_and_usage_errors_quoting_a_secret_are_printed_redacted(canary_env, tmp_path):
    failed = cli(["sql", f'select * from "{CANARY_KEY}"'], canary_env, tmp_path)
    assert failed.returncode == 1 and "Table with name ***" in error_line(failed)
    assert_no_canary(failed.stdout + failed.stderr)

    usage = cli(["sql", "select 1", CANARY_KEY], canary_env, tmp_path)  # click quotes the extra argument
    assert usage.returncode == 2 and "unexpected extra argument" in usage.stderr and "***" in usage.stderr
    assert_no_canary(usage.stdout + usage.stderr)


def test_the_run_summary_and_folded_table_cells_are_printed_redacted(capsys):
    from types import SimpleNamespace

    from rich.table import Table

    from flows.cli.output import out
    from flows.cli.pipeline import print_summary
    from flows.ops.observability import register_secret

    register_secret(CANARY_KEY)  # as loading the settings does
    register_secret(HOOK_URL)
    check = SimpleNamespace(status="fail", check_name="webhook_check", detail=f"{HOOK_URL} answered 404")
    quality = SimpleNamespace(ok=False, warned=[], failed=[check], summary_line=lambda: f"1 failed ({CANARY_KEY})")
    summary = SimpleNamespace(
        snapshot_id="20261121T053000Z", reports=[], dbt=None, seconds=1.0, quality=quality,
        lake_uri=f"gs://bucket-{CANARY_KEY}/lake", warehouse_uri=f"bigquery://{CANARY_KEY}",
    )  # fmt: skip
    print_summary(summary)
    # A column narrower than the key folds it over two lines, where the rendered text no longer holds it whole.
    table = Table("check", "detail", width=50)
    table.columns[1].overflow = "fold"
    table.add_row("a_check", "x" * 25 + CANARY_KEY + "y" * 25)
    out.print(table)
    printed = capsys.readouterr()
    assert_no_canary(printed.out + printed.err)
    assert "gs://bucket-***/lake" in printed.out and "*** answered 404" in printed.out and "xxxxx***" in printed.out
