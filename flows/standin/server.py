"""A CoinCap-v3-compatible HTTP server on 127.0.0.1 that serves a `Catalog` and injects `Faults` on demand.

One piece of code for the offline demo (bundled samples through the real client), fault-injection tests and
benchmarks (a large synthetic snapshot served from another process, see `process.serve_in_subprocess`).
Here: the server's life (start, stop, connections), the faults that replace an answer, and the writing of
answers; what an endpoint answers is `routes.py`'s, what the server counted `stats.py`'s.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import select
import socket
import sys
import threading
import time
from collections.abc import Collection
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from flows.coincap.credits import credits_for
from flows.standin.catalog import Catalog
from flows.standin.catalog_index import CatalogIndex
from flows.standin.faults import (
    DEPRECATION_MESSAGE,
    GARBAGE_BODY,
    GZIP_BOMB_ENCODING,
    QUOTA_403_BODY,
    QUOTA_429_BODY,
    RATE_LIMIT_BODY,
    UNAUTHORIZED_BODY,
    UNAVAILABLE_BODY,
    FaultDice,
    Faults,
    gzip_bomb,
)
from flows.standin.replies import (
    API_PREFIX,
    SERVER_ERRORS,
    STATS_PATH,
    Reject,
    Reply,
    encode,
    envelope,
    error_body,
    restamp,
)
from flows.standin.routes import Router
from flows.standin.stats import ServerStats


class StubServer(ThreadingHTTPServer):
    """CoinCap v3 stand-in bound to 127.0.0.1, served from a daemon thread.

    `with StubServer(Catalog.demo(), faults=Faults(p_5xx=0.1), api_keys={"test-key"}) as srv: srv.base_url`
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        catalog: Catalog | None = None,
        *,
        faults: Faults | None = None,
        api_keys: Collection[str] | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
        keep_served_records: bool = True,
    ) -> None:
        self.api_keys: set[str] = set(api_keys or ())
        self.stats = ServerStats(keep_records=keep_served_records)
        self._faults = faults or Faults()
        self._dice = FaultDice(self._faults.seed)
        self._index = CatalogIndex(Catalog.demo() if catalog is None else catalog)
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._closing = threading.Event()  # ends held answers (slow, hang, trickle) when the server stops
        self._ticks = itertools.count(1)  # drift_values: one tick per listing answered
        # Hostile tests: when not None, the `timestamp` of every data answer (listing, detail, history) is this JSON
        # value instead of now in ms (0, seconds, year 9999, 2**63 - 1, a string, a `RawRecord` such as "-0").
        self.envelope_timestamp: Any = None
        super().__init__((host, port), _Handler)

    @property
    def catalog(self) -> Catalog:
        """The catalog served; assign a new one to swap it (caches are rebuilt)."""
        return self._index.catalog

    @catalog.setter
    def catalog(self, catalog: Catalog) -> None:
        self._index = CatalogIndex(catalog)

    @property
    def faults(self) -> Faults:
        """Faults in force: mutate fields in place, or assign a new `Faults` to also restart the dice."""
        return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._faults = faults
        self._dice = FaultDice(faults.seed)

    @property
    def port(self) -> int:
        """The bound TCP port."""
        return int(self.server_address[1])

    @property
    def base_url(self) -> str:
        """e.g. http://127.0.0.1:PORT/v3"""
        return f"http://127.0.0.1:{self.port}{API_PREFIX}"

    def start(self) -> StubServer:
        """Serve from a daemon thread; returns self."""
        if self._thread is None:
            # a short poll interval makes stop() quick (shutdown waits for the loop's next poll)
            self._thread = threading.Thread(
                target=self.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"stub-coincap-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the listening socket and cut every open keep-alive connection."""
        self._closing.set()
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        with self._connections_lock:
            open_connections = list(self._connections)
        for conn in open_connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.server_close()

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-answer (killed, timed out) is routine for a fault server: not worth a trace."""
        if isinstance(sys.exc_info()[1], ConnectionResetError | BrokenPipeError):
            return
        super().handle_error(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve one connection (socketserver hook)."""
        # tracked so stop() can cut idle keep-alive connections that would otherwise still be served
        with self._connections_lock:
            self._connections.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.discard(request)

    # ---- request handling -------------------------------------------------------------------------------

    def _answer(self, handler: _Handler) -> None:
        """Apply faults in order (hold, outage, storm, drop, v2 notice, auth, quota, 429s, 5xx, garbage), then route."""
        parts = urlsplit(handler.path)
        path = unquote(parts.path).rstrip("/") or "/"
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        if path == STATS_PATH:
            handler.send(Reply(200, encode(self.stats.as_dict())), count=False)
            return
        self.stats.count_request(path)
        faults = self._faults
        draw = self._dice.roll(faults)
        if faults.delay_s > 0:
            time.sleep(faults.delay_s)
        if not self._held(handler, draw.seq, draw.slow):
            return
        stats = self.stats
        if faults.redirect and query.get("redirected") != "1":
            # a proxy in front of the API moves every call once; "other-host" names this server by another name
            host = "localhost" if faults.redirect == "other-host" else "127.0.0.1"
            target = f"http://{host}:{self.port}{parts.path}?{parts.query}{'&' if parts.query else ''}redirected=1"
            stats.count_fault(f"redirect ({'other' if host == 'localhost' else 'same'} host)")
            handler.send(Reply(307, error_body("Temporary redirect"), headers={"Location": target}))
            return
        if draw.fail_first:
            stats.count_fault("503 outage")
            handler.send(Reply(503, UNAVAILABLE_BODY))
        elif draw.storm:
            stats.count_fault("5xx storm")
            body, content_type = SERVER_ERRORS[draw.storm]
            handler.send(Reply(draw.storm, body, content_type=content_type))
        elif draw.drop:
            stats.count_fault("dropped connection")
            handler.drop()
        elif faults.deprecated:  # v2 answered this to every call, key or not
            handler.send(Reply(200, envelope(encode({"message": DEPRECATION_MESSAGE}))))
        elif self.api_keys and not self._authorized(handler, query):
            handler.send(Reply(401, UNAUTHORIZED_BODY))
        elif faults.quota_exhausted or draw.quota_spent:
            stats.count_fault("quota exhausted")
            body = QUOTA_429_BODY if faults.quota_status == 429 else QUOTA_403_BODY
            handler.send(Reply(429 if faults.quota_status == 429 else 403, body))
        elif (wait := self._dice.over_rate_limit(faults, time.monotonic())) is not None:
            stats.count_fault("429 rate-limit window")
            # whole milliseconds, rounded up, so a client that waits exactly this long lands in the next window
            retry_after = f"{math.ceil(wait * 1000) / 1000:g}"
            handler.send(Reply(429, RATE_LIMIT_BODY, headers={"Retry-After": retry_after}))
        elif draw.rate_limited:
            stats.count_fault("429 rate limit")
            handler.send(Reply(429, RATE_LIMIT_BODY, headers={"Retry-After": f"{faults.retry_after_s:g}"}))
        elif draw.server_error:
            stats.count_fault("5xx")
            body, content_type = SERVER_ERRORS[draw.server_error]
            handler.send(Reply(draw.server_error, body, content_type=content_type))
        elif draw.garbage:
            stats.count_fault("not JSON")
            handler.send(Reply(200, GARBAGE_BODY))  # still claims JSON, as a misbehaving proxy would
        else:
            try:
                reply = Router(self._index, self._faults, self.stats, self._ticks).route(path, query)
            except Reject as reject:
                reply = reject.reply
            if self.envelope_timestamp is not None and reply.status == 200 and reply.dataset is not None:
                reply = replace(reply, body=restamp(reply.body, self.envelope_timestamp))
            if faults.gzip_bomb_mb > 0 and reply.status == 200:
                stats.count_fault("gzip bomb")
                headers = {**reply.headers, "Content-Encoding": GZIP_BOMB_ENCODING}
                reply = Reply(200, gzip_bomb(faults.gzip_bomb_mb), headers=headers)
            truncate = draw.truncate and reply.status == 200
            if truncate:
                stats.count_fault("truncated body")
            handler.send(reply, truncate=truncate)

    def _held(self, handler: _Handler, seq: int, slow: bool) -> bool:
        """Hold a slow or hung answer; False when the client left meanwhile (the answer is then never sent)."""
        faults = self._faults
        hung = 0 < faults.hang_after < seq
        if not (slow or hung):
            return True
        self.stats.count_fault("hung request" if hung else "slow response")
        deadline = time.monotonic() + faults.slow_s
        while not self._closing.is_set():
            current = self._faults  # a hang ends when the test sets hang_after back to 0 (or swaps the faults)
            if hung and not 0 < current.hang_after < seq:
                break
            if not hung and time.monotonic() >= deadline:
                break
            if _client_gone(handler.connection):
                break
            self._closing.wait(0.02)
        if _client_gone(handler.connection) or self._closing.is_set():
            self.stats.count_abandoned()
            handler.close_connection = True
            return False
        return True

    def _authorized(self, handler: _Handler, query: dict[str, str]) -> bool:
        header = handler.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip() in self.api_keys:
            return True
        return query.get("apiKey") in self.api_keys


class _Handler(BaseHTTPRequestHandler):
    """Hands every GET to the server; writes replies with an exact Content-Length over keep-alive HTTP/1.1."""

    server: StubServer
    protocol_version = "HTTP/1.1"
    server_version = "coincap-stub/1"
    timeout = 120  # idle keep-alive connections end eventually
    disable_nagle_algorithm = True  # headers and body go out in two writes: Nagle would add ~40 ms each

    def do_GET(self) -> None:
        self.server._answer(self)

    def _not_found(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.stats.count_request(urlsplit(self.path).path)
        self.send(Reply(404, error_body("Not found")))

    do_POST = do_PUT = do_DELETE = do_PATCH = _not_found

    def send(self, reply: Reply, *, truncate: bool = False, count: bool = True) -> None:
        """Write the reply; with `truncate`, announce the full length, send half the body, close."""
        body = reply.body[: len(reply.body) // 2] if truncate else reply.body
        faults = self.server.faults
        trickle_s = faults.trickle_s if count else 0.0
        if count:
            # billed for the whole answer, as computed, however much of it is sent
            billed = max(credits_for(len(reply.body)), faults.bill_floor)
            if billed > credits_for(len(reply.body)):
                self.server.stats.count_fault("billed above the byte rule")
            self.server.stats.count_response(
                reply, len(body), truncated=truncate, billed=billed, records_later=trickle_s > 0
            )
            if faults.billing_header:
                reply = replace(reply, headers={**reply.headers, faults.billing_header: str(billed)})
        if trickle_s > 0:
            self.server.stats.count_fault("trickled answer")
            self._trickle(reply, body, trickle_s, count_records=count and not truncate)
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
        if truncate:
            self.wfile.flush()
            self.close_connection = True

    def _trickle(self, reply: Reply, body: bytes, every_s: float, *, count_records: bool = False) -> None:
        """Write the whole answer, status line included, 16 bytes every `every_s` seconds, until it is sent, the
        client leaves or the server stops; then close the connection. With `count_records`, its records count as
        served when the last piece goes out (before it, so a client that read it never sees them uncounted)."""
        self.close_connection = True
        lines = [f"{self.protocol_version} {reply.status} {self.responses.get(reply.status, ('',))[0]}"]
        lines += [f"Content-Type: {reply.content_type}", f"Content-Length: {len(reply.body)}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in reply.headers.items()]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        closing = self.server._closing
        for start in range(0, len(data), 16):
            if closing.is_set() or _client_gone(self.connection):
                self.server.stats.count_abandoned()
                return
            if count_records and start + 16 >= len(data):
                self.server.stats.count_served(reply)
            try:
                self.wfile.write(data[start : start + 16])
                self.wfile.flush()
            except OSError:
                self.server.stats.count_abandoned()
                return
            closing.wait(every_s)

    def drop(self) -> None:
        """Close the connection without writing a byte."""
        self.server.stats.count_response(None, 0)
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests and benchmarks would drown in access logs


def _client_gone(conn: socket.socket) -> bool:
    """Whether the client closed its side (a read timeout, a killed process): a peek then reads end-of-stream."""
    try:
        # select first: the handler's socket has a timeout, and a recv on it would wait that long for data
        readable, _, _ = select.select([conn], [], [], 0)
        return bool(readable) and conn.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):  # ValueError: the socket is already closed
        return True
