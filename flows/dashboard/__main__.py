"""Screenshots of the dashboard: `python -m flows.dashboard screenshots --simulate-days 30 --out docs/dashboard`.

Builds the dashboard of a data folder (or first fills a temporary one with the offline demo plus simulated
history, see `flows.lab.demo_history`), serves it on 127.0.0.1, opens every page in headless Chromium,
checks that each chart drew its data with no console error and no request leaving 127.0.0.1, and writes one
full-page PNG per page: overview.png, asset.png, exchanges.png, health.png.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from flows.errors import PipelineError


def screenshots(data_dir: Path, out_dir: Path, *, width: int = 1440, browser: Any = None) -> list[str]:
    """Build, serve and photograph the dashboard of `data_dir`; return the problems found (none is success).

    `browser`: a Playwright browser to use (default: start headless Chromium for the occasion)."""
    from flows.dashboard.browser import check_page, chromium
    from flows.dashboard.server import DashboardServer
    from flows.dashboard.site import PAGE_NAMES, DashboardSite
    from flows.settings import Settings

    settings = Settings(PIPELINE_DATA_DIR=data_dir, PIPELINE_TARGET="local")
    site = DashboardSite(settings.duckdb_path, data_dir / "dashboard")
    result = site.build()
    problems: list[str] = []
    with DashboardServer(site.out_dir, port=0) as server, contextlib.ExitStack() as stack:
        if browser is None:
            browser = stack.enter_context(chromium())
        for name in PAGE_NAMES:
            target = out_dir / f"{name}.png"
            check = check_page(
                browser, server.url + result.relative(name), screenshot=target, viewport={"width": width, "height": 900}
            )
            empty_charts = [c for c, marks in check.charts.items() if marks == 0]
            problems += [f"{name}: {p}" for p in check.problems]
            problems += [f"{name}: chart {c} drew nothing" for c in empty_charts]
            problems += [f"{name}: no data yet in {e}" for e in check.empty_panels]
            print(f"{target}  {len(check.charts)} charts, {sum(check.tables.values())} table rows", flush=True)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.dashboard", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    shots = sub.add_parser("screenshots", help="write a PNG of every page")
    shots.add_argument("--data-dir", type=Path, help="data folder to show (default: a temporary one, simulated)")
    shots.add_argument("--simulate-days", type=int, default=0, help="first fill the data folder with N demo days")
    shots.add_argument("--out", type=Path, default=Path("docs/dashboard"), help="folder for the PNGs")
    shots.add_argument("--width", type=int, default=1440, help="browser width in pixels")
    args = parser.parse_args(argv)

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # a busy machine starts slowly
    try:
        with tempfile.TemporaryDirectory(prefix="coincap-dashboard-") as tmp:
            data_dir = (args.data_dir or Path(tmp) / "data").resolve()
            if args.simulate_days:
                from flows.lab.demo_history import simulate_history

                if (data_dir / "warehouse.duckdb").exists():
                    raise PipelineError(f"{data_dir} already holds a warehouse.", "Simulate into an empty folder.")
                days = args.simulate_days
                # a quality run on each of the last two weeks' snapshots, for the history of failing checks
                checks = range(1, min(days, 15))
                simulate_history(data_dir, days=days, check_days=checks, progress=lambda m: print(m, flush=True))
            elif args.data_dir is None:
                raise PipelineError("Nothing to show.", "Pass --data-dir of a pipeline run, or --simulate-days 30.")
            problems = screenshots(data_dir, args.out, width=args.width)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
