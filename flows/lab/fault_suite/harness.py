"""The machinery of one fault scenario: its folder, stand-in, settings, flow runs and the processes it kills.

Retries are quick here: the client backs off for milliseconds, and Prefect's task retries wait nothing
(`PIPELINE_TASK_RETRY_DELAY_SCALE=0`, which the flows read from their settings), so a fault absorbed by a task
retry costs the retry, not its production delay of 5-300 s.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from flows.lab.fault_suite.accounting import HISTORY, SNAPSHOT_ID, Tally, orphans, scratch_files, snapshot_objects
from flows.lab.fault_suite.scenarios import Scenario
from flows.paths import PROJECT_ROOT
from flows.settings import Settings
from flows.standin import Catalog, Faults, StubServer

API_KEY = "fault-suite-key"
HISTORY_YEARS = 2  # d1 chunks are 365 days on a fixed grid: 3 chunks per asset
HISTORY_ASSETS = 8  # the backfill flow paces itself at 500 calls a minute: 24 chunks take ~3 s


def suite_settings(data_dir: Path, base_url: str, api_key: str = API_KEY, **overrides: object) -> Settings:
    """Settings for a scenario: the stand-in's URL and key, millisecond backoffs, task retries without their delays,
    short timeouts, small pages."""
    values: dict[str, object] = {
        "COINCAP_API_KEY": api_key,
        "COINCAP_API_BASE_URL": base_url,
        "PIPELINE_DATA_DIR": data_dir,
        "PIPELINE_TARGET": "local",
        "COINCAP_BACKOFF_BASE": 0.01,
        "COINCAP_BACKOFF_MAX": 0.05,
        "COINCAP_CONNECT_TIMEOUT": 1.0,
        "COINCAP_READ_TIMEOUT": 2.0,
        "COINCAP_MAX_ATTEMPTS": 8,
        "PIPELINE_TASK_RETRY_DELAY_SCALE": 0,  # task retries at once (their production delays are 5-300 s)
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes `Settings()` in another process equal `settings`."""
    env: dict[str, str] = {}
    for name, info in Settings.model_fields.items():
        value = getattr(settings, name)
        if value is None or info.alias is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        elif isinstance(value, list):
            value = ",".join(value)
        elif hasattr(value, "value"):  # enums
            value = value.value
        env[info.alias] = str(value)
    return env


