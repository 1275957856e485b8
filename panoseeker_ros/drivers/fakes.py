"""A fake VISCA camera, a fake ONVIF PTZ service and a fake video stream on 127.0.0.1, for the tests and for a
bring-up dry run.

:class:`FakeViscaCamera` speaks the real byte protocol (VISCA over IP on UDP with sequence numbers and
sequence reset, raw VISCA in UDP datagrams, plain VISCA on TCP), moves at a finite speed so a move takes
time, refuses positions beyond its limits, answers a re-sent VISCA over IP request (same sequence number)
again without executing it twice, and takes injected faults: reply delay, dropped requests, random datagram
loss, error replies, garbage bytes, wrong sequence numbers, sequence errors (control reply 0F 01). :class:`FakeOnvifPtz` answers the SOAP requests an ONVIF PTZ client makes
(GetServices, GetProfiles, GetConfigurationOptions, AbsoluteMove, GetStatus, GotoHomePosition, Stop) with a
generic position space of [-1, 1] on both axes (``ranges`` changes what it advertises; ``position_text``
makes GetStatus report those strings as the position). :class:`MjpegServer` serves an HTTP MJPEG stream (what many IP cameras
offer and what ``cv2.VideoCapture`` opens) of frames from a callable, e.g. a panorama rendered at the
fake camera's current pose.

``python -m panoseeker_ros.drivers.fakes --panorama ERP.png`` runs both, to try ``panoseeker ptz``.
"""
from __future__ import annotations

import argparse
import math
import random
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import cv2
import numpy as np

from . import visca as v


@dataclass
class Faults:
    """What the fake does wrong next; counters count down as faults are spent."""

    reply_delay_s: float = 0.0  # before every reply
    drop: int = 0  # requests ignored without an answer
    silent: bool = False  # ignore everything (the camera is gone)
    error: int | None = None  # the next command gets this VISCA error code
    garbage: int = 0  # replies preceded by garbage bytes
    wrong_sequence: int = 0  # UDP replies with a wrong sequence number before the right one
    loss: float = 0.0  # UDP: probability that a datagram (request or reply) is lost, each on its own
    sequence_error: int = 0  # VISCA over IP requests answered with control reply 0F 01 instead of executing


@dataclass
class _Axis:
    start: float = 0.0
    target: float = 0.0
    t0: float = 0.0
    speed: float = 1.0  # counts per second

    def at(self, now: float) -> float:
        travelled = (now - self.t0) * self.speed
        gap = self.target - self.start
        return self.target if abs(gap) <= travelled else self.start + math.copysign(travelled, gap)

    def arrival(self) -> float:
        return self.t0 + abs(self.target - self.start) / self.speed


