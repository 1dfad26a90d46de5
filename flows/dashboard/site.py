"""Build the static dashboard: read the warehouse once, write one HTML file per page plus the static assets.

Layout of the output folder (default `<data_dir>/dashboard/`):
    index.html            market overview
    assets/<asset>.html   asset detail; assets/asset-list.js lists the assets for the page's selector
    exchanges.html        exchanges and markets
    health.html           pipeline health and data quality
    static/               CSS, JS and icon shipped with the package
A full CoinCap listing has thousands of assets, each page holding a year of daily charts (~100-250 kB), so a
build writes the pages of the largest `asset_pages` assets (by market cap). Served by `DashboardServer`, any
other asset's page is rendered when first opened (`on_demand`), so the selector can list every asset.
Files are replaced atomically, so the server keeps serving the folder while it is rebuilt.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from flows.dashboard import pages
from flows.dashboard.queries import Assets, DashboardData, load_asset_history, load_dashboard_data
from flows.settings import Settings

STATIC_DIR = Path(__file__).with_name("static")
PAGE_NAMES = ("overview", "asset", "exchanges", "health")
DEFAULT_ASSET_PAGES = 100
_ASSET_PAGE = re.compile(r"^assets/([a-z0-9-]+)\.html$")


@dataclass
class BuildResult:
    """What a build wrote: the page of each section (`overview`, `asset`, `exchanges`, `health`)."""

    out_dir: Path
    pages: dict[str, Path]
    asset_pages: int  # asset pages written
    assets_listed: int  # assets the selector offers
    seconds: float
    data: DashboardData = field(repr=False)

    @property
    def index(self) -> Path:
        return self.pages["overview"]

    def relative(self, page: str) -> str:
        """A page's path relative to the output folder, with forward slashes (its URL path)."""
        return self.pages[page].relative_to(self.out_dir).as_posix()


def dashboard_dir(settings: Settings) -> Path:
    """Where `coincap-pipeline dashboard` writes the site by default."""
    return settings.data_dir.resolve() / "dashboard"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _copy_static(out_dir: Path) -> None:
    target = out_dir / "static"
    for source in STATIC_DIR.rglob("*"):
        if source.is_file() and not source.name.startswith("."):
            dest = target / source.relative_to(STATIC_DIR)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.tmp")
            shutil.copyfile(source, tmp)
            os.replace(tmp, dest)


def _js_literal(value: object) -> str:
    """JSON as a JavaScript literal: ASCII only, and no <, > or & even inside strings (safe if ever inlined)."""
    text = json.dumps(value)  # escapes every non-ASCII character
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def default_asset(assets: Assets) -> str | None:
    """The asset the Assets tab opens on: bitcoin when it has a page, else the largest that has one."""
    if "bitcoin" in assets.histories:
        return "bitcoin"
    return next((a.asset_id for a in assets.listing if a.asset_id in assets.histories), None)


class DashboardSite:
    """The dashboard of one warehouse, written to one folder."""

    def __init__(
        self,
        warehouse: Path,
        out_dir: Path,
        *,
        history_days: int = 365,
        asset_pages: int | None = DEFAULT_ASSET_PAGES,
        on_demand: bool = False,
    ) -> None:
        self.warehouse = warehouse
        self.out_dir = out_dir.resolve()
        self.history_days = history_days
        self.asset_pages = asset_pages
        self.on_demand = on_demand
        self._last: DashboardData | None = None
        self._nav = pages.Nav(None)
        self._slugs: dict[str, str] = {}  # slug -> asset id, for pages rendered on demand
        self._lock = threading.Lock()

    def build(self, now: datetime | None = None) -> BuildResult:
        """Read the warehouse and (re)write every page."""
        with self._lock:
            return self._build(now)

    def _build(self, now: datetime | None) -> BuildResult:
        started = time.perf_counter()
        data = load_dashboard_data(
            self.warehouse, history_days=self.history_days, asset_pages=self.asset_pages, now=now
        )
        out = self.out_dir
        out.mkdir(parents=True, exist_ok=True)
        _copy_static(out)

        assets = data.assets if isinstance(data.assets, Assets) else None
        default = default_asset(assets) if assets else None
        nav = pages.Nav(pages.asset_href(default) if default else None)
        # assets a link may point to: written now, or rendered when first opened
        listed = [a for a in assets.listing if self.on_demand or a.asset_id in assets.histories] if assets else []
        linkable = {a.asset_id for a in listed}

        written = {
            "overview": out / "index.html",
            "exchanges": out / "exchanges.html",
            "health": out / "health.html",
        }
        _write(written["overview"], pages.overview_page(data, nav, linkable))
        _write(written["exchanges"], pages.exchanges_page(data, nav, linkable))
        _write(written["health"], pages.health_page(data, nav))

        assets_dir = out / "assets"
        keep = {"index.html"}
        listing = [[pages.asset_slug(a.asset_id), pages.asset_label(a.symbol, a.name, a.asset_id)] for a in listed]
        _write(assets_dir / "asset-list.js", f"window.COINCAP_ASSETS = {_js_literal(listing)};\n")
        if assets and default:
            for history in assets.histories.values():
                name = f"{pages.asset_slug(history.asset_id)}.html"
                _write(assets_dir / name, pages.asset_page(data, nav, history, assets.report_date))
                keep.add(name)
            written["asset"] = out / pages.asset_href(default)
            # assets/ opens the default asset, for anyone who types the folder's URL
            target = pages.asset_slug(default)
            _write(
                assets_dir / "index.html",
                f'<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="0; url={target}.html">'
                f'<title>Assets</title><a href="{target}.html">Assets</a>\n',
            )
        else:
            _write(assets_dir / "index.html", pages.assets_empty_page(data, nav))
            written["asset"] = assets_dir / "index.html"
        for stale in assets_dir.glob("*.html"):
            if stale.name not in keep:
                stale.unlink(missing_ok=True)
        self._last, self._nav = data, nav
        self._slugs = {pages.asset_slug(a.asset_id): a.asset_id for a in listed}
        return BuildResult(out, written, len(keep) - 1, len(listed), time.perf_counter() - started, data)

    def render_missing(self, url_path: str) -> bool:
        """Write the page of an asset listed but not built yet (`assets/<slug>.html`); False if there is none."""
        match = _ASSET_PAGE.match(url_path.lstrip("/"))
        if not match or not self.on_demand or self._last is None:
            return False
        with self._lock:
            asset_id = self._slugs.get(match.group(1))
            assets = self._last.assets
            if asset_id is None or not isinstance(assets, Assets):
                return False
            target = self.out_dir / "assets" / f"{match.group(1)}.html"
            if target.exists():
                return True
            history = load_asset_history(self.warehouse, asset_id, history_days=self.history_days)
            entry = assets.find(asset_id)
            if history is None or entry is None:
                return False
            history.rank = entry.rank
            _write(target, pages.asset_page(self._last, self._nav, history, assets.report_date))
            return True


def build_dashboard(
    warehouse: Path,
    out_dir: Path,
    *,
    history_days: int = 365,
    asset_pages: int | None = DEFAULT_ASSET_PAGES,
    now: datetime | None = None,
) -> BuildResult:
    """Read `warehouse` and write the static site into `out_dir` (pages for the largest `asset_pages` assets)."""
    site = DashboardSite(warehouse, out_dir, history_days=history_days, asset_pages=asset_pages)
    return site.build(now)
