"""How old each dataset may get, derived from the deployments' schedules, and dbt's freshness of the lake.

A dataset is late after one missed scheduled run (plus an hour) and stale after two: the thresholds follow the
longest gap between the active scheduled runs that extract it (prefect.yaml on gcp, deployments/local.prefect.yaml
on the local target), or `PIPELINE_DQ_FRESHNESS_HOURS` when set. They are written nowhere else: the lake's source
freshness in `dbt/models/staging/coincap/_coincap__sources.yml` reads them as vars, which `run_source_freshness`
passes (`dbt_freshness_vars`). To run `dbt source freshness` by hand with the same thresholds:

    dbt source freshness --vars "$(python -m flows.quality)"
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from flows.datasets import SNAPSHOT_DATASETS
from flows.errors import ConfigError, PipelineError
from flows.paths import PROJECT_ROOT
from flows.settings import Settings, Target

FRESHNESS_SLACK_HOURS = 1.0
DEFAULT_RUN_GAP_HOURS = 24.0  # datasets no active schedule refreshes: as if daily


@dataclass(frozen=True)
class Freshness:
    """How old a dataset's latest snapshot may get: warn after one missed run, error after two."""

    dataset: str
    run_gap_hours: float  # longest gap between two scheduled runs that refresh it
    scheduled: bool
    override_hours: float | None = None  # PIPELINE_DQ_FRESHNESS_HOURS

    @property
    def warn_hours(self) -> float:
        return min(self.run_gap_hours + FRESHNESS_SLACK_HOURS, self.error_hours)

    @property
    def error_hours(self) -> float:
        if self.override_hours is not None:
            return self.override_hours
        return 2 * self.run_gap_hours + FRESHNESS_SLACK_HOURS

    @property
    def lookback_days(self) -> int:
        """Days of partitions that hold any snapshot still fresh enough to pass."""
        return math.ceil(self.error_hours / 24) + 1

    @property
    def source(self) -> str:
        """Where the threshold comes from, for a detail line."""
        if self.override_hours is not None:
            return "PIPELINE_DQ_FRESHNESS_HOURS"
        return "the deployments' schedules" if self.scheduled else "the default"


def schedule_file(settings: Settings) -> Path:
    """The deployments whose schedules refresh this target's data: prefect.yaml on gcp, the local ones else."""
    name = "prefect.yaml" if settings.target is Target.gcp else "deployments/local.prefect.yaml"
    return PROJECT_ROOT / name


def scheduled_gaps(prefect_yaml: Path, days: int = 35) -> dict[str, float]:
    """Per dataset, the longest gap in hours between the active scheduled runs that extract it (over `days`)."""
    from zoneinfo import ZoneInfo

    import yaml
    from cronsim import CronSim

    from flows.datasets import FLOW_DATASETS

    if not prefect_yaml.exists():
        return {}
    try:
        config = yaml.safe_load(prefect_yaml.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{prefect_yaml} is not valid YAML ({str(exc).splitlines()[0]}).", "Fix the file.") from None
    runs: dict[str, set[datetime]] = {}
    for deployment in config.get("deployments") or []:
        flow_name = str(deployment.get("entrypoint", "")).split(":")[-1]
        datasets = (deployment.get("parameters") or {}).get("datasets") or FLOW_DATASETS.get(flow_name, ())
        for schedule in deployment.get("schedules") or []:
            if not schedule.get("active", True) or not schedule.get("cron"):
                continue
            zone = ZoneInfo(schedule.get("timezone", "UTC"))
            start = datetime(2027, 1, 4, tzinfo=zone)  # a Monday: whole weeks from here
            moments = []
            for moment in CronSim(schedule["cron"], start - timedelta(seconds=1)):
                if moment >= start + timedelta(days=days):
                    break
                moments.append(moment.astimezone(UTC))
            for dataset in datasets:
                runs.setdefault(dataset, set()).update(moments)
    gaps = {}
    for dataset, moments in runs.items():
        ordered = sorted(moments)
        if len(ordered) >= 2:
            gaps[dataset] = max((b - a).total_seconds() / 3600 for a, b in zip(ordered, ordered[1:], strict=False))
    return gaps


def freshness_thresholds(settings: Settings) -> dict[str, Freshness]:
    """Each dataset's freshness: `PIPELINE_DQ_FRESHNESS_HOURS` if set, else from the deployments' schedules."""
    gaps = scheduled_gaps(schedule_file(settings))
    override = settings.dq_freshness_hours
    return {d: Freshness(d, gaps.get(d, DEFAULT_RUN_GAP_HOURS), d in gaps, override) for d in SNAPSHOT_DATASETS}


def dbt_freshness_vars(thresholds: dict[str, Freshness]) -> dict[str, int]:
    """The vars `dbt/models/staging/coincap/_coincap__sources.yml` reads for each table's freshness (it has no
    thresholds of its own): pass them as `dbt source freshness --vars '<json>'`."""
    out: dict[str, int] = {}
    for dataset, f in thresholds.items():
        out[f"freshness_{dataset}_warn_hours"] = math.ceil(f.warn_hours)
        out[f"freshness_{dataset}_error_hours"] = math.ceil(f.error_hours)
        out[f"freshness_{dataset}_days"] = f.lookback_days
    return out


def freshness_vars_args(settings: Settings) -> list[str]:
    """`--vars` with the lake's freshness thresholds for these settings, for a `dbt source freshness`."""
    return ["--vars", json.dumps(dbt_freshness_vars(freshness_thresholds(settings)), sort_keys=True)]


def run_source_freshness(settings: Settings, datasets: Sequence[str]) -> list[tuple[str, float | None, str]]:
    """`dbt source freshness` on the lake's snapshot tables: (table, age in hours or None, problem) each.

    The thresholds go to dbt as vars (`dbt_freshness_vars`); the ages are judged by the caller against the same
    thresholds. dbt keeps its parse state for these vars in a target folder of its own (`target-freshness`), so
    neither this nor the builds, whose vars differ, make dbt parse the whole project again (2 s, not 10).
    """
    from flows.warehouse.dbt import invoke_dbt

    work = settings.data_dir.resolve() / "dbt"
    result, _ = invoke_dbt(
        settings,
        "source freshness",
        "--select", *(f"source:coincap.{d}" for d in datasets),
        "--target-path", str(work / "target-freshness"),
        *freshness_vars_args(settings),
    )  # fmt: skip
    nodes = getattr(result.result, "results", None) or []
    if not nodes:
        reason = str(result.exception or "no result; see the dbt log").strip().splitlines()
        raise PipelineError(
            f"dbt source freshness did not run ({reason[0] if reason else 'no reason given'}).",
            f"See {work / 'logs' / 'dbt.log'}.",
        )
    out = []
    for node in nodes:
        status = str(getattr(node.status, "value", node.status))
        age = getattr(node, "age", None)
        message = (getattr(node, "message", None) or "").strip().splitlines()
        problem = "" if status in ("pass", "warn", "error") else (message[0] if message else status)
        out.append((node.node.name, age / 3600 if age is not None and not problem else None, problem))
    return sorted(out)
