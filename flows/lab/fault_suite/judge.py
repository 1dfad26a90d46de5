"""Judging a fault scenario: account for every record after it, and name every way it fell short of the design."""

from __future__ import annotations

import json
from typing import Any

from flows.lab.fault_suite.accounting import (
    SNAPSHOT_DATASETS,
    SNAPSHOT_ID,
    account_history,
    account_snapshot,
    count_marts,
    must_reject_history,
    must_reject_snapshot,
    orphans,
    read_rows,
    scratch_files,
    snapshot_objects,
)
from flows.lab.fault_suite.harness import ScenarioRun


def check_stop(run: ScenarioRun, error: BaseException) -> None:
    """A designed stop says what happened in one line, with the words the scenario expects."""
    words = run.scenario.stops_with
    if not words:
        return
    text = str(error)
    if "\n" in text or "Traceback" in text:
        run.result.problems.append(f"the stop is not one line: {text[:200]!r}")
    missing = [w for w in words if w not in text]
    if missing:
        run.result.problems.append(f"the stop does not say {missing}: {text[:200]!r}")


def check_credits(run: ScenarioRun, summary: Any) -> None:
    """The run metrics' credits (every call of every dataset, failed attempts included) are what the stand-in billed
    (it says so in the billing header; the scenario's only run)."""
    metered = sum(r.credits for r in summary.reports)
    billed = run.server.stats.credits
    if metered != billed:
        run.result.problems.append(f"the run metered {metered:,} credits, the stand-in billed {billed:,}")
    else:
        run.result.notes.append(f"{metered:,} credits metered, as billed")


def check_failed_run(run: ScenarioRun, error: BaseException) -> None:
    """What a failed run left behind; a designed failure must publish nothing and leave nothing staged."""
    lake, result = run.settings.lake_dir, run.result
    published = snapshot_objects(lake, SNAPSHOT_ID) if run.scenario.flow == "snapshot" else []
    staged = scratch_files(run.data_dir)
    if run.scenario.publishes_nothing:
        if published:
            result.problems.append(f"the failed run published {len(published)} object(s): {published[:2]}")
        if staged:
            result.problems.append(f"the failed run left {staged} staged file(s)")
        return
    if published:
        result.notes.append(f"the failed run had published {len(published)} object(s)")


def account_run(run: ScenarioRun, completed: bool) -> None:
    result, stats, lake = run.result, run.server.stats, run.settings.lake_dir
    result.injected = dict(stats.injected)
    result.orphans = orphans(lake)
    result.scratch_files = scratch_files(run.data_dir)
    if run.scenario.flow == "snapshot":
        rejects = must_reject_snapshot(run.catalog, run.scenario.faults)
        served = {d: records[run.served_from.get(d, 0) :] for d, records in stats.served.items()}
        result.tallies = account_snapshot(lake, SNAPSHOT_ID, served, rejects, scopes=run.scenario.scopes)
        for tally in result.tallies:
            if tally.beyond_scope:
                result.notes.append(f"{tally.dataset}: {tally.beyond_scope} served beyond the scope, trimmed")
        if run.scenario.marts and completed:
            count_marts(run.settings, SNAPSHOT_ID, result.tallies)
    else:
        rejects_history = must_reject_history(run.catalog, run.scenario.faults)
        result.tallies = [account_history(lake, "d1", stats.served, rejects_history)]
        if run.scenario.kill == "backfill":
            chunks_total = run.history_chunks()
            calls = run.history_calls() - run.history_calls_at_kill
            expected = chunks_total - len(run.landed_at_kill)
            if calls != expected:
                result.problems.append(
                    f"the restart made {calls} history calls for {expected} missing chunks (finished chunks refetched?)"
                )


def judge_run(run: ScenarioRun) -> None:
    """Every way the scenario fell short: any loss, duplicate, orphan or outcome other than the designed one."""
    result, scenario = run.result, run.scenario
    problems = result.problems
    if result.outcome != scenario.expect:
        problems.append(f"outcome {result.outcome!r}, expected {scenario.expect!r}")
    if not (scenario.baseline or scenario.kill or scenario.storage_fault or result.injected):
        problems.append("the fault never fired")
    for tally in result.tallies:
        name = tally.dataset
        if tally.served == 0:
            problems.append(f"{name}: nothing was served")
        for what in ("duplicates", "lost", "invented", "misrouted", "without_reason"):
            if getattr(tally, what):
                problems.append(f"{name}: {getattr(tally, what)} {what.replace('_', ' ')} {tally.examples}")
        if tally.marts is not None and not tally.marts == tally.marts_distinct == tally.landed_distinct:
            problems.append(
                f"{name}: {tally.marts} rows ({tally.marts_distinct} distinct) in the marts, "
                f"{tally.landed_distinct} in the lake"
            )
    if scenario.marts and result.marts is None and not problems:
        problems.append("the marts were not counted")
    if result.orphans:
        problems.append(f"orphaned objects in the lake: {result.orphans[:3]}")
    if scenario.faults.drift_new_fields:
        check_new_fields(run)


def check_new_fields(run: ScenarioRun) -> None:
    """New fields are kept (in `extra_fields`) on the records that carried them."""
    from flows.standin.faults import NEW_FIELDS

    lake = run.settings.lake_dir
    for dataset in SNAPSHOT_DATASETS:
        rows = [
            row
            for path in (lake / "coincap" / dataset).glob(f"dt=*/{SNAPSHOT_ID}.parquet")
            for row in read_rows(path, ["extra_fields"])
        ]
        kept = [json.loads(r["extra_fields"]) for r in rows if r["extra_fields"]]
        if not kept or any(set(NEW_FIELDS) - set(extra) for extra in kept):
            run.result.problems.append(f"{dataset}: new fields not kept in extra_fields ({len(kept)} rows have some)")
