"""The staleness watchdog: a credit-free flow (every 6 hours on gcp) that runs the freshness checks on the lake and the
warehouse and alerts when data has not been refreshed in time.

It reads only what the pipeline already wrote (no CoinCap calls), so it can run as often as wanted. It
complements the proactive automation in deployments/automations.yaml, which watches runs rather than data:
a run can complete and still land nothing new (an empty scope, a publish that went elsewhere).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect import flow, get_run_logger

from flows.ops.alerts import stale_alert
from flows.orchestration.alerting import alert_on_failure, send_alert
from flows.orchestration.runs import flow_run_id
from flows.settings import current_settings

if TYPE_CHECKING:
    from flows.quality import QualityReport


@flow(name="watchdog", log_prints=True, on_failure=[alert_on_failure], on_crashed=[alert_on_failure])
def watchdog_flow() -> QualityReport:
    """Run the freshness checks and send a `stale` alert when any trips; the results land in ops.dq_results."""
    from flows.quality import run_checks

    logger = get_run_logger()
    settings = current_settings()
    report = run_checks(settings, flow_run_id=flow_run_id(), categories={"freshness"})
    tripped = [r for r in report.results if r.status != "pass"]
    if tripped:
        logger.warning("stale: %s", report.summary_line())
        send_alert(stale_alert(tripped), settings)
    else:
        logger.info("fresh: %s", report.summary_line())
    return report
