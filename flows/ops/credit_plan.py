"""Credit planning: what the configured schedules will cost in CoinCap credits each month, before deploying.

CoinCap bills 1 credit per call plus 1 per 2,500 bytes returned. A run's cost is estimated per dataset from
the number of records its scope fetches and the bytes per record, measured on realistic records (or taken from
the last real run in the warehouse, when there is one). Schedules come from `prefect.yaml`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from flows.datasets import FLOW_DATASETS
from flows.errors import ConfigError
from flows.settings import Settings

PLANS: dict[str, int] = {
    "Free": 4_000,
    "Basic": 75_000,
    "Growth": 225_000,
    "Professional": 675_000,
    "Enterprise": 5_000_000,
}

# Bytes per record of compact v3 JSON, measured on the local stand-in's realistic records (README "Credits").
BYTES_PER_RECORD: dict[str, int] = {"assets": 411, "rates": 108, "exchanges": 270, "markets": 334}
# How many records CoinCap lists when nothing is scoped (order of magnitude, late 2026).
UNIVERSE: dict[str, int] = {"assets": 3_000, "rates": 170, "exchanges": 200, "markets": 100_000}
# A markets listing filtered to one exchange, or one exchange and one quote: averages, used until a real run
# has been measured.
MARKETS_PER_EXCHANGE = 500
MARKETS_PER_EXCHANGE_QUOTE = 120
MARKETS_PER_QUOTE = 12_000
STREAM_CREDITS_PER_MINUTE = 1


@dataclass
class DeploymentCost:
    """The projected monthly cost of one deployment."""

    name: str
    schedule: str
    runs_per_month: float
    credits_per_run: float
    detail: dict[str, float] = field(default_factory=dict)

    @property
    def credits_per_month(self) -> float:
        return self.runs_per_month * self.credits_per_run


def records_in_scope(dataset: str, settings: Settings) -> int:
    """Records one run fetches for `dataset` under the settings' scope."""
    if dataset == "assets" and settings.assets_limit:
        return min(settings.assets_limit, UNIVERSE["assets"])
    if dataset != "markets":
        return UNIVERSE[dataset]
    exchanges, quotes = settings.markets_exchange_ids, settings.markets_quote_ids
    if exchanges and quotes:
        return len(exchanges) * len(quotes) * MARKETS_PER_EXCHANGE_QUOTE
    if exchanges:
        return len(exchanges) * MARKETS_PER_EXCHANGE
    if quotes:
        return len(quotes) * MARKETS_PER_QUOTE
    return UNIVERSE["markets"]


def listings(dataset: str, settings: Settings) -> int:
    """Separate paginated listings one run makes (markets: one per exchange x quote in scope)."""
    if dataset != "markets":
        return 1
    return max(1, len(settings.markets_exchange_ids)) * max(1, len(settings.markets_quote_ids))


def dataset_credits(dataset: str, settings: Settings, measured_bytes_per_record: Mapping[str, float]) -> float:
    """Credits of one run of one dataset: calls (pages, plus the closing short page) and body bytes."""
    records = records_in_scope(dataset, settings)
    per_record = measured_bytes_per_record.get(dataset) or BYTES_PER_RECORD[dataset]
    n_listings = listings(dataset, settings)
    per_listing = records / n_listings
    pages = 1 if dataset == "rates" else math.floor(per_listing / settings.page_limit) + 1
    calls = n_listings * pages
    return calls + records * per_record / 2500


def runs_per_month(cron: str, timezone: str = "UTC", days: int = 365) -> float:
    """Average runs in a month of a cron schedule, counted over a year."""
    from zoneinfo import ZoneInfo

    from cronsim import CronSim

    start = datetime(2027, 1, 1, tzinfo=ZoneInfo(timezone))
    end = start + timedelta(days=days)
    count = 0
    for moment in CronSim(cron, start - timedelta(seconds=1)):  # CronSim yields times after its start
        if moment >= end:
            break
        count += 1
    return count / (days / 365 * 12)


def plan(
    prefect_yaml: Path,
    settings: Settings,
    measured_bytes_per_record: Mapping[str, float] | None = None,
) -> list[DeploymentCost]:
    """The monthly cost of every scheduled deployment in `prefect_yaml`, under its own scope."""
    try:
        config = yaml.safe_load(prefect_yaml.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{prefect_yaml} is not valid YAML ({str(exc).splitlines()[0]}).", "Fix the file.") from None
    measured = measured_bytes_per_record or {}
    costs = []
    for deployment in config.get("deployments", []):
        schedules = [s for s in deployment.get("schedules") or [] if s.get("active", True) and s.get("cron")]
        flow_name = deployment["entrypoint"].split(":")[-1]
        params = deployment.get("parameters") or {}
        env = ((deployment.get("work_pool") or {}).get("job_variables") or {}).get("env") or {}
        scoped = _with_env(settings, env)
        per_run: dict[str, float] = {}
        if flow_name == "stream_flow":
            minutes = params.get("max_minutes") or 30 * 24 * 60
            per_run["stream"] = minutes * STREAM_CREDITS_PER_MINUTE
        else:
            for dataset in params.get("datasets") or FLOW_DATASETS.get(flow_name, ()):
                per_run[dataset] = dataset_credits(dataset, scoped, measured)
        runs = sum(runs_per_month(s["cron"], s.get("timezone", "UTC")) for s in schedules)
        if flow_name == "stream_flow" and deployment.get("schedules") is None:
            runs = 1.0  # long-running: one run a month, always connected
        paused = [s["cron"] for s in deployment.get("schedules") or [] if not s.get("active", True)]
        label = (
            ", ".join(s["cron"] for s in schedules)
            or (f"off ({', '.join(paused)})" if paused else "")
            or ("always on" if flow_name == "stream_flow" else "on trigger" if deployment.get("triggers") else "manual")
        )
        costs.append(DeploymentCost(deployment["name"], label, runs, sum(per_run.values()), per_run))
    return costs


def _with_env(settings: Settings, env: Mapping[str, Any]) -> Settings:
    """The settings a deployment's runs see: ours, overridden by its job environment's scope variables."""
    scope = {k: str(v) for k, v in env.items() if k.startswith(("COINCAP_", "PIPELINE_")) and "{{" not in str(v)}
    if not scope:
        return settings
    merged = {field_.alias: getattr(settings, name) for name, field_ in Settings.model_fields.items() if field_.alias}
    merged.update(scope)
    return Settings(**{k: v for k, v in merged.items() if v is not None})  # type: ignore[arg-type]


def smallest_plan(total: float) -> str | None:
    """The cheapest CoinCap plan whose monthly credits cover `total`."""
    return next((name for name, credits in PLANS.items() if total <= credits), None)


def measured_runs_sql(settings: Settings) -> str:
    """The query that reads bytes per record from the completed runs in the ops table, for the settings' target."""
    from flows.quality import table_name

    return (
        f"select step, sum(served), sum(bytes) from {table_name(settings, 'ops', 'pipeline_runs')}"
        " where status = 'completed' and step in ('assets', 'rates', 'exchanges', 'markets') group by step"
    )


def measured_from_runs(rows: Iterable[tuple[str, int, int]]) -> dict[str, float]:
    """Bytes per record by dataset from run-metrics rows (dataset, served records, bytes)."""
    return {dataset: bytes_ / served for dataset, served, bytes_ in rows if served}
