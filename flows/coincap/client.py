"""HTTP mechanics for CoinCap v3: auth, timeouts, retries, pagination, credit metering. No endpoint knowledge.

What the API forces, and what this client does about it:
- every call costs credits (1 + 1 per 2,500 bytes), even some rejected ones: a rejected key or an exhausted
  monthly quota stops at once and is never retried;
- a per-minute 429 says how long to wait (`Retry-After`): honoured, within a cap;
- 5xx, timeouts, dropped connections and truncated or invalid JSON are transient: exponential backoff with
  jitter, a bounded number of attempts;
- v2 answers HTTP 200 with `{"data": {"message": ...}}`: that is an error, not data.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from flows.coincap.credits import credits_for
from flows.errors import ApiError, ApiUnavailable, AuthError, QuotaExhausted
from flows.settings import Settings

USER_AGENT = "coincap-pipeline/0.1 (+https://github.com/coincap-pipeline)"
_QUOTA_WORDS = ("usage limit", "monthly", "quota", "credits", "plan limit")


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
    """Thread-safe meter of every HTTP response received, per endpoint path."""

    by_path: dict[str, CallStats] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, path: str, body_bytes: int, *, ok: bool, retried: bool = False) -> None:
        with self._lock:
            stats = self.by_path.setdefault(path, CallStats())
            stats.calls += 1
            stats.failed_calls += 0 if ok else 1
            stats.bytes += body_bytes
            # Assume the worst: CoinCap says rejected calls may still be billed.
            stats.credits += credits_for(body_bytes)
            stats.retries += 1 if retried else 0

    def total(self) -> CallStats:
        with self._lock:
            total = CallStats()
            for stats in self.by_path.values():
                total.add(stats)
            return total


@dataclass(frozen=True)
class Page:
    """One page of a listing: its records, where it started, and CoinCap's `timestamp` (ms)."""

    records: list[Any]
    offset: int
    timestamp_ms: int | None
    body_bytes: int


class _Transient(Exception):
    """A failure worth another attempt; `wait_s` overrides the backoff when the server said how long."""

    def __init__(self, reason: str, wait_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wait_s = wait_s


class CoinCapClient:
    """A requests-based client for CoinCap v3 (or any server that speaks it, such as the local stand-in)."""

    def __init__(
        self,
        settings: Settings,
        *,
        base_url: str | None = None,
        meter: CreditMeter | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.base_url = (base_url or settings.api_base_url).rstrip("/")
        self.meter = meter or CreditMeter()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._session = requests.Session()
        # Retries are ours, not urllib3's: they must be metered and must respect the quota rules.
        adapter = HTTPAdapter(max_retries=0, pool_connections=4, pool_maxsize=8)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers["User-Agent"] = USER_AGENT
        self._session.headers["Accept"] = "application/json"
        key = settings.api_key_value
        if key:
            self._session.headers["Authorization"] = f"Bearer {key}"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> CoinCapClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ calls

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> tuple[Any, int | None, int]:
        """GET `path`; return (`data`, `timestamp` ms, body bytes), retrying what is transient."""
        url = f"{self.base_url}/{path.lstrip('/')}"
        s = self.settings
        attempt = 0
        waited_for_rate_limit = 0.0
        last = ""
        while True:
            attempt += 1
            try:
                return self._attempt(url, path, params, retried=attempt > 1)
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
        # Unreachable hosts and non-JSON answers are configuration trouble: a later retry will not help.
        error = ApiError if last.startswith(("cannot connect", "DNS", "not JSON")) else ApiUnavailable
        raise error(f"CoinCap request {path} failed {attempt} times (last: {last}).", self._hint_for(last))

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
        self, url: str, path: str, params: Mapping[str, Any] | None, *, retried: bool
    ) -> tuple[Any, int | None, int]:
        s = self.settings
        try:
            response = self._session.get(url, params=params, timeout=(s.connect_timeout_s, s.read_timeout_s))
            body = response.content  # reads the whole body: truncation surfaces here
        except requests.exceptions.ConnectTimeout:
            raise _Transient("connect timeout") from None
        except requests.exceptions.ReadTimeout:
            raise _Transient("read timeout") from None
        except requests.exceptions.ConnectionError as exc:
            text = str(exc)
            if "NameResolution" in text or "Name or service not known" in text or "getaddrinfo" in text:
                raise _Transient(f"DNS lookup failed for {urlsplit(url).netloc}") from None
            if "Connection refused" in text or "NewConnectionError" in text:
                raise _Transient(f"cannot connect to {urlsplit(url).netloc}") from None
            raise _Transient("connection dropped") from None
        except requests.exceptions.ChunkedEncodingError:
            raise _Transient("response truncated") from None
        except requests.exceptions.ContentDecodingError:
            raise _Transient("response body could not be decoded") from None
        except requests.exceptions.RequestException as exc:
            raise ApiError(f"CoinCap request {path} could not be sent: {exc}.", "Check COINCAP_API_BASE_URL.") from None

        status = response.status_code
        self.meter.record(path, len(body), ok=status == 200, retried=retried)
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
            raise _Transient("rate limited (HTTP 429)", wait_s=_retry_after(response) or self._backoff(2))
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
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
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
        return data, timestamp if isinstance(timestamp, int) else None, len(body)

    def get_list(self, path: str, params: Mapping[str, Any] | None = None) -> tuple[list[Any], int | None, int]:
        """`get` for endpoints that answer a list; any other JSON shape is a one-line `ApiError`."""
        data, timestamp, nbytes = self.get(path, params)
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
    ) -> Iterator[Page]:
        """Yield pages of a list endpoint with `limit`/`offset` until a short page (or `max_records`)."""
        limit = limit or self.settings.page_limit
        offset = 0
        while True:
            if max_records is not None:
                if offset >= max_records:
                    return
                limit = min(limit, max_records - offset)  # never pay for bytes beyond the scope
            data, timestamp, nbytes = self.get_list(path, {**(params or {}), "limit": limit, "offset": offset})
            yield Page(records=data, offset=offset, timestamp_ms=timestamp, body_bytes=nbytes)
            if len(data) < limit:
                return
            offset += limit  # offset is a position in the listing, whatever the page carried


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
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
    except (ValueError, UnicodeDecodeError):
        return body[:120].decode("utf-8", "replace").strip()
    if isinstance(payload, dict):
        for key in ("error", "message", "detail"):
            if isinstance(payload.get(key), str):
                return payload[key]
    return str(payload)[:120]
