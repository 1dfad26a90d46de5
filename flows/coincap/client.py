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

The meter and the budget are in `budget.py`, the call deadline in `deadline.py`, the redirect rule in
`redirects.py`, and the reading of an answer's body and headers in `answers.py`.
"""

from __future__ import annotations

import http.client
import random
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3

from flows.coincap.answers import billed_credits, content_length, error_message, loads_exact, retry_after
from flows.coincap.budget import CreditBudget, CreditMeter, OverBudget
from flows.coincap.deadline import CallDeadline, DeadlineAdapter
from flows.coincap.redirects import MAX_REDIRECTS, REDIRECT_STATUSES, redirect_target
from flows.errors import ApiError, ApiUnavailable, AuthError, QuotaExhausted
from flows.settings import Settings

USER_AGENT = "coincap-pipeline/0.1 (+https://github.com/coincap-pipeline)"
_QUOTA_WORDS = ("usage limit", "monthly", "quota", "credits", "plan limit")

# The bounds of one call are settings: COINCAP_CALL_DEADLINE (connect, redirects and the whole body, per attempt)
# and COINCAP_MAX_BODY_BYTES (received and decoded; a full page of 2,000 records is under 1 MB).
_CHUNK_BYTES = 64 * 1024


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
        self._calls: set[CallDeadline] = set()
        self._calls_lock = threading.Lock()
        self._session = requests.Session()
        # Retries are ours, not urllib3's: they must be metered and must respect the quota rules.
        adapter = DeadlineAdapter(max_retries=0, pool_connections=4, pool_maxsize=8)
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
        call = CallDeadline(self.call_deadline_s)
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
                    if status not in REDIRECT_STATUSES:
                        return self._answer(path, status, headers, body)
                    url, params = redirect_target(self.base_url, path, url, status, headers), None
        finally:
            with self._calls_lock:
                self._calls.discard(call)
        raise ApiError(
            f"CoinCap redirected {path} more than {MAX_REDIRECTS} times; not followed further.",
            f"Check COINCAP_API_BASE_URL (now {self.base_url}): it should be the v3 API root.",
        )

    def _exchange(
        self, url: str, path: str, params: Mapping[str, Any] | None, call: CallDeadline, *, retried: bool, cap: int
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
            got.declared = content_length(response)
            got.billed = billed_credits(response.headers, s.billing_header)
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

    def _expired_reason(self, call: CallDeadline) -> str:
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

    def _answer(self, path: str, status: int, headers: Mapping[str, str], body: bytes) -> tuple[Any, int | None, int]:
        if status == 200:
            return self._decode(path, body)
        message = error_message(body)
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
            raise _Transient("rate limited (HTTP 429)", wait_s=retry_after(headers) or self._backoff(2))
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
            payload = loads_exact(body)
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
