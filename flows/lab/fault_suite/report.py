"""The fault suite's report: the results table, and docs/fault-suite.md around it."""

from __future__ import annotations

from flows.lab.fault_suite.harness import ScenarioResult
from flows.lab.fault_suite.runner import SuiteResult


def _injected_summary(result: ScenarioResult) -> str:
    parts = [f"{kind} ×{n:,}" for kind, n in sorted(result.injected.items(), key=lambda kv: -kv[1])]
    return ", ".join(parts)


def markdown_table(suite: SuiteResult) -> str:
    """The results table, one row per scenario."""
    head = (
        "| scenario | flow | fault injected | outcome | served | landed | quarantined | duplicates | losses "
        "| recover s | notes |\n|---|---|---|---|---:|---:|---:|---:|---:|---:|---|"
    )
    rows = [head]
    for r in suite.results:
        notes = []
        fired = _injected_summary(r)
        if fired:
            notes.append(f"fired: {fired}")
        if r.api_retries:
            notes.append(f"{r.api_retries:,} API retries")
        notes += r.notes
        if r.marts is not None:
            notes.append(f"marts: {r.marts:,} rows, as in the lake")
        if r.scratch_files:
            notes.append(f"{r.scratch_files} scratch file(s) left in data/staging")
        if r.problems:
            notes.append("**PROBLEMS: " + "; ".join(r.problems) + "**")
        landed = r.total("landed")
        rows.append(
            f"| {r.name} | {r.flow} | {r.fault} | {r.outcome} | {r.total('served'):,} | {landed:,} | "
            f"{r.total('quarantined'):,} | {r.total('duplicates'):,} | {r.total('lost'):,} | "
            f"{'' if r.recover_s is None else f'{r.recover_s:.1f}'} | {'; '.join(notes)} |"
        )
    return "\n".join(rows)


DOC_INTRO = """\
# Fault injection

`python -m flows.lab.fault_suite` runs the snapshot and backfill flows (Prefect tasks, client, contracts, staged
Parquet, lake; dbt where noted) against the local CoinCap stand-in and the local lake with one fault at a time, then
accounts for every record. `tests/e2e/test_fault_suite.py` runs the same suite in CI and fails on any loss, duplicate,
orphaned object, misrouted record or outcome other than the designed one, naming the scenario. Each scenario starts
from an empty data folder; snapshots are a synthetic catalog of 100 assets, 120 rates, 100 exchanges and 100 markets
(3% invalid on purpose) in pages of 40; backfills are 8 assets x 2 years of daily history (24 chunks).

- **served**: distinct records the API sent whole (HTTP 200, full body), over every run of the scenario, from the
  stand-in's own log (`ServerStats.served`); history points for the backfill.
- **landed**: rows in the lake for the snapshot (or the history range), read back from Parquet; where the marts
  are built, their rows are counted too and must equal the lake's.
- **quarantined**: rows in `quarantine/`, each with its reasons. The suite also checks they are exactly the
  records the contracts must reject (the catalog's invalid ones and those sent with a wrong type).
- **duplicates**: landed rows beyond one per natural key, plus quarantined rows beyond one per raw record.
- **losses**: served records neither landed nor quarantined; after a designed failure (quota), counted after the
  run that follows the fault clearing.
- **hostile rows** (`snapshot-ignore-offset` to `snapshot-dear-billing`): what no honest CoinCap does. A designed
  stop is one line naming what happened, within a bound of requests (noted), publishes nothing, and the next run
  against an honest server lands everything (a stopped run's records, values drifting, are not counted as served);
  the other rows land exactly, the billing rows with every credit metered as billed. Records served past a top-N
  scope (`COINCAP_ASSETS_LIMIT`) are noted apart: trimmed, neither landed nor counted as lost.
- **recover s**: seconds from the fault clearing (the last injected fault for faults absorbed in-run; the quota
  reset, the restored lake or the restart otherwise) to a completed run. Retries are quick here (10-50 ms backoff,
  task retries without their 5-300 s production delays), so these are lower bounds of what production waits.
"""


def markdown_doc(suite: SuiteResult) -> str:
    """docs/fault-suite.md: what the suite does, the table, and where it was measured."""
    verdict = "every scenario as designed" if suite.ok else f"{len(suite.failures())} scenario(s) fell short"
    return (
        f"{DOC_INTRO}\n{markdown_table(suite)}\n\n"
        f"Measured on {suite.machine} (load average {suite.load:g} at the end): {len(suite.results)} scenarios "
        f"in {suite.seconds:.0f} s, {verdict}.\n"
    )
