"""Preflight for the gcp target: does everything the pipeline needs exist, and can these credentials reach it?

Each check returns findings; a problem is one line saying what is missing and how to fix it. Clients are
injectable so the checks run against local stand-ins (fake-gcs-server, the BigQuery emulator, a local Prefect
server) exactly as they run against Google Cloud. Prefect is asked through two readers the caller passes
(`flows.orchestration.preflight` has the ones that ask the configured Prefect API), so nothing here imports it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flows.settings import Settings, Target, clean_api_key
from flows.warehouse.dbt import LAYERS, models_in_order

TERRAFORM = "run `terraform apply` in terraform/envs/prod"
RESULTS_BLOCK_TYPE, RESULTS_BLOCK_NAME = "gcs-bucket", "coincap-results"  # prefect.yaml names it

WorkPoolReader = Callable[[str], Any]
"""Reads a Prefect work pool by name; raises LookupError when there is none."""
BlockReader = Callable[[str, str], Any]
"""Reads a Prefect block document by block type slug and name; raises LookupError when there is none."""


@dataclass(frozen=True)
class Finding:
    """One check's outcome: `ok`, what was found, and (when not ok) how to fix it."""

    check: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.check}: {self.detail}" + (f". Fix: {self.fix}." if self.fix and not self.ok else "")


def _problem(check: str, detail: str, fix: str) -> Finding:
    return Finding(check, False, detail, fix)


def check_settings(settings: Settings) -> list[Finding]:
    """The configuration the gcp target cannot run without."""
    findings = []
    if settings.target is not Target.gcp:
        findings.append(_problem("target", f"PIPELINE_TARGET is {settings.target.value}", "set PIPELINE_TARGET=gcp"))
    for name, value in (("GCP_PROJECT_ID", settings.gcp_project), ("GCS_BUCKET", settings.gcs_bucket)):
        if not value:
            findings.append(_problem("settings", f"{name} is not set", f"set {name} (a Terraform output)"))
    if not findings:
        findings.append(Finding("settings", True, f"project {settings.gcp_project}, bucket {settings.gcs_bucket}"))
    return findings


def check_bucket(settings: Settings, client: Any) -> list[Finding]:
    """The lake bucket exists and these credentials can list and write objects in it."""
    from google.api_core import exceptions as gexc

    name = settings.gcs_bucket
    try:
        bucket = client.lookup_bucket(name)
        if bucket is None:
            return [_problem("bucket", f"gs://{name} does not exist", f"{TERRAFORM}, or set GCS_BUCKET")]
        list(client.list_blobs(name, max_results=1))
    except gexc.Forbidden:
        return [_problem("bucket", f"no access to gs://{name}",
                         "grant roles/storage.objectAdmin on the bucket to the runtime service account")]  # fmt: skip
    except gexc.GoogleAPICallError as exc:
        return [_problem("bucket", f"gs://{name} unreachable ({_short(exc)})", "check credentials and network")]
    return [Finding("bucket", True, f"gs://{name} reachable")]


def check_datasets(settings: Settings, client: Any) -> list[Finding]:
    """The four BigQuery datasets exist."""
    from google.api_core import exceptions as gexc

    findings = []
    for layer in LAYERS:
        dataset = f"{settings.gcp_project}.{settings.bq_dataset(layer)}"
        try:
            client.get_dataset(dataset)
            findings.append(Finding("dataset", True, f"{dataset} exists"))
        except gexc.NotFound:
            findings.append(_problem("dataset", f"BigQuery dataset {dataset} is missing", TERRAFORM))
        except gexc.Forbidden:
            fix = "grant roles/bigquery.dataEditor on it to the runtime service account"
            findings.append(_problem("dataset", f"no access to {dataset}", fix))
    return findings


def check_external_tables(settings: Settings, client: Any) -> list[Finding]:
    """One external table per lake dataset over the bucket (the four snapshot datasets, the price stream, the
    price history), with the columns of its files."""
    from google.api_core import exceptions as gexc

    from flows.contracts.bigquery import lake_tables

    findings = []
    for name, schema in lake_tables().items():
        table_id = f"{settings.gcp_project}.{settings.bq_dataset('raw')}.{name}"
        try:
            table = client.get_table(table_id)
        except gexc.NotFound:
            findings.append(_problem("external table", f"{table_id} is missing", TERRAFORM))
            continue
        except gexc.GoogleAPICallError as exc:
            findings.append(_problem("external table", f"{table_id}: {_short(exc)}", "check credentials"))
            continue
        columns = {field.name for field in table.schema or []}
        missing = [c for c in schema.names if c not in columns]
        if missing:
            findings.append(_problem("external table", f"{table_id} lacks columns {', '.join(missing)}",
                                     f"{TERRAFORM} (its schemas come from the contracts)"))  # fmt: skip
        else:
            findings.append(Finding("external table", True, f"{table_id} matches the {name} files"))
    return findings


