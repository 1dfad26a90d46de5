"""Usage errors and bad input refused up front: click's short message, exit 2, no traceback, nothing started."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer.main

from flows.cli import app
from flows.dashboard.server import DashboardServer
from flows.errors import ConfigError, SnapshotIdError
from flows.paths import PROJECT_ROOT
from flows.snapshot_id import MAX_AHEAD, Snapshot

ROOT = PROJECT_ROOT
SCRIPT = Path(sys.executable).with_name("coincap-pipeline")  # the console script, as installed in the venv
COMMANDS = sorted(typer.main.get_command(app).commands)  # registered commands: a new one is covered by itself
# Runs main() as the console script does, then says whether Prefect (or the flows) was ever imported.
DRIVER = """
import sys
from flows.cli import main
sys.argv = ["coincap-pipeline", *sys.argv[1:]]
try:
    main()
finally:
    print("imported:", sorted(m for m in ("prefect", "flows.snapshot") if m in sys.modules))
"""


def script(args: list[str], tmp_path: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COINCAP_", "PIPELINE_", "PREFECT_"))}
    env.update(PIPELINE_DATA_DIR=str(tmp_path / "data"), PREFECT_HOME=str(tmp_path / "prefect"), COLUMNS="100")
    return subprocess.run(
        [str(SCRIPT), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout
    )  # fmt: skip


def assert_usage_error(result: subprocess.CompletedProcess[str], *wanted: str) -> None:
    shown = f"exit {result.returncode}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    assert result.returncode == 2, shown
    assert "Traceback" not in result.stderr + result.stdout, shown
    assert len(result.stderr.splitlines()) < 15, shown
    for text in wanted:
        assert text in result.stderr, shown


def test_the_console_script_is_installed() -> None:
    assert SCRIPT.exists(), f"{SCRIPT} missing: pip install -e ."
    assert len(COMMANDS) > 10 and {"run", "sql", "quality", "dashboard"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_answers_an_unknown_option_with_its_usage(command: str, tmp_path: Path) -> None:
    result = script([command, "--no-such-option"], tmp_path)
    assert_usage_error(result, f"Usage: coincap-pipeline {command}", "No such option: --no-such-option")
    assert not (tmp_path / "data").exists() and not (tmp_path / "prefect").exists()


@pytest.mark.parametrize(
    ("args", "wanted"),
    [
        (["dashbord"], ["No such command 'dashbord'", "Did you mean 'dashboard'?"]),
        (["sql"], ["Usage: coincap-pipeline sql", "Missing argument"]),
        (["run", "--snapshot-id"], ["Option '--snapshot-id' requires an argument"]),
        (["run", "--target", "nope"], ["Usage: coincap-pipeline run", "Invalid value for '--target'", "'nope'"]),
        (["sql", "--format", "nope", "select 1"], ["Invalid value for '--format'", "'nope'"]),
        (["benchmark", "--repeat", "0"], ["Invalid value for '--repeat'"]),
        (["quality", "--store", "--no-such"], ["No such option: --no-such"]),
    ],
    ids=["mistyped command", "missing argument", "missing value", "bad target", "bad format", "below min", "mixed"],
)
def test_usage_errors_are_short(args: list[str], wanted: list[str], tmp_path: Path) -> None:
    assert_usage_error(script(args, tmp_path), *wanted)


def test_bare_command_shows_the_help_and_exits_2(tmp_path: Path) -> None:
    result = script([], tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
    assert "Usage: coincap-pipeline" in result.stdout + result.stderr and "dashboard" in result.stdout


def test_help_still_exits_0(tmp_path: Path) -> None:
    for args in (["--help"], ["run", "--help"], ["sql", "--help"]):
        result = script(args, tmp_path)
        assert result.returncode == 0, (args, result.stderr[-2000:])
        assert "Usage: coincap-pipeline" in result.stdout and not result.stderr


# ------------------------------------------------------------------------------------------------ --snapshot-id


@pytest.mark.parametrize(
    ("snapshot_id", "why"),
    [("20261345T000000Z", "not a real UTC time"), ("99991231T235959Z", "in the future")],
)
def test_bad_snapshot_id_is_refused_before_prefect_starts(snapshot_id: str, why: str, tmp_path: Path) -> None:
    started = time.monotonic()
    result = script(["run", "--snapshot-id", snapshot_id], tmp_path)
    assert time.monotonic() - started < 5
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr[-2000:]  # one line
    assert result.stderr.startswith("error:") and why in result.stderr and snapshot_id in result.stderr
    assert not (tmp_path / "prefect").exists() and not (tmp_path / "data").exists()

    env = {k: v for k, v in os.environ.items() if not k.startswith(("COINCAP_", "PIPELINE_", "PREFECT_"))}
    env.update(PIPELINE_DATA_DIR=str(tmp_path / "data"), PREFECT_HOME=str(tmp_path / "prefect"))
    driven = subprocess.run(
        [sys.executable, "-c", DRIVER, "run", "--snapshot-id", snapshot_id],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert driven.returncode == 2 and "imported: []" in driven.stdout, driven.stdout + driven.stderr[-2000:]


def test_snapshot_parse_takes_only_real_past_utc_times() -> None:
    now = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)
    assert Snapshot.parse("20261121T053000Z", now=now).ts == datetime(2026, 11, 21, 5, 30, tzinfo=UTC)
    assert Snapshot.parse(f"{now + MAX_AHEAD:%Y%m%dT%H%M%SZ}", now=now).ts == now + MAX_AHEAD  # clock skew
    for bad in (
        f"{now + MAX_AHEAD + timedelta(seconds=1):%Y%m%dT%H%M%SZ}",
        "99991231T235959Z",
        "20261345T000000Z",
        "20260229T000000Z",
        "20261121T246000Z",
        "20261121T053000Z\n",
        "٢٠٢٦١١٢١T053000Z",  # Arabic-Indic digits
        "２０２６１１２１T053000Z",  # full-width digits
        "yesterday",
    ):
        with pytest.raises(SnapshotIdError) as caught:
            Snapshot.parse(bad, now=now)
        assert isinstance(caught.value, ConfigError) and isinstance(caught.value, ValueError)
        assert caught.value.exit_code == 2 and "\n" not in str(caught.value).replace(repr(bad), "")


@pytest.mark.parametrize("snapshot_id", ["20261345T000000Z", "99991231T235959Z"])
def test_the_flow_refuses_a_bad_snapshot_id_too(snapshot_id: str, prefect_api, settings) -> None:
    """A deployment run with a bad parameter fails at once with the one line, nothing extracted."""
    from flows.snapshot import snapshot_flow

    with pytest.raises(SnapshotIdError, match="snapshot id|Snapshot id"):
        snapshot_flow(snapshot_id=snapshot_id, transform=False)
    assert not list(settings.data_dir.rglob("*.parquet"))


# ------------------------------------------------------------------------------------------------ dashboard Host


def test_dashboard_refuses_other_host_names(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<html>the marts</html>")
    with DashboardServer(tmp_path, port=0) as server:

        def get(host: str | None, method: str = "GET") -> tuple[int, bytes]:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            try:
                conn.putrequest(method, "/index.html", skip_host=True)
                if host is not None:
                    conn.putheader("Host", host)
                conn.endheaders()
                response = conn.getresponse()
                return response.status, response.read()
            finally:
                conn.close()

        for host in ("evil.example", f"evil.example:{server.port}", "127.0.0.1.evil.example", "localhost:1", None):
            status, body = get(host)
            assert status in (421, 403), host
            assert b"the marts" not in body and len(body) < 200, body
        assert get("evil.example", "HEAD")[0] in (421, 403)
        for host in (f"127.0.0.1:{server.port}", "127.0.0.1", f"localhost:{server.port}", "LOCALHOST", "[::1]"):
            assert get(host) == (200, b"<html>the marts</html>"), host


# ------------------------------------------------------------------------------------------------ quality, no data


def test_quality_on_an_empty_data_dir_says_to_run_first(tmp_path: Path) -> None:
    result = script(["quality"], tmp_path)
    path = tmp_path / "data" / "warehouse.duckdb"
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip() == f"error: No warehouse yet at {path}. Run `coincap-pipeline run` first."
    assert not path.exists()
