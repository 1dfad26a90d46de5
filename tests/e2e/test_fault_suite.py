"""The fault-injection suite (flows/lab/fault_suite/): the stand-in's new faults, the lake doubles and the lake
factory's seam they go in through, an accounting that catches every loss, duplicate and misrouted record, and the
whole suite, which fails CI on any of them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from flows.errors import StorageError
from flows.lab.fault_suite import (
    COMPLETED,
    KILLED_THEN_RECOVERED,
    FaultyStorage,
    account_snapshot,
    identity,
    markdown_table,
    orphans,
    run_scenario,
    run_suite,
    scenarios,
    split_scope,
)
from flows.lake.factory import lake_storage, storage_wrapper
from flows.lake.storage import LakeStorage, LocalStorage, StorageWrapper
from flows.paths import PROJECT_ROOT
from flows.standin import Catalog, Faults, StubServer
from flows.standin.faults import NEW_FIELDS, OPTIONAL_FIELDS, drift_record, has_wrong_type
from flows.standin.records import RawRecord

ROOT = PROJECT_ROOT
KEY = "fault-key"
TIMEOUT = 10


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.synthetic(n_assets=60, n_exchanges=20, n_markets=80, seed=2)


def get(srv: StubServer, path: str, timeout: float = TIMEOUT, **params: Any) -> requests.Response:
    return requests.get(
        f"{srv.base_url}{path}", params=params, headers={"Authorization": f"Bearer {KEY}"}, timeout=timeout
    )


def wait_for(condition: Any, seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


# ---- the stand-in's new faults ----------------------------------------------------------------------------


def test_storm_and_quota_are_counted_in_requests(catalog: Catalog) -> None:
    with StubServer(catalog, faults=Faults(storm_after=2, storm_requests=3), api_keys={KEY}) as srv:
        codes = [get(srv, "/rates").status_code for _ in range(6)]
        assert codes[:2] == [200, 200] and set(codes[2:5]) <= {500, 502, 503} and codes[5] == 200
        assert srv.stats.injected == {"5xx storm": 3} and srv.stats.last_fault_at is not None
    with StubServer(catalog, faults=Faults(quota_after_calls=2, quota_status=429), api_keys={KEY}) as srv:
        answers = [get(srv, "/assets") for _ in range(3)]
        assert [r.status_code for r in answers] == [200, 200, 429]
        assert "Retry-After" not in answers[2].headers and "usage limit" in answers[2].text
        srv.faults.quota_after_calls = 0  # the monthly reset
        assert get(srv, "/assets").ok


def test_rate_limit_window_says_when_it_ends(catalog: Catalog) -> None:
    with StubServer(catalog, faults=Faults(rate_limit=2, rate_window_s=1.0), api_keys={KEY}) as srv:
        answers = [get(srv, "/rates") for _ in range(3)]
        assert [r.status_code for r in answers] == [200, 200, 429]
        wait = float(answers[2].headers["Retry-After"])
        assert 0 < wait <= 1.0 and answers[2].json() == {"error": "Rate limit exceeded: 600 requests per minute"}
        time.sleep(wait)
        assert get(srv, "/rates").status_code == 200  # a new window
        assert srv.stats.injected == {"429 rate-limit window": 1}


def test_slow_answer_past_the_read_timeout_is_abandoned_not_served(catalog: Catalog) -> None:
    with StubServer(catalog, faults=Faults(p_slow=1.0, slow_s=0.6), api_keys={KEY}) as srv:
        with pytest.raises(requests.ReadTimeout):
            get(srv, "/rates", timeout=0.2)
        assert wait_for(lambda: srv.stats.abandoned == 1)
        assert "rates" not in srv.stats.served  # the client never got it, so it does not count as served
        started = time.perf_counter()
        assert get(srv, "/rates").ok and time.perf_counter() - started >= 0.6
        assert len(srv.stats.served["rates"]) == len(catalog.rates)
        assert srv.stats.injected == {"slow response": 2}


def test_hang_holds_requests_until_cleared(catalog: Catalog) -> None:
    with StubServer(catalog, faults=Faults(hang_after=1), api_keys={KEY}) as srv:
        assert get(srv, "/rates").ok
        answers: list[requests.Response] = []
        waiter = threading.Thread(target=lambda: answers.append(get(srv, "/rates")))
        waiter.start()
        assert wait_for(lambda: srv.stats.injected["hung request"] == 1)
        time.sleep(0.2)
        assert waiter.is_alive() and not answers
        srv.faults.hang_after = 0  # the upstream recovers
        waiter.join(5)
        assert answers and answers[0].ok


def test_drift_is_decided_per_record_and_keeps_the_keys(catalog: Catalog) -> None:
    faults = Faults(drift_new_fields=0.4, drift_missing_optional=0.4, drift_wrong_type=0.4, seed=3)
    with StubServer(catalog, faults=faults, api_keys={KEY}) as srv:
        pages = [get(srv, "/assets", limit=60).json()["data"] for _ in range(2)]
        history = get(srv, "/assets/bitcoin/history", interval="d1").json()["data"]
    sent = pages[0]
    assert pages[1] == sent, "a record drifts the same way on every call"
    assert [a["id"] for a in sent] == [a["id"] for a in catalog.assets]
    new = [a for a in sent if set(NEW_FIELDS) <= a.keys()]
    missing = [a for a in sent if not set(OPTIONAL_FIELDS["assets"]) & a.keys()]
    wrong = [a for a in sent if has_wrong_type("assets", a)]
    assert all(0 < len(group) < len(sent) for group in (new, missing, wrong))
    assert {type(a["priceUsd"]) for a in wrong} == {list, dict, bool}
    # what the suite computes to know which records must be quarantined is what the server sent
    assert sent == [drift_record("assets", i, a, faults)[0] for i, a in enumerate(catalog.assets)]
    assert history == [] or all(isinstance(p.get("time"), int) for p in history)
    assert not any(has_wrong_type("assets", a) for a in catalog.assets)


def test_raw_records_and_envelope_timestamps_are_served_as_given(catalog: Catalog) -> None:
    """What a dict cannot say is served verbatim (for the hostile property tests): a number no float spells, an
    escaped lone surrogate, a record that is not an object; and an implausible envelope timestamp."""
    raw = RawRecord('{"id":"x","priceUsd":-0,"name":"\\ud800","big":1e400}')
    srv = StubServer(Catalog(assets=[raw, RawRecord("null"), {"id": "y"}]), api_keys={KEY})
    with srv:
        srv.envelope_timestamp = RawRecord("-0")
        body = get(srv, "/assets").content
        assert body.startswith(b'{"data":[' + str(raw).encode() + b',null,{"id":"y"}],"timestamp":-0}')
        srv.envelope_timestamp = 2**63 - 1
        assert get(srv, "/assets").json()["timestamp"] == 2**63 - 1
        srv.faults = Faults(drift_values=True)  # a raw record never drifts; the others still do
        assert get(srv, "/assets").json()["data"][:2] == [
            {"id": "x", "priceUsd": 0, "name": "\ud800", "big": float("inf")},
            None,
        ]
        assert srv.stats.served_keys("assets") == {("y",)}  # records that are not objects have no key


def test_a_trickled_answer_counts_as_served_only_when_sent_whole(catalog: Catalog) -> None:
    """The records of an answer the client left mid-trickle were never served whole: the accounting must not count
    them (nor may they be missing from it once the last byte went out)."""
    with StubServer(catalog, faults=Faults(trickle_s=0.05), api_keys={KEY}) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as conn:  # leaves after a few bytes
            conn.sendall(f"GET /v3/rates HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode())
            assert conn.recv(16).startswith(b"HTTP/1.1 200")
        assert wait_for(lambda: srv.stats.abandoned == 1)
        assert srv.stats.served_counts["rates"] == 0 and srv.stats.credits > 1  # billed, never served whole
        srv.faults = Faults(trickle_s=0.0005)
        assert get(srv, "/exchanges", limit=2).ok
        assert srv.stats.served_counts["exchanges"] == 2


def test_billing_above_the_byte_rule_is_counted_as_a_fault(catalog: Catalog) -> None:
    with StubServer(catalog, faults=Faults(bill_floor=12, billing_header="X-Credits-Used"), api_keys={KEY}) as srv:
        answer = get(srv, "/rates")
        assert answer.headers["X-Credits-Used"] == "12" and srv.stats.credits == 12
        assert srv.stats.injected == {"billed above the byte rule": 1}


# ---- lake doubles -----------------------------------------------------------------------------------------


def staged(tmp_path: Path, name: str) -> Path:
    path = tmp_path / "staging" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"parquet bytes")
    return path


def test_faulty_storage_misbehaves_once_at_the_nth_write(tmp_path: Path) -> None:
    lake = LocalStorage(tmp_path / "lake")
    failing = FaultyStorage(lake, at=2, prefix="coincap/")
    assert isinstance(failing, LakeStorage)
    failing.put_file(staged(tmp_path, "a"), "coincap/a.parquet")
    failing.put_file(staged(tmp_path, "q"), "quarantine/q.parquet")  # outside the prefix: not counted
    with pytest.raises(StorageError, match="Injected failure writing coincap/b.parquet"):
        failing.put_file(staged(tmp_path, "b"), "coincap/b.parquet")
    assert not lake.exists("coincap/b.parquet") and failing.fired == 1 and failing.fired_at
    failing.put_file(staged(tmp_path, "b"), "coincap/b.parquet")  # once only
    assert lake.list("coincap/") == ["coincap/a.parquet", "coincap/b.parquet"]

    lost_ack = FaultyStorage(lake, at=1, action="fail_after_write")
    with pytest.raises(StorageError, match="after writing"):
        lost_ack.put_file(staged(tmp_path, "c"), "coincap/c.parquet")
    assert lake.exists("coincap/c.parquet")


def test_the_factory_wraps_every_lake_it_gives_while_the_block_runs(tmp_path: Path) -> None:
    """`storage_wrapper` is the one seam: every `lake_storage(settings)` call, from any thread, gets the wrapped
    lake; a fault's n-th write counts across them; blocks nest and each removes only its own wrapper."""
    from flows.settings import Settings

    settings = Settings(_env_file=None, PIPELINE_DATA_DIR=tmp_path / "data")  # type: ignore[call-arg]
    failing = FaultyStorage(LocalStorage(settings.lake_dir), at=2, prefix="coincap/")
    seen: list[str] = []

    class Spy(StorageWrapper):
        def put_file(self, local_path: Path, key: str) -> None:
            seen.append(key)
            super().put_file(local_path, key)

    assert type(lake_storage(settings)) is LocalStorage
    with storage_wrapper(failing.around):
        first = lake_storage(settings)
        first.put_file(staged(tmp_path, "a"), "coincap/a.parquet")
        with storage_wrapper(Spy):
            from_thread: list[LakeStorage] = []
            worker = threading.Thread(target=lambda: from_thread.append(lake_storage(settings)))
            worker.start()
            worker.join()
            (second,) = from_thread
            assert isinstance(second, Spy) and isinstance(second.inner, FaultyStorage)  # the inner block's is outside
            with pytest.raises(StorageError, match="Injected failure writing coincap/b.parquet"):
                second.put_file(staged(tmp_path, "b"), "coincap/b.parquet")
        assert seen == ["coincap/b.parquet"] and failing.writes == 2 and failing.fired == 1
        assert type(lake_storage(settings)) is FaultyStorage  # the inner block's wrapper went with it
    assert type(lake_storage(settings)) is LocalStorage
    assert LocalStorage(settings.lake_dir).list("coincap/") == ["coincap/a.parquet"]


