"""The ops tables, written once: `ops.pipeline_runs` (one row per dataset or step per run) and `ops.dq_results`
(one row per data-quality check per run). DuckDB DDL as written; the BigQuery writer derives its schema from it
(`flows/warehouse/bigquery.py`), and the dbt sources in `dbt/models/staging/ops/` read the same columns.
"""

from __future__ import annotations

RUNS_SCHEMA = "ops"
RUNS_TABLE = f"{RUNS_SCHEMA}.pipeline_runs"

RUNS_DDL = f"""
create schema if not exists {RUNS_SCHEMA};
create table if not exists {RUNS_TABLE} (
    flow_run_id varchar,
    snapshot_id varchar not null,
    step varchar not null,           -- a dataset name, or 'dbt'
    status varchar not null,         -- completed | failed
    started_at timestamptz not null,
    seconds double,
    served bigint,
    duplicates bigint,
    valid bigint,
    quarantined bigint,
    pages bigint,
    calls bigint,
    failed_calls bigint,
    retries bigint,
    bytes bigint,
    credits bigint,
    new_fields varchar[],
    files varchar[],
    error varchar,
    recorded_at timestamptz default current_timestamp
);
"""

RUN_COLUMNS = (
    "flow_run_id", "snapshot_id", "step", "status", "started_at", "seconds", "served", "duplicates", "valid",
    "quarantined", "pages", "calls", "failed_calls", "retries", "bytes", "credits", "new_fields", "files", "error",
)  # fmt: skip

DQ_TABLE = f"{RUNS_SCHEMA}.dq_results"

# One row per data-quality check per quality run (flows/quality/); the health page reads it.
DQ_DDL = f"""
create schema if not exists {RUNS_SCHEMA};
create table if not exists {DQ_TABLE} (
    run_id varchar not null,         -- one id per quality run
    flow_run_id varchar,
    snapshot_id varchar,             -- the snapshot checked; null for checks not tied to one
    checked_at timestamptz not null,
    check_name varchar not null,     -- e.g. validity.no_negative_prices
    category varchar not null,       -- completeness | freshness | validity | consistency | uniqueness | anomaly
    dataset varchar not null,
    severity varchar not null,       -- error | warn
    status varchar not null,         -- pass | fail | warn | error
    observed double,
    threshold double,
    failing_rows bigint,
    detail varchar,
    description varchar
);
"""

DQ_COLUMNS = (
    "run_id", "flow_run_id", "snapshot_id", "checked_at", "check_name", "category", "dataset", "severity", "status",
    "observed", "threshold", "failing_rows", "detail", "description",
)  # fmt: skip