class FakeViscaCamera:
    """A VISCA head in memory. Positions in counts; ``true_units_per_deg`` is what the fake really turns per
    degree (calibration tests give it a value the profile does not know; negative: that axis turns the other
    way). Limits in counts; a target beyond
    them is refused with a syntax error, or with ``clamp_beyond_limits`` silently clamped (as some heads do)."""

    def __init__(self, true_units_per_deg=(14.4, 14.4), pan_limits=(-2448, 2448), tilt_limits=(-432, 1296),
                 full_speed_deg_s=(120.0, 90.0), address: int = 1, clamp_beyond_limits: bool = False,
                 seed: int = 0):
        self.clamp_beyond_limits = clamp_beyond_limits
        self._random = random.Random(seed)  # datagram loss
        self.lost = 0  # datagrams lost to Faults.loss, both ways
        self._last_request: dict = {}  # VISCA over IP peer -> (sequence number, immediate replies sent)
        self.true_units_per_deg = tuple(float(u) for u in true_units_per_deg)
        self.pan_limits, self.tilt_limits = tuple(pan_limits), tuple(tilt_limits)
        self.full_speed = (full_speed_deg_s[0] * abs(self.true_units_per_deg[0]),
                           full_speed_deg_s[1] * abs(self.true_units_per_deg[1]))  # counts/s at the top speed code
        self.reply_address = 0x80 | ((address + 8) << 4)
        self.faults = Faults()
        self.commands: list[bytes] = []  # every VISCA message received, in order
        self.refused: list[tuple[int, int]] = []  # absolute targets beyond the limits
        self.sequence_resets = 0  # answered sequence resets
        self.control_requests = 0  # control datagrams received, answered or not
        self.control_times: list[float] = []  # their time.monotonic()
        self._axes = (_Axis(), _Axis())
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._move_id = 0

    # ------------------------------------------------ state
    def position(self, now: float | None = None) -> tuple[float, float]:
        """Current pan and tilt [counts] (fractional while moving)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            return self._axes[0].at(now), self._axes[1].at(now)

    def pose_deg(self) -> tuple[float, float]:
        """Where the fake really points, in core degrees (θ right, ϕ up)."""
        pan, tilt = self.position()
        return pan / self.true_units_per_deg[0], tilt / self.true_units_per_deg[1]

    def moving(self) -> bool:
        now = time.monotonic()
        with self._lock:
            return any(a.at(now) != a.target for a in self._axes)

    def set_position(self, pan: float, tilt: float) -> None:
        with self._lock:
            for axis, value in zip(self._axes, (pan, tilt)):
                axis.start = axis.target = float(value)

    # ------------------------------------------------ servers
    def serve_udp(self, port: int = 0) -> int:
        """Listen for VISCA over IP on 127.0.0.1; returns the port."""
        return self._serve_datagrams(port, self._udp_loop)

    def serve_udp_raw(self, port: int = 0) -> int:
        """Listen for raw VISCA (no VISCA over IP header) in UDP datagrams on 127.0.0.1; returns the port."""
        return self._serve_datagrams(port, self._udp_raw_loop)

    def _serve_datagrams(self, port: int, loop) -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", port))
        sock.settimeout(0.1)
        self._sockets.append(sock)
        self._spawn(loop, sock)
        return sock.getsockname()[1]

    def serve_tcp(self, port: int = 0) -> int:
        """Listen for plain VISCA over TCP on 127.0.0.1; returns the port."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(4)
        sock.settimeout(0.1)
        self._sockets.append(sock)
        self._spawn(self._tcp_accept, sock)
        return sock.getsockname()[1]

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        for s in self._sockets:
            s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _spawn(self, target, *args) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        self._threads.append(t)

    def _lose(self) -> bool:
        """Whether the next datagram is lost (Faults.loss)."""
        with self._lock:
            lost = self.faults.loss > 0 and self._random.random() < self.faults.loss
            self.lost += lost
        return lost

    def _datagrams(self, sock: socket.socket):
        """(datagram, peer, sendto) of every datagram that arrives and is not lost; ``sendto`` answers that peer
        (its datagrams may be lost too)."""
        while not self._stop.is_set():
            try:
                data, peer = sock.recvfrom(2048)
            except socket.timeout:
                continue
            except OSError:
                return
            if self._lose():
                continue

            def sendto(reply: bytes, peer=peer) -> None:
                if not self._lose():
                    sock.sendto(reply, peer)
            yield data, peer, sendto

    def _udp_raw_loop(self, sock: socket.socket) -> None:
        for data, _, sendto in self._datagrams(sock):
            for message in v.split_messages(bytearray(data)):
                self._handle(message, sendto, raw=sendto)

    def _udp_loop(self, sock: socket.socket) -> None:
        for data, peer, sendto in self._datagrams(sock):
            try:
                ptype, seq, payload = v.ip_unpack(data)
            except v.ViscaFormatError:
                continue
            immediate: list[bytes] = []

            def send(message: bytes, reply_type=v.IP_REPLY, seq=seq, immediate=immediate, sendto=sendto) -> None:
                with self._lock:
                    wrong = self.faults.wrong_sequence > 0
                    self.faults.wrong_sequence = max(0, self.faults.wrong_sequence - 1)
                if wrong:
                    sendto(v.ip_pack(reply_type, message, seq + 1000))
                datagram = v.ip_pack(reply_type, message, seq)
                if len(immediate) < 8:
                    immediate.append(datagram)
                sendto(datagram)
            if ptype == v.IP_CONTROL:
                self.control_requests += 1
                self.control_times.append(time.monotonic())
                if self._swallow():
                    continue
                if payload == v.CONTROL_RESET:
                    self.sequence_resets += 1
                    self._last_request.pop(peer, None)
                    send(v.CONTROL_RESET, v.IP_CONTROL_REPLY)
                else:
                    send(b"\x0f\x02", v.IP_CONTROL_REPLY)
                continue
            last = self._last_request.get(peer)
            if last is not None and last[0] == seq:  # a re-send: answer again, do not execute twice
                for datagram in list(last[1]):
                    sendto(datagram)
                continue
            with self._lock:
                sequence_error = self.faults.sequence_error > 0
                self.faults.sequence_error = max(0, self.faults.sequence_error - 1)
            if sequence_error:
                send(b"\x0f\x01", v.IP_CONTROL_REPLY)
                continue
            self._last_request[peer] = (seq, immediate)
            self._handle(payload, send, raw=sendto)
            self._last_request[peer] = (seq, tuple(immediate))  # a later completion is not an immediate reply

    def _tcp_accept(self, server: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self._sockets.append(conn)
            self._spawn(self._tcp_loop, conn)

    def _tcp_loop(self, conn: socket.socket) -> None:
        conn.settimeout(0.1)
        buffer = bytearray()
        lock = threading.Lock()

        def send(message: bytes) -> None:
            with lock:
                conn.sendall(message)
        while not self._stop.is_set():
            try:
                data = conn.recv(1024)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            buffer += data
            for message in v.split_messages(buffer):
                self._handle(message, send, raw=send)

    # ------------------------------------------------ protocol
    def _swallow(self) -> bool:
        with self._lock:
            if self.faults.silent:
                return True
            if self.faults.drop > 0:
                self.faults.drop -= 1
                return True
        return False

    def _reply(self, send, raw, *body: int) -> None:
        if self.faults.reply_delay_s:
            time.sleep(self.faults.reply_delay_s)  # models a slow camera inside the fake's own thread
        with self._lock:
            garbage, self.faults.garbage = self.faults.garbage > 0, max(0, self.faults.garbage - 1)
        if garbage:
            raw(b"\x00\x13\x37\xfe\xff")
        send(bytes((self.reply_address, *body, v.TERMINATOR)))

    def _handle(self, msg: bytes, send, raw) -> None:
        self.commands.append(msg)
        if self._swallow():
            return
        if len(msg) < 3 or msg[-1] != v.TERMINATOR or msg[0] & 0xF0 != 0x80:
            self._reply(send, raw, 0x60, 0x02)
            return
        body = msg[1:-1]
        with self._lock:
            error, self.faults.error = self.faults.error, None
        if body == bytes((0x09, 0x06, 0x12)):
            pan, tilt = (round(x) for x in self.position())
            self._reply(send, raw, 0x50, *v.s16_nibbles(pan), *v.s16_nibbles(tilt))
            return
        if body == bytes((0x01, 0x00, 0x01)):  # IF clear
            self._reply(send, raw, 0x50)
            return
        if len(body) == 1 and body[0] & 0xF0 == 0x20:  # cancel
            self._reply(send, raw, 0x60 | (body[0] & 0x0F), 0x05)
            return
        if error is not None:
            self._reply(send, raw, 0x60 | 1, error)
            return
        if len(body) == 13 and body[:3] == bytes((0x01, 0x06, 0x02)):
            ps, ts = body[3], body[4]
            try:
                pan, tilt = v.nibbles_s16(body[5:9]), v.nibbles_s16(body[9:13])
            except v.ViscaFormatError:
                self._reply(send, raw, 0x60, 0x02)
                return
            if not (1 <= ps <= v.MAX_SPEED[0] and 1 <= ts <= v.MAX_SPEED[1]):
                self._reply(send, raw, 0x60, 0x02)
                return
            if not (self.pan_limits[0] <= pan <= self.pan_limits[1]
                    and self.tilt_limits[0] <= tilt <= self.tilt_limits[1]):
                self.refused.append((pan, tilt))
                if not self.clamp_beyond_limits:
                    self._reply(send, raw, 0x60, 0x02)
                    return
                pan = min(max(pan, self.pan_limits[0]), self.pan_limits[1])
                tilt = min(max(tilt, self.tilt_limits[0]), self.tilt_limits[1])
            self._start_move(pan, tilt, ps / v.MAX_SPEED[0], ts / v.MAX_SPEED[1], send, raw)
            return
        if body == bytes((0x01, 0x06, 0x04)):  # home
            self._start_move(0, 0, 1.0, 1.0, send, raw)
            return
        if len(body) == 7 and body[:3] == bytes((0x01, 0x06, 0x01)) and body[5:] == bytes((0x03, 0x03)):  # stop
            now = time.monotonic()
            with self._lock:
                self._move_id += 1
                for a in self._axes:
                    a.start = a.target = a.at(now)
            self._reply(send, raw, 0x41)
            self._reply(send, raw, 0x51)
            return
        self._reply(send, raw, 0x60, 0x02)

    def _start_move(self, pan: int, tilt: int, pan_frac: float, tilt_frac: float, send, raw) -> None:
        now = time.monotonic()
        with self._lock:
            self._move_id += 1
            move_id = self._move_id
            for axis, target, frac, full in zip(self._axes, (pan, tilt), (pan_frac, tilt_frac), self.full_speed):
                axis.start, axis.target, axis.t0, axis.speed = axis.at(now), float(target), now, full * frac
            arrival = max(a.arrival() for a in self._axes)
        self._reply(send, raw, 0x41)

        def complete() -> None:
            if self._stop.wait(max(0.0, arrival - time.monotonic())):
                return
            with self._lock:
                superseded = move_id != self._move_id
            if not superseded:
                self._reply(send, raw, 0x51)
        self._spawn(complete)


SOAP_ENV = "http://www.w3.org/2003/05/soap-envelope"
ONVIF_NS = {"tds": "http://www.onvif.org/ver10/device/wsdl", "trt": "http://www.onvif.org/ver10/media/wsdl",
            "tptz": "http://www.onvif.org/ver20/ptz/wsdl", "tt": "http://www.onvif.org/ver10/schema",
            "ter": "http://www.onvif.org/ver10/error"}
GENERIC_SPACE = "http://www.onvif.org/ver10/tptz/PanTiltSpaces/PositionGenericSpace"


class _LocalHttpServer:
    """A threaded HTTP server on 127.0.0.1 (an ephemeral port) serving ``handler``; a context manager."""

    def _serve(self, handler, tls=None) -> None:
        """``tls``: an ``ssl.SSLContext`` with the server's certificate: serve HTTPS."""
        self._closed = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_port
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FakeOnvifPtz(_LocalHttpServer):
    """An ONVIF PTZ camera over HTTP/SOAP 1.2 on 127.0.0.1. Position space x, y in [-1, 1] map linearly to
    ``pan_deg`` and ``tilt_deg`` (its real angles); moves run at ``speed_deg_s``. Faults: ``silent`` (no
    answer), ``error`` (the next AbsoluteMove gets a SOAP fault with this text). ``tls``: an ``ssl.SSLContext``
    holding its certificate: HTTPS, and its services advertised at ``advertise``:// (default https)."""

    def __init__(self, pan_deg=(-170.0, 170.0), tilt_deg=(-30.0, 90.0), speed_deg_s=(120.0, 90.0), tls=None,
                 advertise: str | None = None):
        self.pan_deg, self.tilt_deg = tuple(pan_deg), tuple(tilt_deg)
        self.faults = Faults()
        self.error_text: str | None = None
        self.ranges = {"x": (-1.0, 1.0), "y": (-1.0, 1.0)}  # advertised by GetConfigurationOptions
        self.position_text: tuple[str, str] | None = None  # GetStatus reports this (garbage) instead
        self.requests: list[str] = []
        self.moves: list[tuple[float, float]] = []  # AbsoluteMove x, y as received
        self._axes = (_Axis(speed=speed_deg_s[0]), _Axis(speed=speed_deg_s[1]))
        self._lock = threading.Lock()
        self.advertise = advertise or ("https" if tls is not None else "http")
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if outer.faults.silent:
                    outer._closed.wait(30.0)  # the client's timeout ends the wait
                    self.close_connection = True
                    return
                status, xml = outer._answer(body, f"{outer.advertise}://127.0.0.1:{outer.port}")
                data = xml.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/soap+xml; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self._serve(Handler, tls)

    def pose_deg(self) -> tuple[float, float]:
        now = time.monotonic()
        with self._lock:
            return self._axes[0].at(now), self._axes[1].at(now)

    def _to_xy(self, theta: float, phi: float) -> tuple[float, float]:
        (p0, p1), (t0, t1) = self.pan_deg, self.tilt_deg
        return -1 + 2 * (theta - p0) / (p1 - p0), -1 + 2 * (phi - t0) / (t1 - t0)

    def _move(self, theta: float, phi: float) -> None:
        now = time.monotonic()
        with self._lock:
            for axis, target in zip(self._axes, (theta, phi)):
                axis.start, axis.target, axis.t0 = axis.at(now), target, now

    def _answer(self, body: bytes, base: str) -> tuple[int, str]:
        import xml.etree.ElementTree as ET

        try:
            root = ET.fromstring(body)
            op = next(iter(root.find(f"{{{SOAP_ENV}}}Body")))
        except (ET.ParseError, StopIteration, TypeError):
            return 400, _soap_fault("ter:WellFormed", "request is not a SOAP envelope")
        name = op.tag.rsplit("}", 1)[-1]
        self.requests.append(name)
        tt = ONVIF_NS["tt"]
        if name == "GetServices":
            services = "".join(
                f"<tds:Service><tds:Namespace>{ONVIF_NS[k]}</tds:Namespace><tds:XAddr>{base}/onvif/{path}</tds:XAddr>"
                f"<tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version></tds:Service>"
                for k, path in (("tds", "device_service"), ("trt", "media_service"), ("tptz", "ptz_service")))
            return 200, _soap(f"<tds:GetServicesResponse>{services}</tds:GetServicesResponse>")
        if name == "GetProfiles":
            return 200, _soap(
                '<trt:GetProfilesResponse><trt:Profiles token="profile_1" fixed="true"><tt:Name>main</tt:Name>'
                '<tt:PTZConfiguration token="ptz_1"><tt:Name>ptz</tt:Name><tt:UseCount>1</tt:UseCount>'
                "<tt:NodeToken>node_1</tt:NodeToken></tt:PTZConfiguration></trt:Profiles></trt:GetProfilesResponse>")
        if name == "GetConfigurationOptions":
            rng = {k: f"<tt:Min>{lo}</tt:Min><tt:Max>{hi}</tt:Max>" for k, (lo, hi) in self.ranges.items()}
            return 200, _soap(
                "<tptz:GetConfigurationOptionsResponse><tptz:PTZConfigurationOptions><tt:Spaces>"
                f"<tt:AbsolutePanTiltPositionSpace><tt:URI>{GENERIC_SPACE}</tt:URI><tt:XRange>{rng['x']}</tt:XRange>"
                f"<tt:YRange>{rng['y']}</tt:YRange></tt:AbsolutePanTiltPositionSpace></tt:Spaces>"
                "<tt:PTZTimeout><tt:Min>PT1S</tt:Min><tt:Max>PT60S</tt:Max></tt:PTZTimeout>"
                "</tptz:PTZConfigurationOptions></tptz:GetConfigurationOptionsResponse>")
        if name == "AbsoluteMove":
            pan_tilt = op.find(f".//{{{tt}}}PanTilt")
            if self.error_text is not None:
                text, self.error_text = self.error_text, None
                return 500, _soap_fault("ter:InvalidArgVal", text)
            try:
                x, y = float(pan_tilt.get("x")), float(pan_tilt.get("y"))
            except (AttributeError, TypeError, ValueError):
                return 500, _soap_fault("ter:InvalidArgVal", "AbsoluteMove needs Position/PanTilt x and y")
            self.moves.append((x, y))
            if not (-1 <= x <= 1 and -1 <= y <= 1):
                return 500, _soap_fault("ter:InvalidPosition", f"position x={x} y={y} is outside the space")
            (p0, p1), (t0, t1) = self.pan_deg, self.tilt_deg
            self._move(p0 + (x + 1) / 2 * (p1 - p0), t0 + (y + 1) / 2 * (t1 - t0))
            return 200, _soap("<tptz:AbsoluteMoveResponse/>")
        if name == "GotoHomePosition":
            self._move(0.0, 0.0)
            return 200, _soap("<tptz:GotoHomePositionResponse/>")
        if name == "Stop":
            theta, phi = self.pose_deg()
            self._move(theta, phi)
            return 200, _soap("<tptz:StopResponse/>")
        if name == "GetStatus":
            now = time.monotonic()
            with self._lock:
                moving = any(a.at(now) != a.target for a in self._axes)
            x, y = (f"{c:.6f}" for c in self._to_xy(*self.pose_deg()))
            if self.position_text is not None:
                x, y = self.position_text
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            return 200, _soap(
                f'<tptz:GetStatusResponse><tptz:PTZStatus><tt:Position><tt:PanTilt x="{x}" y="{y}" '
                f'space="{GENERIC_SPACE}"/></tt:Position><tt:MoveStatus><tt:PanTilt>'
                f'{"MOVING" if moving else "IDLE"}</tt:PanTilt></tt:MoveStatus><tt:UtcTime>{stamp}</tt:UtcTime>'
                "</tptz:PTZStatus></tptz:GetStatusResponse>")
        return 500, _soap_fault("ter:ActionNotSupported", f"{name} is not supported by the fake")


def _soap(body: str) -> str:
    ns = " ".join(f'xmlns:{k}="{v}"' for k, v in ONVIF_NS.items())
    return (f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{SOAP_ENV}" {ns}>'
            f"<s:Body>{body}</s:Body></s:Envelope>")


def _soap_fault(subcode: str, text: str) -> str:
    return _soap(f"<s:Fault><s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value>{subcode}</s:Value></s:Subcode>"
                 f'</s:Code><s:Reason><s:Text xml:lang="en">{text}</s:Text></s:Reason></s:Fault>')


class MjpegServer(_LocalHttpServer):
    """An HTTP MJPEG stream (``multipart/x-mixed-replace``) at ``url``, each frame ``render()`` (RGB uint8)
    at up to ``fps``. ``pause()`` drops every client and refuses new ones until ``resume()``."""

    def __init__(self, render: Callable[[], np.ndarray], fps: float = 15.0, quality: int = 85):
        self.render, self.period_s, self.quality = render, 1.0 / fps, quality
        self.frames_sent = 0
        self._available = threading.Event()
        self._available.set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                if not outer._available.is_set():
                    self.send_error(503, "stream paused")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                next_t = time.monotonic()
                while outer._available.is_set() and not outer._closed.is_set():
                    bgr = cv2.cvtColor(outer.render(), cv2.COLOR_RGB2BGR)
                    ok, jpg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, outer.quality])
                    part = (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpg)
                            + jpg.tobytes() + b"\r\n")
                    try:
                        self.wfile.write(part)
                    except OSError:
                        return
                    outer.frames_sent += 1
                    next_t += outer.period_s
                    outer._closed.wait(max(0.0, next_t - time.monotonic()))  # frame pacing
                self.close_connection = True

            def log_message(self, *args):
                pass

        self._serve(Handler)
        self.url = f"http://127.0.0.1:{self.port}/video.mjpg"

    def pause(self) -> None:
        self._available.clear()

    def resume(self) -> None:
        self._available.set()


