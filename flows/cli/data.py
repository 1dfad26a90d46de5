"""The commands that look at the data: `sql` (ad-hoc queries), `dashboard` (the local pages) and `benchmark`
(synthetic snapshots through our pipeline and a naive baseline)."""

from __future__ import annotations

import csv
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flows.cli.options import DataDirOpt, TargetOpt, load_settings
from flows.cli.output import err, out, out_stream
from flows.errors import ConfigError
from flows.settings import Target


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def sql(
    query: Annotated[str, typer.Argument(help='SQL to run, e.g. "select * from main_marts.dim_assets limit 5".')],
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="table, csv or json.")] = OutputFormat.table,
    limit: Annotated[int, typer.Option(help="Show at most this many rows in table format.")] = 50,
    data_dir: DataDirOpt = None,
    target: TargetOpt = None,
) -> None:
    """Run ad-hoc SQL on the warehouse (DuckDB locally)."""
    from flows.warehouse.factory import warehouse

    settings = load_settings(data_dir=data_dir, target=target)
    names, rows = warehouse(settings).query(query)
    if fmt is OutputFormat.csv:
        writer = csv.writer(out_stream)
        writer.writerow(names)
        writer.writerows(rows)
    elif fmt is OutputFormat.json:
        out_stream.write(json.dumps([dict(zip(names, r, strict=True)) for r in rows], default=str, indent=1) + "\n")
    else:
        table = Table(*names)
        for row in rows[:limit]:
            table.add_row(*("" if v is None else str(v) for v in row))
        out.print(table)
        more = f", showing {limit}" if len(rows) > limit else ""
        out.print(f"{len(rows):,} row{'s' if len(rows) != 1 else ''}{more}")


def benchmark(
    sizes: Annotated[
        str, typer.Option("--sizes", help="Market counts to serve, comma-separated (1k = 1,000; 1M = 1,000,000).")
    ] = "1k,10k,100k,1M",
    assets: Annotated[int, typer.Option(min=1, help="Assets served with every size.")] = 3000,
    exchanges: Annotated[int, typer.Option(min=1, help="Exchanges served with every size.")] = 200,
    repeat: Annotated[int, typer.Option(min=1, help="Runs per size and pipeline; the fastest is kept.")] = 3,
    dbt: Annotated[bool, typer.Option("--dbt/--no-dbt", help="Time the dbt build on each size's lake.")] = True,
    baseline: Annotated[
        bool, typer.Option("--baseline/--no-baseline", help="Also run the naive requests → pandas → SQL baseline.")
    ] = True,
    history: Annotated[
        bool, typer.Option("--history/--no-history", help="Also time a d1 history backfill of every asset.")
    ] = True,
    history_assets: Annotated[int, typer.Option(min=1, help="Assets of the history backfill.")] = 3000,
    history_years: Annotated[int, typer.Option(min=1, help="Years of d1 history per asset.")] = 3,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write every number measured to this file.")] = None,
    plot_path: Annotated[
        Path | None, typer.Option("--plot", help="Draw records/min and peak RSS per size to this SVG file.")
    ] = None,
) -> None:
    """Serve synthetic snapshots locally; time our pipeline and a naive baseline per stage; print the table."""
    from flows.lab import benchmark as bench

    markets = bench.parse_sizes(sizes)
    if plot_path is not None and plot_path.suffix.lower() != ".svg":
        raise ConfigError(
            f"--plot {plot_path} is not an .svg file.", "The plot is drawn as SVG: use e.g. --plot bench.svg."
        )
    err.print(
        f"benchmark: {', '.join(f'{m:,}' for m in markets)} markets (+ {assets:,} assets, {exchanges} exchanges), "
        f"best of {repeat}{', history backfill' if history else ''}; this takes a few minutes",
        highlight=False,
        soft_wrap=True,
    )
    report = bench.run_benchmark(
        markets,
        assets=assets,
        exchanges=exchanges,
        repeat=repeat,
        with_dbt=dbt,
        with_naive=baseline,
        history=(history_assets, history_years) if history else None,
        say=lambda line: err.print(line, highlight=False, soft_wrap=True),
    )
    out_stream.write(bench.markdown_table(report) + "\n")
    for line in bench.summary_lines(report):
        out_stream.write(line + "\n")
    if json_path is not None:
        bench.write_json(report, json_path)
        err.print(f"wrote {json_path}", highlight=False, soft_wrap=True)
    if plot_path is not None:
        bench.write_svg(report, plot_path)
        err.print(f"wrote {plot_path}", highlight=False, soft_wrap=True)


def dashboard(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 to serve on.")] = 8050,
    build_only: Annotated[bool, typer.Option("--build-only", help="Write the pages, print where, and stop.")] = False,
    open_browser: Annotated[bool, typer.Option("--open", help="Also open it in your web browser.")] = False,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Folder for the pages (default: <data dir>/dashboard).")
    ] = None,
    asset_pages: Annotated[
        int, typer.Option(help="Write the pages of this many of the largest assets (0: all); served, others on demand.")
    ] = 100,
    data_dir: DataDirOpt = None,
) -> None:
    """Build the local dashboard from the DuckDB marts and serve it on http://127.0.0.1:8050 (offline, no CDN).

    Market overview, asset detail, exchanges and markets, pipeline health; a new run shows up on reload.
    """
    from flows.dashboard.server import serve_site
    from flows.dashboard.site import DashboardSite, dashboard_dir

    settings = load_settings(data_dir=data_dir)
    if settings.target is Target.gcp:
        raise ConfigError(
            "The local dashboard reads the local DuckDB warehouse; PIPELINE_TARGET is gcp.",
            "Use the Looker Studio report on BigQuery (`coincap-pipeline looker-url`), or unset PIPELINE_TARGET.",
        )
    site = DashboardSite(
        settings.duckdb_path,
        out_dir or dashboard_dir(settings),
        asset_pages=asset_pages if asset_pages > 0 else None,
        on_demand=not build_only,
    )
    result = site.build()
    out.print(f"dashboard: {result.index}", highlight=False, soft_wrap=True)
    out.print(
        f"           {result.asset_pages:,} asset pages, {result.assets_listed:,} assets listed, "
        f"built in {result.seconds:.1f} s from {settings.duckdb_path}",
        highlight=False,
        soft_wrap=True,
    )
    if not settings.duckdb_path.exists():
        out.print("[yellow]no data yet:[/] run `coincap-pipeline run` first; the pages say so until then.")
    if not build_only:
        serve_site(site, port=port, announce=lambda line: out.print(line, highlight=False), open_browser=open_browser)
