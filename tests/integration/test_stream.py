"""The price stream end to end against a local WebSocket that drops connections, stalls and sends garbage.

One faulty run (module fixture) is checked frame by frame: every frame the server sent is either in the lake
exactly once (valid ticks), in quarantine with its reason (garbage), or was lost in flight at a drop that the
gaps dataset records (sent before the drop, after the last message the client received). Then compaction on
copies of that lake, the dbt marts over it, freshness, bad keys and the Prefect flow.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import hcl2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hcl2 import SerializationOptions

from flows.contracts.stream import DATASET, GAPS_DATASET, TICK_SCHEMA
from flows.errors import AuthError, StorageError
from flows.ingest.stream import StreamSummary, stream_prices
from flows.ingest.stream_lake import LakeWriter
from flows.lab.stream_bench import measure_freshness
from flows.lake import compaction
from flows.lake.compaction import compact
from flows.lake.storage import LocalStorage
from flows.paths import PROJECT_ROOT
from flows.settings import Settings, use_settings
from flows.standin.ws import Frame, StreamFaults, StubPriceStream
from flows.stream import stream_flow
from flows.warehouse.dbt import run_dbt
from tests.conftest import fast_settings
from tests.lake_fixtures import asset, num, write_snapshot

KEY = "stream-test-key-5f2c"  # distinctive, so a leak into logs or files is easy to find
TICK_DIR = Path("coincap") / DATASET
ROOT = PROJECT_ROOT


def rows_under(lake: Path, relative: Path | str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted((lake / relative).glob("dt=*/*.parquet")):
        rows.extend(pq.ParquetFile(path).read().to_pylist())  # the file's own columns, no hive `dt`
    return rows


def lake_state(lake: Path) -> dict[str, bytes]:
    return {p.relative_to(lake).as_posix(): p.read_bytes() for p in sorted(lake.rglob("*.parquet"))}


def tick_key(row: dict[str, Any]) -> tuple[str, int, str]:
    return row["connection_id"], row["message_seq"], row["asset_id"]


@dataclass
class FaultyRun:
    frames: list[Frame]
    server_connections: int
    summary: StreamSummary
    settings: Settings
    batches: list[Any]

    @property
    def lake(self) -> Path:
        return self.settings.lake_dir

    def connection_id(self, server_connection: int) -> str:
        # one client, sequential connections: the server's k-th accepted connection is the client's k-th
        return f"{self.summary.stream_id}-c{server_connection:04d}"


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory: pytest.TempPathFactory) -> FaultyRun:
    faults = StreamFaults(drop_every=25, garbage_every=6, pause_every=10, pause_s=1.5, max_pauses=1)
    settings = fast_settings(tmp_path_factory.mktemp("stream") / "data", "http://127.0.0.1:9/v3", COINCAP_API_KEY=KEY)
    batches: list[Any] = []
    with StubPriceStream(api_keys={KEY}, interval_s=0.01, faults=faults, max_frames=230, seed=3) as server:
        stop = threading.Event()
        result: dict[str, Any] = {}

        def run() -> None:
            result["summary"] = stream_prices(
                settings,
                ["bitcoin", "ethereum", "solana"],
                storage=LocalStorage(settings.lake_dir),
                ws_url=server.url,
                batch_seconds=0.25,
                idle_timeout_s=0.75,
                stop_event=stop,
                on_batch=batches.append,
            )

        worker = threading.Thread(target=run)
        worker.start()
        deadline = time.monotonic() + 30
        while len(server.frames) < 230 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the last frame is received and buffered; stopping publishes it
        stop.set()
        worker.join(10)
        assert "summary" in result, "the stream did not stop"
        return FaultyRun(server.frames, server.connections, result["summary"], settings, batches)


def test_every_frame_sent_lands_once_or_in_quarantine_or_is_lost_in_flight_at_a_recorded_gap(
    faulty_run: FaultyRun,
) -> None:
    run = faulty_run
    ticks = [r for r in rows_under(run.lake, TICK_DIR) if r["connection_id"].startswith(run.summary.stream_id)]
    landed = {tick_key(r): r["price_usd"] for r in ticks}
    assert len(landed) == len(ticks), "a tick landed twice"
    quarantined = [
        json.loads(r["record_json"]) | {"reason": r["reason"]} for r in rows_under(run.lake, "quarantine/" + DATASET)
    ]
    gaps = {g["connection_id"]: g for g in rows_under(run.lake, Path("coincap") / GAPS_DATASET)}

    assert run.server_connections == run.summary.connections >= 9
    expected_ticks: dict[tuple[str, int, str], Decimal] = {}
    expected_rejects: dict[tuple[str, int, str | None], str] = {}
    lost = []
    for frame in run.frames:
        connection_id = run.connection_id(frame.connection)
        gap = gaps.get(connection_id)
        if gap is not None and frame.seq > gap["last_message_seq"]:
            # lost in flight: sent before the drop was noticed, after the last message the client received
            assert frame.server_time <= gap["disconnected_at"], frame
            lost.append(frame)
            continue
        if frame.kind in ("not_json", "not_object"):
            expected_rejects[(connection_id, frame.seq, None)] = frame.kind
            continue
        for asset_id, price in frame.payload.items():
            if asset_id in ("broken-coin", "negative-coin"):
                expected_rejects[(connection_id, frame.seq, asset_id)] = frame.kind
            else:
                expected_ticks[(connection_id, frame.seq, asset_id)] = Decimal(price)

    assert landed == expected_ticks, "lost, invented or altered ticks"
    assert len(lost) <= len(gaps), "more than one frame lost per drop"
    reasons = {
        "not_json": "message is not JSON",
        "not_object": "message is a JSON array, not an object",
        "bad_price": "price_usd: not a number",
        "negative_price": "price_usd: below 0",
    }
    got_rejects = {(q["connection_id"], q["message_seq"], q.get("asset_id")): q["reason"] for q in quarantined}
    assert got_rejects.keys() == expected_rejects.keys()
    for key, kind in expected_rejects.items():
        assert got_rejects[key].startswith(reasons[kind]), (key, got_rejects[key])
    assert Counter(expected_rejects.values()).keys() == reasons.keys()  # every kind of garbage was exercised

    assert run.summary.ticks == len(landed) and run.summary.quarantined == len(quarantined)
    assert run.summary.credits >= run.summary.connections  # each connection bills its started minute


def test_gaps_are_recorded_for_every_drop_and_the_stall(faulty_run: FaultyRun) -> None:
    run = faulty_run
    gaps = sorted(rows_under(run.lake, Path("coincap") / GAPS_DATASET), key=lambda g: g["connection_id"])
    assert len(gaps) == len(run.summary.gaps) == run.summary.connections - 1
    reasons = Counter(g["reason"].split(" (")[0].split(":")[0] for g in gaps)
    assert reasons["stalled"] >= 1
    assert reasons["connection lost without a close frame"] >= 3
    assert reasons["closed by the server"] >= 3
    for i, gap in enumerate(gaps, start=1):
        assert gap["connection_id"] == run.connection_id(i)
        assert gap["next_connection_id"] == run.connection_id(i + 1)
        assert gap["reconnected_at"] >= gap["disconnected_at"]
        assert gap["seconds"] == pytest.approx((gap["reconnected_at"] - gap["disconnected_at"]).total_seconds())
    stall = next(g for g in gaps if g["reason"].startswith("stalled"))
    assert stall["last_message_seq"] == 10  # the server paused after its 10th frame


def test_batches_are_small_atomic_files_with_the_tick_schema(faulty_run: FaultyRun) -> None:
    run = faulty_run
    files = sorted((run.lake / TICK_DIR).glob("dt=*/*.parquet"))
    today = [f for f in files if not f.parent.name.startswith("dt=1970")]
    assert len(today) >= 10 and len(run.batches) >= 10
    for path in today:
        table = pq.ParquetFile(path).read()
        assert table.schema.remove_metadata() == TICK_SCHEMA.remove_metadata()
        assert set(table.column("batch_id").to_pylist()) == {path.stem}
        assert path.parent.name == f"dt={table.column('tick_ts')[0].as_py():%Y-%m-%d}"
    assert not list(run.lake.rglob("*.tmp")), "a temporary file was left behind"
    assert all(b.lag_s < 2.0 for b in run.batches)


def test_a_bad_key_stops_at_once(tmp_path: Path) -> None:
    for auth_failure in ("close", "http"):
        with StubPriceStream(api_keys={"the-good-key"}, auth_failure=auth_failure) as server:  # type: ignore[arg-type]
            settings = fast_settings(tmp_path / auth_failure, "http://127.0.0.1:9/v3", COINCAP_API_KEY=KEY)
            started = time.perf_counter()
            with pytest.raises(AuthError) as err:
                stream_prices(
                    settings, ["bitcoin"], storage=LocalStorage(settings.lake_dir), ws_url=server.url, max_seconds=20
                )
            assert time.perf_counter() - started < 3
            assert server.rejected == 1, "retried a refused key"
            message = str(err.value)
            assert "\n" not in message and KEY not in message and "COINCAP_API_KEY" in message
    with pytest.raises(AuthError, match="COINCAP_API_KEY is not set"):
        keyless = Settings(_env_file=None, PIPELINE_DATA_DIR=tmp_path)  # type: ignore[call-arg]
        stream_prices(keyless, ["bitcoin"], storage=LocalStorage(keyless.lake_dir), ws_url="ws://127.0.0.1:9/")


def test_the_key_is_never_logged_nor_written(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    faults = StreamFaults(drop_every=5, garbage_every=3)
    with StubPriceStream(api_keys={KEY}, interval_s=0.01, faults=faults) as server:
        settings = fast_settings(tmp_path / "data", "http://127.0.0.1:9/v3", COINCAP_API_KEY=KEY)
        lake = LocalStorage(settings.lake_dir)
        summary = stream_prices(
            settings, ["bitcoin"], storage=lake, ws_url=server.url, batch_seconds=0.2, max_seconds=0.8
        )
    assert summary.gaps and summary.quarantined
    assert any("apiKey=***" in r.getMessage() for r in caplog.records)
    assert any(r.name == "flows.ingest.stream.websockets" for r in caplog.records), "the client's own log is captured"
    ours = [r for r in caplog.records if not r.name.startswith("flows.standin")]  # the stand-in logs requests
    assert ours and not [r for r in ours if KEY in r.getMessage()] and KEY not in repr(summary)
    assert not [p for p in settings.data_dir.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]


# ---------------------------------------------------------------------------------------------- compaction


class CrashBeforeDelete(LocalStorage):
    """A lake whose process dies right after compaction wrote its outputs, before any input is deleted."""

    def delete(self, key: str) -> None:
        raise RuntimeError("killed")


def copy_lake(run: FaultyRun, dest: Path) -> Path:
    shutil.copytree(run.lake, dest)
    return dest


def distinct_ticks(lake: Path) -> tuple[int, set[tuple[Any, ...]]]:
    rows = [tuple(r.values()) for r in rows_under(lake, TICK_DIR)]
    return len(rows), set(rows)


def test_compaction_merges_small_files_into_one_without_losing_or_duplicating(
    faulty_run: FaultyRun, tmp_path: Path
) -> None:
    lake = copy_lake(faulty_run, tmp_path / "lake")
    day = faulty_run.summary.started_at.date()
    part = lake / TICK_DIR / f"dt={day}"
    small = sorted(part.glob("*.parquet"))
    shutil.copy(small[3], part / f"{small[3].stem}-republished.parquet")  # an exact duplicate batch
    duplicated = pq.read_metadata(small[3]).num_rows
    n_before, before = distinct_ticks(lake)

    report = compact(LocalStorage(lake), day=day, now=datetime.now(UTC) + timedelta(days=2))
    (unit,) = report.units
    assert unit.unit == f"{day:%Y%m%d}" and len(unit.outputs) == 1
    assert len(unit.deleted) == len(small) + 1 and unit.duplicates_dropped == duplicated
    assert [p.name for p in part.glob("*.parquet")] == [Path(unit.outputs[0]).name]
    n_after, after = distinct_ticks(lake)
    assert after == before and n_after == len(after) == n_before - unit.duplicates_dropped
    merged = pq.read_table(part / Path(unit.outputs[0]).name)
    assert merged.schema.remove_metadata() == TICK_SCHEMA.remove_metadata()
    assert merged.column("tick_ts").to_pylist() == sorted(merged.column("tick_ts").to_pylist())

    # the placeholder that keeps readers' globs working is never compacted away
    placeholder_day = date(1970, 1, 1)
    assert compact(LocalStorage(lake), day=placeholder_day).units[0].skipped == "no rows"
    assert list((lake / TICK_DIR / "dt=1970-01-01").glob("*.parquet"))


def test_compaction_run_twice_or_after_a_crash_changes_nothing(faulty_run: FaultyRun, tmp_path: Path) -> None:
    day = faulty_run.summary.started_at.date()
    later = datetime.now(UTC) + timedelta(days=2)
    clean, crashed = copy_lake(faulty_run, tmp_path / "clean"), copy_lake(faulty_run, tmp_path / "crashed")
    _, original = distinct_ticks(clean)

    compact(LocalStorage(clean), day=day, now=later)
    state = lake_state(clean)
    again = compact(LocalStorage(clean), day=day, now=later)
    assert again.units[0].skipped == "already compacted" and not again.written and not again.deleted
    assert lake_state(clean) == state

    with pytest.raises(RuntimeError, match="killed"):
        compact(CrashBeforeDelete(crashed), day=day, now=later)
    n_raw, seen = distinct_ticks(crashed)
    assert n_raw == 2 * len(original) and seen == original  # every tick twice in raw files, none lost
    with duckdb.connect() as con:  # what the staging model's dedup on the tick key returns meanwhile
        glob = (crashed / TICK_DIR / "*" / "*.parquet").as_posix()
        n_dedup = con.sql(
            f"select count(*) from (select distinct connection_id, message_seq, asset_id from read_parquet('{glob}'))"
        ).fetchone()
    assert n_dedup == (len(original),)
    compact(LocalStorage(crashed), day=day, now=later)
    assert lake_state(crashed) == state, "the re-run after the crash ended elsewhere than a clean run"


def hours_lake(lake: Path, day: date) -> tuple[LocalStorage, list[tuple[str, int, str]]]:
    """Micro-batch files over hours 00-03 of `day`, three per hour, written by the stream's own writer."""
    storage = LocalStorage(lake)
    writer = LakeWriter(storage, lake.parent / "staging", "abc123", max_failures=1)
    keys = []
    for hour in range(4):
        for batch in range(3):
            for i in range(400):
                at = datetime(day.year, day.month, day.day, hour, batch * 10, tzinfo=UTC) + timedelta(seconds=i)
                seq = hour * 10_000 + batch * 1000 + i + 1
                writer.add(json.dumps({"bitcoin": f"{87000 + i}.5", "ethereum": "2950.25"}), "s-c0001", seq, at)
                keys += [("s-c0001", seq, "bitcoin"), ("s-c0001", seq, "ethereum")]
            writer.flush()
    return storage, keys


