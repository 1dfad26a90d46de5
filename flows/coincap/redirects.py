"""Redirects the client follows by hand: only on the base URL's own host, so the API key is never sent elsewhere."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urljoin, urlsplit

from flows.errors import ApiError

MAX_REDIRECTS = 5
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
DEFAULT_PORTS = {"http": 80, "https": 443}


def redirect_target(base_url: str, path: str, url: str, status: int, headers: Mapping[str, str]) -> str:
    """The URL a redirect of `url` points to, if it stays on `base_url`'s host; otherwise a one-line ApiError."""
    location = headers.get("Location")
    if not location:
        raise ApiError(
            f"CoinCap answered {path} with HTTP {status} and no Location.",
            f"Check COINCAP_API_BASE_URL (now {base_url}): it should be the v3 API root.",
        )
    target = urljoin(url, location.strip())
    if not same_host(base_url, target):
        raise ApiError(
            f"CoinCap redirected {path} to another host ({origin(target)}); not followed, so the API key was "
            "not sent there.",
            f"Set COINCAP_API_BASE_URL to the API's own address (now {origin(base_url)}).",
        )
    return target


def origin(url: str) -> str:
    """scheme://host[:port] of a URL, without any user:password@ it carries."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or "?"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def same_host(base: str, target: str) -> bool:
    """Whether a redirect from the base URL's host to `target` keeps the key on that host: same host name, and
    the same scheme and port, or an upgrade from http to https (on https's port)."""
    b, t = urlsplit(base), urlsplit(target)
    try:
        b_port = b.port or DEFAULT_PORTS.get(b.scheme)
        t_port = t.port or DEFAULT_PORTS.get(t.scheme)
    except ValueError:
        return False
    if t.scheme not in DEFAULT_PORTS or not t.hostname or (b.hostname or "").lower() != t.hostname.lower():
        return False
    if (t.scheme, t_port) == (b.scheme, b_port):
        return True
    return (b.scheme, t.scheme, t_port) == ("http", "https", 443)
