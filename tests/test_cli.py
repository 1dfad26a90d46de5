"""The console script as a user runs it: one line per failure, a non-zero exit, nothing half-written."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from flows.local_api import Faults
from tests.conftest import API_KEY

ROOT = Path(__file__).resolve().parent.parent


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
