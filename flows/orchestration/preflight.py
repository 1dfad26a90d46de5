"""Preflight's questions to Prefect: the readers `flows.ops.preflight.run_preflight` takes, asking the Prefect API
configured here (PREFECT_API_URL, or a Prefect Cloud login)."""

from __future__ import annotations

from typing import Any


def read_work_pool(name: str) -> Any:
    """The work pool called `name`; LookupError when there is none."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return client.read_work_pool(name)
        except ObjectNotFound:
            raise LookupError(name) from None


def read_block(block_type: str, name: str) -> Any:
    """The block document `block_type/name`; LookupError when there is none."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return client.read_block_document_by_name(name=name, block_type_slug=block_type)
        except ObjectNotFound:
            raise LookupError(name) from None
