"""Run the dbt project in-process (dbt's programmatic runner) against the configured target.

dbt reads its connection from `dbt/profiles.yml`, which takes paths from environment variables; this module
is the one place that sets them, and the project's vars, from `Settings`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows.errors import TransformError
from flows.paths import PROJECT_ROOT
from flows.settings import Settings

# dbt keeps global state: never run two invocations at once in one process.
_PACKAGE_ROOT = PROJECT_ROOT


def dbt_project_dir(settings: Settings) -> Path:
    """The dbt project: `PIPELINE_DBT_PROJECT_DIR`, else `dbt/` beside the package (a checkout or the image)."""
    if settings.dbt_project_dir is not None:
        return settings.dbt_project_dir.resolve()
    return _PACKAGE_ROOT / "dbt"


def dbt_env(settings: Settings) -> dict[str, str]:
    """The environment `dbt/profiles.yml` and the project read: DuckDB paths locally, project and datasets on gcp."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        "PIPELINE_DUCKDB_PATH": str(settings.duckdb_path),
        "PIPELINE_LAKE_URI": settings.lake_dir.as_posix(),
        "PIPELINE_DBT_THREADS": str(settings.dbt_threads),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        # Set on every target: run_dbt exports these, and a gcp prefix left over in the process would rename the
        # local schemas (see dbt/macros/generate_schema_name.sql).
        "PIPELINE_SCHEMA_PREFIX": "",
    }
    if settings.target.value == "gcp":
        env.update(
            {
                # staging and marts land in `<prefix>staging` and `<prefix>marts`
                "PIPELINE_SCHEMA_PREFIX": settings.bq_dataset_prefix,
                "BQ_LOCATION": settings.bq_location,
                "BQ_DATASET_RAW": settings.bq_dataset("raw"),
                "BQ_DATASET_MARTS": settings.bq_dataset("marts"),
            }
        )
        if settings.gcp_project:
            env["GCP_PROJECT_ID"] = settings.gcp_project
    return env


def dbt_vars(settings: Settings) -> dict[str, Any]:
    """The vars every invocation passes: the snapshot-grain marts' partitions expire after the one granular
    retention (`PIPELINE_GRANULAR_RETENTION_DAYS`); `dbt/dbt_project.yml`'s default serves a bare `dbt` CLI."""
    return {
        "granular_partition_expiration_days": settings.granular_retention_days,
        "dq_price_jump_pct": settings.dq_price_jump_pct,  # the data-quality test dq_anomaly__price_jump
    }


def with_vars(settings: Settings, extra: Sequence[str]) -> list[str]:
    """`extra` with `dbt_vars(settings)` added as one `--vars`; a caller's own `--vars` merge over them.

    The same vars on every invocation keep dbt's partial parse (it re-parses everything when they change).
    """
    import yaml

    merged = dbt_vars(settings)
    rest: list[str] = []
    args = iter(extra)
    for arg in args:
        if arg == "--vars":
            value = next(args, "")
        elif arg.startswith("--vars="):
            value = arg.removeprefix("--vars=")
        else:
            rest.append(arg)
            continue
        try:
            given = yaml.safe_load(value) or {}
        except yaml.YAMLError:
            given = None
        if not isinstance(given, dict):
            raise TransformError(
                f"dbt --vars {value!r} is not a mapping.", "Pass a YAML or JSON mapping, e.g. '{name: value}'."
            )
        merged.update(given)
    return [*rest, "--vars", json.dumps(merged, sort_keys=True)]


@dataclass
class DbtOutcome:
    """What a dbt invocation did, for the run summary."""

    command: str
    seconds: float
    statuses: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def invoke_dbt(settings: Settings, command: str, *extra: str) -> tuple[Any, float]:
    """Run `dbt <command> <extra...>` (e.g. "build" or "source freshness") on the settings' target, with the
    settings' vars (`with_vars`).

    Returns dbt's own result and the seconds it took; dbt's log goes to `<data_dir>/dbt/logs/dbt.log`.
    """
    from dbt.cli.main import dbtRunner  # imported lazily: dbt takes ~2 s to import

    project = dbt_project_dir(settings)
    os.environ.update(dbt_env(settings))
    work = settings.data_dir.resolve() / "dbt"
    args = [
        *command.split(),
        "--project-dir", str(project),
        "--profiles-dir", str(project),
        "--target", settings.target.value,
        "--target-path", str(work / "target"),
        "--log-path", str(work / "logs"),
        "--log-level", "warn",
        "--log-level-file", "info",
        *(["--log-format", "json"] if settings.log_format == "json" else []),
        *([] if sys.stdout.isatty() else ["--no-use-colors"]),
        *with_vars(settings, extra),
    ]  # fmt: skip
    started = time.perf_counter()
    result = dbtRunner().invoke(args)
    return result, time.perf_counter() - started


def run_dbt(settings: Settings, command: str = "build", *extra: str, raise_on_failure: bool = True) -> DbtOutcome:
    """Run `dbt <command> <extra...>` on the settings' target; one-line `TransformError` on failure."""
    work = settings.data_dir.resolve() / "dbt"
    result, seconds = invoke_dbt(settings, command, *extra)
    outcome = DbtOutcome(command=command, seconds=seconds)
    for node in getattr(result.result, "results", None) or []:
        status = str(getattr(node.status, "value", node.status))
        outcome.statuses[status] += 1
        if status in {"error", "fail", "runtime error"}:
            name = getattr(node.node, "name", "?")
            # dbt leaves the message empty for failed unit tests: say which kind of node failed instead.
            message = (node.message or "").strip() or f"{getattr(node.node, 'resource_type', 'node')} {status}"
            outcome.failures.append(f"{name}: {message.splitlines()[0]}")
    if not result.success and not outcome.failures:
        reason = result.exception or "see the dbt log"
        outcome.failures.append(str(reason).splitlines()[0] if str(reason) else "dbt failed")
    if raise_on_failure and not outcome.ok:
        first = outcome.failures[0]
        more = f" (and {len(outcome.failures) - 1} more)" if len(outcome.failures) > 1 else ""
        raise TransformError(
            f"dbt {command} failed: {first}{more}.",
            f"See {work / 'logs' / 'dbt.log'}; fix the model or the data, then re-run.",
        )
    return outcome


# The schemas (BigQuery datasets) the project builds into, below the prefix; Terraform creates them.
LAYERS = ("raw", "staging", "marts", "ops")


def models_in_order(manifest: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(model -> compiled SQL, model -> relation) of a dbt manifest, each model after the models it reads."""
    nodes = {k: n for k, n in manifest["nodes"].items() if n["resource_type"] == "model" and n.get("compiled_code")}
    ordered: list[str] = []

    def visit(key: str, path: tuple[str, ...] = ()) -> None:
        if key in ordered or key not in nodes or key in path:
            return
        for parent in nodes[key].get("depends_on", {}).get("nodes", []):
            visit(parent, (*path, key))
        ordered.append(key)

    for key in sorted(nodes):
        visit(key)
    statements = {nodes[k]["name"]: nodes[k]["compiled_code"] for k in ordered}
    relations = {nodes[k]["name"]: nodes[k]["relation_name"] for k in ordered if nodes[k].get("relation_name")}
    return statements, relations
