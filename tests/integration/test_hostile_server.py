"""The client and the extract against hostile servers on 127.0.0.1: every call and every listing ends within bounds.

Each test runs the work in a thread and asserts it ends within a generous wall-time bound (so a regression fails
the test instead of hanging the suite), then bounds the requests sent and checks the credits metered against what
the server billed. Servers are the stand-in's hostile mode (`Faults.trickle_s`, `ignore_offset`, `drift_values`,
`over_deliver`, `redirect`, `gzip_bomb_mb`) or a few lines of socket code of the test's own.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flows.coincap.client import CoinCapClient
from flows.errors import ApiError, ApiUnavailable
from flows.ingest.extract import extract_dataset
from flows.snapshot_id import Snapshot
from flows.standin import Catalog, Faults, StubServer
from tests.conftest import API_KEY, fast_settings

MB = 1024 * 1024


def bounded(work: Callable[[], Any], seconds: float) -> tuple[Any, BaseException | None, float]:
    """Run `work` in a thread; (its result, the exception it raised, seconds taken), or fail past `seconds`."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    elapsed = time.monotonic() - started
    assert not thread.is_alive(), f"still running after {seconds} s"
    return out.get("result"), out.get("error"), elapsed


def one_line(exc: BaseException | None, *words: str) -> str:
    assert exc is not None, "expected an error"
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text, text
    for word in words:
        assert word in text, text
    return text


