"""The checks Python runs (those that cross systems, flows/quality/checks.py), registered by name.

A check's builder gets the run's `Context` and returns a `Probe` (one SQL query and how to judge its rows), an
`Outcome` decided without SQL of its own, or None when its dataset is not in the snapshot under check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flows.quality.context import Context
from flows.quality.report import CATEGORIES, ERROR


@dataclass(frozen=True)
class Outcome:
    """What a check found: whether it tripped, what it measured against which threshold, and one line."""

    tripped: bool
    observed: float | None
    threshold: float | None
    failing_rows: int | None
    detail: str
    snapshot_id: str | None = None


@dataclass(frozen=True)
class Probe:
    """A check ready to run: its SQL, and how to judge the rows it returns (column names, rows)."""

    sql: str
    judge: Callable[[list[str], list[tuple[Any, ...]]], Outcome]


Builder = Callable[[Context], "Probe | Outcome | None"]


@dataclass(frozen=True)
class Check:
    name: str
    category: str
    dataset: str
    severity: str
    description: str
    build: Builder


CHECKS: list[Check] = []


def check(name: str, dataset: str, description: str, severity: str = ERROR) -> Callable[[Builder], Builder]:
    """Register a check; its category is the first part of its name."""
    category = name.split(".")[0]
    if category not in CATEGORIES:
        raise ValueError(f"check {name}: its category is not one of {', '.join(CATEGORIES)}")

    def register(build: Builder) -> Builder:
        CHECKS.append(Check(name, category, dataset, severity, description, build))
        return build

    return register
