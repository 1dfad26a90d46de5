"""`coincap-pipeline`: run the pipeline, query the warehouse, serve the local CoinCap stand-in.

The commands live by group: `pipeline` (run, quality, backfill, stream, maintenance: the ones that write the data
dir), `data` (sql, dashboard, benchmark) and `ops` (preflight, check-sql, plan-credits, prefect-blocks, automations,
looker-url). `output` holds the consoles that redact everything printed, `options` the shared flags and settings,
`prefect_server` the tie between Prefect's temporary server and this process. Importing this package imports
neither Prefect nor the flows: each command imports them inside, after its checks and its data-dir lock.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import traceback
from typing import Any

import typer
from rich.markup import escape

from flows.cli import data, ops, pipeline
from flows.cli.output import err, err_stream, json_logs, log, setup_logging
from flows.errors import PipelineError

__all__ = ["app", "main"]

app = typer.Typer(
    name="coincap-pipeline",
    help="CoinCap v3 market data -> validated Parquet lake -> dbt marts. "
    "Runs on your laptop by default (folder lake + DuckDB); set PIPELINE_TARGET=gcp for Google Cloud.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# In the order `--help` lists them.
app.command()(pipeline.run)
app.command()(data.sql)
app.command()(pipeline.quality)
app.command()(ops.preflight)
app.command("check-sql")(ops.check_sql)
app.command()(pipeline.backfill)
app.command()(pipeline.stream)
app.command()(pipeline.maintenance)
app.command("plan-credits")(ops.plan_credits)
app.command("prefect-blocks")(ops.prefect_blocks)
app.command()(data.benchmark)
app.command()(ops.automations)
app.command("looker-url")(ops.looker_url)
app.command()(data.dashboard)


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
            exc.show(file=err_stream)
        return
    if json_logs():  # the error as a log entry, so every stderr line stays JSON
        log.error("error: %s", message, extra={"exit_code": exc.exit_code})
    else:
        exc.show(file=err_stream)


def main() -> None:
    """Console-script entry point: one line per failure, with what to do, and a non-zero exit code."""
    # Prefect's local server phones home by default; offline that only prints an error. Users can override.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Without PREFECT_API_URL, Prefect starts a temporary local server, allowed 20 s by default: too short on a
    # busy laptop (the run then fails before it starts). Users can override.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    setup_logging()
    try:
        # Not standalone, so that our errors get one line; click's own failures are shown below instead.
        returned = app(prog_name="coincap-pipeline", standalone_mode=False)
    except PipelineError as exc:
        if json_logs():  # the error line as a log entry, so every stderr line stays JSON
            log.error("error: %s", exc, extra={"exit_code": exc.exit_code})
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
        if json_logs():
            log.error("error: %s", exc, exc_info=True, extra={"exit_code": 1})
        else:
            err_stream.write(traceback.format_exc())
        raise SystemExit(1) from None
    # Not standalone, click returns the code of a `ctx.exit(code)` (--help: 0; Ctrl-C: 130) instead of exiting.
    if isinstance(returned, int) and returned:
        raise SystemExit(returned)
