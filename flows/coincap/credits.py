"""CoinCap v3 credit cost of one response, shared by the HTTP client and the local stand-in server."""

from __future__ import annotations


def credits_for(body_bytes: int) -> int:
    """Credits CoinCap v3 bills for one call: 1 per call plus 1 per full 2,500 bytes of response body."""
    return 1 + body_bytes // 2500
