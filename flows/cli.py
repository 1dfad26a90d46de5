"""`coincap-pipeline`: run the pipeline, query the warehouse, serve the local CoinCap stand-in."""

from __future__ import annotations

import contextlib
import csv
import importlib
import json
import logging
import os
import subprocess
import sys
import traceback
import types
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from flows.datasets import SNAPSHOT_DATASETS
from flows.errors import ConfigError, PipelineError
from flows.ops.observability import redact
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


# ---- everything the CLI prints goes through `redact` --------------------------------------------------------
#
# A key or a webhook URL can end up in an error message, a quality check's detail, a summary or a query's result;
# none of it is printed. Strings, Text and table cells are redacted before rich lays them out (a key that a table
# column folds over two lines would not match afterwards), and every write to stdout or stderr once more (for
# renderables made of something else, and for what is written without rich: CSV, JSON, URLs, usage errors).


class _RedactedStream:
    """sys.stdout or sys.stderr (looked up at each write, so that captures and test runners still see the output),
    with `redact` applied to everything written. Not an io.IOBase: nothing to close or flush at exit."""

    def __init__(self, name: Literal["stdout", "stderr"]) -> None:
        self._name = name

    @property
    def _stream(self) -> Any:
        return getattr(sys, self._name)

    def write(self, text: str) -> int:
        self._stream.write(redact(text))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return bool(getattr(self._stream, "isatty", lambda: False)())

    def fileno(self) -> int:
        return int(self._stream.fileno())

    @property
    def encoding(self) -> str:
        return getattr(self._stream, "encoding", None) or "utf-8"


def _redacted(renderable: Any) -> Any:
    """`renderable` with `redact` applied to its text before layout: strings, Text, and a table's title, caption,
    headers and cells (other renderables are redacted as written)."""
    if isinstance(renderable, str):
        return redact(renderable)
    if isinstance(renderable, Text):
        plain = redact(renderable.plain)
        if plain == renderable.plain:
            return renderable
        return Text(plain, style=renderable.style, justify=renderable.justify, overflow=renderable.overflow,
                    no_wrap=renderable.no_wrap, end=renderable.end)  # fmt: skip
    if isinstance(renderable, Table):
        renderable.title, renderable.caption = _redacted(renderable.title), _redacted(renderable.caption)
        for column in renderable.columns:
            column.header, column.footer = _redacted(column.header), _redacted(column.footer)
            cells = getattr(column, "_cells", None)  # rich keeps a column's cells there (no public setter)
            if isinstance(cells, list):
                cells[:] = [_redacted(cell) for cell in cells]
    return renderable


class _RedactedConsole(Console):
    """rich's Console whose `print` redacts what it is given, writing to a `_RedactedStream`."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*(_redacted(o) for o in objects), **kwargs)


_stdout = _RedactedStream("stdout")
_stderr = _RedactedStream("stderr")
# Rich falls back to 80 columns when piped; the summary table needs more to stay readable in CI logs.
out = _RedactedConsole(file=_stdout, width=None if sys.stdout.isatty() else 120)
err = _RedactedConsole(file=_stderr, width=None if sys.stderr.isatty() else 120)

DATASET_NAMES = SNAPSHOT_DATASETS


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
def _writing(settings: Settings, kind: Literal["pipeline", "backfill", "stream"], job: str) -> Iterator[None]:
    """Hold the data dir's `kind` lock (flows/lake/lock.py) for the command, as `job`.

    Taken before Prefect is imported or started, so that a second run on the same data dir says "another … is
    writing to …" within a second, not after Prefect's temporary server started (~20 s). The flow takes the same
    lock again for deployments; here it re-enters it, since Prefect 3 runs a sync flow in the caller's thread.
    """
    from flows.lake.lock import data_dir_lock

    with data_dir_lock(settings.data_dir, kind=kind, job=job):
        yield


# Run by Prefect's temporary API server process instead of `python -m uvicorn …` (see `_tie_prefect_server`):
# argv is `<parent pid> -m uvicorn <uvicorn's arguments>`. A thread waits for the parent to exit (a pidfd, else
# polling getppid) and then shuts the server down as `stop()` does (SIGTERM), exiting for good 5 s later.
_EXIT_WITH_PARENT = """\
# coincap-pipeline: Prefect's temporary server, which exits with the process that started it
import os, runpy, select, signal, sys, threading, time
_, parent, _, module, *args = sys.argv
parent = int(parent)

