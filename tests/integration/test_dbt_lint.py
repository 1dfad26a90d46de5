"""The dbt models follow the project's SQL style, as `.sqlfluff` configures it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flows.paths import PROJECT_ROOT

ROOT = PROJECT_ROOT

pytestmark = pytest.mark.slow


def test_sqlfluff_lint_of_dbt_models_passes() -> None:
    # A separate process: sqlfluff's templater imports the lint stubs as modules, and dbt may be loaded here.
    result = subprocess.run(
        [sys.executable, "-m", "sqlfluff", "lint", "dbt/models", "--disable-progress-bar"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
