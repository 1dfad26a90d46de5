"""A CoinCap-v3-compatible server on 127.0.0.1 with faults on demand, for the demo, tests and benchmarks."""

from flows.standin.catalog import Catalog
from flows.standin.faults import Faults
from flows.standin.process import serve_in_subprocess
from flows.standin.records import DATASETS, HISTORY_INTERVALS_MS, NATURAL_KEYS
from flows.standin.server import StubServer
from flows.standin.stats import ServerStats

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
