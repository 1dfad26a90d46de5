"""What a run leaves for people to read: log lines without secrets (text or JSON), and a summary artifact.

- Redaction: one function, `redact`, scrubs the secrets the settings hold (the CoinCap key, as given and as
  stripped, and the alert webhook URL; registered when `Settings` load) and anything shaped like a credential
  (`Authorization: Bearer ...`, `key=...`, `scheme://user:password@host`, webhook paths). It is applied to
  everything a run persists or emits: every log record from any logger (before any handler sees it, including
  the one that ships run logs to the Prefect API), exceptions leaving tasks and flows (`redacted_errors`, so
  Prefect's state messages, events and results never hold a secret), run-metrics and data-quality rows
  (`redact_row`, in both warehouse writers), the dashboard's health page, artifacts, alerts and their events.
- `PIPELINE_LOG_FORMAT=json`: one JSON object per line on stderr (`timestamp`, `severity` as Cloud Logging
  names it, `logger`, `message`, `flow_run_id`/`task_run_id` when known, extra fields), for Cloud Run, whose
  logging agent parses such lines into structured entries.
- The run report: `snapshot_markdown`, the markdown of each snapshot run.

Nothing here imports Prefect. A Prefect process sets logging up with `flows.orchestration.logs.configure_logging`
(which names the flow and task runs in JSON lines) and publishes the report as the `snapshot-summary` artifact
with `flows.orchestration.artifacts`.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flows.redaction import MIN_SECRET_LENGTH, REDACTED, TEXT_COLUMNS, redact, redact_row, redact_value, register_secret

if TYPE_CHECKING:
    from flows.settings import Settings

__all__ = [
    "MIN_SECRET_LENGTH",
    "REDACTED",
    "TEXT_COLUMNS",
    "redact",
    "redact_row",
    "redact_value",
    "register_secret",
]  # re-exported: one import for callers

_lock = threading.Lock()


def register_settings_secrets(settings: Settings) -> None:
    """Register the secrets a `Settings` holds: the CoinCap key and the alert webhook URL."""
    register_secret(settings.api_key_value)
    register_secret(settings.alert_webhook_url_value)


def redact_error(error: BaseException | str | None, limit: int | None = None) -> str | None:
    """An error's text, redacted, then cut to `limit` characters (in that order: a cut key would not match)."""
    if error is None:
        return None
    text = redact(str(error))
    return text[:limit] if limit is not None else text


class RedactedError(RuntimeError):
    """Stands in for an exception whose text held a secret that could not be scrubbed in place."""


def scrub_exception(exc: BaseException) -> BaseException:
    """Redact an exception's text in place (args, string attributes such as a PipelineError's `what`/`todo`,
    notes), along its cause/context chain. Returns `exc`, or a `RedactedError` carrying the redacted text when
    `str(exc)` still shows a secret (an exception that builds its text from something else)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        try:
            current.args = tuple(redact_value(a) for a in current.args)
            for name, value in list(vars(current).items()):
                if isinstance(value, str | list | tuple) and not name.startswith("__"):
                    setattr(current, name, redact_value(value))
        except Exception:  # read-only attributes, slots: str() is checked below
            pass
        current = current.__cause__ or current.__context__
    try:
        text = str(exc)
    except Exception:
        return RedactedError(type(exc).__name__)
    clean = redact(text)
    if clean != text:
        return RedactedError(f"{type(exc).__name__}: {clean}")
    return exc


@contextmanager
def redacted_errors() -> Iterator[None]:
    """Scrub secrets from any exception leaving the block (task and flow bodies), before Prefect turns it into
    a state message, an event or a stored result."""
    try:
        yield
    except Exception as exc:
        clean = scrub_exception(exc)
        if clean is exc:
            raise
        raise clean from None


def redact_url(url: str) -> str:
    """A URL safe to show: scheme and host only (a webhook's path and query are its credential)."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.hostname:
        return REDACTED
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}/{REDACTED}"


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Scrub a record in place: its message (with args), traceback and stack text."""
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: leave it for logging to report as usual
        return record
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
        text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        clean = redact(text)
        if clean != text:  # pre-format, so every formatter prints the scrubbed version
            record.exc_text = clean
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


class RedactingFilter(logging.Filter):
    """A filter form of `redact_record`, for handlers configured elsewhere (e.g. a logging.yml)."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


_factory_installed = False


