"""The commands that write the data dir: `run`, `quality`, `backfill`, `stream` and `maintenance`.

Each takes the data dir's lock (flows/lake/lock.py) before Prefect is imported or started, so that a second run on
the same data dir is refused within a second; Prefect and the flows are imported inside the commands, after it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import typer
from rich.markup import escape
from rich.table import Table

from flows.cli.options import DataDirOpt, TargetOpt, load_settings
from flows.cli.output import err, json_logs, log, out
from flows.cli.prefect_server import tie_prefect_server
from flows.datasets import SNAPSHOT_DATASETS
from flows.errors import ConfigError
from flows.settings import DEFAULT_BASE_URL, Settings, Target, use_settings

DATASET_NAMES = SNAPSHOT_DATASETS


@contextlib.contextmanager
def _writing(settings: Settings, kind: Literal["pipeline", "backfill", "stream"], job: str) -> Iterator[None]:
    """Hold the data dir's `kind` lock (flows/lake/lock.py) for the command, as `job`.

    Taken before Prefect is imported or started, so that a second run on the same data dir says "another … is
    writing to …" within a second, not after Prefect's temporary server started (~20 s). The flow takes the same
    lock again for deployments; here it re-enters it, since Prefect 3 runs a sync flow in the caller's thread.
    """
    from flows.lake.lock import data_dir_lock

    with data_dir_lock(settings.data_dir, kind=kind, job=job):
        yield


@contextlib.contextmanager
def _demo_api(settings: Settings) -> Iterator[Settings]:
    """With no API key and the default base URL, replay bundled samples through a local CoinCap stand-in."""
    if settings.api_key_value or settings.api_base_url != DEFAULT_BASE_URL:
        yield settings
        return
    from flows.standin import Catalog, StubServer

    notice = (
        "running the offline demo on bundled sample responses (set COINCAP_API_KEY to fetch live data from CoinCap)."
    )
    if json_logs():
        log.warning("No COINCAP_API_KEY set: %s", notice)
    else:
        err.print(f"[yellow]No COINCAP_API_KEY set:[/] {notice}")
    with StubServer(Catalog.demo()) as server:
        yield settings.model_copy(update={"api_base_url": server.base_url})


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
    _check_snapshot_id(snapshot_id)
    settings = load_settings(data_dir=data_dir, target=target, api_base_url=base_url)
    with _writing(settings, "pipeline", "snapshot run"), _demo_api(settings) as effective:
        use_settings(effective)
        tie_prefect_server()
        from flows.snapshot import snapshot_flow

        summary = snapshot_flow(snapshot_id=snapshot_id, datasets=chosen, transform=transform)
    print_summary(summary)


def _check_snapshot_id(snapshot_id: str | None) -> None:
    """A real UTC time, not in the future, or one line and exit 2: before Prefect starts (the flow checks it too)."""
    if snapshot_id is not None:
        from flows.snapshot_id import Snapshot

        Snapshot.parse(snapshot_id)


def print_summary(summary: Any) -> None:
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
    quality = getattr(summary, "quality", None)
    if quality is not None:
        colour = "red" if not quality.ok else "yellow" if quality.warned else "green"
        out.print(f"quality:   [{colour}]{escape(quality.summary_line())}[/]", highlight=False)
        flagged = [*quality.failed, *quality.warned]
        for r in flagged[:10]:
            out.print(f"           {r.status} {r.check_name}: {r.detail}", markup=False, highlight=False)
        if len(flagged) > 10:
            out.print(f"           …and {len(flagged) - 10} more: coincap-pipeline quality", highlight=False)
    out.print("see:       coincap-pipeline dashboard   (the marts in your browser, http://127.0.0.1:8050)")
    out.print('query:     coincap-pipeline sql "select * from marts.fct_asset_daily limit 10"')


_STATUS_STYLE = {"pass": "green", "warn": "yellow", "fail": "red", "error": "red"}


def quality(
    snapshot_id: Annotated[
        str | None, typer.Option(help="Check this snapshot (e.g. 20261121T053000Z); default: each dataset's latest.")
    ] = None,
    categories: Annotated[
        list[str] | None,
        typer.Option(
            "--category",
            "-c",
            help="Only these (repeatable): completeness, freshness, validity, consistency, uniqueness, anomaly.",
        ),
    ] = None,
    store: Annotated[
        bool, typer.Option("--store/--no-store", help="Record the results in ops.dq_results (the health page).")
    ] = True,
    data_dir: DataDirOpt = None,
    target: TargetOpt = None,
) -> None:
    """Run the data-quality checks on the warehouse and print them; exit code 6 when a check fails.

    Warnings (flagged anomalies, a symbol shared by two assets, ...) are printed but do not fail.
    """
    from flows.errors import DataQualityError
    from flows.quality import run_checks

    _check_snapshot_id(snapshot_id)
    settings = load_settings(data_dir=data_dir, target=target)
    if settings.target is Target.local and not settings.duckdb_path.exists():
        # Checked here, not in run_checks: the watchdog flow reports an empty data dir as stale instead.
        raise ConfigError(f"No warehouse yet at {settings.duckdb_path}.", "Run `coincap-pipeline run` first.")
    chosen = set(categories) if categories else None
    # Checking writes the local warehouse (one writer at a time): the dbt tests store their failing rows, and the
    # results are stored unless --no-store. Not while a run writes it too.
    local_write = settings.target is Target.local
    with _writing(settings, "pipeline", "quality check") if local_write else contextlib.nullcontext():
        report = run_checks(settings, snapshot_id=snapshot_id, categories=chosen, store=store)
    where = f"snapshot {report.snapshot_id}" if report.snapshot_id else "each dataset's latest snapshot"
    table = Table(title=f"data quality, {where} (run {report.run_id})", title_justify="left")
    for name, justify in [("status", "left"), ("check", "left"), ("dataset", "left"), ("observed", "right"),
                          ("threshold", "right"), ("failing", "right"), ("detail", "left")]:  # fmt: skip
        table.add_column(name, justify=justify, overflow="fold", no_wrap=name == "check")  # type: ignore[arg-type]
    for r in report.results:
        table.add_row(
            f"[{_STATUS_STYLE[r.status]}]{r.status}[/]",
            r.check_name,
            r.dataset,
            "" if r.observed is None else f"{r.observed:,.4g}",
            "" if r.threshold is None else f"{r.threshold:,.4g}",
            "" if not r.failing_rows else f"{r.failing_rows:,}",
            escape(r.detail),
        )
    out.print(table)
    out.print(report.summary_line(), markup=False, highlight=False)
    if store:
        out.print(f"stored in ops.dq_results as run {report.run_id}", highlight=False)
    if not report.ok:
        failed = [r.check_name for r in report.failed]
        names = ", ".join(failed[:5]) + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
        raise DataQualityError(
            f"Data-quality checks failed: {names}.",
            "The detail column says what and where; the data stays in the warehouse, flagged. "
            "Fix the source or the pipeline, then re-run.",
        )


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

    settings = load_settings(data_dir=data_dir)
    try:
        first, last = (date.fromisoformat(d) if d else None for d in (start, end))
    except ValueError:
        raise ConfigError("--start and --end must look like 2024-01-31.", "Fix the date.") from None
    # One backfill per data dir (its own lock: snapshots go on), taken before Prefect is imported.
    writing = contextlib.nullcontext() if estimate_only else _writing(settings, "backfill", "backfill")
    with writing, _demo_api(settings) as effective:
        use_settings(effective)
        from flows.backfill import backfill_flow
        from flows.ingest.backfill_plan import estimate_backfill_credits
        from flows.lake.factory import lake_storage

        lake = lake_storage(effective) if assets else None  # a count of assets prices a fresh lake
        estimate = estimate_backfill_credits(assets or 2000, interval, first, last, storage=lake)
        out.print(f"estimate: {estimate.describe()}" + ("" if assets else " (for ~2,000 listed assets)"))
        if estimate_only:
            return
        tie_prefect_server()
        report = backfill_flow(assets=assets, interval=interval, start=first, end=last, max_credits=max_credits)
    out.print(report.summary())


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
            "Set it, or try `python -m flows.lab.stream_bench --seconds 30` against the local stand-in.",
        )
    wanted = [a.strip() for a in assets.split(",") if a.strip()]
    # One stream per data dir (its own lock: hourly snapshots go on beside it), taken before Prefect is imported.
    with _writing(settings, "stream", "price stream"):
        use_settings(settings)
        tie_prefect_server()
        from flows.stream import stream_flow

        summary = stream_flow(assets=wanted, batch_seconds=batch_seconds, max_minutes=minutes)
    out.print(summary)


def maintenance(data_dir: DataDirOpt = None, target: TargetOpt = None) -> None:
    """Compact the price stream and apply the retention policy (PIPELINE_GRANULAR_RETENTION_DAYS, default 365)."""
    settings = load_settings(data_dir=data_dir, target=target)
    with _writing(settings, "pipeline", "maintenance run"):  # it deletes lake objects and warehouse rows
        use_settings(settings)
        tie_prefect_server()
        from flows.maintenance import maintenance_flow

        report = maintenance_flow()
    out.print(
        f"kept granular data from {report.cutoff}; removed {len(report.objects_deleted):,} lake objects and "
        f"{sum(report.rows_deleted.values()):,} snapshot rows; daily aggregates kept; "
        f"{report.staging_files_removed:,} stale staged files removed"
    )
