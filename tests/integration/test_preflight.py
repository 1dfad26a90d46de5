"""Preflight against the local stand-ins: fake-gcs-server, the BigQuery emulator and a real Prefect server."""

from __future__ import annotations

import uuid

import pytest
from google.api_core import exceptions as gexc
from google.cloud import bigquery

from flows.contracts.bigquery import hive_partition_columns, lake_tables, schema_fields
from flows.ops.preflight import check_secret, problems, run_preflight
from flows.orchestration.preflight import read_block, read_work_pool
from flows.settings import Settings
from flows.warehouse.dbt import LAYERS
from tests.bq_emulator import bq_emulator  # noqa: F401 - session fixture

PROJECT = "example-project"
GOOD_SQL = {"fct_asset_snapshots": "select id, priceUsd from coincap_raw.assets where dt >= '2026-01-01'"}


class FakeSecrets:
    """Secret Manager has no local emulator: a stand-in that answers like the client does."""

    def __init__(self, exists: bool = True, has_value: bool = True, value: bytes = b"not-printed") -> None:
        self.exists, self.has_value, self.value = exists, has_value, value

    def access_secret_version(self, name: str) -> dict:
        if not self.exists:
            raise gexc.NotFound(f"Secret [{name.rsplit('/versions', 1)[0]}] not found or has no versions.")
        if not self.has_value:
            raise gexc.NotFound(f"Secret Version [{name}] not found or has no versions.")
        return {"name": name, "payload": {"data": self.value}}


@pytest.fixture
def world(gcs_emulator, bq_emulator, prefect_api):  # noqa: F811
    """A complete gcp world on 127.0.0.1; tests remove one piece at a time."""
    gcs_server = gcs_emulator
    bucket = gcs_server.create_bucket(f"lake-{uuid.uuid4().hex[:8]}")
    prefix = f"t{uuid.uuid4().hex[:6]}_"
    bq = bq_emulator.client()
    for layer in LAYERS:
        bq.create_dataset(f"{PROJECT}.{prefix}{layer}")
    for name, file_schema in lake_tables().items():
        # The emulator cannot create (BIG)NUMERIC columns; preflight compares column names, not types.
        fields = [{**f, "type": "FLOAT64" if "NUMERIC" in f["type"] else f["type"]} for f in schema_fields(file_schema)]
        fields += hive_partition_columns(name)  # what BigQuery adds from the object paths
        schema = [bigquery.SchemaField.from_api_repr(f) for f in fields]
        bq.create_table(bigquery.Table(f"{PROJECT}.{prefix}raw.{name}", schema=schema), retry=None, timeout=30)
    settings = Settings(  # type: ignore[call-arg]
        PIPELINE_TARGET="gcp", GCP_PROJECT_ID=PROJECT, GCS_BUCKET=bucket, BQ_DATASET_PREFIX=prefix,
        BQ_API_ENDPOINT=bq_emulator.endpoint, PIPELINE_WORK_POOL=f"pool-{prefix}",
    )  # fmt: skip
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=settings.work_pool, type="cloud-run-v2"))
    return {"settings": settings, "gcs": gcs_server.client(), "bq": bq, "secrets": FakeSecrets(),
            "read_block": lambda kind, name: {"kind": kind, "name": name}}  # fmt: skip


def preflight(world, **overrides):
    sql = {k.replace("coincap_", world["settings"].bq_dataset_prefix): v for k, v in GOOD_SQL.items()}
    sql = {k: v.replace("coincap_raw", world["settings"].bq_dataset("raw")) for k, v in sql.items()}
    args = {"storage_client": world["gcs"], "bigquery_client": world["bq"], "secret_client": world["secrets"],
            "statements": sql, "read_block": world["read_block"], "read_work_pool": read_work_pool}  # fmt: skip
    args.update(overrides)
    return run_preflight(world["settings"], **args)


def test_a_complete_project_passes_every_check(world):
    findings = preflight(world)
    assert problems(findings) == [], [f.line() for f in problems(findings)]
    checks = {f.check for f in findings}
    assert checks >= {"settings", "bucket", "dataset", "external table", "secret", "work pool", "marts SQL"}


def test_missing_bucket_is_one_line_with_the_fix(world):
    world["settings"] = world["settings"].model_copy(update={"gcs_bucket": "no-such-bucket"})
    (problem,) = problems(preflight(world))
    assert problem.line() == (
        "bucket: gs://no-such-bucket does not exist. Fix: run `terraform apply` in terraform/envs/prod, "
        "or set GCS_BUCKET."
    )


def test_missing_dataset_is_one_line_with_the_fix(world):
    marts = world["settings"].bq_dataset("marts")
    world["bq"].delete_dataset(f"{PROJECT}.{marts}", delete_contents=True)
    (problem,) = problems(preflight(world))
    assert f"{PROJECT}.{marts} is missing" in problem.line() and "terraform apply" in problem.line()


