"""The fault suite's scenarios: one fault against one flow each, and the outcome the pipeline is designed to reach."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from flows.lab.fault_suite.accounting import HISTORY
from flows.standin import Faults

# What a scenario's first run may end as. A completed run absorbed the fault (client retries, task retries);
# otherwise the fault is cleared (quota reset, storage back, process restarted) and the next run must complete.
COMPLETED = "completed"
KILLED_THEN_RECOVERED = "killed (SIGKILL), then recovered"


def failed_then_recovered(error: str) -> str:
    return f"failed ({error}), then recovered"


@dataclass(frozen=True)
class Scenario:
    """One fault against one flow, and the outcome the pipeline is designed to reach."""

    name: str  # stable id (tests, --only)
    flow: Literal["snapshot", "backfill"]
    fault: str  # what is injected, for the table
    expect: str  # COMPLETED, failed_then_recovered(<error>) or KILLED_THEN_RECOVERED
    faults: Faults = field(default_factory=Faults)
    settings: dict[str, object] = field(default_factory=dict)
    storage_fault: tuple[int, Literal["fail", "fail_after_write"], str] | None = None  # (at, action, key prefix)
    kill: Literal["extract", "publish", "backfill"] | None = None
    publishes_nothing: bool = False  # the failed run must leave no lake object and no staged file
    marts: bool = False  # build the marts with dbt and count them
    baseline: bool = False  # no fault: a reference row
    note: str = ""  # why the outcome is what it is, when the table alone would not say
    # A designed stop (a server no client should follow): the first run's error is one line holding these words.
    stops_with: tuple[str, ...] = ()
    max_requests: int | None = None  # the first run sends at most this many requests, whatever the server does
    exact_credits: bool = False  # the run's metered credits equal what the stand-in billed (it says so in a header)

    @property
    def scopes(self) -> dict[str, int]:
        """Top-N scopes of this scenario's settings (dataset -> N)."""
        limit = self.settings.get("COINCAP_ASSETS_LIMIT")
        return {"assets": int(limit)} if isinstance(limit, int) else {}


