"""Logging in a Prefect process: `flows.ops.observability`'s redaction and JSON lines, with the flow and task run
each line was logged in.

Call `configure_logging` here rather than in `flows.ops.observability`: in JSON mode it imports Prefect first
(importing Prefect configures logging, which would otherwise undo the JSON handler later) and names the runs.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, TYPE_CHECKING

from flows.errors import PipelineError
from flows.ops import observability

if TYPE_CHECKING:
    from flows.settings import Settings


def run_context() -> dict[str, str]:
    """Ids of the Prefect flow run and task run this thread is in, if any (for loggers outside Prefect's)."""
    found: dict[str, str] = {}
    if "prefect.context" not in sys.modules:  # never import Prefect while formatting a record
        return found
    try:
        from prefect.context import FlowRunContext, TaskRunContext

        task_ctx = TaskRunContext.get()
        if task_ctx is not None:
            found["task_run_id"] = str(task_ctx.task_run.id)
            found["task_run_name"] = task_ctx.task_run.name
        flow_ctx = FlowRunContext.get()
        if flow_ctx is not None and flow_ctx.flow_run is not None:
            found["flow_run_id"] = str(flow_ctx.flow_run.id)
            found["flow_run_name"] = flow_ctx.flow_run.name
            found["flow_name"] = flow_ctx.flow.name
        elif task_ctx is not None and task_ctx.task_run.flow_run_id:
            found["flow_run_id"] = str(task_ctx.task_run.flow_run_id)
    except Exception:
        return found
    return found


def _import_prefect() -> None:
    import prefect  # noqa: F401


def configure_logging(settings: Settings | None = None, *, stream: IO[str] | None = None) -> None:
    """Redact secrets from every log record; with `PIPELINE_LOG_FORMAT=json`, log JSON lines naming the flow and
    task runs. Idempotent. In text mode Prefect is not imported."""
    observability.configure_logging(settings, stream=stream, run_context=run_context, before_json=_import_prefect)


class QuietKnownFailures(logging.Filter):
    """Keep Prefect's run logs readable.

    - A `PipelineError` already says what happened and what to do in one line: log it without a traceback.
    - Drop Prefect's per-task notice that timeouts in worker threads act between blocking calls. Known and
      accepted: every HTTP call has its own connect/read timeout, so a task timeout only needs to act between
      pages, which is what it does.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Timeout of %s seconds configured for this task"):
            return False
        if record.exc_info and isinstance(record.exc_info[1], PipelineError):
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_known_failures() -> None:
    """Put `QuietKnownFailures` on Prefect's flow-run and task-run loggers, once per process (flow modules call
    this at import: a deployment imports its flow's module only)."""
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, QuietKnownFailures) for f in logger.filters):
            logger.addFilter(QuietKnownFailures())