def test_missing_results_block_says_which_command_creates_it(world, prefect_api):
    world["read_block"] = read_block  # the real Prefect server, where no such block exists
    (problem,) = problems(preflight(world))
    assert problem.line() == (
        "results block: Prefect block gcs-bucket/coincap-results is missing. "
        "Fix: run `coincap-pipeline prefect-blocks`."
    )


def test_missing_external_table_secret_value_and_work_pool(world):
    raw = world["settings"].bq_dataset("raw")
    world["bq"].delete_table(f"{PROJECT}.{raw}.markets")
    world["secrets"] = FakeSecrets(has_value=False)
    world["settings"] = world["settings"].model_copy(update={"work_pool": "not-created"})
    lines = [p.line() for p in problems(preflight(world))]
    assert len(lines) == 3, lines
    assert any(f"{raw}.markets is missing" in line for line in lines)
    assert any("gcloud secrets versions add coincap-api-key" in line for line in lines)
    assert any("work pool not-created is missing" in line for line in lines)


def test_marts_sql_that_reads_a_missing_table_fails_the_dry_run(world):
    findings = preflight(world, statements={"fct_broken": "select * from nowhere.missing_table"})
    (problem,) = problems(findings)
    assert problem.check == "marts SQL" and "fct_broken does not dry-run" in problem.line()


def _first_build(world, final_sql: str):
    """A staging view over the raw table and a mart over it: the mart cannot be dry-run before the first build."""
    settings = world["settings"]
    raw, staging = f"`{PROJECT}`.`{settings.bq_dataset('raw')}`", f"`{PROJECT}`.`{settings.bq_dataset('staging')}`"
    statements = {
        "stg_coincap__assets": f"select id as asset_id, snapshot_ts from {raw}.`assets` where dt >= '2026-01-01'",
        "fct_asset_daily": final_sql.format(staging=staging),
    }
    relations = {"stg_coincap__assets": f"{staging}.`stg_coincap__assets`"}
    return preflight(world, statements=statements, relations=relations)


def test_models_reading_tables_the_first_build_creates_are_analyzed_offline(world):
    findings = _first_build(world, "select asset_id, snapshot_ts from {staging}.`stg_coincap__assets`")
    assert problems(findings) == [], [f.line() for f in problems(findings)]
    assert "1 wait for the first dbt build and pass the SQL analyzer" in findings[-1].line()


def test_a_model_waiting_for_the_first_build_with_a_bigquery_type_error_is_a_problem(world):
    # DuckDB accepts this; BigQuery types the bare NULL in the CTE as INT64 and rejects the UNION ALL
    broken = (
        "with h as (select asset_id, null as snapshot_ts from {staging}.`stg_coincap__assets`)"
        " select asset_id, snapshot_ts from {staging}.`stg_coincap__assets` union all select * from h"
    )
    (problem,) = problems(_first_build(world, broken))
    assert problem.line().startswith("marts SQL: fct_asset_daily fails Google's SQL analyzer (Column 2 in UNION ALL")
    assert "TIMESTAMP, INT64" in problem.line() and "check-sql" in problem.line()


def test_missing_settings_stop_before_calling_anything():
    settings = Settings(PIPELINE_TARGET="gcp")  # type: ignore[call-arg]
    findings = run_preflight(settings, read_work_pool=read_work_pool, read_block=read_block)
    assert [f.line() for f in problems(findings)] == [
        "settings: GCP_PROJECT_ID is not set. Fix: set GCP_PROJECT_ID (a Terraform output).",
        "settings: GCS_BUCKET is not set. Fix: set GCS_BUCKET (a Terraform output).",
    ]


@pytest.mark.parametrize(
    ("value", "verdict"),
    [
        (b"abc123-key", "ok"),
        (b"abc123-key\n", "ok, noted"),  # `echo $KEY | gcloud secrets versions add`: works, stripped at run time
        (b"abc 123", "refused"),  # whitespace inside: no HTTP header can carry it
        (b"\n", "refused"),  # empty once stripped
        (b"\xff\xfe", "refused"),  # not text
    ],
)
def test_the_secret_value_is_checked_as_the_runtime_will_read_it_never_quoted(value, verdict):
    settings = Settings(PIPELINE_TARGET="gcp", GCP_PROJECT_ID=PROJECT)  # type: ignore[call-arg]
    (finding,) = check_secret(settings, FakeSecrets(value=value))
    assert finding.ok == verdict.startswith("ok"), finding.line()
    assert ("whitespace around" in finding.line()) == (verdict == "ok, noted")
    if value.strip():
        assert value.strip().decode("latin-1") not in finding.line()