def scenarios() -> list[Scenario]:
    """The suite: every fault of issue 6 against the snapshot flow, and the ones that matter to the backfill."""
    seed = 11
    return [
        Scenario("snapshot-baseline", "snapshot", "none (reference run)", COMPLETED, baseline=True),
        Scenario(
            "snapshot-5xx-storm", "snapshot", "14 consecutive 5xx after 3 requests, then 10% 5xx", COMPLETED,
            Faults(storm_after=3, storm_requests=14, p_5xx=0.1, seed=seed),
        ),
        Scenario(
            "snapshot-429-window", "snapshot", "per-window rate limit: 4 requests / 0.4 s, 429 + Retry-After",
            COMPLETED, Faults(rate_limit=4, rate_window_s=0.4, seed=seed),
        ),
        Scenario(
            "snapshot-quota", "snapshot", "monthly quota runs out after 5 calls (429, usage limit)",
            failed_then_recovered("QuotaExhausted"), Faults(quota_after_calls=5, quota_status=429, seed=seed),
            publishes_nothing=True,
        ),
        Scenario(
            "snapshot-slow", "snapshot", "25% of answers held 1.5 s (read timeout 1 s), all +20 ms", COMPLETED,
            Faults(p_slow=0.25, slow_s=1.5, delay_s=0.02, seed=seed), settings={"COINCAP_READ_TIMEOUT": 1.0},
        ),
        Scenario(
            "snapshot-drops", "snapshot", "25% of connections closed without an answer", COMPLETED,
            Faults(p_drop=0.25, seed=seed),
        ),
        Scenario(
            "snapshot-truncated", "snapshot", "25% of bodies cut in half (truncated JSON)", COMPLETED,
            Faults(p_truncate=0.25, seed=seed),
        ),
        Scenario(
            "snapshot-drift-new-fields", "snapshot", "schema drift: 30% of records carry 3 undocumented fields",
            COMPLETED, Faults(drift_new_fields=0.3, seed=seed),
        ),
        Scenario(
            "snapshot-drift-missing", "snapshot", "schema drift: 30% of records lack their nullable fields",
            COMPLETED, Faults(drift_missing_optional=0.3, seed=seed),
        ),
        Scenario(
            "snapshot-drift-types", "snapshot", "schema drift: 10% of records send a number as array/object/bool",
            COMPLETED, Faults(drift_wrong_type=0.1, seed=seed),
        ),
        Scenario(
            "snapshot-duplicates", "snapshot", "ranks shift 3 rows a page, 4 rows of the previous page repeated",
            COMPLETED, Faults(rank_shift=3, duplicate_rows=4, seed=seed),
        ),
        Scenario(
            "snapshot-kill-extract", "snapshot", "SIGKILL mid-extract (pages staged, API stuck), restart same id",
            KILLED_THEN_RECOVERED, Faults(hang_after=7, seed=seed), kill="extract",
        ),
        Scenario(
            "snapshot-kill-publish", "snapshot", "SIGKILL mid-publish (1 object written), restart same id",
            KILLED_THEN_RECOVERED, kill="publish", marts=True,
        ),
        Scenario(
            "snapshot-storage", "snapshot", "lake write #2 fails (nothing written) during publish",
            COMPLETED, storage_fault=(2, "fail", ""),
        ),
        # hostile mode: what no honest CoinCap does; bounded by the client and the extract, never followed
        Scenario(
            "snapshot-ignore-offset", "snapshot", "hostile: every page is the first one, values drift on every answer",
            failed_then_recovered("ApiError"), Faults(ignore_offset=True, drift_values=True, seed=seed),
            publishes_nothing=True, stops_with=("the server ignores offset",), max_requests=3 * 3 + 1,
            note="3 calls a paged listing, then one line",
        ),
        Scenario(
            "snapshot-over-deliver", "snapshot", "hostile: pages carry 7 rows beyond the limit asked for", COMPLETED,
            Faults(over_deliver=7, seed=seed),
        ),
        Scenario(
            "snapshot-over-deliver-top-n", "snapshot", "hostile: 7 rows beyond the limit, top-50 assets scope",
            COMPLETED, Faults(over_deliver=7, seed=seed), settings={"COINCAP_ASSETS_LIMIT": 50},
        ),
        Scenario(
            "snapshot-trickle", "snapshot", "hostile: answers trickle 16 bytes / 50 ms (deadline 0.5 s, 2 attempts)",
            failed_then_recovered("ApiUnavailable"), Faults(trickle_s=0.05, seed=seed),
            settings={"COINCAP_CALL_DEADLINE": 0.5, "COINCAP_MAX_ATTEMPTS": 2}, publishes_nothing=True,
            stops_with=("call deadline",), max_requests=4 * 3 * 2, note="3 task attempts x 2 calls a dataset",
        ),
        Scenario(
            "snapshot-gzip-bomb", "snapshot", "hostile: 200 answers are a gzip bomb of 64 MB (cap 1 MB)",
            failed_then_recovered("ApiError"), Faults(gzip_bomb_mb=64, seed=seed),
            settings={"COINCAP_MAX_BODY_BYTES": 2**20}, publishes_nothing=True, stops_with=("refused",),
            max_requests=4,
        ),
        Scenario(
            "snapshot-redirect-other-host", "snapshot", "hostile: every call redirected (307) to another host",
            failed_then_recovered("ApiError"), Faults(redirect="other-host", seed=seed), publishes_nothing=True,
            stops_with=("to another host", "not followed"), max_requests=4,
        ),
        Scenario(
            "snapshot-redirect-same-host", "snapshot", "every call redirected (307) once on the same host", COMPLETED,
            Faults(redirect="same-host", seed=seed), exact_credits=True,
        ),
        Scenario(
            "snapshot-dear-billing", "snapshot", "billing: 12 credits a call at least, said in X-Credits-Used",
            COMPLETED, Faults(bill_floor=12, billing_header="X-Credits-Used", seed=seed), exact_credits=True,
        ),
        Scenario(
            "backfill-5xx-storm", "backfill", "20 consecutive 5xx after 5 requests, then 10% 5xx", COMPLETED,
            Faults(storm_after=5, storm_requests=20, p_5xx=0.1, seed=seed),
        ),
        Scenario(
            "backfill-truncated", "backfill", "30% of bodies cut in half (truncated JSON)", COMPLETED,
            Faults(p_truncate=0.3, seed=seed),
        ),
        Scenario(
            "backfill-kill", "backfill", "SIGKILL after a third of the chunks landed, restart same range",
            KILLED_THEN_RECOVERED, Faults(delay_s=0.08, seed=seed), kill="backfill",
        ),
        Scenario(
            "backfill-storage", "backfill", "chunk write #10 lands but reports failure (lost ack)", COMPLETED,
            storage_fault=(10, "fail_after_write", f"coincap/{HISTORY}/"),
        ),
    ]  # fmt: skip
