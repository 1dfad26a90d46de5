"""What a stand-in server answered, counted as it answers: requests, statuses, bytes, credits, faults, records."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from flows.coincap.credits import credits_for
from flows.standin.records import NATURAL_KEYS, Record
from flows.standin.replies import Reply


class ServerStats:
    """Thread-safe record of what the server answered; updated before the bytes go out, so never behind."""

    def __init__(self, *, keep_records: bool = True) -> None:
        self._lock = threading.Lock()
        # a long-running CLI server keeps counts only: record lists would grow with every snapshot served
        self.keep_records = keep_records
        self.reset()

    def reset(self) -> None:
        """Forget everything counted so far."""
        with self._lock:
            self.requests: Counter[str] = Counter()  # URL path -> requests received
            self.statuses: Counter[int] = Counter()  # status -> responses sent (drops excluded)
            self.bytes_served = 0  # body bytes actually written (a truncated body counts what was sent)
            self.credits = 0  # sum of credits_for(Content-Length) over every response with a body
            self.drops = 0
            self.truncations = 0
            self.injected: Counter[str] = Counter()  # fault kind -> answers (or records, for drift) it hit
            self.last_fault_at: float | None = None  # time.time() of the latest injected fault
            self.abandoned = 0  # held answers (slow, hang) never sent: the client had given up
            # dataset -> every record sent whole in a 200 listing/detail answer, repeats included
            self.served: dict[str, list[Record]] = {}
            self.served_counts: Counter[str] = Counter()  # dataset -> len(served[dataset]), kept in any case

    def count_request(self, path: str) -> None:
        """Count one request received on this URL path."""
        with self._lock:
            self.requests[path] += 1

    def count_fault(self, kind: str, n: int = 1) -> None:
        """Count `n` hits of one injected fault (the kinds are free text, e.g. "5xx storm", "drift: wrong_type")."""
        if n <= 0:
            return
        with self._lock:
            self.injected[kind] += n
            self.last_fault_at = time.time()

    def count_abandoned(self) -> None:
        """Count one held answer the client left before it was sent."""
        with self._lock:
            self.abandoned += 1

    def count_response(
        self,
        reply: Reply | None,
        sent_bytes: int,
        *,
        truncated: bool = False,
        billed: int | None = None,
        records_later: bool = False,
    ) -> None:
        """Count one answer (None: a dropped connection) before it is written; `billed`: its credits, when not
        the byte rule's. `records_later`: its records count as served only once `count_served` says it was sent
        whole (a trickled answer the client may leave before its end)."""
        with self._lock:
            if reply is None:
                self.drops += 1
                return
            self.statuses[reply.status] += 1
            self.bytes_served += sent_bytes
            if reply.body:
                self.credits += billed if billed is not None else credits_for(len(reply.body))
            if truncated:
                self.truncations += 1
            elif not records_later:
                self._served(reply)

    def count_served(self, reply: Reply) -> None:
        """Count the records of an answer counted with `records_later`, now written whole."""
        with self._lock:
            self._served(reply)

    def _served(self, reply: Reply) -> None:
        if reply.status == 200 and reply.dataset is not None:
            self.served_counts[reply.dataset] += len(reply.records)
            if self.keep_records:
                self.served.setdefault(reply.dataset, []).extend(reply.records)

    @property
    def total_requests(self) -> int:
        """Requests received on every path."""
        with self._lock:
            return sum(self.requests.values())

    def served_keys(self, dataset: str) -> set[tuple[Any, ...]]:
        """Distinct natural keys of the records served for "assets", "rates", "exchanges" or "markets"."""
        key = NATURAL_KEYS[dataset]
        with self._lock:
            return {tuple(r.get(k) for k in key) for r in self.served.get(dataset, ()) if isinstance(r, dict)}

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (record counts instead of records)."""
        with self._lock:
            return {
                "requests": dict(self.requests),
                "total_requests": sum(self.requests.values()),
                "statuses": {str(k): v for k, v in self.statuses.items()},
                "bytes_served": self.bytes_served,
                "credits": self.credits,
                "drops": self.drops,
                "truncations": self.truncations,
                "served_records": dict(self.served_counts),
                "injected": dict(self.injected),
                "last_fault_at": self.last_fault_at,
                "abandoned": self.abandoned,
            }
