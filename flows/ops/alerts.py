"""Alerts: a failed run, failed data-quality checks, stale data. Every alert is logged; with
`PIPELINE_ALERT_WEBHOOK_URL` set it is also posted to a Slack-compatible incoming webhook (Slack, Mattermost,
Rocket.Chat, ...), and data-quality and staleness alerts are emitted as Prefect events for automations.

Sending never raises and never fails a run: a webhook that keeps failing costs one warning line. The webhook
URL is a credential (whoever has it can post): it is registered for log redaction and never printed.

Prefect automations as code (`deployments/automations.yaml`) live here too: `load_automations` parses them
into Prefect's own models, `apply_automations` creates or updates them by name (`coincap-pipeline automations`).
"""

from __future__ import annotations

import copy
import email.utils
import json
import logging
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import httpx

from flows.errors import ConfigError, PipelineError
from flows.ops.observability import redact, redact_url, redact_value, register_secret
from flows.paths import PROJECT_ROOT

if TYPE_CHECKING:
    from prefect.events.schemas.automations import AutomationCore

    from flows.quality import CheckResult, QualityReport
    from flows.settings import Settings

logger = logging.getLogger(__name__)

SOURCE = "coincap-pipeline"
# Field names the alert builders use and the Prefect event reads back.
F_SNAPSHOT = "snapshot"
F_QUALITY_RUN = "quality run"
F_FAILING = "failing checks"
F_WARNINGS = "warnings"
F_DATASETS = "datasets"
# The event automations react to when data-quality checks fail (deployments/automations.yaml).
QUALITY_FAILED_EVENT = "coincap.data-quality.failed"
_EVENTS = {
    ("data_quality", "error"): QUALITY_FAILED_EVENT,
    ("data_quality", "warning"): "coincap.data-quality.warned",
    ("stale", "error"): "coincap.data.stale",
    ("stale", "warning"): "coincap.data.stale",
}
_MAX_LISTED = 10  # checks listed in an alert's text; the rest are counted
# Warnings that alert by themselves: news about this snapshot (a price jump, a volume spike, fewer rows than the
# previous one). Other warnings are standing quirks of CoinCap's data (shared tickers, supply above max supply)
# that would alert on every run: they stay in ops.dq_results and the health page, and ride along in alerts.
ALERTING_WARNING_CATEGORIES = frozenset({"anomaly", "completeness", "freshness"})


@dataclass(frozen=True)
class Alert:
    """One alert: a one-line title, a short markdown body, and key facts."""

    kind: str  # 'run_failed' | 'data_quality' | 'stale'
    title: str
    text: str
    severity: str  # 'error' | 'warning'
    fields: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ building alerts


def _num(value: float | int | None) -> str:
    if value is None:
        return "–"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.4g}"


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _check_line(result: CheckResult) -> str:
    facts = [result.status]
    if result.failing_rows:
        facts.append(f"{_num(result.failing_rows)} row{'s' if result.failing_rows != 1 else ''}")
    if result.observed is not None or result.threshold is not None:
        facts.append(f"observed {_num(result.observed)}, threshold {_num(result.threshold)}")
    detail = f": {_one_line(result.detail, 200)}" if result.detail else ""
    return f"• `{result.check_name}` ({result.dataset}) {', '.join(facts)}{detail}"


def _listed(results: list[CheckResult]) -> list[str]:
    lines = [_check_line(r) for r in results[:_MAX_LISTED]]
    if len(results) > _MAX_LISTED:
        lines.append(f"…and {len(results) - _MAX_LISTED} more")
    return lines