def test_compaction_takes_finished_hours_then_the_finished_day_in_parts_of_the_target_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    day = date(2026, 11, 20)
    storage, keys = hours_lake(tmp_path / "lake", day)
    part = tmp_path / "lake" / TICK_DIR / f"dt={day}"
    assert len(list(part.glob("*.parquet"))) == 12

    # 03:20: hours 00-02 are over (plus the 5-minute grace), hour 03 is still being written
    report = compact(storage, day=day, now=datetime(2026, 11, 20, 3, 20, tzinfo=UTC))
    assert [u.unit for u in report.units] == ["20261120T00", "20261120T01", "20261120T02"]
    names = sorted(p.name for p in part.glob("*.parquet"))
    assert len(names) == 3 + 3 and sum(n.startswith("compacted-20261120T0") for n in names) == 3
    assert sorted(tick_key(r) for r in rows_under(tmp_path / "lake", TICK_DIR)) == sorted(keys)

    # the next day: the whole day, in parts that close once they reach the target (here: every row group)
    monkeypatch.setattr(compaction, "_ROWS_PER_GROUP", 1000)
    report = compact(storage, day=day, target_bytes=1, now=datetime(2026, 11, 21, 0, 10, tzinfo=UTC))
    (unit,) = report.units
    assert unit.unit == "20261120" and len(unit.outputs) == math.ceil(len(keys) / 1000) == 10
    assert [Path(k).name for k in unit.outputs] == sorted(p.name for p in part.glob("*.parquet"))
    rows = rows_under(tmp_path / "lake", TICK_DIR)
    assert sorted(tick_key(r) for r in rows) == sorted(keys)
    assert [r["tick_ts"] for r in rows] == sorted(r["tick_ts"] for r in rows)  # parts in order, rows in order
    assert compact(storage, day=day, target_bytes=1, now=datetime(2026, 11, 22, tzinfo=UTC)).units[0].skipped


