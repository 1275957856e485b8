"""The console's web side (aiohttp, no ROS): one page, its static files, one websocket per browser.

The ROS side talks to a :class:`Hub` from any thread: :meth:`Hub.post` an event (a JSON-able dict:
a status, a decision, a result, the camera's or the graph's state), :meth:`Hub.offer_frame` the newest
RGB frame of a channel (``view``, ``canvas``, ``overlay``). A browser gets the recent events when it
connects, then every event as it comes, and frames as JPEG at most ``max_fps`` times a second per
channel. Only the newest frame of a channel waits for each browser: a slow browser misses frames, it
never holds up the graph or the other browsers. The page's commands (``{"type": "instruction",
"text": ...}``, ``{"type": "cancel"}``) go to ``on_command``.

Websocket messages to the page: text = one JSON event with a ``seq``; binary = one byte (the
channel's index in :data:`CHANNELS`) followed by the JPEG.

Security: a token, when set, is required by the page and the websocket (``?token=...``); on a
loopback address only loopback host names are served (no DNS rebinding), and a websocket must come
from the page's own origin (no other web site can drive the camera through a visitor's browser).
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import os
import itertools
import json
import secrets
import signal
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import cv2
import numpy as np
from aiohttp import WSMsgType, web

STATIC_DIR = Path(__file__).resolve().parent / "static"
CHANNELS = ("view", "canvas", "overlay")
LOOPBACK_NAMES = ("localhost",)


class ConsoleError(ValueError):
    """A console setting that cannot work; one line naming the thing and the fix."""


@dataclass(frozen=True)
class ConsoleSettings:
    bind: str = "127.0.0.1"
    port: int = 8080  # 0: any free port (the address printed at start says which)
    token: str | None = None  # required by the page and the websocket when set
    max_fps: float = 5.0  # frames per second per channel, at most, to each browser
    jpeg_quality: int = 80
    history: int = 300  # recent events a browser gets when it connects
    max_behind: int = 1000  # events waiting for one browser; beyond, it is disconnected (it reconnects)
    max_command_bytes: int = 16384  # the largest message a page may send

    def url(self, port: int | None = None) -> str:
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        query = f"?token={self.token}" if self.token else ""
        return f"http://{host}:{self.port if port is None else port}/{query}"


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def settings_for(bind: str, port: int, token_file: str | None = None, max_fps: float = 5.0) -> ConsoleSettings:
    """Checked settings: a loopback address needs no token; any other address gets one (from
    ``token_file``, else a fresh random one, printed at start)."""
    try:
        ipaddress.ip_address(bind.strip("[]"))
    except ValueError:
        if bind.lower() not in LOOPBACK_NAMES:
            raise ConsoleError(f"--bind {bind}: not an IP address; pass one of this machine's addresses, "
                               f"e.g. --bind 127.0.0.1 (default) or --bind 0.0.0.0") from None
    if not 0 <= port <= 65535:
        raise ConsoleError(f"--port {port}: not a TCP port; pass 1..65535 (0: any free port)")
    if not max_fps > 0:
        raise ConsoleError(f"--max-fps {max_fps}: must be above 0; pass e.g. --max-fps 5")
    token = None
    if token_file is not None:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise ConsoleError(f"--token-file {token_file}: {exc.strerror}; pass a readable file holding the "
                               f"token") from None
        if len(token) < 16 or any(c.isspace() for c in token):
            raise ConsoleError(f"--token-file {token_file}: the token must be one word of at least 16 characters; "
                               f"write e.g. the output of 'python3 -c \"import secrets; print(secrets.token_urlsafe())\"'")
    elif not is_loopback(bind):
        token = secrets.token_urlsafe(18)
    return ConsoleSettings(bind=bind, port=port, token=token, max_fps=max_fps)


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {rgb.shape}")
    return data.tobytes()


class _Browser:
    """One websocket: its events in order, and only the newest frame of each channel."""

    def __init__(self, ws: web.WebSocketResponse, max_behind: int):
        self.ws = ws
        self.max_behind = max_behind
        self.events: deque[str] = deque()
        self.frames: dict[int, bytes] = {}
        self.wake = asyncio.Event()
        self.seen = 0  # seq of the last event queued
        self.dropped_frames = 0

    def push_event(self, seq: int | None, text: str) -> bool:
        """Queue an event (``seq`` None: a reply to this page only); False when this browser is too far
        behind (the caller disconnects it)."""
        if seq is not None:
            if seq <= self.seen:
                return True  # already sent with the history it got on connecting
            self.seen = seq
        if len(self.events) >= self.max_behind:
            return False
        self.events.append(text)
        self.wake.set()
        return True

    def push_frame(self, channel: int, jpeg: bytes) -> None:
        if channel in self.frames:
            self.dropped_frames += 1  # the browser has not taken the previous one yet: it never will
        self.frames[channel] = jpeg
        self.wake.set()

    async def pump(self) -> None:
        try:
            while not self.ws.closed:
                await self.wake.wait()
                self.wake.clear()
                while self.events:
                    await self.ws.send_str(self.events.popleft())
                while self.frames:
                    channel = next(iter(self.frames))
                    await self.ws.send_bytes(bytes([channel]) + self.frames.pop(channel))
        except (ConnectionError, RuntimeError):  # the browser went away mid-send
            pass


class Hub:
    """Events and newest frames from the ROS side to every connected browser; commands back."""

    def __init__(self, settings: ConsoleSettings, on_command: Callable[[dict], dict | None] | None = None):
        self.settings = settings
        self.on_command = on_command or (lambda command: None)
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._history: deque[tuple[int, str]] = deque(maxlen=settings.history)
        self._raw: dict[int, tuple[int, np.ndarray]] = {}  # channel → (frame number, RGB), newest only
        self._frame_no = itertools.count(1)
        self._jpeg: dict[int, tuple[int, bytes]] = {}  # channel → (frame number, JPEG), newest encoded
        self._browsers: set[_Browser] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._frames_ready: asyncio.Event | None = None
        self._encoder: asyncio.Task | None = None

    # ---- from any thread ------------------------------------------------------------------------

    def post(self, event: dict) -> None:
        """Send ``event`` to every browser (and keep it for browsers that connect later)."""
        with self._lock:
            seq = next(self._seq)
            text = json.dumps(dict(event, seq=seq), ensure_ascii=False, separators=(",", ":"), default=str)
            self._history.append((seq, text))
            if self._loop is not None and not self._loop.is_closed():  # under the lock: fanned out in seq order
                self._loop.call_soon_threadsafe(self._fan_out, seq, text)

    def offer_frame(self, channel: str, rgb: np.ndarray) -> None:
        """Make ``rgb`` (H, W, 3 uint8) the newest frame of ``channel``; older unsent ones are dropped.
        Costs no encoding here: the web side encodes, at the capped rate, only what a browser will get."""
        index = CHANNELS.index(channel)
        with self._lock:
            self._raw[index] = (next(self._frame_no), rgb)
            loop, ready = self._loop, self._frames_ready
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(ready.set)

    # ---- in the web thread ----------------------------------------------------------------------

    def _fan_out(self, seq: int, text: str) -> None:
        for browser in list(self._browsers):
            if not browser.push_event(seq, text):
                self._browsers.discard(browser)
                asyncio.ensure_future(browser.ws.close(message=b"too far behind; reconnect"))

    async def _encode_frames(self) -> None:
        """At most ``max_fps`` times a second: encode each channel's newest new frame once, offer it to all."""
        period = 1.0 / self.settings.max_fps
        loop = asyncio.get_running_loop()
        while True:
            await self._frames_ready.wait()
            self._frames_ready.clear()
            if not self._browsers:
                continue  # nobody watches: keep the raw frames, encode when a browser comes
            started = loop.time()
            with self._lock:
                fresh = {ch: f for ch, f in self._raw.items() if f[0] > self._jpeg.get(ch, (0, b""))[0]}
            for ch, (number, rgb) in fresh.items():
                try:
                    jpeg = await loop.run_in_executor(None, encode_jpeg, rgb, self.settings.jpeg_quality)
                except (ValueError, cv2.error):  # one frame that cannot be encoded must not stop the others
                    continue
                self._jpeg[ch] = (number, jpeg)
                for browser in list(self._browsers):
                    browser.push_frame(ch, jpeg)
            await asyncio.sleep(max(0.0, period - (loop.time() - started)))

    def _check(self, request: web.Request, websocket: bool) -> None:
        """Refuse a request without the token, for a foreign host name on loopback, or (websocket) from
        another origin."""
        token = self.settings.token
        if token is not None and not hmac.compare_digest(request.query.get("token", ""), token):
            raise web.HTTPUnauthorized(text="this console needs its token: open the address it printed at start "
                                            "(http://HOST:PORT/?token=...)\n")
        host = request.host
        if is_loopback(self.settings.bind) and not is_loopback(urlsplit(f"//{host}").hostname or ""):
            raise web.HTTPForbidden(text=f"host {host!r} is not this machine; open http://127.0.0.1:PORT/\n")
        origin = request.headers.get("Origin")
        if websocket and origin is not None and urlsplit(origin).netloc != host:
            raise web.HTTPForbidden(text=f"origin {origin} is not this console's page\n")

    async def _page(self, request: web.Request) -> web.StreamResponse:
        self._check(request, websocket=False)
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        self._check(request, websocket=True)
        ws = web.WebSocketResponse(heartbeat=10.0, max_msg_size=self.settings.max_command_bytes)
        await ws.prepare(request)
        browser = _Browser(ws, self.settings.max_behind)
        with self._lock:
            for seq, text in self._history:
                browser.push_event(seq, text)
        for ch, (_, jpeg) in self._jpeg.items():
            browser.push_frame(ch, jpeg)
        self._browsers.add(browser)
        self._frames_ready.set()  # a frame that came while nobody watched gets encoded now
        pump = asyncio.create_task(browser.pump())
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                reply = self._command(msg.data)
                if reply is not None:
                    browser.push_event(None, json.dumps(reply, ensure_ascii=False))
        finally:
            self._browsers.discard(browser)
            pump.cancel()
        return ws

    def _command(self, text: str) -> dict | None:
        """A page's command → ``on_command``; a malformed one or one it refuses → an error event for that page."""
        try:
            command = json.loads(text)
        except ValueError:
            command = None
        if not isinstance(command, dict) or command.get("type") not in ("instruction", "cancel"):
            return {"type": "error", "message": 'unknown command; send {"type": "instruction", "text": ...} or '
                                                '{"type": "cancel"}'}
        if command["type"] == "instruction" and not (isinstance(command.get("text"), str) and command["text"].strip()):
            return {"type": "error", "message": "the instruction is empty; type what to find, e.g. the lamp"}
        try:
            return self.on_command(command)
        except ValueError as exc:
            return {"type": "error", "message": str(exc)}

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_security_headers])
        app.router.add_get("/", self._page)
        app.router.add_get("/ws", self._websocket)
        app.router.add_static("/static/", STATIC_DIR, show_index=False, follow_symlinks=False)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, app: web.Application) -> None:
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._frames_ready = asyncio.Event()
        self._frames_ready.set()
        self._encoder = asyncio.create_task(self._encode_frames())

    async def _stop(self, app: web.Application) -> None:
        with self._lock:
            self._loop = None
        self._encoder.cancel()
        for browser in list(self._browsers):
            await browser.ws.close(message=b"console stopped")


@web.middleware
async def _security_headers(request: web.Request, handler):
    response = await handler(request)
    # everything the page loads is its own (no CDN), and the images arrive as blob: URLs
    response.headers.setdefault("Content-Security-Policy", "default-src 'self'; img-src 'self' blob:; "
                                                           "connect-src 'self'; frame-ancestors 'none'")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


async def serve(hub: Hub, on_started: Callable[[str], None] = print, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set, or SIGINT / SIGTERM; ``on_started`` gets the address to open."""
    settings = hub.settings
    runner = web.AppRunner(hub.app(), handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.bind, settings.port)
        try:
            await site.start()
        except OSError as exc:
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            raise ConsoleError(f"cannot listen on {settings.bind}:{settings.port}: {reason}; pick "
                               f"another --port (or --port 0 for any free one) or stop what uses it") from None
        port = runner.addresses[0][1]
        on_started(settings.url(port))
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            if threading.current_thread() is threading.main_thread():
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