def child_env(settings: Settings | None, api_url: str | None) -> dict[str, str]:
    prefixes = ("COINCAP_", "PIPELINE_", "GCP_", "GCS_", "BQ_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(settings_env(settings) if settings else {})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
    env.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


@dataclass
class ScenarioResult:
    """What one scenario did, and every way it fell short of the design (`problems`)."""

    name: str
    flow: str
    fault: str
    expected: str
    outcome: str = ""
    first_error: str | None = None
    tallies: list[Tally] = field(default_factory=list)
    injected: dict[str, int] = field(default_factory=dict)
    api_retries: int = 0
    first_run_requests: int = 0  # requests the stand-in received during the first run
    orphans: list[str] = field(default_factory=list)
    scratch_files: int = 0
    recover_s: float | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def total(self, name: str) -> int:
        return sum(getattr(t, name) for t in self.tallies)

    @property
    def marts(self) -> int | None:
        counted = [t.marts for t in self.tallies if t.marts is not None]
        return sum(counted) if counted else None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        for tally, row in zip(self.tallies, out["tallies"], strict=True):
            row["duplicates"] = tally.duplicates
        out.update({k: self.total(k) for k in ("served", "landed", "quarantined", "duplicates", "lost")})
        return out


class ScenarioRun:
    """The machinery of one scenario: its folder, stand-in, settings and flow runs."""

    def __init__(self, scenario: Scenario, root: Path, api_url: str | None) -> None:
        self.scenario = scenario
        self.root = root
        self.api_url = api_url
        self.data_dir = root / "data"
        self.result = ScenarioResult(scenario.name, scenario.flow, scenario.fault, scenario.expect)
        if scenario.note:
            self.result.notes.append(scenario.note)
        if scenario.flow == "snapshot":
            # seed 8: the catalog's "negative" corruption of a zero volume (seeds 3, 7, 10) is "-0", a valid value
            self.catalog = Catalog.synthetic(
                n_assets=100, n_exchanges=100, n_markets=100, seed=8, invalid_fraction=0.03
            )
            self.key = API_KEY
            # 40 a page: 3 pages each of assets, exchanges and markets, and rates in one call
            overrides: dict[str, object] = {"COINCAP_PAGE_LIMIT": 40}
        else:
            from flows.lab.backfill_bench import BENCH_KEY, bench_range

            start, end = bench_range(HISTORY_YEARS)
            self.history_range = (start, end)
            self.catalog = Catalog.synthetic(
                n_assets=HISTORY_ASSETS, n_exchanges=3, n_markets=20, seed=7, history_days=(end - start).days + 1,
                history_assets=HISTORY_ASSETS, history_interval="d1",
            )  # fmt: skip
            self.key = BENCH_KEY  # the key `python -m flows.lab.backfill_bench run` (the process killed) sends
            overrides = {}
        overrides.update(scenario.settings)
        self.server = StubServer(self.catalog, faults=replace(scenario.faults), api_keys={self.key})
        self.settings = suite_settings(self.data_dir, self.server.base_url, self.key, **overrides)
        # dataset -> records of the stand-in's log that count as served: after a designed stop that published
        # nothing, only those the next run was served (the stopped run's, values drifting, are not the same records)
        self.served_from: dict[str, int] = {}

    # ---- flows

    def run_flow(self, *, transform: bool = False) -> Any:
        from flows.settings import use_settings

        use_settings(self.settings)
        if self.scenario.flow == "snapshot":
            from flows.snapshot import snapshot_flow

            return snapshot_flow(snapshot_id=SNAPSHOT_ID, transform=transform)
        from flows import backfill

        start, end = self.history_range
        return backfill.backfill_flow(assets=None, interval="d1", start=start, end=end)

    def api_retries_of(self, summary: Any) -> int:
        """Calls the client retried in a completed run (a snapshot's per-dataset reports, or the backfill's)."""
        if self.scenario.flow == "snapshot":
            return sum(r.retries for r in summary.reports)
        return int(summary.retries)

    # ---- kills

    def child(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "wb") as out:
            return subprocess.Popen(
                args, cwd=self.root, env=child_env(self.settings, self.api_url), stdout=out, stderr=subprocess.STDOUT
            )

    def kill_snapshot(self, where: Literal["extract", "publish"]) -> None:
        marker = self.root / "paused"
        args = [sys.executable, "-m", "flows.lab.fault_suite", "_child-snapshot", "--snapshot-id", SNAPSHOT_ID]
        if where == "publish":
            args += ["--pause-at-write", "2", "--marker", str(marker)]
        proc = self.child(args, self.root / "child.log")
        try:
            if where == "publish":
                reached = wait_for_child(lambda: marker.exists(), proc)
            else:
                # pages already written to the staged files, the next answer stuck
                reached = wait_for_child(
                    lambda: self.server.stats.injected["hung request"] > 0 and scratch_files(self.data_dir) > 0, proc
                )
            if not reached:
                self.result.problems.append(
                    f"the child exited ({proc.poll()}) before the kill point: {log_tail(self.root)}"
                )
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        self.server.faults.hang_after = 0  # the stuck upstream recovers
        lake = self.settings.lake_dir
        published = snapshot_objects(lake, SNAPSHOT_ID)
        self.result.notes.append(
            f"killed with {len(published)} object(s) published and {scratch_files(self.data_dir)} staged file(s) open"
        )
        self.note_temporaries()

    def kill_backfill(self) -> None:
        from flows.lab.backfill_bench import child_command

        chunks_dir = self.settings.lake_dir / "coincap" / HISTORY
        total_chunks = self.history_chunks()
        args = child_command(self.server.base_url, self.data_dir, HISTORY_ASSETS, HISTORY_YEARS, workers=4)
        proc = self.child(args, self.root / "child.log")
        try:
            reached = wait_for_child(lambda: count_files(chunks_dir) >= total_chunks // 3, proc, poll_s=0.005)
            if not reached:
                self.result.problems.append(
                    f"the child exited ({proc.poll()}) before the kill point: {log_tail(self.root)}"
                )
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        self.server.faults = Faults()  # no latency for the restart
        time.sleep(0.2)  # let the server finish answering what the killed process had asked
        self.landed_at_kill = {str(p.relative_to(chunks_dir)) for p in chunks_dir.rglob("*.parquet")}
        self.history_calls_at_kill = self.history_calls()
        self.result.notes.append(f"killed with {len(self.landed_at_kill)} of {total_chunks} chunks landed")
        self.note_temporaries()

    def note_temporaries(self) -> None:
        """Say when the kill interrupted a write into the lake (the final check then proves the restart swept it)."""
        left = orphans(self.settings.lake_dir)
        if left:
            self.result.notes.append(f"the kill left {len(left)} temporary object(s) in the lake")

    def history_chunks(self) -> int:
        """Chunks a backfill of the range plans for all the assets (they are all closed: the history ended)."""
        from flows.ingest.backfill_plan import plan_chunks

        start, end = self.history_range
        now_ms = int(time.time() * 1000)
        return HISTORY_ASSETS * len(plan_chunks("x", "d1", start, end, now_ms))

    def history_calls(self) -> int:
        return sum(n for path, n in self.server.stats.requests.items() if path.endswith("/history"))


def wait_for_child(
    condition: Callable[[], bool], proc: subprocess.Popen[bytes], timeout_s: float = 90.0, poll_s: float = 0.01
) -> bool:
    """Poll `condition` while `proc` runs; False if it exits (or time runs out) first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return condition()
        time.sleep(poll_s)
    return False


def count_files(folder: Path) -> int:
    return sum(1 for _ in folder.rglob("*.parquet")) if folder.exists() else 0


def log_tail(root: Path) -> str:
    log = root / "child.log"
    lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return lines[-1][:300] if lines else "no output"
