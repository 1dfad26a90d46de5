"""The BigQuery warehouse (gcp target): the run-metrics table `<project>.<prefix>ops.pipeline_runs` and ad-hoc SQL.

The datasets come from Terraform; this module creates only the run-metrics table, on first use. Credentials are
Application Default Credentials; with `BQ_API_ENDPOINT` set (an emulator in tests) the client is anonymous.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time
from decimal import Decimal
from functools import cache
from typing import TYPE_CHECKING, Any

from flows.contracts.ops_tables import DQ_DDL, DQ_TABLE, RUNS_DDL, RUNS_SCHEMA, RUNS_TABLE
from flows.errors import ConfigError, PipelineError
from flows.redaction import redact_row
from flows.settings import Settings

if TYPE_CHECKING:
    from google.api_core.retry import Retry
    from google.cloud import bigquery

RUNS_TABLE_NAME = RUNS_TABLE.split(".")[-1]
DQ_TABLE_NAME = DQ_TABLE.split(".")[-1]
# The guard on ad-hoc SQL: 10 GiB costs about $0.06 on demand. A year of fct_market_snapshots is more: filter it.
DEFAULT_MAX_BYTES_BILLED = 10 * 1024**3

# DuckDB type of the run-metrics DDL -> (BigQuery type, repeated)
_BIGQUERY_TYPES: dict[str, tuple[str, bool]] = {
    "VARCHAR": ("STRING", False),
    "VARCHAR[]": ("STRING", True),
    "BIGINT": ("INT64", False),
    "INTEGER": ("INT64", False),
    "DOUBLE": ("FLOAT64", False),
    "BOOLEAN": ("BOOL", False),
    "DATE": ("DATE", False),
    "TIMESTAMP WITH TIME ZONE": ("TIMESTAMP", False),
}


@cache
def runs_columns() -> tuple[tuple[str, str, str], ...]:
    """(name, BigQuery type, mode) of the run-metrics table, read from the DuckDB DDL: one column list for both."""
    return _ddl_columns(RUNS_DDL, RUNS_TABLE_NAME)


@cache
def dq_columns() -> tuple[tuple[str, str, str], ...]:
    """(name, BigQuery type, mode) of the data-quality results table, read from the DuckDB DDL likewise."""
    return _ddl_columns(DQ_DDL, DQ_TABLE_NAME)


def _ddl_columns(ddl: str, table_name: str) -> tuple[tuple[str, str, str], ...]:
    import duckdb

    with duckdb.connect(":memory:") as con:
        con.execute(ddl)
        described = con.execute(
            "select column_name, data_type, is_nullable from information_schema.columns"
            " where table_schema = ? and table_name = ? order by ordinal_position",
            [RUNS_SCHEMA, table_name],
        ).fetchall()
    columns = []
    for name, duckdb_type, nullable in described:
        if duckdb_type not in _BIGQUERY_TYPES:
            raise TypeError(
                f"{table_name}.{name}: no BigQuery type for DuckDB {duckdb_type}; add it to _BIGQUERY_TYPES"
            )
        bigquery_type, repeated = _BIGQUERY_TYPES[duckdb_type]
        mode = "REPEATED" if repeated else ("NULLABLE" if nullable == "YES" else "REQUIRED")
        columns.append((name, bigquery_type, mode))
    return tuple(columns)


class BigQueryWarehouse:
    """BigQuery access for the pipeline and the `sql` command. The client is created on first use."""

    def __init__(
        self,
        settings: Settings,
        *,
        max_bytes_billed: int | None = None,
        retry_deadline_s: float = 120.0,
        request_timeout_s: float = 30.0,
        query_timeout_s: float = 600.0,
    ) -> None:
        if not settings.gcp_project:
            raise ConfigError(
                "GCP_PROJECT_ID is not set (the gcp target needs the project that holds the datasets).",
                "Set GCP_PROJECT_ID to the project `terraform apply` provisioned.",
            )
        self.project: str = settings.gcp_project
        self.location = settings.bq_location
        self.api_endpoint = settings.bq_api_endpoint
        self.ops_dataset = settings.bq_dataset("ops")
        self.marts_dataset = settings.bq_dataset("marts")
        # BQ_MAX_BYTES_BILLED once Settings has it (as `bq_max_bytes_billed`); 0 or None turns the guard off.
        if max_bytes_billed is None:
            max_bytes_billed = getattr(settings, "bq_max_bytes_billed", DEFAULT_MAX_BYTES_BILLED)
        self.max_bytes_billed: int | None = max_bytes_billed or None
        self.retry_deadline_s = retry_deadline_s
        self.request_timeout_s = request_timeout_s
        self.query_timeout_s = query_timeout_s
        self._client: bigquery.Client | None = None
        self._tables_ready: set[str] = set()

    @property
    def uri(self) -> str:
        return f"bigquery://{self.project}/{self.marts_dataset}"

    @property
    def runs_table_id(self) -> str:
        return f"{self.project}.{self.ops_dataset}.{RUNS_TABLE_NAME}"

    @property
    def dq_table_id(self) -> str:
        return f"{self.project}.{self.ops_dataset}.{DQ_TABLE_NAME}"

    @property
    def client(self) -> bigquery.Client:
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def _make_client(self) -> bigquery.Client:
        import google.auth.exceptions
        from google.cloud import bigquery

        if self.api_endpoint:
            from google.auth.credentials import AnonymousCredentials

            return bigquery.Client(
                project=self.project,
                location=self.location,
                credentials=AnonymousCredentials(),
                client_options={"api_endpoint": self.api_endpoint},
            )
        try:
            return bigquery.Client(project=self.project, location=self.location)
        except google.auth.exceptions.DefaultCredentialsError:
            raise ConfigError(
                "No Google credentials found for BigQuery.",
                "Run `gcloud auth application-default login` (or set GOOGLE_APPLICATION_CREDENTIALS) and retry.",
            ) from None

    def _retry(self, *, also_not_found: bool = False) -> Retry:
        """The client's default retry (5xx, rate limits, dropped connections), bounded by `retry_deadline_s`."""
        from google.api_core.exceptions import NotFound
        from google.cloud.bigquery import DEFAULT_RETRY

        retry = DEFAULT_RETRY.with_timeout(self.retry_deadline_s)
        if also_not_found:
            default = DEFAULT_RETRY._predicate
            # A table created a moment ago can briefly be unknown to the streaming API.
            retry = retry.with_predicate(lambda exc: isinstance(exc, NotFound) or default(exc))
        return retry

    def record_runs(self, rows: Iterable[dict[str, Any]]) -> None:
        """Append rows to the run-metrics table (created on first use); runs are events, so a re-run adds rows."""
        # Streaming inserts, not load jobs: a run writes a handful of rows, which a load job would make take seconds
        # and count against the 1,500 loads per table per day; streaming costs $0.01 per 200 MB, rows are readable
        # at once, and insert ids make a retried request idempotent.
        json_rows = [_json_row(redact_row(row)) for row in rows]  # the error text: never a key or credential
        if not json_rows:
            return
        self._stream_insert(self.runs_table_id, json_rows, self._ensure_runs_table(), "run-metrics", stamp=True)

    def record_checks(self, rows: Iterable[dict[str, Any]]) -> None:
        """Append data-quality results to `<prefix>ops.dq_results` (created on first use), by streaming insert."""
        json_rows = [_json_row(redact_row(row), dq_columns()) for row in rows]
        if not json_rows:
            return
        self._stream_insert(self.dq_table_id, json_rows, self._ensure_dq_table(), "data-quality")

    def _stream_insert(
        self, table_id: str, json_rows: list[dict[str, Any]], created: bool, what: str, *, stamp: bool = False
    ) -> None:
        # Deterministic insert ids: BigQuery drops a row it received moments ago when a retried request resends it.
        row_ids = [hashlib.sha256(json.dumps(r, sort_keys=True).encode()).hexdigest() for r in json_rows]
        if stamp:  # after the ids, so a resent row keeps its id
            for json_row in json_rows:
                json_row["recorded_at"] = datetime.now(UTC).isoformat()
        try:
            errors = self.client.insert_rows_json(
                table_id, json_rows, row_ids=row_ids, retry=self._retry(also_not_found=created),
                timeout=self.request_timeout_s,
            )  # fmt: skip
        except Exception as exc:
            raise _api_error(exc, f"Cannot record {what} rows in {table_id}") from None
        if errors:
            first = errors[0].get("errors") or [{}]
            reason = first[0].get("message") or first[0].get("reason") or "no reason given"
            raise PipelineError(
                f"BigQuery rejected {len(errors)} of {len(json_rows)} {what} rows ({reason}).",
                f"Compare {table_id} with this version's columns; drop the table to have it re-created.",
            )

    def ensure_ops_tables(self) -> None:
        """Create the ops tables (run metrics, data-quality results) if missing, so dbt's views on them build."""
        self._ensure_runs_table()
        self._ensure_dq_table()

    def _ensure_runs_table(self) -> bool:
        """Create the run-metrics table if missing; return whether it was created now. The dataset must exist."""
        return self._ensure_table(
            self.runs_table_id,
            _runs_schema(),
            partition_field="started_at",
            clustering=["step"],
            description="One row per pipeline step per run (a dataset's extraction, or dbt).",
        )

    def _ensure_dq_table(self) -> bool:
        """Create the data-quality results table if missing; return whether it was created now."""
        return self._ensure_table(
            self.dq_table_id,
            _dq_schema(),
            partition_field="checked_at",
            clustering=["check_name", "status"],
            description="One row per data-quality check per quality run (flows/quality/).",
        )

    def _ensure_table(
        self, table_id: str, schema: list[bigquery.SchemaField], *, partition_field: str, clustering: list[str],
        description: str,
    ) -> bool:  # fmt: skip
        """Create a day-partitioned ops table if missing; return whether it was created now. The dataset must exist."""
        if table_id in self._tables_ready:
            return False
        from google.api_core.exceptions import Conflict, NotFound
        from google.cloud import bigquery

        client = self.client
        created = False
        try:
            try:
                client.get_table(table_id, retry=self._retry(), timeout=self.request_timeout_s)
            except NotFound:
                # Asked first, because BigQuery (and the emulator) answer a table created in a missing dataset
                # with less helpful errors.
                client.get_dataset(
                    f"{self.project}.{self.ops_dataset}", retry=self._retry(), timeout=self.request_timeout_s
                )
                table = bigquery.Table(table_id, schema=schema)
                table.time_partitioning = bigquery.TimePartitioning(
                    type_=bigquery.TimePartitioningType.DAY, field=partition_field
                )
                table.clustering_fields = clustering
                table.description = description
                table.labels = {"pipeline": "coincap"}
                try:
                    client.create_table(table, retry=self._retry(), timeout=self.request_timeout_s)
                    created = True
                except Conflict:  # another run created it meanwhile
                    pass
        except Exception as exc:
            raise _api_error(exc, f"Cannot prepare {table_id}") from None
        self._tables_ready.add(table_id)
        return created

    def query(self, sql: str, params: Sequence[Any] | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run one read-only query (`?` parameters; unqualified tables are in the marts dataset); return (names, rows).

        A free dry run first refuses statements that change data and queries over `max_bytes_billed`. Errors: one line.
        """
        from google.cloud import bigquery
        from google.cloud.bigquery.retry import DEFAULT_JOB_RETRY

        def job_config(dry_run: bool) -> bigquery.QueryJobConfig:
            return bigquery.QueryJobConfig(
                dry_run=dry_run,
                use_query_cache=not dry_run,
                default_dataset=f"{self.project}.{self.marts_dataset}",
                maximum_bytes_billed=self.max_bytes_billed,
                query_parameters=[_query_parameter(value) for value in params or []],
                labels={"pipeline": "coincap", "caller": "adhoc-sql"},
            )

        client = self.client
        # Every retry bounded. A job retry passed to `client.query` also wraps the insert in a retry of 10 minutes
        # of its own, so the inserts get none (their HTTP calls still retry); `result` may restart a failed job.
        job_retry = DEFAULT_JOB_RETRY.with_timeout(self.retry_deadline_s)
        try:
            plan = client.query(
                sql,
                job_config=job_config(True),
                retry=self._retry(),
                job_retry=None,
                timeout=self.request_timeout_s,
            )
            if plan.statement_type not in (None, "SELECT"):
                raise PipelineError(
                    f"Refused a {plan.statement_type} statement: `sql` runs read-only queries.",
                    "Change the marts through dbt (coincap-pipeline run) instead.",
                )
            estimate = plan.total_bytes_processed
            if self.max_bytes_billed is not None and estimate is not None and estimate > self.max_bytes_billed:
                raise _bytes_error(estimate, self.max_bytes_billed)
            job = client.query(
                sql,
                job_config=job_config(False),
                retry=self._retry(),
                job_retry=None,
                timeout=self.request_timeout_s,
            )
            result = job.result(timeout=self.query_timeout_s, retry=self._retry(), job_retry=job_retry)
            names = [field.name for field in result.schema]
            return names, [tuple(row.values()) for row in result]
        except PipelineError:
            raise
        except Exception as exc:
            raise _api_error(exc, "SQL error") from None


@cache
def _runs_schema() -> list[bigquery.SchemaField]:
    from google.cloud import bigquery

    schema = [bigquery.SchemaField(name, kind, mode=mode) for name, kind, mode in runs_columns()]
    for i, field in enumerate(schema):
        if field.name == "recorded_at":  # DuckDB's `default current_timestamp`; rows from here carry their own
            schema[i] = bigquery.SchemaField(
                field.name, field.field_type, mode=field.mode, default_value_expression="CURRENT_TIMESTAMP()"
            )
    return schema


@cache
def _dq_schema() -> list[bigquery.SchemaField]:
    from google.cloud import bigquery

    return [bigquery.SchemaField(name, kind, mode=mode) for name, kind, mode in dq_columns()]


def _json_row(row: dict[str, Any], columns: tuple[tuple[str, str, str], ...] | None = None) -> dict[str, Any]:
    """A row as insertAll JSON: only the table's columns (default: run metrics), timestamps as ISO text, lists
    never null."""
    out: dict[str, Any] = {}
    for name, _, mode in columns or runs_columns():
        if name == "recorded_at":
            continue
        value = row.get(name)
        if mode == "REPEATED":
            out[name] = [str(v) for v in value or []]
        elif value is not None:
            out[name] = _json_value(value)
    return out


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _query_parameter(value: Any) -> bigquery.ScalarQueryParameter:
    from google.cloud import bigquery

    # subclasses first: bool before int, datetime before date
    kinds: list[tuple[type, str]] = [
        (bool, "BOOL"), (int, "INT64"), (float, "FLOAT64"), (Decimal, "BIGNUMERIC"), (datetime, "TIMESTAMP"),
        (date, "DATE"), (time, "TIME"), (bytes, "BYTES"), (str, "STRING"),
    ]  # fmt: skip
    for python_type, kind in kinds:
        if isinstance(value, python_type):
            return bigquery.ScalarQueryParameter(None, kind, value)
    if value is None:
        return bigquery.ScalarQueryParameter(None, "STRING", None)
    raise PipelineError(f"Cannot pass a {type(value).__name__} as a query parameter.", "Pass it as a string.")


def _bytes_error(needed: int, limit: int) -> PipelineError:
    return PipelineError(
        f"The query would bill {needed / 1024**3:.2f} GiB, over the {limit / 1024**3:.2f} GiB limit.",
        "Filter on the partition column (e.g. snapshot_date), select fewer columns, or raise BQ_MAX_BYTES_BILLED.",
    )


def _api_error(exc: Exception, what: str) -> PipelineError:
    """One line for people from a Google API error (the full message has job ids and URLs)."""
    import google.auth.exceptions
    from google.api_core import exceptions as gexc

    if isinstance(exc, PipelineError):
        return exc
    if isinstance(exc, google.auth.exceptions.DefaultCredentialsError):
        return ConfigError(
            "No Google credentials found for BigQuery.",
            "Run `gcloud auth application-default login` (or set GOOGLE_APPLICATION_CREDENTIALS) and retry.",
        )
    if isinstance(exc, gexc.RetryError | gexc.DeadlineExceeded | TimeoutError):
        last = getattr(exc, "cause", None)
        detail = f" (last error: {_first_line(last)})" if isinstance(last, Exception) else ""
        if isinstance(last, ConnectionError) or type(last).__module__.startswith(("requests", "urllib3")):
            detail = " (could not connect)"  # requests' message is a paragraph of pool internals
        return PipelineError(
            f"{what}: BigQuery did not answer in time{detail}.", "Check the network and BigQuery's status, then retry."
        )
    message = _first_line(exc)
    reasons = {e.get("reason") for e in getattr(exc, "errors", None) or [] if isinstance(e, dict)}
    if "bytesBilledLimitExceeded" in reasons:
        return PipelineError(f"{what}: {message}.", "Filter on the partition column or select fewer columns.")
    if isinstance(exc, gexc.NotFound) and "dataset" in message.lower():
        return ConfigError(
            f"{what}: {message}.",
            "Create the BigQuery datasets with `terraform apply` (terraform/envs/<env>), "
            "or check GCP_PROJECT_ID and BQ_DATASET_PREFIX.",
        )
    if isinstance(exc, gexc.NotFound):
        return PipelineError(f"{what}: {message}.", "Check the name; `coincap-pipeline run` builds the marts.")
    if isinstance(exc, gexc.Forbidden | gexc.Unauthorized):
        return ConfigError(
            f"BigQuery refused access: {message}.",
            "Check the credentials (gcloud auth application-default login) and the account's BigQuery roles.",
        )
    if isinstance(exc, gexc.BadRequest):
        return PipelineError(f"{what}: {message}.", "Fix the query and run it again.")
    return PipelineError(f"{what}: {message}.", "Retry; if it persists, check BigQuery's status and quotas.")


_HTTP_PREFIX = re.compile(r"^(GET|POST|PUT|PATCH|DELETE) \S+: ")


def _first_line(exc: Exception) -> str:
    """The first line of the API's own message, without the request URL, job id or location."""
    errors = getattr(exc, "errors", None) or []
    message = str(errors[0].get("message") or "") if errors and isinstance(errors[0], dict) else ""
    if not message:
        message = str(getattr(exc, "message", "") or exc)
    line = next((part.strip() for part in message.splitlines() if part.strip()), type(exc).__name__)
    line = _HTTP_PREFIX.sub("", line).rstrip(".")
    return line if len(line) <= 240 else line[:239] + "…"
