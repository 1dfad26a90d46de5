"""Run integrity: honest run metrics, one run per data dir, and unwritable paths as one line, never retried."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from flows.errors import ApiUnavailable, DataDirBusy, NotWritable, QuotaExhausted, StorageError
from flows.lake.factory import storage_wrapper
from flows.lake.lock import data_dir_lock, holder_pid
from flows.lake.parquet import StagedParquet
from flows.lake.storage import StorageWrapper
from flows.orchestration.runs import retry_if_transient
from flows.paths import PROJECT_ROOT
from flows.snapshot import snapshot_flow
from flows.standin import Faults
from flows.warehouse.local_duckdb import LocalWarehouse
from tests.conftest import API_KEY

ROOT = PROJECT_ROOT
EXTRACT_STEPS = ("assets", "rates", "exchanges", "markets")


@pytest.fixture
def settings(settings):
    """The shared test settings with a generous read timeout: these tests compare the credits recorded with those
    billed, and on a loaded machine an answer given up on at a 2-s read timeout is billed by the server in full
    while the client, which never saw its headers, meters 1 credit."""
    from flows.settings import use_settings

    patient = settings.model_copy(update={"read_timeout_s": 30.0})
    use_settings(patient)
    return patient


def run_rows(settings) -> list[dict]:
    names, rows = LocalWarehouse(settings.duckdb_path).query(
        "select step, status, files, credits, calls, error from ops.pipeline_runs order by step"
    )
    return [dict(zip(names, row, strict=True)) for row in rows]


def assert_no_completed_row_without_its_files(rows: list[dict], lake: Path) -> None:
    for row in rows:
        if row["status"] == "completed" and row["step"] in EXTRACT_STEPS:
            missing = [key for key in row["files"] or [] if not (lake / key).is_file()]
            assert row["files"] and not missing, f"{row['step']} recorded completed, files not in the lake: {missing}"


# ---- honest run metrics --------------------------------------------------------------------------------------


def test_quota_running_out_mid_snapshot_is_recorded_honestly(prefect_api, settings, stub):
    """The first page of each dataset is served, then the quota is spent: markets (3 pages) fails, the three
    others extracted fine but are never published. No row may say `completed`, and the credits recorded must be
    what the stand-in billed, the failed step's included."""
    stub.faults = Faults(quota_after_calls=4)
    with pytest.raises(QuotaExhausted):
        snapshot_flow(snapshot_id="20261121T053000Z", transform=False)
    assert stub.stats.total_requests > 4, "the quota ran out mid-snapshot"

    rows = run_rows(settings)
    assert sorted(r["step"] for r in rows) == sorted(EXTRACT_STEPS)
    assert_no_completed_row_without_its_files(rows, settings.lake_dir)
    assert all(r["status"] == "failed" for r in rows), rows
    by_step = {r["step"]: r for r in rows}
    assert "quota" in by_step["markets"]["error"].lower()
    for step in ("assets", "rates", "exchanges"):
        assert by_step[step]["error"].startswith("not published: markets failed"), by_step[step]
        assert by_step[step]["files"] == []
    assert all(r["credits"] is not None and r["calls"] for r in rows), "every step's credits are recorded"
    assert by_step["markets"]["credits"] >= 2, "the failed step's page and its refused call are counted"
    assert sum(r["credits"] for r in rows) == stub.stats.credits, "credits recorded == credits billed"

    # the health page reads the same: every credit billed, and no step succeeded
    from flows.dashboard.queries import Health, load_dashboard_data

    health = load_dashboard_data(settings.duckdb_path).health
    assert isinstance(health, Health)
    assert health.totals["credits"] == stub.stats.credits
    assert health.totals["failed_runs"] == 1
    assert all(f["last_success"] is None for f in health.freshness), health.freshness


class _FailingLake(StorageWrapper):
    """A local lake refusing markets' files for good (as a read-only folder would)."""

    def put_file(self, local_path: Path, key: str) -> None:
        if key.startswith("coincap/markets/"):
            raise NotWritable(Path(self.root_uri) / key, "permission denied")
        super().put_file(local_path, key)


def test_a_failed_publish_records_only_the_datasets_in_the_lake_as_completed(prefect_api, settings, stub):
    started = time.monotonic()
    with storage_wrapper(_FailingLake), pytest.raises(NotWritable):
        snapshot_flow(snapshot_id="20261121T053000Z", transform=False)
    assert time.monotonic() - started < 30, "a permanent lake error is not retried"

    rows = run_rows(settings)
    assert_no_completed_row_without_its_files(rows, settings.lake_dir)
    status = {r["step"]: r["status"] for r in rows}
    # published in order: assets, rates and exchanges are in the lake, markets is not
    assert status == {"assets": "completed", "rates": "completed", "exchanges": "completed", "markets": "failed"}
    markets = next(r for r in rows if r["step"] == "markets")
    assert markets["error"].startswith("not published: the publish failed") and markets["files"] == []
    assert sum(r["credits"] for r in rows) == stub.stats.credits
    assert not any((settings.data_dir / "staging").glob("*.parquet")), "unpublished staged files are removed"