def quality_alert(report: QualityReport) -> Alert | None:
    """An alert naming the failed (and warning) checks of a quality run; None when nothing failed and no
    warning is news (see ALERTING_WARNING_CATEGORIES)."""
    failed, warned = list(report.failed), list(report.warned)
    if not failed:
        warned = [r for r in warned if r.category in ALERTING_WARNING_CATEGORIES]
        if not warned:
            return None
    where = f"snapshot {report.snapshot_id}" if report.snapshot_id else "the warehouse"
    if failed:
        title = f"Data-quality checks failed for {where}: {', '.join(r.check_name for r in failed[:3])}"
        if len(failed) > 3:
            title += f" and {len(failed) - 3} more"
    else:
        title = f"Data-quality warnings for {where}: {', '.join(r.check_name for r in warned[:3])}"
        if len(warned) > 3:
            title += f" and {len(warned) - 3} more"
    text = "\n".join([report.summary_line(), *_listed(failed + warned)])
    fields = {F_SNAPSHOT: report.snapshot_id or "–", F_QUALITY_RUN: report.run_id}
    if failed:
        fields[F_FAILING] = ", ".join(r.check_name for r in failed)
    if warned:
        fields[F_WARNINGS] = ", ".join(r.check_name for r in warned)
    fields["checked at"] = report.checked_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return Alert("data_quality", _one_line(title, 200), text, "error" if failed else "warning", fields)


def stale_alert(results: list[CheckResult]) -> Alert:
    """An alert for freshness checks that tripped (their detail says how old the data is)."""
    tripped = [r for r in results if r.status != "pass"] or list(results)
    datasets = sorted({r.dataset for r in tripped})
    severe = any(r.status in ("fail", "error") for r in tripped)
    title = f"Stale data: {', '.join(datasets) or 'the pipeline'} not refreshed in time"
    text = "\n".join([
        f"{len(tripped)} freshness check{'s' if len(tripped) != 1 else ''} tripped. Check the latest runs of the "
        "snapshot and reference-data deployments (failed, late or paused schedules).",
        *_listed(tripped),
    ])  # fmt: skip
    fields = {F_DATASETS: ", ".join(datasets) or "–", F_FAILING: ", ".join(r.check_name for r in tripped)}
    return Alert("stale", _one_line(title, 200), text, "error" if severe else "warning", fields)


def error_line(error: BaseException | str) -> str:
    """One line for an error, redacted: a PipelineError's own line, else `Type: first line of the message`."""
    if isinstance(error, PipelineError):
        return _one_line(redact(str(error)), 500)  # redacted before the cut: a cut secret would not match
    if isinstance(error, BaseException):
        first = (redact(str(error)).strip().splitlines() or [""])[0]
        return _one_line(f"{type(error).__name__}: {first}" if first else type(error).__name__, 500)
    return _one_line((redact(str(error)).strip().splitlines() or ["unknown error"])[0], 500)


def _run_url(flow_run_id: str | None) -> str | None:
    if not flow_run_id:
        return None
    try:
        from prefect.utilities.urls import url_for

        return url_for("flow-run", obj_id=flow_run_id)
    except Exception:
        return None


def failure_alert(flow_name: str, flow_run_id: str | None, error: BaseException | str) -> Alert:
    """An alert for a flow run that failed or crashed."""
    line = redact(error_line(error))
    fields = {"flow": flow_name, "flow run": flow_run_id or "–"}
    url = _run_url(flow_run_id)
    if url:
        fields["logs"] = url
    return Alert("run_failed", f"Flow run failed: {flow_name}", line, "error", fields)


def _state_error(state: Any) -> BaseException | str:
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
        alert = failure_alert(flow.name, str(flow_run.id), _state_error(state))
        if state.name != "Failed":  # Crashed (infrastructure, signal), TimedOut, ...
            verb = {"Crashed": "crashed", "TimedOut": "timed out"}.get(state.name, f"ended {state.name}")
            alert = Alert(alert.kind, f"Flow run {verb}: {flow.name}", alert.text, alert.severity,
                          {**alert.fields, "state": state.name})  # fmt: skip
        send_alert(alert)
    except Exception as exc:  # a hook must not turn a failure into a different one
        logger.warning("failure alert not sent: %s", error_line(exc))


# -------------------------------------------------------------------------------------------- the message


