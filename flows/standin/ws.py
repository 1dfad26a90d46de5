"""A CoinCap-v3-compatible price WebSocket on 127.0.0.1 (`/prices?assets=...&apiKey=...`), with faults on demand.

Like `wss://wss.coincap.io/prices`, each message is a JSON object mapping asset ids to price strings with 18
decimals (`{"bitcoin":"87711.199999999997089617"}`); here each message lists a random non-empty subset of the
subscribed assets. Prices follow a seeded random walk, and every frame sent is recorded, so tests can compare
what was sent with what landed. How the real server refuses a bad key is not documented: both ways are offered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response
from websockets.protocol import State

PRICES_PATH = "/prices"
POLICY_VIOLATION = 1008  # RFC 6455 close code CoinCap-like servers use for a rejected key
# The assets the stand-in knows, with starting prices; `assets=ALL` streams all of them.
BASE_PRICES: dict[str, float] = {
    "bitcoin": 87711.2,
    "ethereum": 2950.5,
    "tether": 1.0004,
    "xrp": 2.051,
    "binance-coin": 880.4,
    "solana": 140.25,
    "usd-coin": 0.9999,
    "dogecoin": 0.1523,
    "cardano": 0.4102,
    "tron": 0.2755,
}
GarbageKind = Literal["not_json", "not_object", "bad_price", "negative_price"]
GARBAGE_KINDS: tuple[GarbageKind, ...] = ("not_json", "not_object", "bad_price", "negative_price")
DropMode = Literal["abort", "close"]


@dataclass
class StreamFaults:
    """What to break, per connection; everything defaults to off. Mutate fields of a running server freely.

    Message counts include garbage frames, so `drop_every=10` cuts each connection after its 10th frame.
    """

    drop_every: int = 0  # end each connection after this many frames
    # cycled through, one per drop: "abort" resets TCP (no close frame; frames in flight may be lost),
    # "close" sends close frame 1011 after the last frame
    drop_modes: tuple[DropMode, ...] = ("abort", "close")
    garbage_every: int = 0  # every Nth frame is garbage, cycling through GARBAGE_KINDS
    pause_every: int = 0  # after this many frames, stall (keep the connection open, send nothing)...
    pause_s: float = 0.0  # ...for this long
    max_pauses: int | None = None  # stall at most this many times in all (None: every pause_every frames)


@dataclass(frozen=True)
class Frame:
    """One text frame the server sent."""

    connection: int  # 1-based, in the order connections were accepted
    seq: int  # 1-based position of the frame on its connection (the client's message_seq)
    server_time: datetime  # UTC, just before the frame was handed to the socket
    text: str
    kind: Literal["prices"] | GarbageKind
    payload: Any = None  # the JSON value sent; None for non-JSON text


@dataclass
class _Walk:
    """Seeded random walk of prices; each step moves a non-empty subset of the assets."""

    assets: list[str]
    rng: random.Random
    prices: dict[str, float] = field(default_factory=dict)

    def step(self) -> dict[str, str]:
        for asset in self.assets:
            self.prices.setdefault(asset, BASE_PRICES.get(asset, 1.0))
        moved = [a for a in self.assets if self.rng.random() < 0.7] or [self.rng.choice(self.assets)]
        out = {}
        for asset in moved:
            self.prices[asset] = max(self.prices[asset] * (1 + self.rng.gauss(0, 0.0005)), 1e-9)
            out[asset] = f"{self.prices[asset]:.18f}"  # float artifacts in the last digits, as CoinCap sends
        return out


class StubPriceStream:
    """The price WebSocket stand-in, served by its own asyncio loop in a daemon thread.

    `with StubPriceStream(api_keys={"test-key"}, faults=StreamFaults(drop_every=20)) as srv: srv.url`
    A bad key gets close code 1008 after the handshake, or with `auth_failure="http"` an HTTP 401 instead.
    """

    def __init__(
        self,
        *,
        api_keys: Collection[str] = ("test-key",),
        interval_s: float = 0.05,
        faults: StreamFaults | None = None,
        seed: int = 0,
        auth_failure: Literal["close", "http"] = "close",
        max_frames: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.api_keys = set(api_keys)
        self.interval_s = interval_s
        self.faults = faults or StreamFaults()
        self.auth_failure = auth_failure
        self.max_frames = max_frames  # after this many frames in all, connections stay open and quiet
        self.host = host
        self.port = port
        self._rng = random.Random(seed)
        self._prices: dict[str, float] = {}  # shared by all connections, so a reconnect continues the walk
        self._lock = threading.Lock()
        self._frames: list[Frame] = []
        self._rejected = 0
        self._connections = 0
        self._drops = 0
        self._pauses = 0
        self._garbage = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Future[None] | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # ------------------------------------------------------------------------------------------ records

    @property
    def url(self) -> str:
        """e.g. ws://127.0.0.1:PORT/prices (add `?assets=...&apiKey=...`)."""
        return f"ws://{self.host}:{self.port}{PRICES_PATH}"

    @property
    def frames(self) -> list[Frame]:
        """Every frame sent so far, in order."""
        with self._lock:
            return list(self._frames)

    @property
    def sent(self) -> list[tuple[datetime, dict[str, Any]]]:
        """(server_time, message) of every JSON-object message sent, garbage prices included."""
        return [(f.server_time, f.payload) for f in self.frames if isinstance(f.payload, dict)]

    @property
    def connections(self) -> int:
        """Connections accepted with a good key."""
        with self._lock:
            return self._connections

    @property
    def rejected(self) -> int:
        """Connection attempts refused for their key."""
        with self._lock:
            return self._rejected

    @property
    def drops(self) -> int:
        with self._lock:
            return self._drops

    @property
    def pauses(self) -> int:
        with self._lock:
            return self._pauses

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> StubPriceStream:
        """Serve from a daemon thread; returns once the port is bound."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="stub-coincap-ws", daemon=True)
            self._thread.start()
            self._ready.wait(10)
            if self._error is not None:
                raise self._error
        return self

    def stop(self) -> None:
        """Close every connection (code 1001) and the listening socket."""
        if self._thread is not None and self._loop is not None and self._stop is not None:
            stop = self._stop
            self._loop.call_soon_threadsafe(lambda: stop.done() or stop.set_result(None))
            self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> StubPriceStream:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.get_running_loop().create_future()
        server: Server
        async with serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._check_request,
            logger=logging.getLogger("flows.standin.ws"),  # not websockets.server: keep clients' logs apart
        ) as server:
            self.port = int(server.sockets[0].getsockname()[1])
            self._ready.set()
            await self._stop

    # ------------------------------------------------------------------------------------------ protocol

    def _key_ok(self, path: str) -> bool:
        query = parse_qs(urlsplit(path).query)
        return query.get("apiKey", [""])[0] in self.api_keys

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path != PRICES_PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, "Not found\n")
        if self.auth_failure == "http" and not self._key_ok(request.path):
            with self._lock:
                self._rejected += 1
            return connection.respond(HTTPStatus.UNAUTHORIZED, '{"error":"Unauthorized: invalid API key"}')
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        if not self._key_ok(ws.request.path):
            with self._lock:
                self._rejected += 1
            await ws.close(POLICY_VIOLATION, "Invalid API key")
            return
        assets = self._assets(parse_qs(urlsplit(ws.request.path).query).get("assets", [""])[0])
        with self._lock:
            self._connections += 1
            connection = self._connections
            walk = _Walk(assets, random.Random(self._rng.random()), self._prices)
        if not assets:
            await ws.wait_closed()  # CoinCap keeps the socket open and quiet for unknown assets
            return
        seq = 0
        while True:
            faults = self.faults
            if ws.state is not State.OPEN:
                return  # the client left (e.g. during a stall): nothing more is sent, so nothing is recorded
            with self._lock:
                if self.max_frames is not None and len(self._frames) >= self.max_frames:
                    quiet = True
                else:
                    quiet = False
                    seq += 1
                    text, kind, payload = self._message(walk, seq, faults)
                    self._frames.append(Frame(connection, seq, datetime.now(UTC), text, kind, payload))
            if quiet:
                await ws.wait_closed()
                return
            try:
                await ws.send(text)
            except Exception:
                return  # the client went away; the frame counts as sent (it may have been in flight)
            if faults.drop_every and seq % faults.drop_every == 0:
                await self._drop(ws, faults)
                return
            if faults.pause_every and seq % faults.pause_every == 0 and faults.pause_s > 0:
                with self._lock:
                    allowed = faults.max_pauses is None or self._pauses < faults.max_pauses
                    self._pauses += 1 if allowed else 0
                if allowed:
                    await asyncio.sleep(faults.pause_s)
            await asyncio.sleep(self.interval_s)

    @staticmethod
    def _assets(spec: str) -> list[str]:
        if spec.strip().upper() == "ALL":
            return list(BASE_PRICES)
        wanted = [a.strip() for a in spec.split(",") if a.strip()]
        return [a for a in dict.fromkeys(wanted) if a in BASE_PRICES]

    def _message(self, walk: _Walk, seq: int, faults: StreamFaults) -> tuple[str, Any, Any]:
        """The next frame of a connection; called with the lock held."""
        if faults.garbage_every and seq % faults.garbage_every == 0:
            kind = GARBAGE_KINDS[self._garbage % len(GARBAGE_KINDS)]
            self._garbage += 1
            return _garbage(kind, walk)
        prices = walk.step()
        return json.dumps(prices, separators=(",", ":")), "prices", prices

    async def _drop(self, ws: ServerConnection, faults: StreamFaults) -> None:
        with self._lock:
            mode = faults.drop_modes[self._drops % len(faults.drop_modes)] if faults.drop_modes else "abort"
            self._drops += 1
        if mode == "abort":
            ws.transport.abort()  # TCP reset, no close frame: what a crashed proxy looks like
        else:
            await ws.close(1011, "Server restarting")


def _garbage(kind: GarbageKind, walk: _Walk) -> tuple[str, GarbageKind, Any]:
    """Garbage of the kinds a feed, or a broken proxy in front of it, could send."""
    if kind == "not_json":
        return "<html><body>502 Bad Gateway</body></html>", kind, None
    if kind == "not_object":
        payload: Any = [walk.assets[0], "87711.2"]
    elif kind == "bad_price":
        # one good tick beside the bad one: the good one must still land
        payload = {**walk.step(), "broken-coin": "not a number"}
    else:
        payload = {"negative-coin": "-1.500000000000000000"}
    return json.dumps(payload, separators=(",", ":")), kind, payload
