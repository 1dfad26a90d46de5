"""Fault-injection suite: the snapshot and backfill flows against a faulty local CoinCap and a failing lake.

Each scenario runs the real flow (Prefect tasks, client, contracts, staged Parquet, lake; dbt where it builds) in a
fresh data folder against the local stand-in with one fault on, then accounts for every record: served by the API,
landed in the lake (and the marts), quarantined with a reason, duplicated, lost, and how long recovery took.

    python -m flows.lab.fault_suite                    # the results table (exit 1 on any loss, duplicate or surprise)
    python -m flows.lab.fault_suite --json             # per scenario and dataset, as JSON
    python -m flows.lab.fault_suite --write docs/fault-suite.md

tests/e2e/test_fault_suite.py runs it in CI. Retries are made quick (millisecond backoff, task retries without their
production delays of 5-300 s), so the suite takes 1.5 to 2.5 minutes on 2 cores; the one dbt build is a third of it.
Nothing in the pipeline is patched: a lake fault goes in through the lake factory's `storage_wrapper`, quick task
retries through the scenario's settings (`PIPELINE_TASK_RETRY_DELAY_SCALE=0`).

- `scenarios`: the faults, each with the outcome the pipeline is designed to reach;
- `lake_doubles`: `FaultyStorage`, a lake whose n-th write fails, loses its acknowledgement or hangs;
- `harness`: one scenario's folder, stand-in, settings, flow runs and killed processes;
- `accounting`: every record served against the lake, the quarantine and the marts;
- `judge`: every way a scenario fell short; `runner`: a scenario, and the suite;
- `report`: the results table and docs/fault-suite.md; `__main__`: the command line.
"""

from __future__ import annotations

from flows.lab.fault_suite.accounting import Tally, account_history, account_snapshot, identity, orphans, split_scope
from flows.lab.fault_suite.harness import ScenarioResult, suite_settings
from flows.lab.fault_suite.lake_doubles import FaultyStorage
from flows.lab.fault_suite.report import markdown_doc, markdown_table
from flows.lab.fault_suite.runner import SuiteResult, run_scenario, run_suite
from flows.lab.fault_suite.scenarios import COMPLETED, KILLED_THEN_RECOVERED, Scenario, failed_then_recovered, scenarios

__all__ = [
    "COMPLETED",
    "KILLED_THEN_RECOVERED",
    "FaultyStorage",
    "Scenario",
    "ScenarioResult",
    "SuiteResult",
    "Tally",
    "account_history",
    "account_snapshot",
    "failed_then_recovered",
    "identity",
    "markdown_doc",
    "markdown_table",
    "orphans",
    "run_scenario",
    "run_suite",
    "scenarios",
    "split_scope",
    "suite_settings",
]
