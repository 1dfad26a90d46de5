"""Snapshot identity: one extraction moment, named by its UTC timestamp (`20261121T053000Z`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

_FORMAT = "%Y%m%dT%H%M%SZ"
PATTERN = r"^\d{8}T\d{6}Z$"


@dataclass(frozen=True)
class Snapshot:
    """A snapshot id and the instant it names. Re-running an id replaces its files, never adds to them."""

    id: str
    ts: datetime

    @classmethod
    def now(cls) -> Snapshot:
        ts = datetime.now(UTC).replace(microsecond=0)
        return cls(ts.strftime(_FORMAT), ts)

    @classmethod
    def parse(cls, snapshot_id: str) -> Snapshot:
        if not re.match(PATTERN, snapshot_id):
            raise ValueError(f"snapshot id must look like 20261121T053000Z (UTC), got {snapshot_id!r}")
        return cls(snapshot_id, datetime.strptime(snapshot_id, _FORMAT).replace(tzinfo=UTC))
