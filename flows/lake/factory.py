"""Pick the lake backend for the configured target."""

from __future__ import annotations

from flows.errors import ConfigError
from flows.lake.storage import LakeStorage, LocalStorage
from flows.settings import Settings, Target


def lake_storage(settings: Settings) -> LakeStorage:
    """The lake for `settings.target`: a local folder, or the GCS bucket `GCS_BUCKET` (client created on first use)."""
    if settings.target is Target.local:
        return LocalStorage(settings.lake_dir)
    if settings.target is Target.gcp:
        from flows.lake.gcs import GcsStorage

        bucket = (settings.gcs_bucket or "").strip().removeprefix("gs://").strip("/")
        if not bucket:
            raise ConfigError(
                "GCS_BUCKET is not set, so the gcp target has no lake.",
                "Set GCS_BUCKET to the lake bucket's name (a Terraform output of terraform/envs/prod).",
            )
        if "/" in bucket:
            raise ConfigError(
                f"GCS_BUCKET must be a bucket name, not a path (got {settings.gcs_bucket!r}).",
                "Set GCS_BUCKET to the bare bucket name, e.g. example-project-coincap-lake.",
            )
        return GcsStorage(bucket, project=settings.gcp_project)
    raise ConfigError(
        f"The {settings.target.value} lake is not available in this version.",
        "Set PIPELINE_TARGET to local or gcp.",
    )
