"""Alerts from the flows: what `flows.ops.alerts` builds and delivers, plus what Prefect knows.

- `send_alert` delivers an alert (log, webhook) and emits data-quality and staleness alerts as Prefect events,
  which the automations in `deployments/automations.yaml` react to;
- `failure_alert` links the flow run's page in the Prefect UI;
- `alert_on_failure` is the flows' `on_failure`/`on_crashed` hook.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from flows.ops import alerts
from flows.ops.alerts import F_FAILING, F_QUALITY_RUN, F_SNAPSHOT, Alert, error_line
from flows.orchestration.runs import flow_run_url
from flows.redaction import redact_value

if TYPE_CHECKING:
    from flows.settings import Settings

logger = logging.getLogger(__name__)

# The event automations react to when data-quality checks fail (deployments/automations.yaml).
QUALITY_FAILED_EVENT = "coincap.data-quality.failed"
EVENTS = {
    ("data_quality", "error"): QUALITY_FAILED_EVENT,
    ("data_quality", "warning"): "coincap.data-quality.warned",
    ("stale", "error"): "coincap.data.stale",
    ("stale", "warning"): "coincap.data.stale",
}


def emit_alert_event(alert: Alert) -> None:
    """Data-quality and staleness alerts as Prefect events, for automations (only where a Prefect API is in use).
    Never raises."""
    name = EVENTS.get((alert.kind, alert.severity))
    if name is None:
        return
    try:
        from prefect.context import FlowRunContext, TaskRunContext
        from prefect.events import emit_event
        from prefect.settings import PREFECT_API_URL

        if not (PREFECT_API_URL.value() or FlowRunContext.get() or TaskRunContext.get()):
            return  # no Prefect API here; don't start a throwaway server for one event
        subject = alert.fields.get(F_SNAPSHOT) or ""
        if alert.kind == "data_quality" and subject not in ("", "–"):
            resource = {"prefect.resource.id": f"coincap.snapshot.{subject}", "prefect.resource.name": subject}
        elif alert.kind == "data_quality":
            run = alert.fields.get(F_QUALITY_RUN, "unknown")
            resource = {"prefect.resource.id": f"coincap.quality-run.{run}", "prefect.resource.name": run}
        else:
            resource = {"prefect.resource.id": "coincap.freshness", "prefect.resource.name": "freshness"}
        emit_event(
            event=name,
            resource=resource,
            payload=redact_value(
                {
                    "title": alert.title,
                    "text": alert.text,
                    "severity": alert.severity,
                    "failed_checks": alert.fields.get(F_FAILING, ""),
                    "fields": alert.fields,
                }
            ),
        )
    except Exception as exc:
        logger.warning("Prefect event %s not emitted: %s", name, error_line(exc))


def send_alert(alert: Alert | None, settings: Settings | None = None) -> bool:
    """Log the alert, emit its Prefect event, and post it to the webhook; True if the webhook took it.

    Never raises. Without PIPELINE_ALERT_WEBHOOK_URL the alert is only logged (and emitted). `None` (what
    `quality_alert` returns for a clean report) sends nothing."""
    return alerts.deliver_alert(alert, settings, emit=emit_alert_event)


def failure_alert(flow_name: str, flow_run_id: str | None, error: BaseException | str) -> Alert:
    """An alert for a flow run that failed or crashed, with a link to the run's page (its logs)."""
    return alerts.failure_alert(flow_name, flow_run_id, error, logs_url=flow_run_url(flow_run_id))


def state_error(state: Any) -> BaseException | str:
    """The exception behind a Failed/Crashed state if Prefect still holds it, else the state's message."""
    try:
        result = state.result(raise_on_failure=False)
        if isinstance(result, BaseException):
            return result
    except Exception:
        pass
    return state.message or f"the run ended {state.name}"


def alert_on_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """Prefect `on_failure`/`on_crashed` hook: alert with the flow, the run and the error line. Never raises."""
    try:
        alert = failure_alert(flow.name, str(flow_run.id), state_error(state))
        if state.name != "Failed":  # Crashed (infrastructure, signal), TimedOut, ...
            verb = {"Crashed": "crashed", "TimedOut": "timed out"}.get(state.name, f"ended {state.name}")
            alert = Alert(alert.kind, f"Flow run {verb}: {flow.name}", alert.text, alert.severity,
                          {**alert.fields, "state": state.name})  # fmt: skip
        send_alert(alert)
    except Exception as exc:  # a hook must not turn a failure into a different one
        logger.warning("failure alert not sent: %s", error_line(exc))