def test_compaction_refuses_copies_of_a_tick_that_differ(tmp_path: Path) -> None:
    day = date(2026, 11, 20)
    storage, _ = hours_lake(tmp_path / "lake", day)
    part = tmp_path / "lake" / TICK_DIR / f"dt={day}"
    first = sorted(part.glob("*.parquet"))[0]
    table = pq.ParquetFile(first).read()
    other_prices = pa.array([Decimal("1.5")] * table.num_rows, TICK_SCHEMA.field("price_usd").type)
    altered = table.set_column(table.schema.get_field_index("price_usd"), "price_usd", other_prices)
    pq.write_table(altered, part / f"{first.stem}-altered.parquet")
    before = lake_state(tmp_path / "lake")
    with pytest.raises(StorageError, match="different values"):
        compact(storage, day=day, now=datetime(2026, 11, 22, tzinfo=UTC))
    assert lake_state(tmp_path / "lake") == before


# ---------------------------------------------------------------------------------------------- marts, freshness, flow


def test_dbt_builds_latest_prices_from_the_stream_and_the_snapshots(faulty_run: FaultyRun, tmp_path: Path) -> None:
    settings = Settings(_env_file=None, PIPELINE_DATA_DIR=tmp_path / "data", PIPELINE_TARGET="local")  # type: ignore[call-arg]
    shutil.copytree(faulty_run.lake / TICK_DIR, settings.lake_dir / TICK_DIR)
    day = faulty_run.summary.started_at.date()
    with pytest.raises(RuntimeError):  # a compaction killed mid-way: every tick is in two files
        compact(CrashBeforeDelete(settings.lake_dir), day=day, now=datetime.now(UTC) + timedelta(days=2))
    snapshot_ts = faulty_run.summary.started_at - timedelta(minutes=30)
    write_snapshot(
        settings.lake_dir,
        snapshot_ts,
        assets=[asset("bitcoin", 1, 86000.0), asset("ethereum", 2, 3000.0), asset("dogecoin", 3, 0.15)],
    )

    outcome = run_dbt(settings, "build", "--select", "+fct_latest_prices", "--indirect-selection", "cautious")
    assert outcome.ok and outcome.statuses["success"] == 4  # two staging models, fct_asset_snapshots, the mart

    ticks = rows_under(faulty_run.lake, TICK_DIR)
    latest = {}
    for r in sorted(ticks, key=lambda r: (r["tick_ts"], r["connection_id"], r["message_seq"])):
        latest[r["asset_id"]] = r
    with duckdb.connect(str(settings.duckdb_path)) as con:
        n_staged = con.sql("select count(*) from staging.stg_coincap__prices_stream").fetchone()
        mart = {
            r[0]: r
            for r in con.sql(
                "select asset_id, fresher_source, latest_price_usd, stream_price_usd, stream_tick_ts,"
                " snapshot_price_usd, stream_vs_snapshot_percent, latest_price_age_seconds from marts.fct_latest_prices"
            ).fetchall()
        }
    assert n_staged == (len(ticks),)  # each tick once, though the lake holds two copies
    assert set(mart) == {"bitcoin", "ethereum", "solana", "dogecoin"}
    for asset_id in ("bitcoin", "ethereum", "solana"):
        _, fresher, price, stream_price, tick_ts, snapshot_price, percent, age = mart[asset_id]
        assert fresher == "stream" and price == stream_price == latest[asset_id]["price_usd"]
        assert tick_ts == latest[asset_id]["tick_ts"] and 0 <= age < 600
        if asset_id != "solana":
            assert percent == pytest.approx(float(100 * (stream_price - snapshot_price) / snapshot_price))
    assert mart["solana"][5] is None and mart["dogecoin"][1:4] == ("snapshot", Decimal(num(0.15)), None)


