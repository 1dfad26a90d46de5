"""A CoinCap-v3-compatible server on 127.0.0.1 with faults on demand, for the demo, tests and benchmarks."""

from flows.standin.catalog import DATASETS, NATURAL_KEYS, Catalog
from flows.standin.faults import Faults
from flows.standin.server import HISTORY_INTERVALS_MS, ServerStats, StubServer, serve_in_subprocess

__all__ = [
    "DATASETS",
    "HISTORY_INTERVALS_MS",
    "NATURAL_KEYS",
    "Catalog",
    "Faults",
    "ServerStats",
    "StubServer",
    "serve_in_subprocess",
]