# ---- one run per data dir ------------------------------------------------------------------------------------

_HOLDER = """
import sys, time
from pathlib import Path
from flows.lake.lock import data_dir_lock
with data_dir_lock(Path(sys.argv[1]), kind=sys.argv[3], job=sys.argv[4]):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _hold_lock(
    data_dir: Path, seconds: float, kind: str = "pipeline", job: str = "snapshot run"
) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(data_dir), str(seconds), kind, job],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def _busy(data_dir: Path, job: str, pid: int) -> str:
    """The one line a refused job says (after `error: ` in the CLI)."""
    where = data_dir.resolve()
    return f"Another {job} is writing to {where} (pid {pid}); wait for it or use another PIPELINE_DATA_DIR."


def test_a_second_writer_is_refused_at_once_waits_a_bounded_time_and_a_killed_holder_blocks_nobody(tmp_path):
    data_dir = tmp_path / "data"
    holder = _hold_lock(data_dir, 60)
    try:
        assert holder_pid(data_dir) == holder.pid
        started = time.monotonic()
        with pytest.raises(DataDirBusy) as refused, data_dir_lock(data_dir, wait_s=0.5):
            pass
        assert 0.4 < time.monotonic() - started < 5, "waits its bounded time, no longer"
        assert str(refused.value) == _busy(data_dir, "snapshot run", holder.pid)
        holder.send_signal(signal.SIGKILL)  # a crashed run: the kernel releases its flock
        holder.wait(10)
        with data_dir_lock(data_dir, wait_s=0):
            assert holder_pid(data_dir) == os.getpid()
        assert holder_pid(data_dir) is None
    finally:
        holder.kill()
        holder.wait(10)

    # a holder that finishes within the wait: the second run goes ahead
    short = _hold_lock(data_dir, 1.0)
    try:
        with data_dir_lock(data_dir, wait_s=30):
            assert short.poll() is not None or short.wait(5) == 0
    finally:
        short.kill()
        short.wait(10)


def _cli(args: list[str], env: dict[str, str], **popen: object) -> subprocess.Popen[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("COINCAP_", "PIPELINE_"))}
    full_env.update(env)
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *args], cwd=ROOT, env=full_env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen,  # type: ignore[arg-type]
    )  # fmt: skip


def test_two_runs_on_one_data_dir_the_second_stops_at_once_with_one_line(prefect_api, stub, tmp_path):
    data_dir = tmp_path / "data"
    env = {
        "PREFECT_API_URL": prefect_api,
        "PIPELINE_DATA_DIR": str(data_dir),
        "PYTHONPATH": str(ROOT),
        "COINCAP_API_KEY": API_KEY,
        "COINCAP_API_BASE_URL": stub.base_url,
        "COINCAP_READ_TIMEOUT": "120",
    }
    stub.faults = Faults(hang_after=1)  # the first run's calls are held (all but its first) until released
    first = _cli(["run", "--no-transform"], env)
    try:
        deadline = time.monotonic() + 90
        while stub.stats.total_requests < 4:  # the first run is mid-extraction, its calls held
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first run never started extracting"
            time.sleep(0.2)
        assert holder_pid(data_dir) == first.pid, "the first run holds the data dir's lock"
        second = _cli(["run", "--no-transform"], env)
        try:
            _, err = second.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            second.kill()
            second.communicate()
            raise
        assert second.returncode == 1, err[-2000:]
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert lines == [f"error: {_busy(data_dir, 'snapshot run', first.pid)}"], err[-2000:]
        assert "fix the model" not in err.lower()
        assert first.poll() is None, "the first run was not disturbed"
        stub.faults.hang_after = 0  # release the first run: it finishes normally
        _, err = first.communicate(timeout=180)
        assert first.returncode == 0, err[-3000:]
        assert list((data_dir / "lake" / "coincap" / "markets").rglob("*.parquet"))
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()


def test_each_kind_of_job_has_its_own_lock_and_the_message_names_the_holders_job(tmp_path):
    """A snapshot run, a backfill and a price stream run side by side on one data dir; a second of each does not."""
    data_dir = tmp_path / "data"
    holders = {
        kind: _hold_lock(data_dir, 60, kind, job)
        for kind, job in (("pipeline", "snapshot run"), ("backfill", "backfill"), ("stream", "price stream"))
    }
    try:
        for kind, holder in holders.items():
            assert holder_pid(data_dir, kind) == holder.pid
        refused = {}
        for kind in holders:
            with pytest.raises(DataDirBusy) as caught, data_dir_lock(data_dir, kind=kind):  # type: ignore[arg-type]
                pass
            refused[kind] = str(caught.value)
        assert refused == {
            "pipeline": _busy(data_dir, "snapshot run", holders["pipeline"].pid),
            "backfill": _busy(data_dir, "backfill", holders["backfill"].pid),
            "stream": _busy(data_dir, "price stream", holders["stream"].pid),
        }
        first = holders.pop("pipeline")  # gone: the others still hold theirs, the kinds are independent
        first.kill()
        first.wait(10)
        with data_dir_lock(data_dir, kind="pipeline", job="maintenance run"):
            assert holder_pid(data_dir, "pipeline") == os.getpid()
            assert holder_pid(data_dir, "backfill") == holders["backfill"].pid
        assert sorted(p.name for p in data_dir.glob(".*.lock")) == [".backfill.lock", ".pipeline.lock", ".stream.lock"]
    finally:
        for holder in holders.values():
            holder.kill()
            holder.wait(10)


# Runs main() as the console script does, then says whether Prefect was ever imported.
_DRIVER = """
import sys
from flows.cli import main
sys.argv = ["coincap-pipeline", *sys.argv[1:]]
try:
    main()