def install_redaction() -> None:
    """Scrub every log record at creation (a log-record factory), whichever logger or handler it goes to."""
    global _factory_installed
    with _lock:
        if _factory_installed:
            return
        base = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            return redact_record(base(*args, **kwargs))

        logging.setLogRecordFactory(factory)
        _factory_installed = True


# --------------------------------------------------------------------------------------------------- JSON lines

# Cloud Logging's LogSeverity names for Python's levels.
_SEVERITIES = ((logging.CRITICAL, "CRITICAL"), (logging.ERROR, "ERROR"), (logging.WARNING, "WARNING"),
               (logging.INFO, "INFO"), (logging.DEBUG, "DEBUG"))  # fmt: skip
_RESERVED = set(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {
    "message", "asctime", "color_message", "taskName",
}  # fmt: skip


def severity(levelno: int) -> str:
    """Cloud Logging severity of a Python log level."""
    for level, name in _SEVERITIES:
        if levelno >= level:
            return name
    return "DEFAULT"


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return redact(str(value))


RunContext = Callable[[], dict[str, str]]
"""Names the run a log record was made in: some of `RUN_FIELDS` (`flows.orchestration.logs.run_context`)."""
RUN_FIELDS = ("flow_run_id", "flow_run_name", "flow_name", "task_run_id", "task_run_name", "task_name")


def no_run_context() -> dict[str, str]:
    """Outside an orchestrator: no run to name."""
    return {}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line, shaped for Cloud Logging's structured entries; `run_context`
    names the run each record was made in (for loggers that do not carry it themselves)."""

    def __init__(self, run_context: RunContext = no_run_context) -> None:
        super().__init__()
        self.run_context = run_context

    def format(self, record: logging.LogRecord) -> str:
        redact_record(record)  # records made before the factory was installed, or through makeLogRecord
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="microseconds")
            .replace("+00:00", "Z"),
            "severity": severity(record.levelno),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }  # fmt: skip
        try:
            context = self.run_context()
        except Exception:
            context = {}
        for name in RUN_FIELDS:
            value = getattr(record, name, None) or context.get(name)
            if value:
                entry[name] = str(value)
        for key, value in vars(record).items():
            if key not in _RESERVED and key not in entry and not key.startswith("_"):
                entry[key] = _json_safe(value)
        if record.exc_info and record.exc_info[1] is not None:
            entry["exception"] = redact(record.exc_text or self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = redact(record.exc_text)
        if record.stack_info:
            entry["stack_info"] = redact(record.stack_info)
        entry["logging.googleapis.com/sourceLocation"] = {
            "file": record.pathname, "line": str(record.lineno), "function": record.funcName,
        }  # fmt: skip
        return json.dumps(entry, ensure_ascii=False, default=str)


class JsonLinesHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The one console handler in JSON mode."""


def _all_loggers() -> list[logging.Logger]:
    named = [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    return [logging.getLogger(), *named]


def _is_console(handler: logging.Handler) -> bool:
    """A handler writing to the terminal: Prefect's console handlers, any stream handler on stdout/stderr."""
    if isinstance(handler, JsonLinesHandler):
        return True
    if type(handler).__module__.startswith("prefect.logging") and isinstance(handler, logging.StreamHandler):
        return True
    consoles = (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)
    return isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) in consoles


def _use_json_lines(stream: IO[str], run_context: RunContext) -> None:
    """Replace every console handler (root, Prefect's, uvicorn's, ...) with one JSON-lines handler."""
    handler = JsonLinesHandler(stream)
    handler.setFormatter(JsonFormatter(run_context))
    root = logging.getLogger()
    for logger in _all_loggers():
        consoles = [h for h in logger.handlers if _is_console(h)]
        for old in consoles:
            logger.removeHandler(old)
        if consoles or logger is root:
            logger.addHandler(handler)
    logging.captureWarnings(True)  # `warnings` go to the log too, as JSON
    package = logging.getLogger("flows")
    if package.level == logging.NOTSET:  # the root's WARNING would hide our INFO lines from Cloud Logging
        package.setLevel(logging.INFO)


def configure_logging(
    settings: Settings | None = None,
    *,
    stream: IO[str] | None = None,
    run_context: RunContext = no_run_context,
    before_json: Callable[[], None] | None = None,
) -> None:
    """Redact secrets from every log record; with `PIPELINE_LOG_FORMAT=json`, log JSON lines. Idempotent.

    In JSON mode `before_json` runs first: an orchestrator whose import configures logging (Prefect) is imported
    there, or it would undo the JSON handler later. `run_context` names the run in each line. A Prefect process
    calls `flows.orchestration.logs.configure_logging`, which passes both.
    """
    if settings is None:
        from flows import settings as settings_module

        try:  # the settings in force, else the environment's (without making them the ones in force)
            settings = settings_module._current or settings_module.Settings()
        except Exception:  # bad settings are reported by whoever uses them; log in text meanwhile
            settings = None
    from flows.settings import flush_notices

    install_redaction()
    if settings is None:
        return
    register_settings_secrets(settings)
    if settings.log_format != "json":
        flush_notices()  # e.g. "COINCAP_API_KEY had whitespace around it: stripped"
        return
    if before_json is not None:
        before_json()
    wanted = stream if stream is not None else sys.stderr
    consoles = [h for lg in _all_loggers() for h in lg.handlers if _is_console(h)]
    if not (consoles and all(isinstance(h, JsonLinesHandler) and h.stream is wanted for h in consoles)):
        _use_json_lines(wanted, run_context)
    flush_notices()  # as JSON lines


# ------------------------------------------------------------------------------------------- the run report


def _num(value: float | int | None, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.{digits}g}"


def _cell(text: object) -> str:
    """Markdown table cell: one line, pipes escaped."""
    return redact(str(text)).replace("\n", " ").replace("|", "\\|")


def snapshot_markdown(summary: Any) -> str:
    """The run report of a `SnapshotSummary`: per dataset, dbt, data quality, and where the data went."""
    lines = [f"# Snapshot `{summary.snapshot_id}`", ""]
    lines += [
        "| dataset | served | valid | quarantined | duplicates | API calls | credits | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    totals = dict.fromkeys(("served", "valid", "quarantined", "duplicates", "calls", "credits"), 0)
    for r in summary.reports:
        row = {"served": r.served, "valid": r.valid, "quarantined": r.quarantined, "duplicates": r.duplicates,
               "calls": r.calls, "credits": r.credits}  # fmt: skip
        for k, v in row.items():
            totals[k] += v
        lines.append(f"| {_cell(r.dataset)} | " + " | ".join(f"{v:,}" for v in row.values()) + f" | {r.seconds:.1f} |")
    lines.append(
        "| **total** | " + " | ".join(f"**{v:,}**" for v in totals.values()) + f" | **{summary.seconds:.1f}** |"
    )
    new_fields = [f"{r.dataset}: {', '.join(r.new_fields)}" for r in summary.reports if r.new_fields]
    if new_fields:
        lines += ["", "New fields from CoinCap (kept in `extra_fields`): " + _cell("; ".join(new_fields))]

    lines += ["", "## dbt build", ""]
    dbt = summary.dbt
    if dbt is None:
        lines.append("Not run in this flow run (`transform` off; the `dbt-build` deployment follows).")
    else:
        statuses = ", ".join(f"{n} {s}" for s, n in sorted(dbt.statuses.items())) or "nothing to do"
        state = "ok" if dbt.ok else "failed"
        lines.append(f"**{state}** in {dbt.seconds:.1f} s: {statuses}")
        for failure in dbt.failures[:10]:
            lines.append(f"- {_cell(failure)}")

    lines += ["", "## Data quality", ""]
    quality = getattr(summary, "quality", None)
    if quality is None:
        lines.append("No data-quality checks ran in this flow run.")
    else:
        mark = "passed" if quality.ok else "FAILED"
        lines.append(f"**{mark}**: {_cell(quality.summary_line())} (quality run `{quality.run_id}`)")
        flagged = [*quality.failed, *quality.warned]
        if flagged:
            lines += ["", "| check | dataset | status | observed | threshold | failing rows | detail |",
                      "|---|---|---|---:|---:|---:|---|"]  # fmt: skip
            for c in flagged:
                lines.append(
                    f"| `{_cell(c.check_name)}` | {_cell(c.dataset)} | {_cell(c.status)} | {_num(c.observed)} | "
                    f"{_num(c.threshold)} | {_num(c.failing_rows)} | {_cell(c.detail)[:300]} |"
                )

    lines += ["", "## Where the data is", "", f"- lake: `{_cell(summary.lake_uri)}`",
              f"- warehouse: `{_cell(summary.warehouse_uri)}`"]  # fmt: skip
    if totals["quarantined"]:
        lines.append(f"- rejected rows and their reasons: `{_cell(summary.lake_uri)}/quarantine/`")
    return "\n".join(lines) + "\n"
