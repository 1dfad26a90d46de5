"""The deadline of one call attempt, enforced on its sockets: a server trickling bytes cannot hold a call.

The read timeout alone is per socket read. Here every socket an attempt opens or reuses is handed to its
`CallDeadline`; when the deadline passes (or the client aborts), those sockets are shut down from a watchdog
timer, which wakes a blocked read at once.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_active = threading.local()  # .call: the CallDeadline of the attempt running in this thread, if any


class CallDeadline:
    """The deadline of one attempt. When it passes (or the client is aborted), every socket the attempt opened or
    reused is shut down: a read blocked on a trickling server returns at once, whatever its per-read timeout."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self.aborted = False
        self._done = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self.expire)
        self._timer.daemon = True

    def __enter__(self) -> CallDeadline:
        _active.call = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()
        _active.call = None

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            if not any(s is sock for s in self._sockets):
                self._sockets.append(sock)
            late = self.expired
        if late:
            _shut(sock)

    def expire(self, *, abort: bool = False) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            self.aborted = self.aborted or abort
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def _shut(sock: Any) -> None:
    """Shut a socket down for both directions: a thread blocked reading it wakes up with end-of-stream. The plain
    socket's method, also on an SSL socket (its own would tear down TLS state another thread is using)."""
    with contextlib.suppress(OSError, TypeError, ValueError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _watch(sock: Any) -> None:
    call = getattr(_active, "call", None)
    if call is not None and sock is not None:
        call.watch(sock)


class _Watched:
    """Connection mixin: the sockets a call opens or reuses are handed to its deadline."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # type: ignore[misc]
        _watch(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> Any:
        _watch(getattr(self, "sock", None))  # a kept-alive connection: its socket is already open
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """requests' adapter with connections whose sockets a call's deadline can shut down."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_WATCHED_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if type(manager) is urllib3.ProxyManager:  # a SOCKS manager keeps its own connection classes
            manager.pool_classes_by_scheme = dict(_WATCHED_POOLS)
        return manager