def _escape(text: str) -> str:
    """Slack mrkdwn control characters (&, <, >) escaped; markdown emphasis left alone."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_message(alert: Alert, *, sent_at: datetime | None = None) -> dict[str, Any]:
    """Slack's incoming-webhook JSON: `text` (the notification fallback) and `blocks` (header, body, fields,
    context), within Slack's block limits. Mattermost and Rocket.Chat read `text`."""
    icon = ":rotating_light:" if alert.severity == "error" else ":warning:"
    moment = (sent_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S UTC")
    title = redact(alert.title)
    body = _escape(redact(alert.text))
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(f"{icon} {title}", 150), "emoji": True}},
    ]
    if body:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(body, 3000)}})
    facts = [
        {"type": "mrkdwn", "text": _cut(f"*{_escape(k)}*\n{_escape(redact(str(v)))}", 2000)}
        for k, v in list(alert.fields.items())[:10]
    ]
    if facts:
        blocks.append({"type": "section", "fields": facts})
    context = f"{SOURCE} · {alert.kind} · {alert.severity} · {socket.gethostname()} · {moment}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _escape(context)}]})
    fallback = _cut(f"{icon} {title}\n{body}", 3000) if body else f"{icon} {title}"
    return {"text": fallback, "blocks": blocks}


# ------------------------------------------------------------------------------------------------ delivery


@dataclass(frozen=True)
class DeliveryPolicy:
    """How hard to try: bounded, so a dead webhook delays a run by at most about `deadline_s`."""

    attempts: int = 4
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 10.0
    backoff_base_s: float = 1.0
    backoff_max_s: float = 8.0
    max_retry_after_s: float = 30.0
    deadline_s: float = 60.0


DELIVERY = DeliveryPolicy()


