"""Alerts: a failed run, failed data-quality checks, stale data. Every alert is logged; with
`PIPELINE_ALERT_WEBHOOK_URL` set it is also posted to a Slack-compatible incoming webhook (Slack, Mattermost,
Rocket.Chat, ...).

This module builds and delivers alerts without Prefect. The flows send them through
`flows.orchestration.alerting`, which adds what Prefect knows: the run's page in the UI, the Prefect event
automations react to (data-quality and staleness alerts), and the `on_failure`/`on_crashed` hook.

Sending never raises and never fails a run: a webhook that keeps failing costs one warning line. The webhook
URL is a credential (whoever has it can post): it is registered for log redaction and never printed.
"""

from __future__ import annotations

import email.utils
import logging
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from flows.errors import PipelineError
from flows.ops.observability import redact, redact_url, register_secret

if TYPE_CHECKING:
    from flows.quality import CheckResult, QualityReport
    from flows.settings import Settings

logger = logging.getLogger(__name__)

SOURCE = "coincap-pipeline"
# Field names the alert builders use and the Prefect event (flows.orchestration.alerting) reads back.
F_SNAPSHOT = "snapshot"
F_QUALITY_RUN = "quality run"
F_FAILING = "failing checks"
F_WARNINGS = "warnings"
F_DATASETS = "datasets"
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


def one_line(text: str, limit: int = 300) -> str:
    """`text` on one line (whitespace runs made one space), cut to `limit` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _check_line(result: CheckResult) -> str:
    facts = [result.status]
    if result.failing_rows:
        facts.append(f"{_num(result.failing_rows)} row{'s' if result.failing_rows != 1 else ''}")
    if result.observed is not None or result.threshold is not None:
        facts.append(f"observed {_num(result.observed)}, threshold {_num(result.threshold)}")
    detail = f": {one_line(result.detail, 200)}" if result.detail else ""
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
    return Alert("data_quality", one_line(title, 200), text, "error" if failed else "warning", fields)


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
    return Alert("stale", one_line(title, 200), text, "error" if severe else "warning", fields)


def error_line(error: BaseException | str) -> str:
    """One line for an error, redacted: a PipelineError's own line, else `Type: first line of the message`."""
    if isinstance(error, PipelineError):
        return one_line(redact(str(error)), 500)  # redacted before the cut: a cut secret would not match
    if isinstance(error, BaseException):
        first = (redact(str(error)).strip().splitlines() or [""])[0]
        return one_line(f"{type(error).__name__}: {first}" if first else type(error).__name__, 500)
    return one_line((redact(str(error)).strip().splitlines() or ["unknown error"])[0], 500)


def failure_alert(
    flow_name: str, flow_run_id: str | None, error: BaseException | str, *, logs_url: str | None = None
) -> Alert:
    """An alert for a flow run that failed or crashed; `logs_url` is the run's page, where its logs are
    (`flows.orchestration.alerting.failure_alert` fills it in from Prefect)."""
    line = redact(error_line(error))
    fields = {"flow": flow_name, "flow run": flow_run_id or "–"}
    if logs_url:
        fields["logs"] = logs_url
    return Alert("run_failed", f"Flow run failed: {flow_name}", line, "error", fields)


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
                reason = f"HTTP {status}: {one_line(response.text, 120)}" if response.text else f"HTTP {status}"
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
        level, "alert (%s): %s. %s%s", alert.kind, alert.title, one_line(alert.text, 500),
        f" [{facts}]" if facts else "", extra={"alert_kind": alert.kind, "alert_severity": alert.severity},
    )  # fmt: skip


def deliver_alert(
    alert: Alert | None, settings: Settings | None = None, *, emit: Callable[[Alert], None] | None = None
) -> bool:
    """Log the alert, hand it to `emit` (the flows' Prefect event), and post it to the webhook; True if the
    webhook took it. The flows call `flows.orchestration.alerting.send_alert`, which passes the emitter.

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
        if emit is not None:
            emit(alert)
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
