"""HTTP mechanics for CoinCap v3: auth, timeouts, retries, pagination, credit metering. No endpoint knowledge.

What the API forces, and what this client does about it:
- every call costs credits (1 + 1 per 2,500 bytes), even some rejected ones: a rejected key or an exhausted
  monthly quota stops at once and is never retried;
- a per-minute 429 says how long to wait (`Retry-After`): honoured, within a cap;
- 5xx, timeouts, dropped connections and truncated or invalid JSON are transient: exponential backoff with
  jitter, a bounded number of attempts;
- v2 answers HTTP 200 with `{"data": {"message": ...}}`: that is an error, not data.

What a hostile or broken server cannot do to it:
- hold a call: each attempt has a deadline covering connect, every redirect and the whole body (the read timeout
  alone is per socket read, so a server trickling bytes would never trip it). When it passes, the call's sockets
  are shut down from a watchdog timer, which wakes the blocked read at once; the attempt then counts as transient;
- exhaust memory: the body is streamed and refused past `max_body_bytes`, counted both as received (compressed)
  and as decoded, so a gzip bomb stops after that many bytes of output, not after inflating;
- send the key elsewhere: redirects are followed by hand, only on the base URL's own host (an upgrade to https
  is fine, a downgrade is not), at most `MAX_REDIRECTS` a call; a redirect to another host is one line, not
  followed;
- spend credits unseen: every answer is metered (redirects, errors, cut bodies: at the length the server announced),
  and so is a request that got no answer at all (a dropped connection, a timeout), at the 1 credit every call
  costs (what CoinCap bills for an answer it never finished sending is not documented);
- spend past a budget: with a `CreditBudget`, every request reserves its worst answer before it is sent.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from flows.coincap.credits import credits_for
from flows.errors import ApiError, ApiUnavailable, AuthError, QuotaExhausted
from flows.settings import Settings

USER_AGENT = "coincap-pipeline/0.1 (+https://github.com/coincap-pipeline)"
_QUOTA_WORDS = ("usage limit", "monthly", "quota", "credits", "plan limit")

# The bounds of one call are settings: COINCAP_CALL_DEADLINE (connect, redirects and the whole body, per attempt)
# and COINCAP_MAX_BODY_BYTES (received and decoded; a full page of 2,000 records is under 1 MB).
MAX_REDIRECTS = 5
_CHUNK_BYTES = 64 * 1024
_REDIRECTS = (301, 302, 303, 307, 308)


@dataclass
class CallStats:
    """Calls, bytes and credits of one endpoint (or of a whole run)."""

    calls: int = 0
    failed_calls: int = 0
    bytes: int = 0
    credits: int = 0
    retries: int = 0

    def add(self, other: CallStats) -> None:
        self.calls += other.calls
        self.failed_calls += other.failed_calls
        self.bytes += other.bytes
        self.credits += other.credits
        self.retries += other.retries


@dataclass
class CreditMeter:
    """Thread-safe meter of every HTTP request answered (or sent and left unanswered), per endpoint path.

    A call is billed by CoinCap's byte rule (`credits_for`), or by what the server says it billed when it sends a
    billing header (`COINCAP_BILLING_HEADER`) and that is more. What is learnt from those headers sizes a budget's
    later reservations by what this server really charges: `bill_ratio`, the largest billed / byte-rule ratio of
    answers of 2,500 bytes or more, and `bill_floor`, the most a smaller answer was billed.
    """

    by_path: dict[str, CallStats] = field(default_factory=dict)
    spent: int = 0  # credits of every call recorded: a running total, so a budget check is O(1)
    bill_ratio: float = 1.0
    bill_floor: int = 1
    answered: int = 0  # calls answered 200 in full
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, path: str, body_bytes: int, *, ok: bool, retried: bool = False, billed: int | None = None) -> None:
        by_rule = credits_for(body_bytes)
        # Assume the worst: CoinCap says rejected calls may still be billed.
        credits = max(by_rule, billed or 0)
        with self._lock:
            stats = self.by_path.setdefault(path, CallStats())
            stats.calls += 1
            stats.failed_calls += 0 if ok else 1
            stats.bytes += body_bytes
            stats.credits += credits
            stats.retries += 1 if retried else 0
            self.spent += credits
            self.answered += 1 if ok else 0
            if by_rule > 1:
                self.bill_ratio = max(self.bill_ratio, credits / by_rule)
            else:
                self.bill_floor = max(self.bill_floor, credits)

    def total(self) -> CallStats:
        with self._lock:
            total = CallStats()
            for stats in self.by_path.values():
                total.add(stats)
            return total


class OverBudget(Exception):
    """The next request could cost more than what is left of a `CreditBudget`: it was not sent."""


class CreditBudget:
    """A credit limit shared by every call of a run (every thread, every client on its meter).

    Before each request is sent (every attempt and every redirect hop is a request CoinCap may bill), the worst
    answer it can bring is reserved: the call's body cap by the byte rule, scaled by what the server's billing
    headers have shown (`CreditMeter.bill_ratio`, `bill_floor`). A request whose reservation does not fit is not
    sent (`OverBudget`). After the answer the meter holds what it cost and the reservation is released, so spent +
    reserved never passes `limit`. Until one answer has come back whole, requests go one at a time, so what the
    first answer teaches applies to every later reservation.

    The one answer a budget cannot bound is the first one a server bills above the byte rule before any header has
    said so; a server that bills above the byte rule and never says so cannot be bounded by any client.
    """

    def __init__(self, limit: int | None, meter: CreditMeter | None = None) -> None:
        self.limit = limit
        self.meter = meter if meter is not None else CreditMeter()
        self._reserved = 0
        self._cond = threading.Condition()

    def worst(self, cap_bytes: int) -> int:
        """Credits reserved for one request whose body may be up to `cap_bytes`."""
        meter = self.meter
        return max(math.ceil(credits_for(cap_bytes) * meter.bill_ratio), meter.bill_floor)

    def reserve(self, cap_bytes: int) -> int | None:
        """Reserve the worst case of a request whose body may be up to `cap_bytes`: the amount reserved, or None
        when the request could cross the limit."""
        with self._cond:
            if self.limit is not None:
                while self._reserved and not self.meter.answered:
                    self._cond.wait()
            credits = self.worst(cap_bytes)
            if self.limit is not None and self.meter.spent + self._reserved + credits > self.limit:
                return None
            self._reserved += credits
            return credits

    def release(self, credits: int) -> None:
        """Give back a reservation, once the meter has recorded what its request cost."""
        with self._cond:
            self._reserved -= credits
            self._cond.notify_all()


@dataclass(frozen=True)
class Page:
    """One page of a listing: its records, where it started, and CoinCap's `timestamp` (ms).

    `limit` is how many records were asked for (None when the call did not page): a page holding that many is
    full, and a page holding more was over-delivered.
    """

    records: list[Any]
    offset: int
    timestamp_ms: int | None
    body_bytes: int
    limit: int | None = None


class _Transient(Exception):
    """A failure worth another attempt; `wait_s` overrides the backoff when the server said how long."""

    def __init__(self, reason: str, wait_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wait_s = wait_s


# ---- the call deadline ------------------------------------------------------------------------------------

_active = threading.local()  # .call: the _Deadline of the attempt running in this thread, if any


class _Deadline:
    """The deadline of one attempt. When it passes (or the client is aborted), every socket the attempt opened or
    reused is shut down: a read blocked on a trickling server returns at once, whatever its per-read timeout."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self.aborted = False
        self._done = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self.expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        _active.call = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()
        _active.call = None

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            if not any(s is sock for s in self._sockets):
                self._sockets.append(sock)
            late = self.expired
        if late:
            _shut(sock)

    def expire(self, *, abort: bool = False) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            self.aborted = self.aborted or abort
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def _shut(sock: Any) -> None:
    """Shut a socket down for both directions: a thread blocked reading it wakes up with end-of-stream. The plain
    socket's method, also on an SSL socket (its own would tear down TLS state another thread is using)."""
    with contextlib.suppress(OSError, TypeError, ValueError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _watch(sock: Any) -> None:
    call = getattr(_active, "call", None)
    if call is not None and sock is not None:
        call.watch(sock)


class _Watched:
    """Connection mixin: the sockets a call opens or reuses are handed to its deadline."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # type: ignore[misc]
        _watch(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> Any:
        _watch(getattr(self, "sock", None))  # a kept-alive connection: its socket is already open
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _Adapter(HTTPAdapter):
    """requests' adapter with connections whose sockets a call's deadline can shut down."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_WATCHED_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if type(manager) is urllib3.ProxyManager:  # a SOCKS manager keeps its own connection classes
            manager.pool_classes_by_scheme = dict(_WATCHED_POOLS)
        return manager


# ---- one exchange -----------------------------------------------------------------------------------------


@dataclass
class _Exchange:
    """What one request got, for the meter: whether it was sent, its status, the body bytes."""

    sent: bool = False
    status: int | None = None
    received: int = 0  # decoded body bytes read
    declared: int | None = None  # Content-Length
    billed: int | None = None  # credits the server says it billed (COINCAP_BILLING_HEADER), when it says
    complete: bool = False

    def billed_bytes(self, cap: int) -> int:
        """Bytes to meter: what was read, or for a cut body what the server said it sent (it may bill that)."""
        if self.complete or self.declared is None:
            return self.received
        return max(self.received, min(self.declared, cap))


class _TooLarge(Exception):
    pass


class CoinCapClient:
    """A requests-based client for CoinCap v3 (or any server that speaks it, such as the local stand-in)."""

    def __init__(
        self,
        settings: Settings,
        *,
        base_url: str | None = None,
        meter: CreditMeter | None = None,
        sleep: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
        call_deadline_s: float | None = None,
        max_body_bytes: int | None = None,
        budget: CreditBudget | None = None,
    ) -> None:
        """`budget`: every request reserves its worst answer from it first, and is not sent (`OverBudget`) when
        that does not fit; its meter is then the client's meter."""
        self.settings = settings
        self.base_url = (base_url or settings.api_base_url).rstrip("/")
        self.budget = budget
        self.meter = budget.meter if budget is not None else (meter or CreditMeter())
        self.call_deadline_s = float(call_deadline_s or settings.call_deadline_s)
        self.max_body_bytes = int(max_body_bytes or settings.max_body_bytes)
        self._aborted = threading.Event()
        self._sleep = sleep or self._aborted.wait  # an abort also ends a backoff
        self._rng = rng or random.Random()
        self._calls: set[_Deadline] = set()
        self._calls_lock = threading.Lock()
        self._session = requests.Session()
        # Retries are ours, not urllib3's: they must be metered and must respect the quota rules.
        adapter = _Adapter(max_retries=0, pool_connections=4, pool_maxsize=8)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers["User-Agent"] = USER_AGENT
        self._session.headers["Accept"] = "application/json"
        key = settings.api_key_value
        if key:
            self._session.headers["Authorization"] = f"Bearer {key}"

    def close(self) -> None:
        self._session.close()

    def abort(self) -> None:
        """Stop every call in flight at once (from any thread) and refuse later ones: a run that stopped must not
        wait on a fetch held by a stuck server. The interrupted call raises `ApiError`."""
        self._aborted.set()
        with self._calls_lock:
            calls = list(self._calls)
        for call in calls:
            call.expire(abort=True)

    def __enter__(self) -> CoinCapClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ calls

    def get(
        self, path: str, params: Mapping[str, Any] | None = None, *, max_body_bytes: int | None = None
    ) -> tuple[Any, int | None, int]:
        """GET `path`; return (`data`, `timestamp` ms, body bytes), retrying what is transient.

        `max_body_bytes` lowers the client's cap for this call (a caller that reserved credits for its worst case).
        """
        url = f"{self.base_url}/{path.lstrip('/')}"
        s = self.settings
        cap = min(max_body_bytes or self.max_body_bytes, self.max_body_bytes)
        attempt = 0
        waited_for_rate_limit = 0.0
        last = ""
        while True:
            self._check_aborted(path)
            attempt += 1
            try:
                return self._attempt(url, path, params, retried=attempt > 1, cap=cap)
            except _Transient as exc:
                last = exc.reason
                if exc.wait_s is not None:
                    # A per-minute limit is not a fault: it gets its own (time) budget, not an attempt.
                    wait = min(exc.wait_s, s.max_retry_after_s)
                    if waited_for_rate_limit + wait <= s.max_retry_after_s * 3:
                        waited_for_rate_limit += wait
                        attempt -= 1
                        self._sleep(wait)
                        continue
                if attempt >= s.max_attempts:
                    break
                self._sleep(self._backoff(attempt))
        self._check_aborted(path)
        # Unreachable hosts and non-JSON answers are configuration trouble: a later retry will not help.
        error = ApiError if last.startswith(("cannot connect", "DNS", "not JSON")) else ApiUnavailable
        raise error(f"CoinCap request {path} failed {attempt} times (last: {last}).", self._hint_for(last))

    def _check_aborted(self, path: str) -> None:
        if self._aborted.is_set():
            raise ApiError(f"CoinCap request {path} was cancelled: the run is stopping.", "")

    def _backoff(self, attempt: int) -> float:
        # "Equal jitter": at least half the exponential delay, so retries never hammer, plus a random half.
        ceiling = min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2 ** (attempt - 1))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def _hint_for(self, reason: str) -> str:
        host = urlsplit(self.base_url).netloc
        if reason.startswith(("cannot connect", "DNS")):
            return f"Check your network and COINCAP_API_BASE_URL (now {self.base_url}); {host} is unreachable."
        if reason.startswith("not JSON"):
            return f"Check COINCAP_API_BASE_URL (now {self.base_url}): it should be the v3 API root."
        return "CoinCap may be having trouble; wait a few minutes and re-run (finished work is kept)."

    def _attempt(
        self, url: str, path: str, params: Mapping[str, Any] | None, *, retried: bool, cap: int
    ) -> tuple[Any, int | None, int]:
        """One attempt: the request and the redirects it is sent on, all within one deadline, every hop metered."""
        call = _Deadline(self.call_deadline_s)
        with self._calls_lock:
            self._calls.add(call)
        try:
            with call:
                if self._aborted.is_set():  # aborted since `get` looked: send nothing
                    raise _Transient("cancelled: the run is stopping")
                for hop in range(MAX_REDIRECTS + 1):
                    status, headers, body = self._exchange(
                        url, path, params, call, retried=retried and hop == 0, cap=cap
                    )
                    if status not in _REDIRECTS:
                        return self._answer(path, status, headers, body)
                    url, params = self._redirect_target(path, url, status, headers), None
        finally:
            with self._calls_lock:
                self._calls.discard(call)
        raise ApiError(
            f"CoinCap redirected {path} more than {MAX_REDIRECTS} times; not followed further.",
            f"Check COINCAP_API_BASE_URL (now {self.base_url}): it should be the v3 API root.",
        )

    def _exchange(
        self, url: str, path: str, params: Mapping[str, Any] | None, call: _Deadline, *, retried: bool, cap: int
    ) -> tuple[int, Mapping[str, str], bytes]:
        """Send one request and read its whole answer within the call's deadline and the body cap; meter it."""
        s = self.settings
        got = _Exchange()
        response: requests.Response | None = None
        reserved = 0
        if self.budget is not None:
            fits = self.budget.reserve(cap)
            if fits is None:
                raise OverBudget(path)
            reserved = fits
        try:
            got.sent = True
            response = self._session.get(
                url, params=params, timeout=(s.connect_timeout_s, s.read_timeout_s), stream=True, allow_redirects=False
            )
            got.status = response.status_code
            got.declared = _content_length(response)
            got.billed = _billed(response.headers, s.billing_header)
            body = self._read_body(response, got, cap)
            if call.expired:  # a cut socket can look like the end of a body sent without a length
                raise _Transient(self._expired_reason(call))
            got.complete = True
            return got.status, response.headers, body
        except _TooLarge:
            raise ApiError(
                f"CoinCap answered {path} with more than {cap:,} bytes; refused (a page of 2,000 records is under "
                "1 MB).",
                f"Check COINCAP_API_BASE_URL (now {self.base_url}): it should be the v3 API root.",
            ) from None
        except requests.exceptions.RequestException as exc:
            if call.expired:
                raise _Transient(self._expired_reason(call)) from None
            if isinstance(exc, requests.exceptions.ConnectTimeout):
                got.sent = False
                raise _Transient("connect timeout") from None
            if isinstance(exc, requests.exceptions.ReadTimeout):
                raise _Transient("read timeout") from None
            if isinstance(exc, requests.exceptions.ChunkedEncodingError):
                raise _Transient("response truncated") from None
            if isinstance(exc, requests.exceptions.ContentDecodingError):
                raise _Transient("response body could not be decoded") from None
            if isinstance(exc, requests.exceptions.ConnectionError):
                text = str(exc)
                if "NameResolution" in text or "Name or service not known" in text or "getaddrinfo" in text:
                    got.sent = False
                    raise _Transient(f"DNS lookup failed for {urlsplit(url).netloc}") from None
                if "Connection refused" in text or "NewConnectionError" in text:
                    got.sent = False
                    raise _Transient(f"cannot connect to {urlsplit(url).netloc}") from None
                raise _Transient("connection dropped") from None
            got.sent = False
            raise ApiError(f"CoinCap request {path} could not be sent: {exc}.", "Check COINCAP_API_BASE_URL.") from None
        except (OSError, ValueError, http.client.HTTPException, urllib3.exceptions.HTTPError):
            # what a socket shut down mid-read may raise past requests' own mapping
            raise _Transient(self._expired_reason(call) if call.expired else "connection dropped") from None
        finally:
            if response is not None:
                response.close()
            if got.sent:
                ok = got.status == 200 and got.complete
                # a cut body is billed at what the server said it sent, up to the client's own cap (not this
                # call's, which may be lower): over, rather than under, what CoinCap may bill
                self.meter.record(
                    path, got.billed_bytes(self.max_body_bytes), ok=ok, retried=retried, billed=got.billed
                )
            if self.budget is not None:
                self.budget.release(reserved)  # after the meter has the cost: spent + reserved never dips

    def _expired_reason(self, call: _Deadline) -> str:
        if call.aborted:
            return "cancelled: the run is stopping"
        return f"no complete answer within the {call.seconds:g}-s call deadline"

    @staticmethod
    def _read_body(response: requests.Response, got: _Exchange, cap: int) -> bytes:
        """The whole body, decoded, refused past `cap` bytes received or decoded (a gzip bomb inflates in
        bounded steps: each chunk decodes at most `_CHUNK_BYTES`)."""
        if got.declared is not None and got.declared > cap:
            raise _TooLarge
        chunks: list[bytes] = []
        raw = response.raw
        for chunk in response.iter_content(_CHUNK_BYTES):
            got.received += len(chunk)
            if got.received > cap or raw.tell() > cap:
                raise _TooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    def _redirect_target(self, path: str, url: str, status: int, headers: Mapping[str, str]) -> str:
        """The URL a redirect points to, if it stays on the base URL's host; otherwise a one-line ApiError."""
        location = headers.get("Location")
        if not location:
            raise ApiError(
                f"CoinCap answered {path} with HTTP {status} and no Location.",
                f"Check COINCAP_API_BASE_URL (now {self.base_url}): it should be the v3 API root.",
            )
        target = urljoin(url, location.strip())
        if not _same_host(self.base_url, target):
            raise ApiError(
                f"CoinCap redirected {path} to another host ({_origin(target)}); not followed, so the API key was "
                "not sent there.",
                f"Set COINCAP_API_BASE_URL to the API's own address (now {_origin(self.base_url)}).",
            )
        return target

    def _answer(self, path: str, status: int, headers: Mapping[str, str], body: bytes) -> tuple[Any, int | None, int]:
        if status == 200:
            return self._decode(path, body)
        message = _error_message(body)
        lowered = message.lower()
        if status == 401 or (status == 403 and not any(w in lowered for w in _QUOTA_WORDS)):
            raise AuthError(
                f"CoinCap rejected the API key (HTTP {status}: {message or 'no details'}).",
                "Set COINCAP_API_KEY to a valid key from https://pro.coincap.io/dashboard.",
            )
        if status in (403, 429) and any(w in lowered for w in _QUOTA_WORDS) and "per minute" not in lowered:
            raise QuotaExhausted(
                f"CoinCap credit quota exhausted (HTTP {status}: {message}).",
                "Wait for the monthly reset or upgrade the plan; nothing was retried, so no credits were wasted.",
            )
        if status == 429:
            raise _Transient("rate limited (HTTP 429)", wait_s=_retry_after(headers) or self._backoff(2))
        if status >= 500 or status in (408, 425):
            raise _Transient(f"HTTP {status}" + (f" {message}" if message else ""))
        if status == 404:
            raise ApiError(
                f"CoinCap answered 404 for {path} ({message or 'not found'}).",
                f"Check COINCAP_API_BASE_URL (now {self.base_url}); it should end in /v3.",
            )
        raise ApiError(
            f"CoinCap refused {path} with HTTP {status} ({message or 'no details'}).",
            "Check the request parameters and COINCAP_API_BASE_URL.",
        )

    @staticmethod
    def _decode(path: str, body: bytes) -> tuple[Any, int | None, int]:
        try:
            payload = _loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise _Transient(f"not JSON ({len(body)} bytes)") from None
        if not isinstance(payload, dict) or "data" not in payload:
            raise _Transient("not JSON in CoinCap's envelope (no 'data')")
        data = payload["data"]
        if isinstance(data, dict) and "message" in data and len(data) <= 2:
            raise ApiError(
                f"CoinCap answered {path} with a notice instead of data: {str(data['message'])[:120]!r}.",
                "Point COINCAP_API_BASE_URL at the v3 API (https://rest.coincap.io/v3).",
            )
        timestamp = payload.get("timestamp")
        return data, timestamp if type(timestamp) is int else None, len(body)

    def get_list(
        self, path: str, params: Mapping[str, Any] | None = None, *, max_body_bytes: int | None = None
    ) -> tuple[list[Any], int | None, int]:
        """`get` for endpoints that answer a list; any other JSON shape is a one-line `ApiError`."""
        data, timestamp, nbytes = self.get(path, params, max_body_bytes=max_body_bytes)
        if not isinstance(data, list):
            raise ApiError(
                f"CoinCap answered {path} with a JSON {type(data).__name__} where a list was expected.",
                "Check COINCAP_API_BASE_URL points at the v3 API.",
            )
        return data, timestamp, nbytes

    def paginate(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        limit: int | None = None,
        max_records: int | None = None,
        max_body_bytes: int | None = None,
    ) -> Iterator[Page]:
        """Yield pages of a list endpoint with `limit`/`offset` until a short page (or `max_records`).

        Each page carries the `limit` it asked for. A page holding more (over-delivered) is yielded whole: which of
        its records are wanted is the caller's call, as only the caller knows the records' keys.
        """
        limit = limit or self.settings.page_limit
        offset = 0
        while True:
            if max_records is not None:
                if offset >= max_records:
                    return
                limit = min(limit, max_records - offset)  # never pay for bytes beyond the scope
            data, timestamp, nbytes = self.get_list(
                path, {**(params or {}), "limit": limit, "offset": offset}, max_body_bytes=max_body_bytes
            )
            yield Page(records=data, offset=offset, timestamp_ms=timestamp, body_bytes=nbytes, limit=limit)
            if len(data) < limit:
                return
            offset += limit  # offset is a position in the listing, whatever the page carried


