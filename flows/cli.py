"""`coincap-pipeline`: run the pipeline, query the warehouse, serve the local CoinCap stand-in."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sys
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from flows.errors import ConfigError, PipelineError
from flows.settings import DEFAULT_BASE_URL, Settings, Target, use_settings

app = typer.Typer(
    name="coincap-pipeline",
    help="CoinCap v3 market data -> validated Parquet lake -> dbt marts. "
    "Runs on your laptop by default (folder lake + DuckDB); set PIPELINE_TARGET=gcp for Google Cloud.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
# Rich falls back to 80 columns when piped; the summary table needs more to stay readable in CI logs.
out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 120)

DATASET_NAMES = ("assets", "rates", "exchanges", "markets")


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Lake and warehouse folder [env: PIPELINE_DATA_DIR; default ./data]."),
]
TargetOpt = Annotated[Target | None, typer.Option("--target", help="local or gcp [env: PIPELINE_TARGET].")]


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with CLI flags (non-None values) on top; bad values → one line."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        base = Settings()
        return base.model_copy(update=given) if given else base
    except ValidationError as exc:
        first = exc.errors()[0]
        name = first.get("loc", ["?"])[0]
        raise ConfigError(
            f"Invalid setting {name}: {first.get('msg')}.", "Fix the environment variable or flag."
        ) from None


@contextlib.contextmanager
def _demo_api(settings: Settings) -> Iterator[Settings]:
    """With no API key and the default base URL, replay bundled samples through a local CoinCap stand-in."""
    if settings.api_key_value or settings.api_base_url != DEFAULT_BASE_URL:
        yield settings
        return
    from flows.local_api import Catalog, StubServer

    err.print(
        "[yellow]No COINCAP_API_KEY set:[/] running the offline demo on bundled sample responses "
        "(set COINCAP_API_KEY to fetch live data from CoinCap)."
    )
    with StubServer(Catalog.demo()) as server:
        yield settings.model_copy(update={"api_base_url": server.base_url})


@app.command()
def run(
    datasets: Annotated[
        list[str] | None,
        typer.Option("--dataset", "-d", help="Only these datasets (repeatable): assets, rates, exchanges, markets."),
    ] = None,
    snapshot_id: Annotated[
        str | None, typer.Option(help="Re-run this snapshot id (e.g. 20261121T053000Z); replaces its files.")
    ] = None,
    transform: Annotated[bool, typer.Option("--transform/--no-transform", help="Build the dbt marts after.")] = True,
    data_dir: DataDirOpt = None,
    target: TargetOpt = None,
    base_url: Annotated[str | None, typer.Option(help="CoinCap API root [env: COINCAP_API_BASE_URL].")] = None,
) -> None:
    """Take a snapshot of CoinCap (assets, rates, exchanges, markets), land it in the lake, build the marts.

    Without COINCAP_API_KEY it runs the offline demo against bundled sample responses.
    """
    chosen = list(dict.fromkeys(datasets or DATASET_NAMES))
    unknown = sorted(set(chosen) - set(DATASET_NAMES))
    if unknown:
        raise ConfigError(f"Unknown dataset {', '.join(unknown)}.", f"Choose from {', '.join(DATASET_NAMES)}.")
    settings = load_settings(data_dir=data_dir, target=target, api_base_url=base_url)
    with _demo_api(settings) as effective:
        use_settings(effective)
        from flows.pipeline import snapshot_flow

        summary = snapshot_flow(snapshot_id=snapshot_id, datasets=chosen, transform=transform)
    _print_summary(summary)


def _print_summary(summary: Any) -> None:
    table = Table(title=f"snapshot {summary.snapshot_id}", title_justify="left")
    for name, justify in [
        ("dataset", "left"), ("served", "right"), ("valid", "right"), ("quarantined", "right"),
        ("duplicates", "right"), ("files", "right"), ("API calls", "right"), ("credits", "right"),
        ("seconds", "right"),
    ]:  # fmt: skip
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    totals = dict.fromkeys(("served", "valid", "quarantined", "duplicates", "files", "calls", "credits"), 0)
    for r in summary.reports:
        row = {"served": r.served, "valid": r.valid, "quarantined": r.quarantined, "duplicates": r.duplicates,
               "files": len(r.files), "calls": r.calls, "credits": r.credits}  # fmt: skip
        for k, v in row.items():
            totals[k] += v
        table.add_row(r.dataset, *(f"{v:,}" for v in row.values()), f"{r.seconds:.1f}")
    if summary.dbt is not None:
        table.add_row("dbt build", "", "", "", "", "", "", "", f"{summary.dbt.seconds:.1f}")
    table.add_section()
    table.add_row("total", *(f"{v:,}" for v in totals.values()), f"{summary.seconds:.1f}", style="bold")
    out.print(table)
    for r in summary.reports:
        if r.new_fields:
            out.print(
                f"[yellow]new fields from CoinCap in {r.dataset}[/]: {', '.join(r.new_fields)} (kept in extra_fields)"
            )
    out.print(f"lake:      {summary.lake_uri}")
    out.print(f"warehouse: {summary.warehouse_uri}")
    if totals["quarantined"]:
        out.print(f"rejected rows and their reasons: {summary.lake_uri}/quarantine/")
    if summary.dbt is not None:
        statuses = ", ".join(f"{n} {s}" for s, n in sorted(summary.dbt.statuses.items()))
        out.print(f"dbt:       {statuses}")
    out.print('try:       coincap-pipeline sql "select * from marts.fct_asset_daily limit 10"')


@app.command()
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
        writer = csv.writer(sys.stdout)
        writer.writerow(names)
        writer.writerows(rows)
    elif fmt is OutputFormat.json:
        sys.stdout.write(json.dumps([dict(zip(names, r, strict=True)) for r in rows], default=str, indent=1) + "\n")
    else:
        table = Table(*names)
        for row in rows[:limit]:
            table.add_row(*("" if v is None else str(v) for v in row))
        out.print(table)
        more = f", showing {limit}" if len(rows) > limit else ""
        out.print(f"{len(rows):,} row{'s' if len(rows) != 1 else ''}{more}")


@app.command()
def preflight(data_dir: DataDirOpt = None) -> None:
    """Check that everything the gcp target needs exists and is reachable, and dry-run the marts' SQL.

    Prints one line per problem with how to fix it; exits non-zero when there is any.
    """
    from google.auth.exceptions import DefaultCredentialsError

    from flows.preflight import problems, run_preflight

    settings = load_settings(data_dir=data_dir, target=Target.gcp)
    try:
        findings = run_preflight(settings)
    except DefaultCredentialsError:
        raise ConfigError(
            "No Google credentials found.",
            "Run `gcloud auth application-default login` (or set them up on the runner).",
        ) from None
    for finding in findings:
        mark = "[green]ok[/]  " if finding.ok else "[red]FAIL[/]"
        out.print(f"{mark} {finding.line()}", highlight=False)
    bad = problems(findings)
    if bad:
        raise PipelineError(
            f"Preflight found {len(bad)} problem{'s' if len(bad) > 1 else ''}.", "Fix the FAIL lines above."
        )
    out.print("[green]ready:[/] `prefect --no-prompt deploy --all` next.")


@app.command()
def backfill(
    assets: Annotated[
        list[str] | None, typer.Option("--asset", "-a", help="Asset ids (repeatable); default: every listed asset.")
    ] = None,
    interval: Annotated[str, typer.Option(help="m1 m5 m15 m30 h1 h2 h6 h12 or d1.")] = "d1",
    start: Annotated[str | None, typer.Option(help="First day, YYYY-MM-DD (default: 3 years ago).")] = None,
    end: Annotated[str | None, typer.Option(help="Last day, YYYY-MM-DD (default: today).")] = None,
    max_credits: Annotated[int | None, typer.Option(help="Never spend more than this many credits.")] = None,
    estimate_only: Annotated[bool, typer.Option("--estimate-only", help="Print the credit estimate and stop.")] = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Backfill price history into the lake: chunked, resumable (finished chunks are skipped), credit-capped."""
    from datetime import date

    from flows.backfill import backfill_flow, estimate_backfill_credits

    settings = load_settings(data_dir=data_dir)
    try:
        first, last = (date.fromisoformat(d) if d else None for d in (start, end))
    except ValueError:
        raise ConfigError("--start and --end must look like 2024-01-31.", "Fix the date.") from None
    with _demo_api(settings) as effective:
        use_settings(effective)
        estimate = estimate_backfill_credits(effective, assets or 2000, interval, first, last)
        out.print(f"estimate: {estimate.describe()}" + ("" if assets else " (for ~2,000 listed assets)"))
        if estimate_only:
            return
        report = backfill_flow(assets=assets, interval=interval, start=first, end=last, max_credits=max_credits)
    out.print(report.summary())


