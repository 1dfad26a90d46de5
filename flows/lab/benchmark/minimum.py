"""The least a served snapshot or history can cost: read with plain `http.client`, independent of our client,
and priced on the server's real page bytes (1 credit + 1 per 2,500 bytes)."""

from __future__ import annotations

import http.client
import json
import math
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from flows.coincap.credits import credits_for
from flows.lab.benchmark.results import (
    BENCH_KEY,
    DATASETS,
    PAGE_LIMIT,
    PAGINATED,
    BenchmarkError,
    DatasetMinimum,
)

_DAY_MS = 86_400_000


def minimum_pages(records: int, page_limit: int = PAGE_LIMIT) -> int:
    """Calls a listing of `records` needs at least: one per full or partial page, and one to learn it is empty."""
    return max(1, math.ceil(records / page_limit))


def minimum_cost(records: int, page_bytes: Sequence[int], page_limit: int = PAGE_LIMIT) -> DatasetMinimum:
    """The minimum of one dataset of `records`, from the body sizes of the pages that carry them (each billed
    1 credit + 1 per 2,500 bytes): one entry per page, `minimum_pages` of them."""
    if len(page_bytes) != minimum_pages(records, page_limit):
        raise ValueError(f"{records} records take {minimum_pages(records, page_limit)} pages, not {len(page_bytes)}")
    return DatasetMinimum(
        records=records, calls=len(page_bytes), bytes=sum(page_bytes), credits=sum(credits_for(b) for b in page_bytes)
    )


def measure_minimum(base_url: str, api_key: str, page_limit: int = PAGE_LIMIT) -> dict[str, DatasetMinimum]:
    """Read every dataset of the served snapshot with `http.client` (not our client) and price its minimum.

    A listing is read with `limit`/`offset` until a short page; only the pages that carry records count (a page
    CoinCap sends empty, to say a full last page was the last, is not needed by someone who knows the count).
    """
    minimum = {}
    with _RawClient(base_url, api_key) as raw:
        for dataset in DATASETS:
            sizes: list[int] = []
            records = 0
            if PAGINATED[dataset]:
                offset = 0
                while True:
                    data, nbytes = raw.get_list(f"/{dataset}", {"limit": page_limit, "offset": offset})
                    if data or not sizes:
                        sizes.append(nbytes)
                    records += len(data)
                    if len(data) < page_limit:
                        break
                    offset += page_limit
            else:  # one call returns the whole list
                data, nbytes = raw.get_list(f"/{dataset}", {})
                sizes.append(nbytes)
                records = len(data)
            minimum[dataset] = minimum_cost(records, sizes, page_limit if PAGINATED[dataset] else max(1, records))
    return minimum


class _RawClient:
    """A bare keep-alive HTTP/1.1 client for the stand-in: status 200 and a JSON list under `data`, or an error."""

    def __init__(self, base_url: str, api_key: str) -> None:
        parts = urlsplit(base_url)
        self._prefix = parts.path.rstrip("/")
        self._conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=120)
        self._headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}

    def get_list(self, path: str, params: dict[str, Any]) -> tuple[list[Any], int]:
        url = self._prefix + path + ("?" + urlencode(params) if params else "")
        self._conn.request("GET", url, headers=self._headers)
        response = self._conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise BenchmarkError(
                f"The stand-in answered {response.status} for {url} while measuring the minimum cost.",
                "Re-run the benchmark; if it persists, run `python -m flows.standin` to see the server's error.",
            )
        data = json.loads(body)["data"]
        return data, len(body)

    def __enter__(self) -> _RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.close()


def history_minimum(base_url: str, start: date, end: date) -> tuple[int, int, int]:
    """(calls, credits, points) of the cheapest read: the asset list, then each asset's whole range in one call."""
    first_ms = int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp() * 1000)
    last_ms = int(datetime(end.year, end.month, end.day, tzinfo=UTC).timestamp() * 1000) + _DAY_MS - 1
    calls = credits = points = 0
    with _RawClient(base_url, BENCH_KEY) as raw:
        slugs: list[str] = []
        offset = 0
        while True:
            data, nbytes = raw.get_list("/assets", {"limit": PAGE_LIMIT, "offset": offset})
            if data or not calls:
                calls, credits = calls + 1, credits + credits_for(nbytes)
            slugs += [a["id"] for a in data]
            if len(data) < PAGE_LIMIT:
                break
            offset += PAGE_LIMIT
        for slug in slugs:
            series, nbytes = raw.get_list(f"/assets/{slug}/history", {"interval": "d1", "start": first_ms,
                                                                       "end": last_ms})  # fmt: skip
            calls, credits, points = calls + 1, credits + credits_for(nbytes), points + len(series)
    return calls, credits, points
