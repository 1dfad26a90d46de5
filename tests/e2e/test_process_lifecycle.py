"""Processes the CLI starts die with it: Prefect's temporary API server does not outlive a `kill -9` of the CLI.

Without PREFECT_API_URL, Prefect starts a temporary server (uvicorn) as a child process and stops it at exit; a
`kill -9` skips that. On Linux the CLI starts that server under a small watcher
(flows/cli/prefect_server.py, `tie_prefect_server`) that shuts it down when its parent is gone, and leaves
Prefect's own `stop()` as it was.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from flows.cli.prefect_server import TiedPopen, TiedSubprocess, exit_with_us, tie_prefect_server
from flows.paths import PROJECT_ROOT
from tests.conftest import API_KEY
from tests.tools import cli_env

ROOT = PROJECT_ROOT

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the server is tied to the CLI on Linux only")


def children(pid: int) -> list[int]:
    """The child processes of `pid`, from /proc/<pid>/task/*/children (every thread's)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def cmdline(pid: int, timeout: float = 0) -> str:
    """The command line of `pid` ("" when gone); waits up to `timeout` for it (empty for a moment after exec)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return ""
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(0.01)


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (/proc/<pid>/stat field 22): tells it apart from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def running(pid: int, started: str | None) -> bool:
    """Whether the process `pid` that started at `started` still runs (a zombie waiting to be reaped does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0] != "Z" and fields[19] == started


def wait_gone(pid: int, started: str | None, timeout: float) -> float | None:
    """Seconds until `pid` stopped running, or None if it still runs after `timeout`."""
    begin = time.monotonic()
    while time.monotonic() - begin < timeout:
        if not running(pid, started):
            return time.monotonic() - begin
        time.sleep(0.05)
    return None


def test_kill_9_of_the_cli_takes_prefects_temporary_server_with_it(stub, tmp_path: Path) -> None:
    env = cli_env(tmp_path, COINCAP_API_KEY=API_KEY, COINCAP_API_BASE_URL=stub.base_url)
    log = tmp_path / "cli.log"
    with log.open("w") as output:
        cli = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "run", "--no-transform", "--dataset", "rates"],
            cwd=tmp_path, env=env, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    server: int | None = None
    started: str | None = None
    try:
        deadline = time.monotonic() + 90  # the CLI's imports take a few seconds, more on a busy machine
        while server is None:
            assert cli.poll() is None, f"the CLI ended before starting the server:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no temporary server started:\n{log.read_text()[-3000:]}"
            server = next((c for c in children(cli.pid) if "uvicorn" in cmdline(c)), None)
            time.sleep(0.05)
        started = start_time(server)
        time.sleep(1.0)  # the server is starting up (imports, database migrations)
        assert running(server, started), f"the server ended on its own:\n{log.read_text()[-3000:]}"

        cli.send_signal(signal.SIGKILL)
        cli.wait(10)
        took = wait_gone(server, started, timeout=10)
        assert took is not None, f"Prefect's temporary server (pid {server}) outlived the killed CLI: {cmdline(server)}"
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait(10)
        if server is not None and running(server, started):
            os.kill(server, signal.SIGKILL)  # never leave the orphan behind


# A tiny ASGI app: uvicorn serves it in well under a second (Prefect's server takes 10-20 s); its lifespan events
# leave marks, so a test sees whether the server shut down gracefully (as Prefect's `stop()` expects).
APP = """
from pathlib import Path
MARKS = Path(__file__).with_name("marks.txt")

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                MARKS.open("a").write("started\\n")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                MARKS.open("a").write("stopped\\n")
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _uvicorn_args(app_dir: Path, port: int) -> list[str]:
    """The shape of Prefect's command (`SubprocessASGIServer._run_uvicorn_command`), on the tiny app."""
    return [sys.executable, "-m", "uvicorn", "--app-dir", str(app_dir), "tiny_app:app", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "error", "--lifespan", "on"]  # fmt: skip


def _wait_serving(port: int, proc_alive: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as answer:
                assert answer.read() == b"ok"
                return
        except OSError:
            assert callable(proc_alive) and proc_alive(), "the server ended before serving"
            assert time.monotonic() < deadline, "the server never answered"
            time.sleep(0.05)


def test_a_tied_server_still_stops_normally_and_shuts_down_gracefully_when_its_parent_dies(tmp_path: Path) -> None:
    (tmp_path / "tiny_app.py").write_text(APP)
    marks = tmp_path / "marks.txt"

    # Prefect's stop(): terminate, wait up to 5 s (then it would kill). The tied server ends within that, after its
    # lifespan shutdown, as an untied uvicorn does.
    port = _free_port()
    proc = TiedPopen(_uvicorn_args(tmp_path, port), cwd=tmp_path)
    try:
        assert "exits with the process that started it" in cmdline(proc.pid, timeout=5), "under the watcher"
        _wait_serving(port, lambda: proc.poll() is None)
        proc.terminate()
        proc.wait(5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode in (0, -signal.SIGTERM), proc.returncode
    assert marks.read_text().split() == ["started", "stopped"]

    # Its parent killed: the server shuts down the same way, by itself, at once.
    marks.unlink()
    port = _free_port()
    parent_code = (
        "import sys, time\n"
        "from flows.cli.prefect_server import TiedPopen\n"
        f"child = TiedPopen({_uvicorn_args(tmp_path, port)!r}, cwd={str(tmp_path)!r})\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    server = None
    started = None
    try:
        assert parent.stdout is not None
        server = int(parent.stdout.readline())
        started = start_time(server)
        _wait_serving(port, lambda: running(server, started))
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        took = wait_gone(server, started, timeout=10)
        assert took is not None and took < 3, f"the server outlived its parent ({took})"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        if server is not None and running(server, started):
            os.kill(server, signal.SIGKILL)
    assert marks.read_text().split() == ["started", "stopped"], "a graceful shutdown, not a kill"


def test_only_prefects_server_is_tied_and_only_when_prefect_starts_one_on_linux(monkeypatch) -> None:
    import prefect.server.api.server as prefect_server
    from prefect.settings import PREFECT_API_URL, temporary_settings

    real = prefect_server.subprocess
    monkeypatch.setattr(prefect_server, "subprocess", real)  # put back after the test, whatever it did
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        monkeypatch.setattr(sys, "platform", "darwin")
        tie_prefect_server()
        assert prefect_server.subprocess is real, "a no-op on macOS"
        monkeypatch.setattr(sys, "platform", "linux")
        with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
            tie_prefect_server()
            assert prefect_server.subprocess is real, "no temporary server with an API URL: nothing to tie"
        tie_prefect_server()
        assert isinstance(prefect_server.subprocess, TiedSubprocess)
        assert prefect_server.subprocess.TimeoutExpired is subprocess.TimeoutExpired  # the rest is `subprocess`
        tie_prefect_server()  # idempotent
        assert isinstance(prefect_server.subprocess, TiedSubprocess)

    assert exit_with_us(["git", "status"]) == ["git", "status"]
    assert exit_with_us([sys.executable, "-m", "http.server"]) == [sys.executable, "-m", "http.server"]
    tied = exit_with_us([sys.executable, "-m", "uvicorn", "--port", "1"])
    assert tied[:2] == [sys.executable, "-c"] and tied[3:] == [str(os.getpid()), "-m", "uvicorn", "--port", "1"]