@app.command()
def stream(
    assets: Annotated[str, typer.Option(help="Comma list of asset ids, or ALL.")] = "bitcoin,ethereum",
    minutes: Annotated[
        float | None, typer.Option(help="Stop after this many minutes (default: run until Ctrl-C).")
    ] = None,
    batch_seconds: Annotated[float, typer.Option(help="Write a micro-batch every this many seconds.")] = 2.0,
    data_dir: DataDirOpt = None,
) -> None:
    """Stream live prices from CoinCap's WebSocket into the lake (paid plans; 1 credit per minute connected)."""
    settings = load_settings(data_dir=data_dir)
    if not settings.api_key_value:
        raise ConfigError(
            "Streaming needs COINCAP_API_KEY (CoinCap's WebSocket is for paid plans).",
            "Set it, or try `python -m flows.stream --seconds 30` against the local stand-in.",
        )
    use_settings(settings)
    from flows.stream import stream_flow

    wanted = [a.strip() for a in assets.split(",") if a.strip()]
    summary = stream_flow(assets=wanted, batch_seconds=batch_seconds, max_minutes=minutes)
    out.print(summary)


@app.command()
def maintenance(data_dir: DataDirOpt = None, target: TargetOpt = None) -> None:
    """Compact the price stream and apply the retention policy (PIPELINE_GRANULAR_RETENTION_DAYS, default 365)."""
    use_settings(load_settings(data_dir=data_dir, target=target))
    from flows.maintenance import maintenance_flow

    report = maintenance_flow()
    out.print(
        f"kept granular data from {report.cutoff}; removed {len(report.objects_deleted):,} lake objects and "
        f"{sum(report.rows_deleted.values()):,} snapshot rows; daily aggregates kept"
    )