def check_secret(settings: Settings, client: Any) -> list[Finding]:
    """The CoinCap key secret exists and has a value (set out of band).

    Reads the latest version, which needs only roles/secretmanager.secretAccessor (what the runtime account
    holds); the value itself is never printed or kept.
    """
    from google.api_core import exceptions as gexc

    secret = settings.api_key_secret
    add_value = (
        f"{TERRAFORM} if the secret is missing, then "
        f'printf %s "$COINCAP_API_KEY" | gcloud secrets versions add {secret} --data-file=-'
    )
    try:
        version = client.access_secret_version(name=f"projects/{settings.gcp_project}/secrets/{secret}/versions/latest")
    except (gexc.NotFound, gexc.FailedPrecondition):
        return [_problem("secret", f"secret {secret} is missing or has no value yet", add_value)]
    except gexc.PermissionDenied:
        return [_problem("secret", f"no access to secret {secret}",
                         "grant roles/secretmanager.secretAccessor on it to the runtime service account")]  # fmt: skip
    except gexc.GoogleAPICallError as exc:
        return [_problem("secret", f"secret {secret}: {_short(exc)}", "check credentials and network")]
    problem, note = _key_problem(_payload(version))
    if problem:
        return [_problem("secret", f"secret {secret}'s latest version {problem}", add_value)]
    return [Finding("secret", True, f"{secret} has a value" + (f" ({note})" if note else ""))]


def _payload(version: Any) -> bytes:
    """The bytes of an AccessSecretVersionResponse (or of the dict a test stand-in answers)."""
    payload = version.get("payload") if isinstance(version, dict) else getattr(version, "payload", None)
    data = payload.get("data") if isinstance(payload, dict) else getattr(payload, "data", b"")
    return data if isinstance(data, bytes) else b""


def _key_problem(data: bytes) -> tuple[str | None, str | None]:
    """What is wrong with a stored key, and what is worth a note, in words that never quote it."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "is not UTF-8 text", None
    try:
        key = clean_api_key(text)
    except ValueError as exc:
        return f"is refused: {exc}", None
    if key is None:
        return "is empty", None
    if key != text:
        return None, "with whitespace around it, a trailing newline?, which runs strip; store it without"
    return None, None


def check_work_pool(settings: Settings, read_work_pool: WorkPoolReader) -> list[Finding]:
    """The Prefect work pool the deployments target exists on the configured Prefect API."""
    try:
        pool = read_work_pool(settings.work_pool)
    except LookupError:
        return [_problem("work pool", f"Prefect work pool {settings.work_pool} is missing",
                         f"{TERRAFORM} (it creates the pool), or set PIPELINE_WORK_POOL")]  # fmt: skip
    except Exception as exc:  # an unreachable Prefect API has many shapes
        return [_problem("work pool", f"Prefect API unreachable ({_short(exc)})",
                         "run `prefect cloud login` or set PREFECT_API_URL")]  # fmt: skip
    kind = getattr(pool, "type", "?")
    return [Finding("work pool", True, f"{settings.work_pool} ({kind})")]


def check_results_block(read_block: BlockReader) -> list[Finding]:
    """The Prefect block the gcp deployments persist results to (without it every run fails at start)."""
    slug = f"{RESULTS_BLOCK_TYPE}/{RESULTS_BLOCK_NAME}"
    try:
        read_block(RESULTS_BLOCK_TYPE, RESULTS_BLOCK_NAME)
    except LookupError:
        return [_problem("results block", f"Prefect block {slug} is missing", "run `coincap-pipeline prefect-blocks`")]
    except Exception as exc:
        return [_problem("results block", f"Prefect API unreachable ({_short(exc)})",
                         "run `prefect cloud login` or set PREFECT_API_URL")]  # fmt: skip
    return [Finding("results block", True, f"{slug} exists")]


def check_marts_sql(
    settings: Settings, client: Any, statements: dict[str, str], relations: dict[str, str] | None = None
) -> list[Finding]:
    """Dry-run every model's compiled SQL: it must parse, and every table it reads must be reachable.

    A model that reads a table the first dbt build creates cannot be dry-run yet: Google's SQL analyzer checks it
    offline instead (`flows.ops.sql_check`), against the raw and ops tables plus every model before it in
    `statements` (dependency order), each created at `relations[name]` (`project.dataset.table`).
    """
    from google.api_core import exceptions as gexc
    from google.cloud import bigquery

    if not statements:
        return [_problem("marts SQL", "no compiled models found", "run `coincap-pipeline preflight` from a checkout")]
    findings = []
    total = 0
    waiting = []
    built_by_dbt = (settings.bq_dataset("staging"), settings.bq_dataset("marts"))
    config = bigquery.QueryJobConfig(dry_run=True, use_query_cache=False)
    for model, sql in sorted(statements.items()):
        try:
            job = client.query(sql, job_config=config)
            total += job.total_bytes_processed or 0
        except gexc.GoogleAPICallError as exc:
            text = str(exc)
            missing = "Not found" in text or isinstance(exc, gexc.NotFound)
            if missing and any(f"{dataset}." in text or f"{dataset}:" in text for dataset in built_by_dbt):
                waiting.append(model)  # reads a table the first dbt build creates: analyzed offline below
                continue
            fix = "create what it reads (`terraform apply`) or fix the model"
            findings.append(_problem("marts SQL", f"{model} does not dry-run ({_short(exc)})", fix))
    rejected = analyze_offline(settings, statements, relations or {}) if waiting else {}
    for model in waiting:
        if rejected.get(model):
            fix = "fix the model (`coincap-pipeline check-sql` checks every statement offline)"
            findings.append(_problem("marts SQL", f"{model} fails Google's SQL analyzer ({rejected[model]})", fix))
    if not findings:
        ran = len(statements) - len(waiting)
        note = f"; {len(waiting)} wait for the first dbt build and pass the SQL analyzer" if waiting else ""
        findings.append(Finding("marts SQL", True, f"{ran} models dry-run, {total / 1e9:.2f} GB to scan{note}"))
    return findings


def analyze_offline(settings: Settings, statements: dict[str, str], relations: dict[str, str]) -> dict[str, str]:
    """Analyze each model's SELECT, in order, with ZetaSQL; a model with a relation becomes a view there, so the
    models after it resolve its columns. Returns the analyzer's message per rejected model."""
    from flows.ops.sql_check.analyzer import SqlAnalyzer, bigquery_aliases
    from flows.ops.sql_check.check import cache_dir, raw_catalog

    analyzer = SqlAnalyzer(raw_catalog(settings), cache_dir=cache_dir(settings))
    rejected: dict[str, str] = {}
    try:
        for model, sql in statements.items():
            relation = relations.get(model)
            statement = f"create or replace view {relation} as (\n{sql}\n)" if relation else sql
            outcome = analyzer.analyze(bigquery_aliases(statement))
            if outcome.error:
                rejected[model] = outcome.error
    finally:
        analyzer.close()
    return rejected