def test_freshness_from_tick_to_queryable_is_measured(tmp_path: Path) -> None:
    report = measure_freshness(seconds=3.0, batch_seconds=0.5, poll_interval_s=0.05, data_dir=tmp_path)
    assert report.ticks_seen == report.ticks_streamed > 50
    assert 0 < report.p50_s <= report.p95_s <= report.max_s
    assert report.p95_s < 5.0  # the bar is 15 s with 1-s batches; locally it is about one batch interval


def test_stream_flow_runs_under_prefect_and_refuses_bad_parameters(prefect_api: str, tmp_path: Path) -> None:
    from prefect.exceptions import ParameterTypeError

    with StubPriceStream(api_keys={KEY}, interval_s=0.02) as server:
        settings = fast_settings(tmp_path / "data", "http://127.0.0.1:9/v3", COINCAP_API_KEY=KEY)
        use_settings(settings)
        try:
            summary = stream_flow(assets=["bitcoin"], batch_seconds=0.3, max_minutes=0.02, ws_url=server.url)
            with pytest.raises(ParameterTypeError):
                stream_flow(assets=["Bitcoin!"], max_minutes=0.01, ws_url=server.url)
        finally:
            use_settings(None)
    assert summary.stopped_by == "max_seconds" and summary.ticks > 10 and summary.credits == 1
    assert len(rows_under(settings.lake_dir, TICK_DIR)) == summary.ticks


