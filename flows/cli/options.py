"""The options several commands share, and the settings they build: environment first, flags on top."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from flows.errors import ConfigError
from flows.settings import Settings, Target

DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Lake and warehouse folder [env: PIPELINE_DATA_DIR; default ./data]."),
]
TargetOpt = Annotated[Target | None, typer.Option("--target", help="local or gcp [env: PIPELINE_TARGET].")]


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with CLI flags (non-None values) on top; bad values → one line."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        base = Settings()
        return base.model_copy(update=given) if given else base
    except ValidationError as exc:
        first = exc.errors()[0]
        name = first.get("loc", ["?"])[0]
        raise ConfigError(
            f"Invalid setting {name}: {first.get('msg')}.", "Fix the environment variable or flag."
        ) from None