@app.command("plan-credits")
def plan_credits(
    prefect_file: Annotated[Path, typer.Option(help="Deployments whose schedules to plan.")] = Path("prefect.yaml"),
    data_dir: DataDirOpt = None,
    target: TargetOpt = None,
) -> None:
    """Project the CoinCap credits each scheduled deployment will use per month, against CoinCap's plans.

    Bytes per record come from your last runs when the warehouse has them, else from measured defaults. Scope
    settings (COINCAP_ASSETS_LIMIT, COINCAP_MARKETS_EXCHANGES, COINCAP_MARKETS_QUOTES) in your environment or a
    deployment's job env cut the bill.
    """
    from flows.credit_plan import PLANS, measured_from_runs, plan, smallest_plan
    from flows.warehouse.factory import warehouse

    settings = load_settings(data_dir=data_dir, target=target)
    if not prefect_file.exists():
        raise ConfigError(
            f"No deployments file at {prefect_file}.", "Run from the repository root or pass --prefect-file."
        )
    measured: dict[str, float] = {}
    with contextlib.suppress(PipelineError):
        _, rows = warehouse(settings).query(
            "select step, sum(served), sum(bytes) from ops.pipeline_runs where status = 'completed' "
            "and step in ('assets', 'rates', 'exchanges', 'markets') group by step"
        )
        measured = measured_from_runs(rows)
    costs = plan(prefect_file, settings, measured)
    table = Table(title=f"CoinCap credits per month, {prefect_file}", title_justify="left")
    for name in ("deployment", "schedule (UTC)", "runs/month", "credits/run", "credits/month"):
        table.add_column(name, justify="left" if name in ("deployment", "schedule (UTC)") else "right")
    for c in costs:
        table.add_row(
            c.name, c.schedule, f"{c.runs_per_month:.1f}", f"{c.credits_per_run:,.0f}", f"{c.credits_per_month:,.0f}"
        )
    total = sum(c.credits_per_month for c in costs)
    table.add_section()
    table.add_row("total", "", "", "", f"{total:,.0f}", style="bold")
    out.print(table)
    source = "your last runs" if measured else "measured defaults (run the pipeline once to use your own)"
    out.print(f"bytes per record from {source}")
    fits = smallest_plan(total)
    out.print(" · ".join(f"{name} {credits:,}{' ✓' if total <= credits else ''}" for name, credits in PLANS.items()))
    out.print(f"smallest plan that fits: [bold]{fits or 'none: cut the scope or the schedule'}[/]")