class RawServer(socketserver.ThreadingTCPServer):
    """A TCP server on 127.0.0.1 whose `answer(connection, request_head)` writes whatever it likes."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, answer: Callable[[socket.socket, bytes, RawServer], None]) -> None:
        self.answer = answer
        self.requests = 0
        self.stopping = threading.Event()
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                conn: socket.socket = self.request
                head = b""
                while b"\r\n\r\n" not in head:
                    part = conn.recv(4096)
                    if not part:
                        return
                    head += part
                server.requests += 1
                with contextlib.suppress(OSError):  # the client gave up: what these servers are for
                    server.answer(conn, head, server)

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v3"

    def stop(self) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()


@pytest.fixture
def raw_server() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(answer: Callable[[socket.socket, bytes, RawServer], None]) -> RawServer:
        servers.append(RawServer(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def small_catalog() -> Catalog:
    return Catalog.synthetic(n_assets=60, n_exchanges=5, n_markets=100, seed=4)


def stand_in(catalog: Catalog, **faults: Any) -> StubServer:
    return StubServer(catalog, faults=Faults(**faults), api_keys={API_KEY}).start()


# ---- 1. a deadline per call ----------------------------------------------------------------------------------


@pytest.mark.parametrize("trickle_s", [0.05, 0.4], ids=["body-trickles", "headers-trickle"])
def test_a_trickling_answer_fails_each_attempt_at_its_deadline(tmp_path: Path, small_catalog: Catalog, trickle_s):
    """16 bytes every 50 ms (or every 400 ms, so even the headers never finish): no read ever times out (2 s),
    only the deadline of the whole call (1 s) ends each attempt; 2 attempts, then one line."""
    with stand_in(small_catalog, trickle_s=trickle_s) as server:
        settings = fast_settings(tmp_path, server.base_url, COINCAP_MAX_ATTEMPTS=2, COINCAP_READ_TIMEOUT=2.0)
        client = CoinCapClient(settings, call_deadline_s=1.0)
        _, error, elapsed = bounded(lambda: client.get("/assets", {"limit": 50}), 10)
        assert isinstance(error, ApiUnavailable)
        one_line(error, "failed 2 times", "1-s call deadline")
        assert 2.0 <= elapsed < 6, elapsed  # two whole deadlines, then nothing held
        assert server.stats.total_requests == 2
        total = client.meter.total()
        assert (total.calls, total.failed_calls) == (2, 2), "unanswered calls are metered too"
        client.close()


def test_a_stuck_fetch_never_holds_the_extract_when_it_stops(tmp_path: Path, small_catalog: Catalog):
    """The page fetched ahead hangs (the server holds every request after the first) and the run stops for another
    reason: closing the prefetcher cancels the stuck call instead of waiting for its timeouts (30 s x 8 here)."""
    with stand_in(small_catalog, hang_after=1) as server:
        settings = fast_settings(tmp_path, server.base_url, COINCAP_PAGE_LIMIT=10, COINCAP_READ_TIMEOUT=30.0)

        def stop_after_first_page(dataset: str, pages: int, records: int) -> None:
            time.sleep(0.3)  # the next page is in flight, held by the server
            raise RuntimeError("the run stops here")

        work = lambda: extract_dataset("assets", Snapshot.now(), settings=settings, progress=stop_after_first_page)  # noqa: E731
        _, error, elapsed = bounded(work, 15)
        assert isinstance(error, RuntimeError), error
        assert elapsed < 5, elapsed
        assert server.stats.total_requests <= 2  # the first page and the held one, never retried
        server.faults.hang_after = 0


# ---- 2. a maximum body size ------------------------------------------------------------------------------------


def test_a_gzip_bomb_is_refused_with_one_line_and_memory_stays_small(tmp_path: Path, small_catalog: Catalog):
    """Under 1 KB on the wire, 200 MB inflated: refused at the 1 MB cap, never retried, Python's peak memory far
    below the 200 MB it would take."""
    with stand_in(small_catalog, gzip_bomb_mb=200) as server:
        settings = fast_settings(tmp_path, server.base_url)
        client = CoinCapClient(settings, max_body_bytes=MB)

        def fetch() -> Any:
            tracemalloc.start()
            try:
                return client.get("/assets")
            finally:
                peaks.append(tracemalloc.get_traced_memory()[1])
                tracemalloc.stop()

        peaks: list[int] = []
        _, error, elapsed = bounded(fetch, 30)
        assert isinstance(error, ApiError) and not isinstance(error, ApiUnavailable), error
        one_line(error, "more than 1,048,576 bytes", "refused")
        assert peaks[0] < 40 * MB, f"peak {peaks[0] / MB:.0f} MB"
        assert elapsed < 10, elapsed
        assert server.stats.total_requests == 1 and client.meter.total().calls == 1
        client.close()


def test_an_endless_body_without_a_length_is_cut_at_the_cap(tmp_path: Path, raw_server):
    """No Content-Length, no end: spaces until the client leaves. Refused after the cap, not read forever."""

    def endless(conn: socket.socket, head: bytes, server: RawServer) -> None:
        conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{"data":[')
        while not server.stopping.is_set():
            conn.sendall(b" " * 65536)

    server = raw_server(endless)
    client = CoinCapClient(fast_settings(tmp_path, server.base_url), max_body_bytes=2 * MB)
    _, error, elapsed = bounded(lambda: client.get("/assets"), 10)
    one_line(error, "more than 2,097,152 bytes")
    assert elapsed < 5 and server.requests == 1
    assert client.meter.total().bytes <= 2 * MB + 65536
    client.close()


def test_a_declared_length_over_the_cap_is_refused_before_reading(tmp_path: Path, raw_server):
    def huge(conn: socket.socket, head: bytes, server: RawServer) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n")
        server.stopping.wait(10)

    server = raw_server(huge)
    client = CoinCapClient(fast_settings(tmp_path, server.base_url), max_body_bytes=MB)
    _, error, elapsed = bounded(lambda: client.get("/assets"), 10)
    one_line(error, "more than 1,048,576 bytes")
    assert elapsed < 3 and server.requests == 1
    client.close()


# ---- 3. paging that must make progress, and never more records than asked for ----------------------------------


def assets_page(*, invalid: bool = False, keyless: bool = False, all_keyless: bool = False) -> Catalog:
    records = [dict(r) for r in Catalog.demo().assets[:10]]
    if invalid:
        records[3]["priceUsd"] = "not a number"
    if keyless:
        del records[5]["id"]
    if all_keyless:
        for record in records:
            del record["id"]
    return Catalog(assets=records)


@pytest.mark.parametrize(
    ("catalog_kind", "drift", "expect"),
    [
        ({}, False, "same full page of assets twice"),
        ({}, True, "2 full pages of assets in a row"),
        ({"invalid": True, "keyless": True}, True, "2 full pages of assets in a row"),
        ({"all_keyless": True}, True, "2 full pages of assets in a row"),
    ],
    ids=["identical", "drifting", "drifting-invalid-keyless", "drifting-all-keyless"],
)
def test_a_server_that_ignores_offset_stops_the_extract_however_values_drift(
    tmp_path: Path, catalog_kind: dict[str, bool], drift: bool, expect: str
):
    """Every page is the first one, its prices moving on every call (as live prices do), with an invalid record and
    one without a key: the repeat is caught by the keys served, not by the bytes, within 3 calls."""
    with stand_in(assets_page(**catalog_kind), ignore_offset=True, drift_values=drift) as server:
        settings = fast_settings(tmp_path, server.base_url, COINCAP_PAGE_LIMIT=10)
        _, error, elapsed = bounded(lambda: extract_dataset("assets", Snapshot.now(), settings=settings), 20)
        server.stop()  # a runaway extract, if any, ends with the server
    assert isinstance(error, ApiError), error
    one_line(error, expect, "the server ignores offset")
    assert server.stats.total_requests <= 3 and elapsed < 10, (server.stats.total_requests, elapsed)


def test_pages_that_overlap_heavily_but_progress_are_not_mistaken_for_ignored_offset(tmp_path: Path):
    """Ranks shifting 9 rows a page of 10 (every page repeats 9 rows) with drifting values: each page still brings
    one new record, so the listing is read to its end and every record lands once."""
    catalog = Catalog.synthetic(n_assets=45, n_exchanges=3, n_markets=10, seed=2)
    with stand_in(catalog, rank_shift=9, drift_values=True) as server:
        settings = fast_settings(tmp_path, server.base_url, COINCAP_PAGE_LIMIT=10)
        (report, staged), error, _ = bounded(lambda: extract_dataset("assets", Snapshot.now(), settings=settings), 60)
        assert error is None, error
        staged.discard()
    assert report.valid == 45 and report.quarantined == 0
    assert report.duplicates == report.served - 45


@pytest.mark.parametrize(("limit", "page_limit", "extra"), [(5, 2000, 5), (25, 10, 7), (25, 10, 30)])
def test_a_top_n_scope_lands_n_records_when_the_server_over_delivers(
    tmp_path: Path, small_catalog: Catalog, limit: int, page_limit: int, extra: int
):
    """COINCAP_ASSETS_LIMIT=N and pages carrying `extra` rows beyond their limit: exactly the top N land."""
    with stand_in(small_catalog, over_deliver=extra) as server:
        settings = fast_settings(tmp_path, server.base_url, COINCAP_ASSETS_LIMIT=limit, COINCAP_PAGE_LIMIT=page_limit)
        (report, staged), error, _ = bounded(lambda: extract_dataset("assets", Snapshot.now(), settings=settings), 30)
        assert error is None, error
        staged.discard()
        requests = server.stats.total_requests
    assert report.valid == limit and report.quarantined == 0
    assert report.served - report.duplicates == limit
    assert requests <= -(-limit // page_limit)  # no call beyond the scope


# ---- 4. redirects ----------------------------------------------------------------------------------------------


def test_a_redirect_to_another_host_is_refused_with_one_line_and_metered(tmp_path: Path, small_catalog: Catalog):
    """The other host is this very server under the name "localhost": following would work, and send the key."""
    with stand_in(small_catalog, redirect="other-host") as server:
        client = CoinCapClient(fast_settings(tmp_path, server.base_url))
        _, error, _ = bounded(lambda: client.get("/assets"), 10)
        one_line(error, "redirected /assets to another host", f"http://localhost:{server.port}", "not followed")
        assert server.stats.total_requests == 1, "the redirect is never followed, nor retried"
        total = client.meter.total()
        assert total.calls == 1 and total.credits == server.stats.credits
        client.close()


def test_a_same_host_redirect_is_followed_and_every_hop_metered(tmp_path: Path, small_catalog: Catalog):
    with stand_in(small_catalog, redirect="same-host") as server:
        client = CoinCapClient(fast_settings(tmp_path, server.base_url, COINCAP_PAGE_LIMIT=25))
        (pages), error, _ = bounded(lambda: list(client.paginate("/assets")), 10)
        assert error is None, error
        assert sum(len(p.records) for p in pages) == 60
        total = client.meter.total()
        assert server.stats.total_requests == 6  # 3 pages, each redirected once
        assert total.calls == 6 and total.credits == server.stats.credits
        client.close()


def test_a_redirect_loop_ends_after_a_few_hops(tmp_path: Path, raw_server):
    def loop(conn: socket.socket, head: bytes, server: RawServer) -> None:
        path = head.split(b" ", 2)[1]
        conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: " + path + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    server = raw_server(loop)
    client = CoinCapClient(fast_settings(tmp_path, server.base_url))
    _, error, elapsed = bounded(lambda: client.get("/assets"), 10)
    one_line(error, "redirected /assets more than 5 times")
    assert server.requests == 6 and client.meter.total().calls == 6 and elapsed < 5
    client.close()


# ---- every failed answer metered ------------------------------------------------------------------------------


def test_truncated_answers_are_metered_as_the_server_bills_them(tmp_path: Path, small_catalog: Catalog):
    with stand_in(small_catalog, p_truncate=1.0) as server:
        client = CoinCapClient(fast_settings(tmp_path, server.base_url, COINCAP_MAX_ATTEMPTS=3))
        _, error, _ = bounded(lambda: client.get("/assets"), 10)
        one_line(error, "failed 3 times", "truncated")
        total = client.meter.total()
        assert total.calls == server.stats.total_requests == 3
        assert total.credits == server.stats.credits, "a cut body is billed at its full length"
        client.close()
