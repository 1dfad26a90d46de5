"""Running the fault suite: each scenario in a fresh folder against its own stand-in, then judged.

A scenario's lake fault goes in through the lake factory's seam (`storage_wrapper`, `flows/lake/factory.py`), and
its quick task retries through its settings (`PIPELINE_TASK_RETRY_DELAY_SCALE=0`, `harness.suite_settings`): no
module of the pipeline is patched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flows.lab.fault_suite.harness import ScenarioResult, ScenarioRun
from flows.lab.fault_suite.judge import account_run, check_credits, check_failed_run, check_stop, judge_run
from flows.lab.fault_suite.lake_doubles import FaultyStorage
from flows.lab.fault_suite.scenarios import (
    COMPLETED,
    KILLED_THEN_RECOVERED,
    Scenario,
    failed_then_recovered,
    scenarios,
)
from flows.lake.factory import storage_wrapper
from flows.lake.storage import LocalStorage
from flows.standin import Faults


def run_scenario(scenario: Scenario, workdir: Path, api_url: str | None = None) -> ScenarioResult:
    """Run one scenario in `workdir` (which must be empty) and account for it."""
    started = time.perf_counter()
    run = ScenarioRun(scenario, workdir, api_url)
    result = run.result
    completed = False
    with run.server:
        storage: FaultyStorage | None = None
        if scenario.storage_fault:
            at, action, prefix = scenario.storage_fault
            storage = FaultyStorage(LocalStorage(run.settings.lake_dir), at=at, action=action, prefix=prefix)
        failed: BaseException | None = None
        if scenario.kill == "backfill":
            run.kill_backfill()
        elif scenario.kill:
            run.kill_snapshot(scenario.kill)
        else:
            try:
                with storage_wrapper(storage.around) if storage else contextlib.nullcontext():
                    summary = run.run_flow(transform=scenario.marts)
                result.api_retries += run.api_retries_of(summary)
                completed = True
                result.outcome = COMPLETED
                if scenario.exact_credits:
                    check_credits(run, summary)
                # absorbed in-run: the fault "cleared" with its last occurrence
                faults_at = [t for t in (run.server.stats.last_fault_at, storage and storage.fired_at) if t]
                if faults_at:
                    result.recover_s = round(max(0.0, time.time() - max(faults_at)), 2)
            except Exception as exc:
                failed = exc
                # a PipelineError's first sentence says what happened; the rest is advice
                what = getattr(exc, "what", None) or str(exc)
                result.first_error = f"{type(exc).__name__}: {what}".replace(f"{run.settings.lake_dir}/", "")
                result.notes.append(f"first run: {result.first_error[:160].rstrip('.')}")
                check_failed_run(run, exc)
                check_stop(run, exc)
            result.first_run_requests = run.server.stats.total_requests
            if scenario.max_requests is not None:
                if result.first_run_requests > scenario.max_requests:
                    result.problems.append(
                        f"the first run sent {result.first_run_requests} requests (at most {scenario.max_requests})"
                    )
                else:
                    result.notes.append(f"{result.first_run_requests} requests")
        if storage is not None and not storage.fired:
            result.problems.append("the storage fault never fired")
        elif storage is not None and completed:
            result.notes.append(f"write #{storage.at} raised StorageError; the task's retry completed the run")

        if not completed:  # clear the fault (quota reset, lake back, process restarted): the next run lands it all
            run.server.faults = Faults()
            if scenario.stops_with and scenario.publishes_nothing:
                run.served_from = {d: len(records) for d, records in run.server.stats.served.items()}
            cleared_at = time.time()
            try:
                summary = run.run_flow(transform=scenario.marts)
                result.api_retries += run.api_retries_of(summary)
                completed = True
                result.recover_s = round(time.time() - cleared_at, 2)
                if failed is None:
                    result.outcome = KILLED_THEN_RECOVERED
                else:
                    result.outcome = failed_then_recovered(type(failed).__name__)
            except Exception as exc:
                result.outcome = "failed, not recovered"
                result.problems.append(f"the run after the fault cleared failed: {type(exc).__name__}: {exc}")
        account_run(run, completed)
    result.seconds = round(time.perf_counter() - started, 2)
    judge_run(run)
    return result


@dataclass
class SuiteResult:
    """Every scenario's result, and how long the suite took."""

    results: list[ScenarioResult]
    seconds: float
    machine: str
    load: float = 0.0  # the 1-minute load average when the suite ended: other work slows the timings

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def failures(self) -> list[str]:
        """One line per scenario that fell short, naming it."""
        return [f"{r.name}: {'; '.join(r.problems)}" for r in self.results if not r.ok]

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "seconds": self.seconds,
            "machine": self.machine,
            "load": self.load,
            "scenarios": [r.as_dict() for r in self.results],
        }


@contextlib.contextmanager
def prefect_api() -> Iterator[str]:
    """The Prefect API the flows (and the processes the suite kills) report to: the configured one, else a
    temporary local server, started once."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    configured = PREFECT_API_URL.value()
    if configured:
        yield str(configured)
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start(timeout=120)  # a first start migrates its database: slow on a busy machine
    with temporary_settings({PREFECT_API_URL: server.api_url}):
        yield server.api_url


def run_suite(
    only: Sequence[str] | None = None,
    *,
    workdir: Path | None = None,
    progress: Callable[[ScenarioResult], None] | None = None,
) -> SuiteResult:
    """Run the scenarios (all, or those named in `only`), each in a fresh folder under `workdir` (a temporary one)."""
    from flows.lab.benchmark import machine
    from flows.settings import current_settings, use_settings

    chosen = [s for s in scenarios() if not only or s.name in only]
    unknown = set(only or ()) - {s.name for s in scenarios()}
    if unknown:
        raise ValueError(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    previous = current_settings()
    started = time.perf_counter()
    results = []
    with contextlib.ExitStack() as stack:
        root = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="coincap-faults-")))
        api_url = stack.enter_context(prefect_api())
        try:
            for scenario in chosen:
                folder = root / scenario.name
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
                result = run_scenario(scenario, folder, api_url)
                results.append(result)
                if progress:
                    progress(result)
        finally:
            use_settings(previous)
    return SuiteResult(results, round(time.perf_counter() - started, 1), machine(), round(os.getloadavg()[0], 1))
