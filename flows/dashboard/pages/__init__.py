"""The dashboard's HTML pages: market overview, asset detail, exchanges and markets, pipeline health.

Pure functions from `queries` data to HTML strings, a module per page on a shared `layout` (the page frame, the
navigation, asset file names) and `components` (tiles, cards, tables, pills). Every value that comes from the data
(asset names come from the API) goes through `layout.esc` (HTML escaping, quotes included); no inline scripts or
styles, so the server can forbid both with its Content-Security-Policy.
"""

from flows.dashboard.pages.asset import asset_page, assets_empty_page
from flows.dashboard.pages.exchanges import exchanges_page
from flows.dashboard.pages.health import health_page
from flows.dashboard.pages.layout import Nav, asset_href, asset_label, asset_slug
from flows.dashboard.pages.overview import overview_page

__all__ = [
    "Nav",
    "asset_href",
    "asset_label",
    "asset_page",
    "asset_slug",
    "assets_empty_page",
    "exchanges_page",
    "health_page",
    "overview_page",
]