@app.command("prefect-blocks")
def prefect_blocks() -> None:
    """Create (or update) the Prefect blocks the gcp deployments use: result storage in the lake bucket.

    Uses GCS_BUCKET and GCP_PROJECT_ID; stores no key (on Cloud Run the job's service account is used).
    """
    from prefect_gcp import GcpCredentials, GcsBucket

    from flows.preflight import RESULTS_BLOCK_NAME

    settings = load_settings(target=Target.gcp)
    if not settings.gcs_bucket or not settings.gcp_project:
        raise ConfigError(
            "GCS_BUCKET and GCP_PROJECT_ID must be set.", "Export them from `terraform output pipeline_env`."
        )
    block = GcsBucket(
        bucket=settings.gcs_bucket,
        bucket_folder="prefect-results",  # expires with the bucket's prefect-results/ lifecycle rule
        gcp_credentials=GcpCredentials(project=settings.gcp_project),
    )
    block.save(RESULTS_BLOCK_NAME, overwrite=True)
    out.print(f"saved block gcs-bucket/{RESULTS_BLOCK_NAME} → gs://{settings.gcs_bucket}/prefect-results/")


@app.command()
def benchmark(
    markets: Annotated[
        list[int] | None, typer.Option("--markets", "-m", help="Market counts to serve (repeatable).")
    ] = None,
    assets: Annotated[int, typer.Option(help="Assets to serve.")] = 3000,
    dbt: Annotated[bool, typer.Option("--dbt/--no-dbt", help="Also time the dbt build.")] = True,
) -> None:
    """Serve synthetic snapshots locally and report records/s, seconds per stage, credits and peak memory."""
    from flows.benchmark import machine, run_sizes

    sizes = markets or [10_000, 100_000]
    err.print(f"benchmarking {', '.join(f'{m:,}' for m in sizes)} markets + {assets:,} assets on {machine()}")
    results = run_sizes(sizes, assets, dbt)
    table = Table(title="locally served snapshot → lake → marts", title_justify="left")
    for name in ("markets", "assets", "records", "calls", "credits", "extract s", "records/min", "dbt s",
                 "RSS extract", "RSS total"):  # fmt: skip
        table.add_column(name, justify="right")
    for r in results:
        table.add_row(
            f"{r.markets:,}", f"{r.assets:,}", f"{r.records:,}", f"{r.calls:,}", f"{r.credits:,}",
            f"{r.extract_s:.2f}", f"{r.records_per_s * 60:,.0f}", "" if r.dbt_s is None else f"{r.dbt_s:.1f}",
            f"{r.peak_rss_extract_mib:,.0f} MiB", f"{r.peak_rss_mib:,.0f} MiB",
        )  # fmt: skip
    out.print(table)
    out.print("extract s = fetch + parse + validate every record + write Parquet, all four datasets, one process;")
    out.print("RSS extract = peak before dbt; RSS total = peak including the in-process dbt build.")
    out.print(f"machine: {machine()}")


def main() -> None:
    """Console-script entry point: one line per failure, with what to do, and a non-zero exit code."""
    # Prefect's local server phones home by default; offline that only prints an error. Users can override.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    try:
        app(prog_name="coincap-pipeline", standalone_mode=False)
    except PipelineError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        err.print("aborted")
        raise SystemExit(130) from None
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            raise SystemExit(exc.exit_code) from None
        if isinstance(exc, click.exceptions.Exit):
            raise SystemExit(exc.exit_code) from None
        raise


if __name__ == "__main__":
    main()