def watch():
    if os.getppid() == parent:
        try:
            pidfd = os.pidfd_open(parent)
        except (AttributeError, OSError):
            pidfd = None
        if pidfd is not None and os.getppid() == parent:
            poll = select.poll()
            poll.register(pidfd, select.POLLIN)
            poll.poll()
        while os.getppid() == parent:
            time.sleep(0.1)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
    os._exit(1)

threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
sys.argv = [module, *args]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def _exit_with_us(args: Any) -> Any:
    """`python -m uvicorn …` as a command that exits when this process does; any other command unchanged."""
    if isinstance(args, list | tuple) and len(args) > 2 and list(args[1:3]) == ["-m", "uvicorn"]:
        return [args[0], "-c", _EXIT_WITH_PARENT, str(os.getpid()), *args[1:]]
    return args


class _TiedPopen(subprocess.Popen):  # type: ignore[type-arg]
    def __init__(self, args: Any, *rest: Any, **kwargs: Any) -> None:
        super().__init__(_exit_with_us(args), *rest, **kwargs)


class _TiedSubprocess(types.ModuleType):
    """`subprocess` as Prefect's server module sees it: the same, but its server process exits with ours."""

    Popen = _TiedPopen

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)


def _tie_prefect_server() -> None:
    """Without PREFECT_API_URL, Prefect starts a temporary API server (uvicorn) as a child process and stops it at
    exit; a `kill -9` of the CLI skips that, and the server would run on, orphaned. On Linux, start it under
    `_EXIT_WITH_PARENT` instead, so that it exits when this process does, however it ends. A no-op elsewhere
    (macOS) and when an API URL is set (no temporary server). Call before the first Prefect client is made.

    Not PR_SET_PDEATHSIG: the kernel sends it when the *thread* that started the child exits (Prefect may start
    its server from a worker thread), and setting it needs a preexec_fn, which is not safe with threads running.
    """
    if sys.platform != "linux":
        return
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        return
    import prefect.server.api.server as prefect_server  # imported by Prefect anyway to start the server

    if not isinstance(prefect_server.subprocess, _TiedSubprocess):
        prefect_server.subprocess = _TiedSubprocess("subprocess")


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
    if _json_logs():
        logging.getLogger("flows.cli").warning("No COINCAP_API_KEY set: %s", notice)
    else:
        err.print(f"[yellow]No COINCAP_API_KEY set:[/] {notice}")
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
    _check_snapshot_id(snapshot_id)
    settings = load_settings(data_dir=data_dir, target=target, api_base_url=base_url)
    with _writing(settings, "pipeline", "snapshot run"), _demo_api(settings) as effective:
        use_settings(effective)
        _tie_prefect_server()
        from flows.snapshot import snapshot_flow

        summary = snapshot_flow(snapshot_id=snapshot_id, datasets=chosen, transform=transform)
    _print_summary(summary)


def _check_snapshot_id(snapshot_id: str | None) -> None:
    """A real UTC time, not in the future, or one line and exit 2: before Prefect starts (the flow checks it too)."""
    if snapshot_id is not None:
        from flows.snapshot_id import Snapshot

        Snapshot.parse(snapshot_id)


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
        writer = csv.writer(_stdout)
        writer.writerow(names)
        writer.writerows(rows)
    elif fmt is OutputFormat.json:
        _stdout.write(json.dumps([dict(zip(names, r, strict=True)) for r in rows], default=str, indent=1) + "\n")
    else:
        table = Table(*names)
        for row in rows[:limit]:
            table.add_row(*("" if v is None else str(v) for v in row))
        out.print(table)
        more = f", showing {limit}" if len(rows) > limit else ""
        out.print(f"{len(rows):,} row{'s' if len(rows) != 1 else ''}{more}")


_STATUS_STYLE = {"pass": "green", "warn": "yellow", "fail": "red", "error": "red"}


@app.command()
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
    # Storing the results writes the local warehouse (one writer at a time): not while a run writes it too.
    local_write = store and settings.target is Target.local
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