# ---------------------------------------------------------------------------------------------- the hourly job's end

# What has to fit in each hour besides `max_minutes` of streaming (docs/decisions.md, "The hourly stream stops at
# 57 minutes"). Cloud Run's clock starts when the job's task starts; the next hourly run is scheduled on the hour,
# and with CANCEL_NEW it is cancelled if this one is not finished by the time the worker submits it.
WORKER_PICKUP_S = 20  # schedule only: the worker's poll (PREFECT_WORKER_QUERY_SECONDS, 10 s) + creating the job
START_UP_S = 90  # image pull and container start on a cold instance + process start to the first tick (~7 s here)
FINISH_S = 30  # the final flush and Prefect's end: state, result to GCS, exit (~1.5 s here)
PREFECT_BIN = Path(sys.executable).parent / "prefect"
EXECUTE = [str(PREFECT_BIN), "flow-run", "execute"]  # the Cloud Run worker's default command (a supervisor)
ENGINE = [sys.executable, "-m", "prefect.engine"]  # the engine process the supervisor starts, which runs the flow
HCL_OPTIONS = SerializationOptions(with_comments=False, strip_string_quotes=True)


def stream_deployment() -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (deployment,) = [d for d in document["deployments"] if d["entrypoint"] == "flows.stream:stream_flow"]
    return deployment