class JsonNumber(float):
    """A JSON number with a fraction or exponent, as a float that keeps the text it was written as, so the contracts
    parse it exactly (`99999999999999.999999999999` is not rounded to 1e14, `-1e-400` is not read as -0.0)."""

    text: str

    def __new__(cls, text: str) -> JsonNumber:
        number = super().__new__(cls, text)
        number.text = text
        return number


def _big_int(text: str) -> int | JsonNumber:
    """A JSON integer; past Python's 4,300-digit limit, a `JsonNumber`, so its record is refused by the contract
    ("more than 20 integer digits") instead of the whole page failing to parse."""
    return int(text) if len(text) <= 4000 else JsonNumber(text)


def _loads(body: bytes) -> Any:
    """JSON with exact numbers. CoinCap sends numbers as strings, so the hooks rarely run; the integer hook (a call
    per integer) only on a body with an integer Python cannot read."""
    try:
        return json.loads(body, parse_float=JsonNumber)
    except ValueError as exc:
        if "digits" not in str(exc):
            raise
    return json.loads(body, parse_float=JsonNumber, parse_int=_big_int)


def _origin(url: str) -> str:
    """scheme://host[:port] of a URL, without any user:password@ it carries."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or "?"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def _same_host(base: str, target: str) -> bool:
    """Whether a redirect from the base URL's host to `target` keeps the key on that host: same host name, and
    the same scheme and port, or an upgrade from http to https (on https's port)."""
    b, t = urlsplit(base), urlsplit(target)
    try:
        b_port = b.port or _DEFAULT_PORTS.get(b.scheme)
        t_port = t.port or _DEFAULT_PORTS.get(t.scheme)
    except ValueError:
        return False
    if t.scheme not in _DEFAULT_PORTS or not t.hostname or (b.hostname or "").lower() != t.hostname.lower():
        return False
    if (t.scheme, t_port) == (b.scheme, b_port):
        return True
    return (b.scheme, t.scheme, t_port) == ("http", "https", 443)


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _content_length(response: requests.Response) -> int | None:
    value = response.headers.get("Content-Length", "")
    return int(value) if value.isascii() and value.isdigit() else None


def _billed(headers: Mapping[str, str], name: str) -> int | None:
    """The credits a billing header says this answer cost; None when there is no such header or it is not a
    plain count."""
    value = headers.get(name, "").strip() if name else ""
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 9 else None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _error_message(body: bytes) -> str:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return body[:120].decode("utf-8", "replace").strip()
    if isinstance(payload, dict):
        for key in ("error", "message", "detail"):
            if isinstance(payload.get(key), str):
                return payload[key]
    return str(payload)[:120]
