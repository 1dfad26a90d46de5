"""A BigQuery stand-in for the session: `bqemulator` (PyPI; DuckDB + sqlglot) on 127.0.0.1, from its own virtualenv.

It pins its own sqlglot and DuckDB, so it lives in `.venv-tools/bqemulator` (see `tests/tools.py`). At start it
runs `INSTALL spatial`, which would download DuckDB's extension: the virtualenv carries the extension as a wheel
(`duckdb-extension-spatial`), registered once in a private home folder that the emulator is started with.
Treat it as a check of client code (REST calls, schemas, errors), not of BigQuery semantics.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.tools import TOOLS_DIR, tool_venv

if TYPE_CHECKING:
    from google.cloud import bigquery

# numpy: bqemulator registers Python UDFs at start, which DuckDB can only do with numpy installed.
REQUIREMENTS = ["bqemulator==1.4.0", "duckdb==1.5.5", "duckdb-extension-spatial==1.5.5", "numpy==2.4.6"]
PROJECT = "example-project"
START_TIMEOUT_S = 60.0

_REGISTER_SPATIAL = """
import pathlib, duckdb, duckdb_extension_spatial
path = next(pathlib.Path(duckdb_extension_spatial.__file__).parent.rglob("spatial.duckdb_extension"))
duckdb.sql(f"INSTALL '{path}'")
duckdb.sql("LOAD spatial")
"""


@dataclass(frozen=True)
class BigQueryEmulator:
    """A running emulator: its REST endpoint and default project."""

    endpoint: str
    project: str = PROJECT

    def client(self) -> bigquery.Client:
        """An official client pointed at the emulator, with anonymous credentials."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        return bigquery.Client(
            project=self.project,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.endpoint},
        )


def emulator_home(bin_dir: Path) -> Path:
    """The HOME the emulator runs with, holding DuckDB's spatial extension (registered on first use)."""
    home = bin_dir.parent / "home"
    with open(TOOLS_DIR / ".bqemulator-home.lock", "w") as lock:  # parallel test workers register it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not any((home / ".duckdb" / "extensions").rglob("spatial.duckdb_extension")):
            home.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [str(bin_dir / "python"), "-c", _REGISTER_SPATIAL],
                env={**os.environ, "HOME": str(home)},
                check=True,
                timeout=120,
            )
    return home


@contextmanager
def running_emulator() -> Iterator[BigQueryEmulator]:
    """Start bqemulator on a free port of 127.0.0.1, wait until it is ready, stop it on exit."""
    bin_dir = tool_venv("bqemulator", REQUIREMENTS)
    home = emulator_home(bin_dir)
    with tempfile.TemporaryDirectory(prefix="bqemulator-") as work:
        log_path = Path(work) / "bqemulator.log"
        env = {key: value for key, value in os.environ.items() if not key.startswith("BQEMU_")}
        # No network: avro would be downloaded at start, spatial comes from `home`.
        env.update(HOME=str(home), BQEMU_ENABLE_FORMAT_EXTENSIONS="false")
        command = [
            str(bin_dir / "bqemulator"), "start",
            "--rest-host", "127.0.0.1", "--rest-port", "0",  # 0: the OS picks a free port
            "--grpc-host", "127.0.0.1", "--grpc-port", "0",
            "--ephemeral", "--project", PROJECT, "--log-format", "json", "--log-level", "info",
        ]  # fmt: skip
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                command,
                cwd=work,  # bqemulator reads ./.bqemu.toml: never a stray one
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as one at teardown
                preexec_fn=_die_with_parent,
            )
        try:
            endpoint = _wait_until_ready(process, log_path)
            yield BigQueryEmulator(endpoint=endpoint)
        finally:
            _stop(process)


def _die_with_parent() -> None:
    """Linux: SIGTERM the emulator when the test process dies, even killed, so no orphan keeps running."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _wait_until_ready(process: subprocess.Popen[bytes], log_path: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    endpoint = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"bqemulator exited with {process.returncode}:\n{_tail(log_path)}")
        if endpoint is None:
            endpoint = _rest_endpoint(log_path)
        if endpoint is not None:
            try:
                with urllib.request.urlopen(f"{endpoint}/readyz", timeout=2) as response:
                    if response.status == 200:
                        return endpoint
            except (urllib.error.URLError, OSError):
                pass
        time.sleep(0.1)
    _stop(process)
    pytest.fail(f"bqemulator was not ready within {START_TIMEOUT_S:.0f} s:\n{_tail(log_path)}")


def _rest_endpoint(log_path: Path) -> str | None:
    """The REST address, from the JSON log line the server writes once its socket is bound."""
    for line in log_path.read_text(errors="replace").splitlines():
        if '"rest.listen"' not in line:
            continue
        event = json.loads(line)
        return f"http://{event['host']}:{event['port']}"
    return None


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _tail(log_path: Path, lines: int = 30) -> str:
    return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="session")
def bq_emulator() -> Iterator[BigQueryEmulator]:
    """One emulator for the session (ephemeral: tests isolate themselves with their own dataset prefix)."""
    with running_emulator() as emulator:
        yield emulator
