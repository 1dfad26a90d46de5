"""`python -m flows.lab.fault_suite`: run the fault suite and print (or write) its table."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from flows.lab.fault_suite import __doc__ as PACKAGE_DOC
from flows.lab.fault_suite.harness import ScenarioResult
from flows.lab.fault_suite.lake_doubles import FaultyStorage
from flows.lab.fault_suite.report import markdown_doc, markdown_table
from flows.lab.fault_suite.runner import run_suite
from flows.lake.factory import storage_wrapper
from flows.lake.storage import LocalStorage
from flows.settings import Settings

DESCRIPTION = (PACKAGE_DOC or "").split("\n\n")[0]


def _child_snapshot(argv: list[str]) -> int:
    """`_child-snapshot`: one snapshot run from the environment's settings, for a scenario to kill."""
    parser = argparse.ArgumentParser(prog="python -m flows.lab.fault_suite _child-snapshot")
    parser.add_argument("--snapshot-id", required=True)
    parser.add_argument("--pause-at-write", type=int, default=0, help="block at this lake write (1 = the first)")
    parser.add_argument("--marker", type=Path, help="file touched when the write blocks")
    args = parser.parse_args(argv)
    from flows.settings import use_settings
    from flows.snapshot import snapshot_flow

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    use_settings(settings)
    storage: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if args.pause_at_write:
        lake = FaultyStorage(
            LocalStorage(settings.lake_dir), at=args.pause_at_write, action="pause", marker=args.marker
        )
        storage = storage_wrapper(lake.around)
    with storage:
        snapshot_flow(snapshot_id=args.snapshot_id, transform=False)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the suite and print its table (or JSON); exit 1 when any scenario fell short."""
    argv = sys.argv[1:] if argv is None else argv
    # Prefect reads its settings at import: keep the flows' own logs out of the table unless asked for.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_UI_ENABLED", "false")
    if argv[:1] == ["_child-snapshot"]:
        return _child_snapshot(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m flows.lab.fault_suite", description=DESCRIPTION)
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    parser.add_argument("--write", type=Path, help="also write the markdown report here (docs/fault-suite.md)")
    parser.add_argument("--only", action="append", help="run only this scenario (repeatable)")
    parser.add_argument("--workdir", type=Path, help="keep each scenario's data folder here")
    args = parser.parse_args(argv)

    def progress(result: ScenarioResult) -> None:
        status = "ok" if result.ok else "PROBLEMS: " + "; ".join(result.problems)
        print(f"{result.name}: {result.outcome} in {result.seconds:.1f}s, {status}", file=sys.stderr, flush=True)

    with contextlib.redirect_stdout(sys.stderr):  # dbt prints its progress: stdout is the table (or JSON) only
        suite = run_suite(args.only, workdir=args.workdir, progress=progress)
    if args.write:
        args.write.write_text(markdown_doc(suite))
    if args.json:
        print(json.dumps(suite.as_dict(), indent=2, default=str))
    else:
        print(markdown_table(suite))
        print(f"\n{len(suite.results)} scenarios in {suite.seconds:.0f} s on {suite.machine}")
        for line in suite.failures():
            print(f"FAILED {line}")
    return 0 if suite.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
