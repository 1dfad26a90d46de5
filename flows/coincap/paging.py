"""The one rule that keeps paging bounded, shared by every listing the pipeline pages through.

A listing must make progress: a full page that brings no record (by natural key) not sent before means the
server ignores `offset` (or serves one page forever, whatever its values do between calls). `STALLED_PAGES` such
pages in a row stop the listing with one line, so no server can make a run page, and spend credits, without end.
"""

from __future__ import annotations

from flows.errors import ApiError

# Two, not one: with a tiny page limit, ranks shifting between two calls could make one page all repeats.
STALLED_PAGES = 2


def ignores_offset(dataset: str, stalled: int, offset: int) -> ApiError:
    """The one-line error of a listing that stopped making progress."""
    return ApiError(
        f"CoinCap sent {stalled} full pages of {dataset} in a row (up to offset {offset}) without one record it had "
        "not sent before: the server ignores offset.",
        "Check COINCAP_API_BASE_URL points at CoinCap's v3 API.",
    )
