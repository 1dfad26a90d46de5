"""Open dashboard pages in headless Chromium (Playwright): what each page rendered, and screenshots.

Used by the tests (every chart has marks, no console errors, no request leaves 127.0.0.1) and by
`python -m flows.dashboard screenshots`. Needs `playwright` (the Python package) and a Chromium binary; it
never downloads a browser: Debian's `chromium` package is used (`apt-get install chromium`).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flows.errors import ConfigError

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
)
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
VIEWPORT = {"width": 1440, "height": 900}


def chromium_path() -> str | None:
    """The first Chromium found on this machine, or None."""
    for candidate in CHROMIUM_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    return shutil.which("chromium")


@dataclass
class PageCheck:
    """What one page showed in the browser."""

    url: str
    title: str = ""
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)  # local requests that failed or answered >= 400
    blocked_requests: list[str] = field(default_factory=list)  # requests to any other host (aborted)
    charts: dict[str, int] = field(default_factory=dict)  # data-chart name -> number of data marks drawn
    tables: dict[str, int] = field(default_factory=dict)  # data-table name -> number of body rows
    empty_panels: list[str] = field(default_factory=list)  # data-empty names of "no data yet" panels
    kpis: dict[str, str] = field(default_factory=dict)  # data-kpi name -> the value shown
    screenshot: Path | None = None

    @property
    def problems(self) -> list[str]:
        """Everything that should never happen on a page, one line each."""
        return (
            [f"console error: {m}" for m in self.console_errors]
            + [f"page error: {m}" for m in self.page_errors]
            + [f"failed request: {m}" for m in self.failed_requests]
            + [f"non-local request: {m}" for m in self.blocked_requests]
        )


_COLLECT = """
() => {
  const count = (el, sel) => el.querySelectorAll(sel).length;
  const charts = {}, tables = {}, kpis = {};
  document.querySelectorAll('figure.chart').forEach(f => {
    const box = f.querySelector('svg').getBoundingClientRect();
    charts[f.dataset.chart] = box.width > 0 && box.height > 0 ? count(f, '.mark') : 0;
  });
  document.querySelectorAll('svg.spark').forEach(s => {
    charts.sparklines = (charts.sparklines || 0) + count(s, '.mark');
  });
  document.querySelectorAll('table.data').forEach(t => { tables[t.dataset.table] = t.tBodies[0].rows.length; });
  document.querySelectorAll('[data-kpi]').forEach(k => {
    kpis[k.dataset.kpi] = k.querySelector('.kpi-value').textContent;
  });
  const empties = Array.from(document.querySelectorAll('[data-empty]')).map(e => e.dataset.empty);
  return {charts, tables, kpis, empties, title: document.title};
}
"""


@contextmanager
def chromium(executable: str | None = None) -> Iterator[Any]:
    """A headless Chromium browser; a missing browser or Playwright is one line saying what to install."""
    path = executable or chromium_path()
    if path is None:
        raise ConfigError("No Chromium found.", "install chromium: apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise ConfigError(
            "Playwright for Python is not installed.", "pip install playwright (no `playwright install` needed)."
        ) from None
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            browser.close()


def check_page(browser: Any, url: str, *, screenshot: Path | None = None, viewport: dict | None = None) -> PageCheck:
    """Load `url`, abort anything not on 127.0.0.1, and report what rendered (optionally a full-page PNG)."""
    check = PageCheck(url)
    context = browser.new_context(viewport=viewport or VIEWPORT, device_scale_factor=1)
    page = context.new_page()

    def route(r: Any) -> None:
        if (urlsplit(r.request.url).hostname or "") in LOCAL_HOSTS:
            r.continue_()
        else:
            check.blocked_requests.append(r.request.url)
            r.abort()

    def on_response(response: Any) -> None:
        if response.status >= 400:
            check.failed_requests.append(f"{response.status} {response.url}")

    def on_failed(request: Any) -> None:
        if request.url not in check.blocked_requests:
            check.failed_requests.append(f"{request.failure} {request.url}")

    page.route("**/*", route)
    page.on("console", lambda m: check.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: check.page_errors.append(str(e)))
    page.on("response", on_response)
    page.on("requestfailed", on_failed)
    try:
        page.goto(url, wait_until="load")
        page.wait_for_load_state("networkidle")
        found = page.evaluate(_COLLECT)
        check.title = found["title"]
        check.charts = found["charts"]
        check.tables = found["tables"]
        check.kpis = found["kpis"]
        check.empty_panels = found["empties"]
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
            check.screenshot = screenshot
    finally:
        context.close()
    return check
