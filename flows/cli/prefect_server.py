"""Prefect's temporary API server, tied to the CLI's process: it exits when the CLI does, however the CLI ends."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from typing import Any

# Run by Prefect's temporary API server process instead of `python -m uvicorn …` (see `tie_prefect_server`):
# argv is `<parent pid> -m uvicorn <uvicorn's arguments>`. A thread waits for the parent to exit (a pidfd, else
# polling getppid) and then shuts the server down as `stop()` does (SIGTERM), exiting for good 5 s later.
_EXIT_WITH_PARENT = """\
# coincap-pipeline: Prefect's temporary server, which exits with the process that started it
import os, runpy, select, signal, sys, threading, time
_, parent, _, module, *args = sys.argv
parent = int(parent)

def watch():
    if os.getppid() == parent:
        try:
            pidfd = os.pidfd_open(parent)
        except (AttributeError, OSError):
            pidfd = None
        if pidfd is not None and os.getppid() == parent:
            poll = select.poll()
            poll.register(pidfd, select.POLLIN)
            poll.poll()
        while os.getppid() == parent:
            time.sleep(0.1)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
    os._exit(1)

threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
sys.argv = [module, *args]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def exit_with_us(args: Any) -> Any:
    """`python -m uvicorn …` as a command that exits when this process does; any other command unchanged."""
    if isinstance(args, list | tuple) and len(args) > 2 and list(args[1:3]) == ["-m", "uvicorn"]:
        return [args[0], "-c", _EXIT_WITH_PARENT, str(os.getpid()), *args[1:]]
    return args


class TiedPopen(subprocess.Popen):  # type: ignore[type-arg]
    def __init__(self, args: Any, *rest: Any, **kwargs: Any) -> None:
        super().__init__(exit_with_us(args), *rest, **kwargs)


class TiedSubprocess(types.ModuleType):
    """`subprocess` as Prefect's server module sees it: the same, but its server process exits with ours."""

    Popen = TiedPopen

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)


def tie_prefect_server() -> None:
    """Without PREFECT_API_URL, Prefect starts a temporary API server (uvicorn) as a child process and stops it at
    exit; a `kill -9` of the CLI skips that, and the server would run on, orphaned. On Linux, start it under
    `_EXIT_WITH_PARENT` instead, so that it exits when this process does, however it ends. A no-op elsewhere
    (macOS) and when an API URL is set (no temporary server). Call before the first Prefect client is made.

    Not PR_SET_PDEATHSIG: the kernel sends it when the *thread* that started the child exits (Prefect may start
    its server from a worker thread), and setting it needs a preexec_fn, which is not safe with threads running.
    """
    if sys.platform != "linux":
        return
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        return
    import prefect.server.api.server as prefect_server  # imported by Prefect anyway to start the server

    if not isinstance(prefect_server.subprocess, TiedSubprocess):
        prefect_server.subprocess = TiedSubprocess("subprocess")
