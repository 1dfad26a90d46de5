"""The `snapshot-summary` artifact: each snapshot run's report (`flows.ops.observability.snapshot_markdown`) in
the Prefect UI."""

from __future__ import annotations

import logging
from typing import Any

from flows.ops.observability import snapshot_markdown

ARTIFACT_KEY = "snapshot-summary"

logger = logging.getLogger(__name__)


def publish_snapshot_artifact(summary: Any) -> str | None:
    """Attach the run report to the current flow run as the `snapshot-summary` artifact; never fails the run."""
    from prefect.artifacts import create_markdown_artifact

    try:
        quality = getattr(summary, "quality", None)
        verdict = "" if quality is None else f", data quality {'ok' if quality.ok else 'FAILED'}"
        artifact_id = create_markdown_artifact(
            markdown=snapshot_markdown(summary),
            key=ARTIFACT_KEY,
            description=f"Snapshot {summary.snapshot_id}: {sum(r.valid for r in summary.reports):,} valid records"
            f"{verdict}",
        )
    except Exception as exc:
        logger.warning("could not create the %s artifact: %s", ARTIFACT_KEY, exc)
        return None
    return str(artifact_id)
