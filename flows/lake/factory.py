"""Pick the lake backend for the configured target."""

from __future__ import annotations

from flows.errors import ConfigError
from flows.lake.storage import LakeStorage, LocalStorage
from flows.settings import Settings, Target


def lake_storage(settings: Settings) -> LakeStorage:
    """The lake for `settings.target`."""
    if settings.target is Target.local:
        return LocalStorage(settings.lake_dir)
    raise ConfigError(
        f"The {settings.target.value} lake is not available in this version.",
        "Set PIPELINE_TARGET=local (or leave it unset).",
    )
