"""Shared fixtures: one Prefect test server per session, fast client settings, a local CoinCap stand-in."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before Prefect is imported anywhere: no telemetry, no UI.
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_SERVER_UI_ENABLED"] = "false"
os.environ.pop("COINCAP_API_KEY", None)

from flows.settings import Settings, use_settings  # noqa: E402
from flows.standin import Catalog, Faults, StubServer  # noqa: E402

API_KEY = "test-key"


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """A real Prefect server for the session; its URL is also handed to CLI subprocesses."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):  # each xdist worker starts one, on a busy machine
        yield str(PREFECT_API_URL.value())


def fast_settings(data_dir: Path, base_url: str, **overrides: object) -> Settings:
    """Settings for tests: the stand-in's URL and key, millisecond backoffs."""
    values: dict[str, object] = {
        "COINCAP_API_KEY": API_KEY,
        "COINCAP_API_BASE_URL": base_url,
        "PIPELINE_DATA_DIR": data_dir,
        "COINCAP_BACKOFF_BASE": 0.01,
        "COINCAP_BACKOFF_MAX": 0.05,
        "COINCAP_CONNECT_TIMEOUT": 1.0,
        "COINCAP_READ_TIMEOUT": 2.0,
        "COINCAP_MAX_ATTEMPTS": 8,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def stub() -> Iterator[StubServer]:
    """A stand-in serving a small synthetic catalog, key required, no faults (tests set `stub.faults`)."""
    catalog = Catalog.synthetic(n_assets=250, n_exchanges=20, n_markets=4500, seed=11)
    with StubServer(catalog, faults=Faults(seed=5), api_keys={API_KEY}) as server:
        yield server


@pytest.fixture
def settings(tmp_path: Path, stub: StubServer) -> Iterator[Settings]:
    s = fast_settings(tmp_path / "data", stub.base_url)
    use_settings(s)
    yield s
    use_settings(None)


# fake-gcs-server stand-in for GCS (tests/gcs_server.py): `gcs_server` once per session, `gcs_emulator` per test.
from tests.gcs_server import gcs_emulator, gcs_server  # noqa: E402, F401


@pytest.fixture(scope="session")
def bigquery_offline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, object]:
    """The dbt project built for BigQuery with the connection stubbed (flows/ops/sql_check/dbt_offline.py), once per
    session: (the settings check-sql compiles with, the OfflineBuild)."""
    from flows.ops.sql_check.check import offline_settings
    from flows.ops.sql_check.dbt_offline import compile_offline

    base = Settings(  # type: ignore[call-arg]
        _env_file=None, PIPELINE_TARGET="gcp", GCP_PROJECT_ID="example-project", BQ_LOCATION="EU",
        PIPELINE_DATA_DIR=tmp_path_factory.mktemp("bigquery-offline"),
    )  # fmt: skip
    settings = offline_settings(base)
    return base, compile_offline(settings)
