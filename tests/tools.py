"""Tools whose pins clash with the project's (checkov, the BigQuery emulator) live in their own virtualenvs.

`tool_venv("checkov", ["checkov==3.2.x"])` creates `.venv-tools/checkov` on first use (cached by a hash of
the requirements) and returns its `bin/` folder. A clean CI clone builds them once per run.
"""

from __future__ import annotations

import fcntl
import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS_DIR = ROOT / ".venv-tools"


def tool_venv(name: str, requirements: list[str], *, timeout_s: int = 900) -> Path:
    """Return the `bin/` of a virtualenv holding exactly `requirements`, creating it if needed."""
    digest = hashlib.sha256("\n".join(sorted(requirements)).encode()).hexdigest()[:12]
    venv = TOOLS_DIR / name
    stamp = venv / f".ready-{digest}"
    TOOLS_DIR.mkdir(exist_ok=True)
    with open(TOOLS_DIR / f".{name}.lock", "w") as lock:  # parallel test workers build it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=120)
            subprocess.run(
                [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", *requirements],
                check=True,
                timeout=timeout_s,
            )
            stamp.touch()
    return venv / "bin"


def cli_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """The environment of a CLI subprocess: this one without any COINCAP_/PIPELINE_/PREFECT_ setting, the project on
    PYTHONPATH, no PREFECT_API_URL (the CLI starts Prefect's temporary server, its SQLite database in this home),
    the data dir under `tmp_path`, then `settings`."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("COINCAP_", "PIPELINE_", "PREFECT_"))}
    env.update({
        "PYTHONPATH": str(ROOT),
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PIPELINE_DATA_DIR": str(tmp_path / "data"),
        **settings,
    })  # fmt: skip
    return env
