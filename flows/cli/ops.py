"""The operator's commands: `preflight`, `check-sql`, `plan-credits`, `prefect-blocks`, `automations` and
`looker-url` (readiness of the gcp target, the SQL BigQuery will run, the credit bill, Prefect, Looker Studio)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from flows.cli.options import DataDirOpt, TargetOpt, load_settings
from flows.cli.output import err, out, out_stream
from flows.cli.prefect_server import tie_prefect_server
from flows.errors import ConfigError, PipelineError
from flows.settings import Target


def preflight(data_dir: DataDirOpt = None) -> None:
    """Check that everything the gcp target needs exists and is reachable, and dry-run the marts' SQL.

    Prints one line per problem with how to fix it; exits non-zero when there is any.
    """
    from google.auth.exceptions import DefaultCredentialsError

    from flows.ops.preflight import problems, run_preflight
    from flows.orchestration.preflight import read_block, read_work_pool

    settings = load_settings(data_dir=data_dir, target=Target.gcp)
    tie_prefect_server()  # the results-block check asks Prefect's API
    try:
        findings = run_preflight(settings, read_work_pool=read_work_pool, read_block=read_block)
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
    tie_prefect_server()
    block = GcsBucket(
        bucket=settings.gcs_bucket,
        bucket_folder="prefect-results",  # expires with the bucket's prefect-results/ lifecycle rule
        gcp_credentials=GcpCredentials(project=settings.gcp_project),
    )
    block.save(RESULTS_BLOCK_NAME, overwrite=True)
    out.print(f"saved block gcs-bucket/{RESULTS_BLOCK_NAME} → gs://{settings.gcs_bucket}/prefect-results/")


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
    from flows.orchestration.automations import apply_automations, load_automations

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
    tie_prefect_server()
    for result in apply_automations(settings, file):
        out.print(f"{result.action:>9}  {result.name}  ({result.id})")


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
    out_stream.write(url + "\n")  # not through rich: it would wrap the URL