finally:
    print("prefect imported:", "prefect" in sys.modules, flush=True)
"""


@pytest.mark.parametrize(
    ("args", "kind", "job"),
    [
        (["run"], "pipeline", "snapshot run"),
        (["run", "--dataset", "rates", "--no-transform"], "pipeline", "maintenance run"),
        (["maintenance"], "pipeline", "snapshot run"),
        (["quality"], "pipeline", "dbt build"),
        (["backfill", "--asset", "bitcoin", "--interval", "h1"], "backfill", "backfill"),
        (["stream", "--minutes", "1"], "stream", "price stream"),
    ],
)
def test_a_busy_data_dir_is_refused_by_the_cli_before_prefect_is_imported(tmp_path, args, kind, job):
    """No PREFECT_API_URL: a command that reached Prefect would start its temporary server (~20 s) before the flow
    said the data dir is busy. The CLI takes the lock first: one line, exit 1, about a second, Prefect untouched."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    import duckdb

    duckdb.connect(str(data_dir / "warehouse.duckdb")).close()  # `quality` checks there is a warehouse first
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COINCAP_", "PIPELINE_", "PREFECT_"))}
    env.update(PYTHONPATH=str(ROOT), PIPELINE_DATA_DIR=str(data_dir), PREFECT_HOME=str(tmp_path / "prefect"),
               COINCAP_API_KEY=API_KEY, COINCAP_API_BASE_URL="http://127.0.0.1:9/v3")  # fmt: skip
    holder = _hold_lock(data_dir, 60, kind, job)
    try:
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-c", _DRIVER, *args], cwd=tmp_path, env=env, text=True,
                                capture_output=True, timeout=120)  # fmt: skip
        elapsed = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait(10)
    assert result.returncode == 1, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines == [f"error: {_busy(data_dir, job, holder.pid)}"], result.stderr[-2000:]
    assert "prefect imported: False" in result.stdout, "the lock is taken before Prefect is imported"
    assert "temporary server" not in result.stderr
    assert elapsed < 15, f"refused after {elapsed:.1f} s"  # about 1 s; generous for a busy machine


def test_the_flow_re_enters_the_lock_its_caller_holds_and_another_thread_is_refused(prefect_api, settings, stub):
    """What the CLI does: take the lock, then call the flow, which takes it again. Prefect 3 runs a sync flow in
    the caller's thread, so the flow re-enters the lock; a flow started in another thread of the process is
    refused like another process (two flows in one process never both write)."""
    data_dir = settings.data_dir
    with data_dir_lock(data_dir, job="snapshot run"):
        refused: list[BaseException] = []

        def other_thread() -> None:
            try:
                snapshot_flow(datasets=["rates"], transform=False)
            except BaseException as exc:
                refused.append(exc)

        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join(120)
        assert len(refused) == 1 and isinstance(refused[0], DataDirBusy), refused
        assert str(refused[0]) == _busy(data_dir, "snapshot run", os.getpid())
        assert stub.stats.total_requests == 0, "refused before any call"

        summary = snapshot_flow(datasets=["rates"], transform=False)  # in this thread: re-entered
        assert [r.dataset for r in summary.reports] == ["rates"] and summary.reports[0].valid > 0
        assert holder_pid(data_dir) == os.getpid(), "still held by the caller after the flow returned"
    assert holder_pid(data_dir) is None