def test_a_scenario_retries_its_tasks_at_once_through_its_settings() -> None:
    """The fault suite's quick task retries are a setting the flows read, not tasks swapped in their modules."""
    from flows.lab.fault_suite import suite_settings
    from flows.orchestration.runs import with_retry_delays
    from flows.snapshot import extract_task, publish_task

    quick = suite_settings(Path("data"), "http://127.0.0.1:1")
    assert quick.task_retry_delay_scale == 0
    for task in (extract_task, publish_task):
        fast = with_retry_delays(task, quick)
        assert fast.retries == task.retries > 0 and not fast.retry_delay_seconds and fast.retry_jitter_factor is None
        assert with_retry_delays(task, quick.model_copy(update={"task_retry_delay_scale": 1.0})) is task


def test_a_killed_writers_temporary_object_goes_with_the_next_write(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lake = tmp_path / "lake"
    folder = lake / "coincap" / "assets" / "dt=2026-11-21"
    folder.mkdir(parents=True)
    host = socket.gethostname()
    stale = folder / f".x.parquet.{'a' * 32}.{dead.pid}@{host}.tmp"
    live = folder / f".y.parquet.{'b' * 32}.{os.getpid()}@{host}.tmp"
    other_host = folder / f".z.parquet.{'c' * 32}.{dead.pid}@elsewhere.example.tmp"
    for path in (stale, live, other_host):
        path.write_bytes(b"half an object")
    assert len(orphans(lake)) == 3
    LocalStorage(lake).put_file(staged(tmp_path, "s"), "coincap/assets/dt=2026-11-21/s.parquet")
    assert not stale.exists() and live.exists() and other_host.exists()


# ---- accounting -------------------------------------------------------------------------------------------

SNAP = "20261121T060000Z"


def write_snapshot(lake: Path, landed: list[str], quarantined: list[tuple[dict[str, Any], str]]) -> None:
    data = lake / "coincap" / "rates" / "dt=2026-11-21"
    bad = lake / "quarantine" / "rates" / "dt=2026-11-21"
    for folder in (data, bad):
        folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": pa.array(landed, pa.string())}), data / f"{SNAP}.parquet")
    import json

    records = [json.dumps(r) for r, _ in quarantined]
    reasons = [reason for _, reason in quarantined]
    pq.write_table(
        pa.table({"record_json": pa.array(records, pa.string()), "reason": pa.array(reasons, pa.string())}),
        bad / f"{SNAP}.parquet",
    )


def test_accounting_catches_losses_duplicates_misrouting_and_inventions(tmp_path: Path) -> None:
    keyless = {"rateUsd": "3"}
    served = {"rates": [{"id": "a", "rateUsd": "1"}, {"id": "b", "rateUsd": "2"}, {"id": "c", "rateUsd": "x"}, keyless]}
    must_reject = {"rates": {("c",), identity(keyless, ("id",))}}
    assert identity(keyless, ("id",))[0] == "<raw>" and identity({"id": ""}, ("id",))[0] == "<raw>"
    rejects = [({"id": "c", "rateUsd": "x"}, "rateUsd: not a number"), (keyless, "id: missing required field")]

    def tally(landed: list[str], quarantined: list[tuple[dict[str, Any], str]]) -> dict[str, int]:
        lake = tmp_path / f"lake{len(list(tmp_path.iterdir()))}"
        write_snapshot(lake, landed, quarantined)
        (t,) = account_snapshot(lake, SNAP, served, must_reject, datasets=("rates",))
        return {k: getattr(t, k) for k in ("served", "duplicates", "lost", "invented", "misrouted", "without_reason")}

    clean = {"served": 4, "duplicates": 0, "lost": 0, "invented": 0, "misrouted": 0, "without_reason": 0}
    assert tally(["a", "b"], rejects) == clean
    assert tally(["a"], rejects) == {**clean, "lost": 1}
    assert tally(["a", "b", "b"], rejects) == {**clean, "duplicates": 1}
    assert tally(["a", "b"], [*rejects, rejects[0]]) == {**clean, "duplicates": 1}
    assert tally(["a", "b", "c"], rejects[1:]) == {**clean, "misrouted": 1}  # an invalid record landed
    assert tally(["a"], [({"id": "b"}, "?"), *rejects]) == {**clean, "misrouted": 1}  # a valid one quarantined
    assert tally(["a", "b", "z"], rejects) == {**clean, "invented": 1}
    assert tally(["a", "b"], [rejects[0], (keyless, "")]) == {**clean, "without_reason": 1}


def test_a_top_n_scope_splits_what_was_asked_for_from_what_was_over_delivered() -> None:
    """The extract's rule: a record is taken when its key is new or it has none; from the one that would make more
    than N taken, nothing was asked for. Repeats after it are harmless; keyless records count each time."""
    a, b, c, d = ({"id": k} for k in "abcd")
    keyless = {"rank": "9"}
    assert split_scope([a, b, a, c, d], ("id",), 2) == ([a, b, a], [c, d])
    assert split_scope([a, keyless, keyless, b], ("id",), 3) == ([a, keyless, keyless], [b])
    assert split_scope([a, {"id": 7}, b], ("id",), 2) == ([a, {"id": 7}], [b])  # a key that is not a string
    assert split_scope([a, b], ("id",), 5) == ([a, b], [])


def test_accounting_with_a_scope_counts_what_was_trimmed_apart(tmp_path: Path) -> None:
    """Over-delivered records beyond a top-N scope are neither lost when not landed nor allowed to land."""
    served = {"rates": [{"id": "a"}, {"id": "b"}, {"id": "c"}, {"id": "d"}]}
    lake = tmp_path / "lake"
    write_snapshot(lake, ["a", "b"], [])
    (t,) = account_snapshot(lake, SNAP, served, {}, datasets=("rates",), scopes={"rates": 2})
    assert (t.served, t.lost, t.invented, t.beyond_scope) == (2, 0, 0, 2)
    write_snapshot(lake, ["a", "b", "c"], [])  # a record past the scope landed: an invention
    (t,) = account_snapshot(lake, SNAP, served, {}, datasets=("rates",), scopes={"rates": 2})
    assert (t.lost, t.invented, t.beyond_scope) == (0, 1, 2)
    (t,) = account_snapshot(lake, SNAP, served, {}, datasets=("rates",))  # no scope: d is lost
    assert (t.served, t.lost, t.beyond_scope) == (4, 1, 0)


def test_the_hostile_rows_cover_every_hostile_behaviour_with_a_designed_outcome() -> None:
    """Every hostile fault of the stand-in has a row; a stop is one line, bounded in requests, publishes nothing;
    the rows that land say they land exactly."""
    rows = {s.name: s for s in scenarios() if s.flow == "snapshot"}
    used = {
        name for s in rows.values() for name in ("ignore_offset", "drift_values", "over_deliver", "trickle_s",
                                                 "redirect", "gzip_bomb_mb", "bill_floor") if getattr(s.faults, name)
    }  # fmt: skip
    assert used == {"ignore_offset", "drift_values", "over_deliver", "trickle_s", "redirect", "gzip_bomb_mb",
                    "bill_floor"}  # fmt: skip
    assert rows["snapshot-redirect-other-host"].faults.redirect == "other-host"
    assert rows["snapshot-over-deliver-top-n"].scopes == {"assets": 50}
    for scenario in rows.values():
        if scenario.stops_with:
            assert scenario.expect != COMPLETED and scenario.publishes_nothing and scenario.max_requests, scenario.name
    assert rows["snapshot-dear-billing"].exact_credits and rows["snapshot-dear-billing"].faults.billing_header


# ---- the suite --------------------------------------------------------------------------------------------


def test_docs_and_readme_show_every_scenario() -> None:
    for doc in ("docs/fault-suite.md", "README.md"):
        text = (ROOT / doc).read_text()
        missing = [s.name for s in scenarios() if f"| {s.name} |" not in text]
        assert not missing, f"{doc} lacks {missing}: python -m flows.lab.fault_suite --write docs/fault-suite.md"


@pytest.mark.slow  # about 1.5 minutes on 2 cores: every scenario runs the real flows, one builds the marts
def test_fault_suite_loses_nothing_and_duplicates_nothing(prefect_api: str, tmp_path: Path) -> None:
    from flows.settings import use_settings

    suite = run_suite(workdir=tmp_path / "suite")
    assert [r.name for r in suite.results] == [s.name for s in scenarios()]
    assert suite.ok, "fault scenarios fell short:\n" + "\n".join(suite.failures())
    for result in suite.results:
        assert result.total("served") > 0 and result.total("landed") > 0, result.name
        assert result.total("duplicates") == 0 and result.total("lost") == 0, result.name
        assert result.recover_s is not None or result.name == "snapshot-baseline", result.name
    by_name = {r.name: r for r in suite.results}
    assert by_name["snapshot-drift-types"].total("quarantined") > by_name["snapshot-baseline"].total("quarantined")
    assert by_name["snapshot-kill-publish"].marts == by_name["snapshot-kill-publish"].total("landed")
    assert all(f"| {r.name} |" in markdown_table(suite) for r in suite.results)

    # and the judge can fail: a scenario whose fault never fires and whose outcome is not the expected one
    drops = next(s for s in scenarios() if s.name == "snapshot-drops")
    try:
        wrong = run_scenario(replace(drops, faults=Faults(), expect=KILLED_THEN_RECOVERED), tmp_path / "x", prefect_api)
    finally:
        use_settings(None)
    assert any("outcome 'completed'" in p for p in wrong.problems), wrong.problems
    assert "the fault never fired" in wrong.problems

    # a stop that does not say what the row expects, or costs more requests than its bound; credits not as billed
    bomb = next(s for s in scenarios() if s.name == "snapshot-gzip-bomb")
    billing = next(s for s in scenarios() if s.name == "snapshot-dear-billing")
    try:
        loud = run_scenario(replace(bomb, stops_with=("ignores offset",), max_requests=1), tmp_path / "y", prefect_api)
        silent_billing = replace(billing, faults=replace(billing.faults, billing_header=""))
        silent = run_scenario(silent_billing, tmp_path / "z", prefect_api)
    finally:
        use_settings(None)
    assert any("does not say ['ignores offset']" in p for p in loud.problems), loud.problems
    assert any("the first run sent 4 requests (at most 1)" in p for p in loud.problems), loud.problems
    assert any(p.startswith("the run metered") for p in silent.problems), silent.problems