@app.command()
def preflight(data_dir: DataDirOpt = None) -> None:
    """Check that everything the gcp target needs exists and is reachable, and dry-run the marts' SQL.

    Prints one line per problem with how to fix it; exits non-zero when there is any.
    """
    from google.auth.exceptions import DefaultCredentialsError

    from flows.ops.preflight import problems, run_preflight

    settings = load_settings(data_dir=data_dir, target=Target.gcp)
    _tie_prefect_server()  # the results-block check asks Prefect's API
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


@app.command("check-sql")
def check_sql(
    dump: Annotated[
        Path | None, typer.Option("--dump", help="Write each analyzed statement to DIR/<kind>/<name>.sql.")
    ] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Analyze every statement BigQuery will run with Google's ZetaSQL analyzer: offline, no credentials.

    Models (first build and incremental), data tests, preflight's dry runs, data-quality queries, the Looker
    report's queries and the README's gcp examples. One line per rejected statement; exits 7 when there is any.
    """
    from flows.errors import SqlCheckError
    from flows.ops.sql_check.check import check_sql as run_check

    settings = load_settings(data_dir=data_dir, target=Target.gcp)
    report = run_check(settings, dump_dir=dump, progress=lambda line: err.print(f"[dim]{line}[/]", highlight=False))
    for problem in report.problems:
        out.print(f"[red]rejected[/] {escape(problem.line())}", highlight=False, soft_wrap=True)
    out.print(report.summary(), highlight=False, soft_wrap=True)
    if dump is not None:
        out.print(f"statements written to {dump}/<kind>/<name>.sql (order.txt lists them in order)", highlight=False)
    if not report.ok:
        n = len(report.problems)
        raise SqlCheckError(
            f"Google's SQL analyzer rejected {n} statement{'s' if n > 1 else ''} BigQuery would run.",
            "Fix the model or query named above (`--dump DIR` shows each statement as analyzed), then re-run.",
        )


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

    settings = load_settings(data_dir=data_dir)
    try:
        first, last = (date.fromisoformat(d) if d else None for d in (start, end))
    except ValueError:
        raise ConfigError("--start and --end must look like 2024-01-31.", "Fix the date.") from None
    # One backfill per data dir (its own lock: snapshots go on), taken before Prefect is imported.
    writing = contextlib.nullcontext() if estimate_only else _writing(settings, "backfill", "backfill")
    with writing, _demo_api(settings) as effective:
        use_settings(effective)
        from flows.backfill import backfill_flow, estimate_backfill_credits

        estimate = estimate_backfill_credits(effective, assets or 2000, interval, first, last)
        out.print(f"estimate: {estimate.describe()}" + ("" if assets else " (for ~2,000 listed assets)"))
        if estimate_only:
            return
        _tie_prefect_server()
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
            "Set it, or try `python -m flows.lab.stream_bench --seconds 30` against the local stand-in.",
        )
    wanted = [a.strip() for a in assets.split(",") if a.strip()]
    # One stream per data dir (its own lock: hourly snapshots go on beside it), taken before Prefect is imported.
    with _writing(settings, "stream", "price stream"):
        use_settings(settings)
        _tie_prefect_server()
        from flows.stream import stream_flow

        summary = stream_flow(assets=wanted, batch_seconds=batch_seconds, max_minutes=minutes)
    out.print(summary)


@app.command()
def maintenance(data_dir: DataDirOpt = None, target: TargetOpt = None) -> None:
    """Compact the price stream and apply the retention policy (PIPELINE_GRANULAR_RETENTION_DAYS, default 365)."""
    settings = load_settings(data_dir=data_dir, target=target)
    with _writing(settings, "pipeline", "maintenance run"):  # it deletes lake objects and warehouse rows
        use_settings(settings)
        _tie_prefect_server()
        from flows.maintenance import maintenance_flow

        report = maintenance_flow()
    out.print(
        f"kept granular data from {report.cutoff}; removed {len(report.objects_deleted):,} lake objects and "
        f"{sum(report.rows_deleted.values()):,} snapshot rows; daily aggregates kept; "
        f"{report.staging_files_removed:,} stale staged files removed"
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
    from flows.ops.credit_plan import PLANS, measured_from_runs, measured_runs_sql, plan, smallest_plan
    from flows.warehouse.factory import warehouse

    settings = load_settings(data_dir=data_dir, target=target)
    if not prefect_file.exists():
        raise ConfigError(
            f"No deployments file at {prefect_file}.", "Run from the repository root or pass --prefect-file."
        )
    measured: dict[str, float] = {}
    with contextlib.suppress(PipelineError):
        _, rows = warehouse(settings).query(measured_runs_sql(settings))
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

    from flows.ops.preflight import RESULTS_BLOCK_NAME

    settings = load_settings(target=Target.gcp)
    if not settings.gcs_bucket or not settings.gcp_project:
        raise ConfigError(
            "GCS_BUCKET and GCP_PROJECT_ID must be set.", "Export them from `terraform output pipeline_env`."
        )
    _tie_prefect_server()
    block = GcsBucket(
        bucket=settings.gcs_bucket,
        bucket_folder="prefect-results",  # expires with the bucket's prefect-results/ lifecycle rule
        gcp_credentials=GcpCredentials(project=settings.gcp_project),
    )
    block.save(RESULTS_BLOCK_NAME, overwrite=True)
    out.print(f"saved block gcs-bucket/{RESULTS_BLOCK_NAME} → gs://{settings.gcs_bucket}/prefect-results/")


@app.command()
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
    _stdout.write(bench.markdown_table(report) + "\n")
    for line in bench.summary_lines(report):
        _stdout.write(line + "\n")
    if json_path is not None:
        bench.write_json(report, json_path)
        err.print(f"wrote {json_path}", highlight=False, soft_wrap=True)
    if plot_path is not None:
        bench.write_svg(report, plot_path)
        err.print(f"wrote {plot_path}", highlight=False, soft_wrap=True)


@app.command()
def automations(
    apply: Annotated[
        bool, typer.Option("--apply", help="Create or update them (and the notification block) in Prefect.")
    ] = False,
    file: Annotated[Path, typer.Option("--file", help="Automations as code.")] = Path("deployments/automations.yaml"),
) -> None:
    """Prefect automations as code: failed runs, an overdue snapshot, failed data-quality checks.

    Without --apply, checks the file against Prefect's models and prints it. With --apply, saves the
    notification block `coincap-alerts` from PIPELINE_ALERT_WEBHOOK_URL and creates or updates each automation
    by name in the server or workspace of PREFECT_API_URL (idempotent).
    """
    from flows.ops.alerts import apply_automations, load_automations

    settings = load_settings()
    models = load_automations(file)
    table = Table(title=f"automations in {file}", title_justify="left")
    for name in ("name", "when", "then"):
        table.add_column(name)
    for model in models:
        trigger: Any = model.trigger
        events = ", ".join(sorted(getattr(trigger, "expect", ())))
        posture = getattr(trigger, "posture", None)
        if getattr(posture, "value", posture) == "Proactive":
            when = f"no {events} within {trigger.within}"
        else:
            when = f"{trigger.threshold} × {events}"
        table.add_row(model.name, when, ", ".join(a.type for a in model.actions))
    out.print(table)
    if not apply:
        out.print(f"{len(models)} automations valid; apply them with `coincap-pipeline automations --apply`.")
        return
    _tie_prefect_server()
    for result in apply_automations(settings, file):
        out.print(f"{result.action:>9}  {result.name}  ({result.id})")


def _setup_logging() -> None:
    """Redact secrets from logs; JSON lines on stderr with PIPELINE_LOG_FORMAT=json (bad settings: the command says)."""
    try:
        settings = Settings()
    except ValidationError:
        settings = None
    from flows.ops.observability import configure_logging

    configure_logging(settings)


def _json_logs() -> bool:
    from flows.ops.observability import JsonLinesHandler

    return any(isinstance(h, JsonLinesHandler) for h in logging.getLogger().handlers)


@app.command("looker-url")
def looker_url(
    project: Annotated[
        str | None, typer.Option("--project", help="Project of the marts (default: GCP_PROJECT_ID).")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="Dataset of the rpt_* marts (default: BQ_DATASET_PREFIX + marts).")
    ] = None,
    billing_project: Annotated[
        str | None, typer.Option("--billing-project", help="Project billed for the queries (default: --project).")
    ] = None,
    template_report_id: Annotated[
        str | None,
        typer.Option("--template-report-id", help="Template report id or URL (default: looker/report.yaml)."),
    ] = None,
    report_name: Annotated[str | None, typer.Option("--report-name", help="Name of the new report.")] = None,
    definition: Annotated[Path | None, typer.Option("--definition", help="Report definition (report.yaml).")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Show Looker Studio's debug dialog.")] = False,
) -> None:
    """Print the Looker Studio Linking API URL that copies the report onto your project's rpt_* marts.

    Open it in a browser signed in to Google, check the report, then "Edit and share" saves your copy.
    The URL alone goes to stdout; what each data source points at goes to stderr.
    """
    from flows.ops.looker import DEFINITION, check_tables_are_models, link_target, linking_url, load_report
    from flows.warehouse.dbt import dbt_project_dir

    settings = load_settings()
    report = load_report(definition or DEFINITION)
    check_tables_are_models(report, dbt_project_dir(settings) / "models" / "reports")
    target = link_target(settings, project=project, dataset=dataset, billing_project=billing_project)
    url = linking_url(report, target, template_report_id=template_report_id, report_name=report_name, explain=explain)
    for ds in report.data_sources:
        partitioned = ", partitioned by " + ds.date_range_dimension if ds.partitioned else ""
        err.print(f"{ds.alias:>10} → {target.project}.{target.dataset}.{ds.table}{partitioned}", highlight=False)
    _stdout.write(url + "\n")  # not through rich: it would wrap the URL


@app.command()
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


def _click_classes(name: str) -> tuple[type[Exception], ...]:
    """`name` from the click that typer runs on (typer bundles its own as `typer._click`) and from click itself."""
    found: list[type[Exception]] = []
    for module in ("typer._click.exceptions", "typer.exceptions", "click.exceptions"):
        with contextlib.suppress(ImportError):
            cls = getattr(importlib.import_module(module), name, None)
            if isinstance(cls, type) and issubclass(cls, BaseException) and cls not in found:
                found.append(cls)
    return tuple(found)


_CLICK_ERRORS = _click_classes("ClickException")  # usage errors (UsageError, NoSuchOption, BadParameter...)
_CLICK_EXITS = _click_classes("Exit")


def _show_usage_error(exc: Any) -> None:
    """What click shows in standalone mode: usage, a hint and the error (a bare command: the help, printed already
    by typer's rich help when there is one)."""
    message = exc.format_message().strip()
    if type(exc).__name__ == "NoArgsIsHelpError":
        if message:
            exc.show(file=_stderr)
        return
    if _json_logs():  # the error as a log entry, so every stderr line stays JSON
        logging.getLogger("flows.cli").error("error: %s", message, extra={"exit_code": exc.exit_code})
    else:
        exc.show(file=_stderr)


def main() -> None:
    """Console-script entry point: one line per failure, with what to do, and a non-zero exit code."""
    # Prefect's local server phones home by default; offline that only prints an error. Users can override.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Without PREFECT_API_URL, Prefect starts a temporary local server, allowed 20 s by default: too short on a
    # busy laptop (the run then fails before it starts). Users can override.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    _setup_logging()
    try:
        # Not standalone, so that our errors get one line; click's own failures are shown below instead.
        returned = app(prog_name="coincap-pipeline", standalone_mode=False)
    except PipelineError as exc:
        if _json_logs():  # the error line as a log entry, so every stderr line stays JSON
            logging.getLogger("flows.cli").error("error: %s", exc, extra={"exit_code": exc.exit_code})
        else:
            err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        err.print("aborted")
        raise SystemExit(130) from None
    except _CLICK_ERRORS as exc:  # usage errors: click's short usage message, exit 2
        _show_usage_error(exc)
        raise SystemExit(exc.exit_code) from None
    except _CLICK_EXITS as exc:
        raise SystemExit(exc.exit_code) from None
    except Exception as exc:  # a bug: its traceback as Python prints it, but redacted like everything else
        if _json_logs():
            logging.getLogger("flows.cli").error("error: %s", exc, exc_info=True, extra={"exit_code": 1})
        else:
            _stderr.write(traceback.format_exc())
        raise SystemExit(1) from None
    # Not standalone, click returns the code of a `ctx.exit(code)` (--help: 0; Ctrl-C: 130) instead of exiting.
    if isinstance(returned, int) and returned:
        raise SystemExit(returned)


if __name__ == "__main__":
    main()