def job_timeouts_s(deployment: dict[str, Any]) -> dict[str, int]:
    """Each place the stream job's timeout can come from; the smallest is the one to plan for."""
    job_variables = deployment["work_pool"].get("job_variables") or {}
    if "timeout" in job_variables:  # a deployment's job variable overrides the work pool's default
        return {"prefect.yaml job_variables": int(job_variables["timeout"])}
    template = json.loads((ROOT / "deployments" / "cloud-run-v2-job-template.json").read_text())
    found = {"cloud-run-v2-job-template.json": int(template["variables"]["properties"]["timeout"]["default"])}

    # Terraform sets the pool's default from var.job_timeout_seconds (envs/prod), passed to the module's variable.
    def hcl(name: str) -> dict[str, Any]:
        text = (ROOT / "terraform" / "envs" / "prod" / name).read_text()
        return hcl2.loads(text, serialization_options=HCL_OPTIONS)

    variables = hcl("variables.tf")["variable"]
    (tf_default,) = [v["job_timeout_seconds"]["default"] for v in variables if "job_timeout_seconds" in v]
    found["terraform var.job_timeout_seconds"] = int(tf_default)
    example = hcl("terraform.tfvars.example")
    if "job_timeout_seconds" in example:
        found["terraform.tfvars.example"] = int(example["job_timeout_seconds"])
    return found