@dataclass
class FakePtzRig:
    """A fake camera (VISCA or ONVIF) plus a stream of a panorama rendered at its current pose (what a real
    camera's video would show)."""

    driver: str
    camera: object  # FakeViscaCamera | FakeOnvifPtz
    stream: MjpegServer
    ports: dict = field(default_factory=dict)  # udp, tcp (VISCA) or http (ONVIF)

    @classmethod
    def start(cls, erp: np.ndarray, fov_deg=(60.0, 45.0), size=(640, 480), fps: float = 15.0, driver: str = "visca",
              **camera_kwargs) -> "FakePtzRig":
        from ..core.geometry import Intrinsics, PanoramaRenderer, Pose

        if driver == "visca":
            camera = FakeViscaCamera(**camera_kwargs)
            ports = {"udp": camera.serve_udp(), "udp_raw": camera.serve_udp_raw(), "tcp": camera.serve_tcp()}
        else:
            camera = FakeOnvifPtz(**camera_kwargs)
            ports = {"http": camera.port}
        renderer, intr = PanoramaRenderer(erp), Intrinsics.from_fov(fov_deg, size)

        def render() -> np.ndarray:
            theta, phi = camera.pose_deg()
            return renderer.render(Pose(theta, max(-90.0, min(90.0, phi))), intr)
        return cls(driver, camera, MjpegServer(render, fps), ports)

    @property
    def udp_port(self) -> int:
        return self.ports["udp"]

    @property
    def tcp_port(self) -> int:
        return self.ports["tcp"]

    def params(self, transport: str = "udp") -> dict:
        """The camera_node parameters that reach this rig."""
        port = self.ports["http"] if self.driver == "onvif" else self.ports[transport]
        return {"driver": self.driver, "host": "127.0.0.1", "port": port, "transport": transport,
                "video_source": self.stream.url}

    def close(self) -> None:
        self.stream.close()
        self.camera.close()


def main(argv=None) -> int:
    from ..core.dataset import load_rgb

    p = argparse.ArgumentParser(prog="python -m panoseeker_ros.drivers.fakes", description=__doc__.splitlines()[0])
    p.add_argument("--panorama", required=True, help="ERP image the fake camera looks at")
    p.add_argument("--fov", type=float, nargs=2, default=(60.0, 45.0), metavar=("H", "V"), help="lens FoV [deg]")
    p.add_argument("--driver", choices=("visca", "onvif"), default="visca")
    args = p.parse_args(argv)
    rig = FakePtzRig.start(load_rgb(args.panorama), tuple(args.fov), driver=args.driver)
    ports = ", ".join(f"{k} 127.0.0.1:{v}" for k, v in rig.ports.items())
    print(f"fake {args.driver} camera: {ports}; video {rig.stream.url}")
    print("Ctrl-C stops it")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the shutdown short
        rig.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
