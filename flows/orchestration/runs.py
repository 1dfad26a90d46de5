"""What every flow module shares about Prefect: which failures a task retries and how long it waits, and the run
it is in.

Only flow modules import this; the engines below them stay Prefect-free.
"""

from __future__ import annotations

from typing import Any, TypeVar

from prefect import Task
from prefect.client.schemas.objects import TaskRun
from prefect.context import get_run_context
from prefect.states import State

from flows.errors import ApiUnavailable, StorageError
from flows.lake.storage import permanent_reason
from flows.settings import Settings

T = TypeVar("T", bound=Task[Any, Any])


def retry_if_transient(task: Any, task_run: TaskRun, state: State) -> bool:
    """Retry network/storage trouble; never a rejected key, a spent quota, a bad configuration, nor a path that
    cannot be written (permissions, read-only or full disk): waiting does not fix those, it only hides them."""
    try:
        state.result()
    except (ApiUnavailable, StorageError, OSError) as exc:
        return permanent_reason(exc) is None
    except Exception:
        return False
    return False


def with_retry_delays(task: T, settings: Settings) -> T:
    """`task` with its retry delays times PIPELINE_TASK_RETRY_DELAY_SCALE: itself at 1 (production), retrying at
    once, without jitter, at 0 (the fault suite, tests). The number of retries never changes. A flow calls its
    tasks through this, with the settings of its run."""
    scale = settings.task_retry_delay_scale
    if scale == 1 or not task.retries:
        return task
    delays = task.retry_delay_seconds
    if scale == 0:
        return task.with_options(retry_delay_seconds=0, retry_jitter_factor=None)  # type: ignore[return-value]
    scaled = [d * scale for d in delays] if isinstance(delays, list) else (delays or 0) * scale
    return task.with_options(retry_delay_seconds=scaled)  # type: ignore[return-value]


def flow_run_id() -> str | None:
    """The id of the Prefect flow run this code runs in; None outside one."""
    try:
        run = get_run_context().flow_run  # type: ignore[union-attr]
    except Exception:
        return None
    return str(run.id) if run else None


def flow_run_url(flow_run_id: str | None) -> str | None:
    """The flow run's page in the Prefect UI (where its logs are); None without a run or a UI address."""
    if not flow_run_id:
        return None
    try:
        from prefect.utilities.urls import url_for

        return url_for("flow-run", obj_id=flow_run_id)
    except Exception:
        return None