def compiled_marts(settings: Settings) -> tuple[dict[str, str], dict[str, str]]:
    """Compile the dbt project for the gcp target (needs credentials): each model's SQL, in dependency order,
    and the relation (`project`.`dataset`.`table`) each model builds."""
    from flows.warehouse.dbt import run_dbt

    run_dbt(settings, "compile", "--select", "staging", "intermediate", "marts", "reports")
    manifest = settings.data_dir.resolve() / "dbt" / "target" / "manifest.json"
    return models_in_order(json.loads(Path(manifest).read_text()))


def run_preflight(
    settings: Settings,
    *,
    storage_client: Any = None,
    bigquery_client: Any = None,
    secret_client: Any = None,
    read_work_pool: WorkPoolReader,
    read_block: BlockReader,
    statements: dict[str, str] | None = None,
    relations: dict[str, str] | None = None,
) -> list[Finding]:
    """Every check, in dependency order; later checks are skipped when settings are missing.

    `read_work_pool` and `read_block` ask Prefect (`flows.orchestration.preflight`'s readers ask its API)."""
    findings = check_settings(settings)
    if not settings.gcp_project or not settings.gcs_bucket:
        return findings
    storage_client = storage_client or _storage_client(settings)
    bigquery_client = bigquery_client or _bigquery_client(settings)
    findings += check_bucket(settings, storage_client)
    datasets = check_datasets(settings, bigquery_client)
    findings += datasets
    if all(f.ok for f in datasets if settings.bq_dataset("raw") in f.detail):
        findings += check_external_tables(settings, bigquery_client)
    findings += check_secret(settings, secret_client or _secret_client())
    findings += check_work_pool(settings, read_work_pool)
    findings += check_results_block(read_block)
    if all(f.ok for f in findings):
        if statements is None:
            statements, relations = compiled_marts(settings)
        findings += check_marts_sql(settings, bigquery_client, statements, relations)
    return findings


def problems(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if not f.ok]


def _storage_client(settings: Settings) -> Any:
    from google.cloud import storage

    return storage.Client(project=settings.gcp_project)


def _bigquery_client(settings: Settings) -> Any:
    from google.cloud import bigquery

    if settings.bq_api_endpoint:
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials

        return bigquery.Client(
            project=settings.gcp_project,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=settings.bq_api_endpoint),
        )
    return bigquery.Client(project=settings.gcp_project, location=settings.bq_location)


def _secret_client() -> Any:
    from google.cloud import secretmanager

    return secretmanager.SecretManagerServiceClient()


def _short(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return text.splitlines()[0][:160]