def schedule_period_s(deployment: dict[str, Any]) -> float | None:
    """The shortest time between two scheduled starts of the deployment (None: not scheduled)."""
    from prefect.server.schemas.schedules import CronSchedule

    periods: list[float] = []
    for schedule in deployment.get("schedules") or []:
        assert set(schedule) & {"cron", "interval"}, f"unexpected schedule {schedule}: teach this test to read it"
        if "interval" in schedule:
            periods.append(float(schedule["interval"]))
            continue
        cron = CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone", "UTC"))
        starts = asyncio.run(cron.get_dates(n=24 * 8, start=datetime(2026, 1, 5, tzinfo=UTC)))  # 8 days hourly
        periods.append(min((b - a).total_seconds() for a, b in zip(starts, starts[1:], strict=False)))
    return min(periods, default=None)


def test_the_hourly_stream_ends_before_the_job_timeout_and_the_next_run_with_a_margin() -> None:
    deployment = stream_deployment()
    max_minutes = deployment["parameters"].get("max_minutes")
    assert max_minutes is not None, "a stream without max_minutes runs into the job timeout every time"
    streaming_s = float(max_minutes) * 60
    timeouts = job_timeouts_s(deployment)
    timeout_s = min(timeouts.values())
    assert streaming_s + START_UP_S + FINISH_S <= timeout_s, (
        f"max_minutes={max_minutes} leaves {timeout_s - streaming_s:.0f} s of the {timeout_s}-s job timeout "
        f"({timeouts}) for start-up and the final flush; they need {START_UP_S + FINISH_S} s"
    )
    period_s = schedule_period_s(deployment)
    if period_s is not None:
        needed = streaming_s + WORKER_PICKUP_S + START_UP_S + FINISH_S
        assert needed <= period_s, f"a run ends {needed - period_s:.0f} s after the next one is due"


@dataclass
class StreamJob:
    """One stream flow run in its own process, timed with the wall clock (s since the epoch)."""

    returncode: int
    started: float  # just before the process was started
    first_tick: float  # when the stand-in sent its first frame
    stopped: float  # SIGTERM sent (nan when the stream ran to max_minutes)
    exited: float
    files_before_stop: int  # tick files published before the stop
    last_publish: float  # mtime of the newest tick file
    frames: list[Frame]  # all the stand-in sent
    state: Any  # the flow run's final state in the Prefect API
    output: str

    @property
    def start_up_s(self) -> float:
        return self.first_tick - self.started


def run_stream_job(
    command: list[str],
    server: StubPriceStream,
    work: Path,
    parameters: dict[str, Any],
    *,
    sigterm_after_frames: int | None = None,
) -> StreamJob:
    """Run the `stream` flow as a deployment's flow run, in a new process started by `command`.

    The process gets what the Cloud Run worker gives a job: PREFECT__FLOW_RUN_ID and the API URL; the deployment
    loads `flows.stream:stream_flow` after a set_working_directory pull step, as prefect.yaml's do.
    """
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("stream")
        deployment_id = client.create_deployment(
            flow_id=flow_id,
            name="stream-job-test",
            entrypoint="flows.stream:stream_flow",
            path=str(ROOT),
            pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}],
        )
        flow_run = client.create_flow_run_from_deployment(
            deployment_id, parameters={**parameters, "ws_url": server.url}
        )
    data_dir = work / "data"
    lake_ticks = data_dir / "lake" / TICK_DIR
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COINCAP_", "PIPELINE_"))}
    env.update(
        PREFECT_API_URL=str(PREFECT_API_URL.value()),
        PREFECT__FLOW_RUN_ID=str(flow_run.id),
        PIPELINE_TARGET="local",
        PIPELINE_DATA_DIR=str(data_dir),
        COINCAP_API_KEY=KEY,
        COINCAP_BACKOFF_BASE="0.01",
        COINCAP_BACKOFF_MAX="0.05",
    )

    def tick_files() -> list[Path]:
        return [p for p in lake_ticks.glob("dt=*/*.parquet") if not p.parent.name.startswith("dt=1970")]

    log = work / "job.log"
    with log.open("w") as out:
        started = time.time()
        proc = subprocess.Popen(command, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            wanted = sigterm_after_frames or 1
            while len(server.frames) < wanted and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert server.frames, f"the stream never connected:\n{log.read_text()[-3000:]}"
            first_tick = server.frames[0].server_time.timestamp()
            if sigterm_after_frames is not None:
                files_before_stop = len(tick_files())
                proc.send_signal(signal.SIGTERM)
                stopped = time.time()
            else:
                stopped, files_before_stop = math.nan, -1
            proc.wait(timeout=10 if sigterm_after_frames is not None else 120)  # Cloud Run: SIGKILL after ~10 s
        finally:
            exited = time.time()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run.id).state
    files = tick_files()
    return StreamJob(
        returncode=proc.returncode,
        started=started,
        first_tick=first_tick,
        stopped=stopped,
        exited=exited,
        files_before_stop=files_before_stop,
        last_publish=max((p.stat().st_mtime for p in files), default=math.nan),
        frames=list(server.frames),
        state=state,
        output=log.read_text(),
    )


