"""Snapshot identity: one extraction moment, named by its UTC timestamp (`20261121T053000Z`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from flows.errors import SnapshotIdError

_FORMAT = "%Y%m%dT%H%M%SZ"
PATTERN = r"^[0-9]{8}T[0-9]{6}Z$"  # ASCII digits only: `\d` would also take Arabic-Indic or full-width ones
# Clock skew allowed between the machine that names a snapshot and the one that checks it; an id further ahead
# would sort after every real snapshot and stay "latest" for good.
MAX_AHEAD = timedelta(minutes=5)


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
    def parse(cls, snapshot_id: str, *, now: datetime | None = None) -> Snapshot:
        """The snapshot `snapshot_id` names; a `SnapshotIdError` (a ValueError) unless it is a real UTC time no more
        than `MAX_AHEAD` after `now` (default: the clock). Cheap: no I/O."""
        example = "like 20261121T053000Z (UTC)"
        if not isinstance(snapshot_id, str) or not re.fullmatch(PATTERN, snapshot_id, flags=re.ASCII):
            raise SnapshotIdError(f"Snapshot id {snapshot_id!r} is not a UTC time {example}.", "Pass one in that form.")
        try:
            ts = datetime.strptime(snapshot_id, _FORMAT).replace(tzinfo=UTC)
        except ValueError:
            raise SnapshotIdError(
                f"Snapshot id {snapshot_id!r} is not a real UTC time.", f"Pass an existing date and time {example}."
            ) from None
        now = now or datetime.now(UTC)
        if ts > now + MAX_AHEAD:
            raise SnapshotIdError(
                f"Snapshot id {snapshot_id!r} is in the future (it is now {now:{_FORMAT}}).",
                "Pass a past time, or none to take a snapshot now.",
            )
        return cls(snapshot_id, ts)
