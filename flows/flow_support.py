"""What every flow module shares about Prefect: which failures a task retries, and the id of the run it is in.

Only flow modules import this (it imports Prefect); the engines below them stay Prefect-free.
"""

from __future__ import annotations

from typing import Any

from prefect.client.schemas.objects import TaskRun
from prefect.context import get_run_context
from prefect.states import State

from flows.errors import ApiUnavailable, StorageError
from flows.lake.storage import permanent_reason


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


def flow_run_id() -> str | None:
    """The id of the Prefect flow run this code runs in; None outside one."""
    try:
        run = get_run_context().flow_run  # type: ignore[union-attr]
    except Exception:
        return None
    return str(run.id) if run else None