def test_sigterm_publishes_the_pending_batch_and_the_run_ends_completed(prefect_api: str, tmp_path: Path) -> None:
    """Cloud Run's SIGTERM (a cancelled job, or its timeout; SIGKILL follows ~10 s later) to the flow's process.

    The batch interval is far longer than the run, so every tick is still pending in memory when the signal
    comes: all that reaches the lake is what the SIGTERM path publishes.
    """
    with StubPriceStream(api_keys={KEY}, interval_s=0.02, seed=11) as server:
        job = run_stream_job(
            ENGINE,
            server,
            tmp_path,
            {"assets": ["bitcoin", "ethereum", "solana"], "batch_seconds": 300.0, "max_minutes": 10.0},
            sigterm_after_frames=60,
        )
    print(
        f"SIGTERM: process start -> first tick {job.start_up_s:.2f} s; signal -> last batch published "
        f"{job.last_publish - job.stopped:.2f} s; signal -> exit {job.exited - job.stopped:.2f} s"
    )
    assert job.returncode == 0, job.output[-3000:]
    assert job.exited - job.stopped < 5, "Cloud Run kills the job 10 s after SIGTERM"
    assert job.state.is_completed(), (job.state, job.output[-3000:])
    assert "stopped by SIGTERM" in job.output
    assert job.files_before_stop == 0, "a batch was published before the signal: the test proves nothing"

    rows = rows_under(tmp_path / "data" / "lake", TICK_DIR)
    (connection_id,) = {r["connection_id"] for r in rows}
    landed = {tick_key(r): r["price_usd"] for r in rows}
    assert len(landed) == len(rows), "a tick landed twice"
    # What landed is exactly the frames sent up to some point, with nothing missing before it: the ticks
    # received before the signal, and at most the few that arrived while the loop noticed it.
    messages = len({key[1] for key in landed})
    expected = {
        (connection_id, frame.seq, asset_id): Decimal(price)
        for frame in job.frames[:messages]
        for asset_id, price in frame.payload.items()
    }
    assert landed == expected
    sent_before_signal = sum(frame.server_time.timestamp() <= job.stopped - 0.05 for frame in job.frames)
    assert messages >= 60 and messages >= sent_before_signal > 0, (messages, sent_before_signal)


def test_the_stream_job_starts_and_finishes_within_the_budgeted_margin(prefect_api: str, tmp_path: Path) -> None:
    """Times the process the Cloud Run worker starts today (`prefect flow-run execute`) around a short stream.

    These are the parts of START_UP_S and FINISH_S that can be measured here (no image pull, no cold instance,
    a local lake and Prefect server); docs/decisions.md quotes them.
    """
    max_minutes = 0.05
    with StubPriceStream(api_keys={KEY}, interval_s=0.05, seed=13) as server:
        job = run_stream_job(
            EXECUTE,
            server,
            tmp_path,
            {"assets": ["bitcoin", "ethereum"], "batch_seconds": 2.0, "max_minutes": max_minutes},
        )
    # The stream's clock starts just before it connects, a few ms before the first tick: `finish` errs high.
    overhead = job.exited - job.started - max_minutes * 60
    print(
        f"max_minutes: process start -> first tick {job.start_up_s:.2f} s; wall time beyond max_minutes "
        f"{overhead:.2f} s, of which after the stream's end {overhead - job.start_up_s:.2f} s"
    )
    assert job.returncode == 0 and job.state.is_completed(), job.output[-3000:]
    assert "stopped by max_seconds" in job.output
    assert job.start_up_s < START_UP_S and overhead - job.start_up_s < FINISH_S