@dataclass
class Delivery:
    ok: bool
    attempts: int
    status: int | None = None
    reason: str = ""


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def post_webhook(
    url: str,
    payload: dict[str, Any],
    policy: DeliveryPolicy = DELIVERY,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> Delivery:
    """POST `payload` as JSON; retry 5xx, 429 (honouring Retry-After), 408 and network errors with backoff."""
    started = time.monotonic()
    timeout = httpx.Timeout(policy.read_timeout_s, connect=policy.connect_timeout_s)
    reason, status = "", None
    attempt = 0
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        while attempt < policy.attempts:
            attempt += 1
            wait: float | None = None
            try:
                response = client.post(url, json=payload, headers={"User-Agent": f"{SOURCE} alerts"})
            except httpx.TransportError as exc:  # refused, reset, DNS, timeouts
                status, reason = None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return Delivery(True, attempt, status)
                reason = f"HTTP {status}: {_one_line(response.text, 120)}" if response.text else f"HTTP {status}"
                if status == 429:
                    wait = _retry_after(response.headers.get("Retry-After"))
                    if wait is not None and wait > policy.max_retry_after_s:
                        return Delivery(False, attempt, status, f"{reason} (asked to wait {wait:.0f} s)")
                elif status < 500 and status != 408:
                    return Delivery(False, attempt, status, reason)  # a bad URL or payload: retrying won't help
            if attempt >= policy.attempts:
                break
            if wait is None:
                wait = min(policy.backoff_max_s, policy.backoff_base_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1)
            if time.monotonic() - started + wait > policy.deadline_s:
                break
            sleep(wait)
    return Delivery(False, attempt, status, reason)


def _log_alert(alert: Alert) -> None:
    level = logging.ERROR if alert.severity == "error" else logging.WARNING
    facts = "; ".join(f"{k}: {v}" for k, v in alert.fields.items())
    logger.log(
        level, "alert (%s): %s. %s%s", alert.kind, alert.title, _one_line(alert.text, 500),
        f" [{facts}]" if facts else "", extra={"alert_kind": alert.kind, "alert_severity": alert.severity},
    )  # fmt: skip


def _emit_event(alert: Alert) -> None:
    """Data-quality and staleness alerts as Prefect events, for automations (only where a Prefect API is in use)."""
    name = _EVENTS.get((alert.kind, alert.severity))
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
    if alert is None:
        return False
    try:
        if settings is None:
            from flows.settings import current_settings

            settings = current_settings()
        url = settings.alert_webhook_url_value
        register_secret(url)
        _log_alert(alert)
        _emit_event(alert)
        if not url:
            return False
        delivery = post_webhook(url, slack_message(alert), DELIVERY)
        if delivery.ok:
            logger.info("alert sent to the webhook at %s (%d attempt%s)", redact_url(url), delivery.attempts,
                        "s" if delivery.attempts > 1 else "")  # fmt: skip
            return True
        logger.warning(
            "alert not delivered to the webhook at %s after %d attempt%s (%s); check PIPELINE_ALERT_WEBHOOK_URL "
            "and the chat service. The alert: %s",
            redact_url(url), delivery.attempts, "s" if delivery.attempts > 1 else "", redact(delivery.reason),
            alert.title,
        )  # fmt: skip
        return False
    except Exception as exc:
        logger.warning("alert not sent (%s): %s", error_line(exc), getattr(alert, "title", alert))
        return False


# ------------------------------------------------------------------------------ Prefect automations as code

AUTOMATIONS_FILE = PROJECT_ROOT / "deployments" / "automations.yaml"
NOTIFICATION_BLOCK = "coincap-alerts"
MANAGED_TAG = "coincap-pipeline"  # automations carrying it are owned by the file: removed from it, deleted
_PLACEHOLDER_ID = UUID(int=0)


def _read_yaml(path: Path) -> list[dict[str, Any]]:
    import yaml

    if not path.exists():
        raise ConfigError(f"No automations file at {path}.", "Run from the repository root or pass --file.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML ({str(exc).splitlines()[0]}).", "Fix the file.") from None
    items = data.get("automations") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
        raise ConfigError(f"{path} has no `automations:` list.", "See deployments/automations.yaml for the format.")
    return items


def load_automations(path: Path = AUTOMATIONS_FILE, block_document_id: UUID | None = None) -> list[AutomationCore]:
    """The file's automations as Prefect's own `AutomationCore` models, the notification block filled in.

    An action's `block_document_id: coincap-alerts` names the block `apply_automations` makes; without an id
    (validation only) a placeholder stands in."""
    from prefect.events.schemas.automations import AutomationCore
    from pydantic import ValidationError

    models: list[AutomationCore] = []
    for index, raw in enumerate(_read_yaml(path)):
        item = copy.deepcopy(raw)
        name = item.get("name") or f"#{index + 1}"
        for key in ("actions", "actions_on_trigger", "actions_on_resolve"):
            for action in item.get(key) or []:
                if isinstance(action, dict) and action.get("block_document_id") == NOTIFICATION_BLOCK:
                    action["block_document_id"] = str(block_document_id or _PLACEHOLDER_ID)
        item["tags"] = sorted({*(item.get("tags") or []), MANAGED_TAG})
        try:
            model = AutomationCore.model_validate(item)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise ConfigError(
                f"{path}: automation {name!r} is invalid at {where or 'top level'}: {first.get('msg')}.",
                "Fix the file (Prefect's automation schema: prefect.events.schemas.automations).",
            ) from None
        # Every field set, so an update (PUT, unset fields left out) replaces the whole automation; the server
        # refuses `owner_resource` on update, and ours are owned by no resource.
        full = model.model_dump(mode="json", exclude={"owner_resource"} if model.owner_resource is None else None)
        models.append(AutomationCore.model_validate(full))
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path} names an automation twice.", "Give every automation its own name.")
    return models


def is_slack_url(url: str) -> bool:
    from urllib.parse import urlsplit

    return (urlsplit(url).hostname or "").lower() in ("hooks.slack.com", "hooks.slack-gov.com")


