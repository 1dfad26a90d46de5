"""A tiny static server for the dashboard folder, on 127.0.0.1 only.

It sends a Content-Security-Policy that allows nothing but the site's own files (no inline script, no other
host), rebuilds the pages before serving one if the warehouse changed since the last build (a new pipeline
run shows up on reload), and renders an asset's page the first time it is opened.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows.errors import ConfigError, PipelineError

if TYPE_CHECKING:
    from flows.dashboard.site import DashboardSite

log = logging.getLogger(__name__)

QUIET_SECONDS = 10.0  # a changed warehouse is re-read once it has not changed for this long
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


LOCAL_HOSTNAMES = ("127.0.0.1", "localhost", "[::1]")


def host_allowed(host: str | None, port: int) -> bool:
    """Whether a request's Host header names this machine's loopback (with `port` or no port).

    A page on another site can make the browser send its requests here under its own name (DNS rebinding), and
    then read the answers as its own: only our own names are answered.
    """
    if not host:
        return False
    name, sep, given_port = host.strip().lower().rpartition(":")
    if not sep or name.endswith(":") or not name:  # no port, or an unbracketed IPv6 address
        name, given_port = host.strip().lower(), ""
    return name in LOCAL_HOSTNAMES and given_port in ("", str(port))


class _Handler(SimpleHTTPRequestHandler):
    server: DashboardServer

    def parse_request(self) -> bool:
        """Refuse requests addressed to another host name (421) before any method handles them."""
        if not super().parse_request():
            return False
        if host_allowed(self.headers.get("Host"), self.server.port):
            return True
        body = b"Misdirected request: this dashboard answers only to 127.0.0.1, localhost or [::1].\n"
        self.close_connection = True
        self.send_response(HTTPStatus.MISDIRECTED_REQUEST)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return False

    def end_headers(self) -> None:
        self.send_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0].split("#", 1)[0]
        if path.endswith((".html", "/")):
            self.server.refresh_if_stale()
            if self.server.render is not None and not Path(self.translate_path(path)).exists():
                self.server.render(path)
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
        log.debug("%s %s", self.address_string(), format % args)


class DashboardServer(ThreadingHTTPServer):
    """Serve `root` on http://127.0.0.1:<port>/ (port 0 picks a free one).

    `rebuild` is called before a page is served when the `watch`ed file (the warehouse) changed since the last
    build and has been quiet for `quiet_seconds`; `render` is asked for a page that is missing (an asset page
    not built yet).
    """

    daemon_threads = True

    def __init__(
        self,
        root: Path,
        *,
        port: int = 8050,
        host: str = "127.0.0.1",
        rebuild: Callable[[], object] | None = None,
        watch: Path | None = None,
        render: Callable[[str], bool] | None = None,
        quiet_seconds: float = QUIET_SECONDS,
    ) -> None:
        self.root = root
        self.quiet_seconds = quiet_seconds
        self.render = render  # writes a page that is not built yet (an asset's), given its URL path
        self._rebuild = rebuild
        self._watch = watch
        self._seen = self._stamp()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        try:
            super().__init__((host, port), partial(_Handler, directory=str(root)))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"Port {port} on {host} is already in use.",
                    "Pass --port with a free port, or stop what is listening there.",
                ) from None
            raise

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def _stamp(self) -> tuple[float, int] | None:
        try:
            stat = self._watch.stat() if self._watch else None
        except OSError:
            return None
        return (stat.st_mtime, stat.st_size) if stat else None

    def refresh_if_stale(self) -> None:
        """Rebuild once if the watched warehouse changed and has been quiet since; else serve the last build."""
        if self._rebuild is None or self._watch is None:
            return
        with self._lock:
            stamp = self._stamp()
            if stamp == self._seen:
                return
            # DuckDB lets no process write while another reads: wait until a run is done with the file
            # (unchanged for a while, no write-ahead log) so that reading it never makes a run fail.
            recent = stamp is not None and time.time() - stamp[0] < self.quiet_seconds
            if recent or self._watch.with_name(self._watch.name + ".wal").exists():
                return
            try:
                self._rebuild()
            except PipelineError as exc:
                log.warning("dashboard not rebuilt, serving the last build: %s", exc)
                return
            self._seen = stamp

    def start(self) -> DashboardServer:
        """Serve from a daemon thread (tests); `serve_forever()` blocks instead."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self.serve_forever, kwargs={"poll_interval": 0.1}, name="dashboard", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.server_close()

    def __enter__(self) -> DashboardServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve_site(site: DashboardSite, *, port: int, announce: Callable[[str], None], open_browser: bool = False) -> None:
    """Serve a built site until Ctrl-C, rebuilding it when the warehouse changes."""
    server = DashboardServer(
        site.out_dir, port=port, rebuild=site.build, watch=site.warehouse, render=site.render_missing
    )
    announce(f"serving {server.url} (Ctrl-C to stop)")
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        announce("stopped")
    finally:
        server.server_close()