def test_the_backfill_and_stream_flows_take_their_own_locks(prefect_api, settings, stub):
    """Deployments have no CLI: the flows lock too, backfill and stream each its own kind (not the snapshot's),
    maintenance the snapshot's."""
    from flows.backfill import backfill_flow
    from flows.stream import stream_flow

    data_dir = settings.data_dir
    snapshot = _hold_lock(data_dir, 60, "pipeline", "snapshot run")
    backfill = _hold_lock(data_dir, 60, "backfill", "backfill")
    stream = _hold_lock(data_dir, 60, "stream", "price stream")
    try:
        with pytest.raises(DataDirBusy) as busy_backfill:
            backfill_flow(assets=["bitcoin"], interval="h1")
        with pytest.raises(DataDirBusy) as busy_stream:
            stream_flow(assets=["bitcoin"], max_minutes=0.01, ws_url="ws://127.0.0.1:9/prices")
        assert str(busy_backfill.value) == _busy(data_dir, "backfill", backfill.pid)
        assert str(busy_stream.value) == _busy(data_dir, "price stream", stream.pid)
        # maintenance rewrites lake files a snapshot's dbt build reads: it shares the snapshot's lock
        from flows.maintenance import maintenance_flow

        with pytest.raises(DataDirBusy) as busy_maintenance:
            maintenance_flow()
        assert str(busy_maintenance.value) == _busy(data_dir, "snapshot run", snapshot.pid)
        assert stub.stats.total_requests == 0
    finally:
        for holder in (snapshot, backfill, stream):
            holder.kill()
            holder.wait(10)


# ---- unwritable paths: one line naming the path, never retried -----------------------------------------------


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """Make `folder` unwritable: chmod for a normal user; as root (chmod does not stop root) the immutable
    attribute, which does; skip when neither works here."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root without chattr +i: cannot make a folder read-only here")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(folder)], check=True)


@pytest.mark.parametrize("where", ["data dir", "lake", "a file in the path"])
def test_an_unwritable_data_dir_fails_at_once_with_one_line_naming_it(prefect_api, settings, stub, where):
    from flows.settings import use_settings

    data_dir = settings.data_dir.resolve()
    if where == "a file in the path":
        blocker = data_dir.parent / "a-file"
        blocker.write_text("not a folder")
        use_settings(settings.model_copy(update={"data_dir": blocker / "data"}))
        named, reason = blocker / "data", "not a directory"
        guard: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    elif where == "lake":
        named, reason, guard = data_dir / "lake", "permission denied", read_only(data_dir / "lake")
    else:
        named, reason, guard = data_dir, "permission denied", read_only(data_dir)
    with guard:
        started = time.monotonic()
        with pytest.raises(NotWritable) as failed:
            snapshot_flow(transform=False)
        assert time.monotonic() - started < 30, "not retried as a transient error"
    message = str(failed.value)
    assert message.startswith(f"Cannot write to {named}: {reason}"), message
    assert "\n" not in message and "another process" not in message.lower()
    assert stub.stats.total_requests == 0, "checked before any credit is spent"


def test_permission_and_disk_errors_are_never_retried_and_name_the_path(tmp_path):
    class State:
        def __init__(self, exc: BaseException) -> None:
            self.exc = exc

        def result(self) -> None:
            raise self.exc

    def retried(exc: BaseException) -> bool:
        return retry_if_transient(None, None, State(exc))  # type: ignore[arg-type]

    assert not retried(PermissionError(13, "Permission denied", "/data/staging"))
    assert not retried(OSError(28, "No space left on device"))
    assert not retried(NotWritable("/data", "permission denied"))
    assert retried(ApiUnavailable("CoinCap kept failing.", "Try later."))
    assert retried(StorageError("Could not write /data/x (connection reset).", "Retry."))
    assert retried(ConnectionResetError(104, "Connection reset by peer"))

    # the writers say so in one line naming the folder, instead of a retried OSError or a blamed lock holder
    staging = tmp_path / "staging"
    with read_only(staging), pytest.raises(NotWritable, match=f"Cannot write to {staging}: permission denied"):
        StagedParquet(pa.schema([("a", "int64")]), staging)
    wh_dir = tmp_path / "wh"
    with read_only(wh_dir), pytest.raises(NotWritable) as failed:
        LocalWarehouse(wh_dir / "warehouse.duckdb").ensure_ops_tables()
    assert "permission denied" in str(failed.value) and "another process" not in str(failed.value).lower()