def save_notification_block(url: str, name: str = NOTIFICATION_BLOCK) -> UUID:
    """Create or update the Prefect notification block automations post to; return its document id.

    A Slack URL becomes a `slack-webhook` block; any other Slack-compatible endpoint a `custom-webhook` block
    posting `{"text": ...}`, with the URL kept in the block's secrets."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock, SlackWebhook

    if is_slack_url(url):
        block: Any = SlackWebhook(url=url)
    else:
        block = CustomWebhookNotificationBlock(
            name=SOURCE,
            url="{{webhook_url}}",
            json_data={"text": "*{{subject}}*\n{{body}}"},
            secrets={"webhook_url": url},
        )
    return block.save(name, overwrite=True)


def _existing_block_id(name: str) -> UUID | None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for slug in ("slack-webhook", "custom-webhook"):
            try:
                return client.read_block_document_by_name(name, block_type_slug=slug).id
            except ObjectNotFound:
                continue
    return None


def _canonical(value: Any) -> Any:
    """JSON shape with sets' order ignored, for comparing an automation with its stored version."""
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [_canonical(v) for v in value]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True, default=str))
    return value


def _same(stored: Any, wanted: AutomationCore) -> bool:
    keep = set(type(wanted).model_fields)
    a = _canonical({k: v for k, v in stored.model_dump(mode="json").items() if k in keep})
    b = _canonical(wanted.model_dump(mode="json"))
    return a == b


@dataclass
class AppliedAutomation:
    name: str
    action: str  # created | updated | unchanged | deleted
    id: UUID


def apply_automations(settings: Settings, path: Path = AUTOMATIONS_FILE) -> list[AppliedAutomation]:
    """Create or update the file's automations by name, and delete ones we made that the file no longer has.

    Idempotent: a second run reports every automation `unchanged` and writes nothing (an update would restart
    a proactive trigger's window)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise ConfigError(
            "PREFECT_API_URL is not set, so automations would go to a throwaway local server.",
            "Point it at your server or workspace (`prefect cloud login`, or export "
            "PREFECT_API_URL=http://127.0.0.1:4200/api), or run without --apply to only check the file.",
        )
    load_automations(path)  # check the file before touching anything
    url = settings.alert_webhook_url_value
    try:
        block_id = save_notification_block(url) if url else _existing_block_id(NOTIFICATION_BLOCK)
        if block_id is None:
            raise ConfigError(
                f"PIPELINE_ALERT_WEBHOOK_URL is not set and Prefect has no block named {NOTIFICATION_BLOCK}.",
                "Set PIPELINE_ALERT_WEBHOOK_URL to your Slack-compatible webhook, then re-run.",
            )
        wanted = load_automations(path, block_id)
        applied: list[AppliedAutomation] = []
        with get_client(sync_client=True) as client:
            for automation in wanted:
                found = client.read_automations_by_name(automation.name)
                if not found:
                    applied.append(AppliedAutomation(automation.name, "created", client.create_automation(automation)))
                    continue
                keep, *duplicates = found
                for extra in duplicates:
                    client.delete_automation(extra.id)
                if _same(keep, automation):
                    applied.append(AppliedAutomation(automation.name, "unchanged", keep.id))
                else:
                    client.update_automation(keep.id, automation)
                    applied.append(AppliedAutomation(automation.name, "updated", keep.id))
            names = {a.name for a in wanted}
            for stale in client.read_automations():
                if MANAGED_TAG in (stale.tags or []) and stale.name not in names:
                    client.delete_automation(stale.id)
                    applied.append(AppliedAutomation(stale.name, "deleted", stale.id))
    except PrefectHTTPStatusError as exc:
        detail = exc.response.text[:300] if exc.response is not None else str(exc)
        raise PipelineError(
            f"Prefect refused the automations (HTTP {exc.response.status_code}: {_one_line(detail, 300)}).",
            f"Fix {path.name} and re-run.",
        ) from None
    except httpx.TransportError as exc:
        raise PipelineError(
            f"Cannot reach the Prefect API at {PREFECT_API_URL.value()} ({type(exc).__name__}).",
            "Start the server or check PREFECT_API_URL, then re-run.",
        ) from None
    return applied
