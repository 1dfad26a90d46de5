"""The stand-in in its own process, for benchmarks that must not share the client's interpreter (or its GIL)."""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import sys
import time
import urllib.request
from dataclasses import fields

from flows.paths import PROJECT_ROOT
from flows.standin.faults import Faults
from flows.standin.replies import API_PREFIX, STATS_PATH


def serve_in_subprocess(
    catalog: str = "synthetic",
    *,
    assets: int = 3000,
    exchanges: int = 200,
    markets: int = 100_000,
    rates: int | None = None,
    seed: int = 0,
    history_days: int = 0,
    history_assets: int | None = None,
    history_interval: str | None = None,
    invalid_fraction: float = 0.0,
    api_key: str | None = None,
    faults: Faults | None = None,
    port: int = 0,
    timeout_s: float = 60.0,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start `python -m flows.standin` in its own process; return (process, base_url) once it answers.

    The caller owns the process: `proc.terminate(); proc.wait()`. GET `<root>/_stub/stats` for its counters.
    """
    options = {
        "--port": port,
        "--catalog": catalog,
        "--assets": assets,
        "--exchanges": exchanges,
        "--markets": markets,
        "--rates": rates,
        "--catalog-seed": seed,
        "--history-days": history_days,
        "--history-assets": history_assets,
        "--history-interval": history_interval,
        "--invalid-fraction": invalid_fraction,
        "--api-key": api_key,
    }
    args = [sys.executable, "-m", "flows.standin"]
    for flag, option in options.items():
        if option is not None:
            args += [flag, str(option)]
    for f in fields(Faults):
        value = getattr(faults or Faults(), f.name)
        if value != f.default:
            flag = "--" + f.name.replace("_", "-")
            args += [flag] if isinstance(value, bool) else [flag, str(value)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, env=env)
    try:
        base_url = _read_base_url(proc, timeout_s)
        _wait_until_answering(base_url, timeout_s)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, base_url


def _read_base_url(proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    """The URL from the server's one-line banner (it picks its own port when asked for port 0)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if selector.select(timeout=0.1):
                line = proc.stdout.readline().decode().strip()
                found = re.search(r"http://\S+/v3", line)
                if found:
                    return found.group(0)
                if not line and proc.poll() is not None:
                    break
            elif proc.poll() is not None:
                break
    raise RuntimeError(f"stand-in server did not start (exit code {proc.poll()}); see its stderr above")


def _wait_until_answering(base_url: str, timeout_s: float) -> None:
    stats_url = base_url[: -len(API_PREFIX)] + STATS_PATH
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(stats_url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
