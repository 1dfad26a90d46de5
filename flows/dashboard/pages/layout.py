"""The frame every dashboard page shares: head, navigation, the data's moment and footer; asset file names;
and `esc`, the HTML escaping that every value from the data goes through."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from urllib.parse import quote

from flows.dashboard import formatting as fmt
from flows.dashboard.queries import DashboardData


def esc(text: object) -> str:
    """`text` as HTML text or attribute value: escaped, quotes included (None: empty)."""
    return escape("" if text is None else str(text), quote=True)


@dataclass(frozen=True)
class Nav:
    """Where the pages are, relative to the site root."""

    default_asset_href: str | None

    def links(self) -> list[tuple[str, str, str]]:
        assets = self.default_asset_href or "assets/index.html"
        return [
            ("overview", "Market overview", "index.html"),
            ("asset", "Assets", assets),
            ("exchanges", "Exchanges & markets", "exchanges.html"),
            ("health", "Pipeline health", "health.html"),
        ]


def asset_slug(asset_id: str) -> str:
    """A file name for an asset page: the id if it is already safe, else a cleaned id plus a short hash."""
    clean = re.sub(r"[^a-z0-9-]+", "-", asset_id.lower()).strip("-")[:80] or "asset"
    if clean == asset_id:
        return clean
    return f"{clean}-{hashlib.sha1(asset_id.encode()).hexdigest()[:8]}"


def asset_href(asset_id: str) -> str:
    return f"assets/{quote(asset_slug(asset_id))}.html"


LOGO = (
    '<svg class="logo" viewBox="0 0 24 24" aria-hidden="true"><circle cx="12" cy="12" r="11" fill="#2f5d9e"/>'
    '<path d="M6 15.5l3.5-4 3 2.5L18 8" fill="none" stroke="#fff" stroke-width="2.2" stroke-linecap="round" '
    'stroke-linejoin="round"/></svg>'
)


def frame(
    *,
    title: str,
    active: str,
    body: str,
    data: DashboardData,
    nav: Nav,
    depth: int = 0,
    scripts: Sequence[str] = (),
) -> str:
    """A full page: header with navigation and the data's moment, the body, and a footer."""
    root = "../" * depth
    links = "".join(
        f'<a href="{esc(root + href)}"{" class=active aria-current=page" if key == active else ""}>{esc(label)}</a>'
        for key, label, href in nav.links()
    )
    as_of = data.as_of
    stamp = f"Data as of {fmt.utc(as_of)}" if as_of else "No snapshot yet"
    extra = "".join(f'<script src="{esc(root + s)}" defer></script>' for s in scripts)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} · CoinCap pipeline</title>
<link rel="icon" href="{root}static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="{root}static/dashboard.css">
{extra}<script src="{root}static/dashboard.js" defer></script>
</head>
<body data-page="{esc(active)}">
<header class="topbar">
  <div class="topbar-inner">
    <a class="brand" href="{root}index.html">{LOGO}<span>CoinCap pipeline</span></a>
    <nav class="tabs">{links}</nav>
    <span class="stamp" title="{esc(data.warehouse)}">{esc(stamp)}</span>
  </div>
</header>
<main>
{body}
</main>
<footer>Built {esc(fmt.utc(data.loaded_at))} from {esc(data.warehouse.name)} · refresh with
<code>coincap-pipeline dashboard</code> after a run</footer>
</body>
</html>
"""


def asset_label(symbol: str | None, name: str | None, asset_id: str) -> str:
    return f"{name or asset_id} ({symbol})" if symbol else (name or asset_id)
