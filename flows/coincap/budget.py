"""What CoinCap calls cost: per-endpoint call stats, the meter of every request, and a run's credit budget."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

from flows.coincap.credits import credits_for


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
