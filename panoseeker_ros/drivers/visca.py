"""VISCA: the codec (bytes of the pan-tilt commands, inquiries and replies), its transports (Sony VISCA
over IP on UDP, raw VISCA in UDP datagrams, plain VISCA over TCP, serial through pyserial) and the
:class:`ViscaHead` driver.

Messages are ``8x … FF`` from the controller (x = camera address 1..7) and ``y0 … FF`` back
(y = x + 8): ACK ``y0 4z FF`` (z = socket), completion ``y0 5z FF``, error ``y0 6z ee FF``, inquiry
reply ``y0 50 … FF``. Positions are signed 16-bit counts sent as four nibbles. VISCA over IP wraps
each message in an 8-byte header: payload type, payload length, sequence number (big-endian).

Datagrams get lost. The retry policy (:class:`ViscaHead`, one for every request) re-sends a request that got
no answer, with the same sequence number as Sony's VISCA over IP manual asks, ``attempts`` times within
the connection's ``timeout_s``; every request this driver sends is absolute (a position, home, stop, an
inquiry), so a camera that executes a re-sent one twice ends in the same place.
"""
from __future__ import annotations

import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from .head import PtzError, PtzTimeout
from .profile import VISCA_MAX_SPEED, PtzConnection, PtzProfile

TERMINATOR = 0xFF
UDP_PORT = 52381  # Sony VISCA over IP, and raw VISCA over UDP on the heads that take it there
TCP_PORT = 5678  # PTZOptics-style plain VISCA over TCP
DATAGRAM_ATTEMPTS = 4  # sends of one request over UDP (the first and three re-sends) within timeout_s

# VISCA over IP payload types
IP_COMMAND, IP_INQUIRY, IP_REPLY = 0x0100, 0x0110, 0x0111
IP_CONTROL, IP_CONTROL_REPLY = 0x0200, 0x0201
IP_HEADER = struct.Struct(">HHI")
CONTROL_RESET = b"\x01"  # control command payload: reset the sequence number
CONTROL_ERRORS = {0x01: "abnormal sequence number", 0x02: "abnormal message type"}  # control reply 0F xx

ERRORS = {0x01: "message length error", 0x02: "syntax error (a value the camera does not accept)",
          0x03: "command buffer full", 0x04: "command cancelled", 0x05: "no such socket",
          0x41: "command not executable now"}
MAX_SPEED = VISCA_MAX_SPEED  # highest pan / tilt speed codes VISCA defines (heads may accept less)


class ViscaFormatError(ValueError):
    """Bytes that are not a VISCA reply."""


# ---------------------------------------------------------------- codec

def s16_nibbles(value: int) -> bytes:
    """A signed 16-bit value as four bytes 0p 0q 0r 0s (two's complement)."""
    if not -0x8000 <= value <= 0x7FFF:
        raise ValueError(f"VISCA position {value} does not fit in 16 bits")
    v = value & 0xFFFF
    return bytes(((v >> 12) & 0xF, (v >> 8) & 0xF, (v >> 4) & 0xF, v & 0xF))


def nibbles_s16(data: bytes) -> int:
    """Four nibble bytes back to a signed 16-bit value."""
    if len(data) != 4 or any(b > 0xF for b in data):
        raise ViscaFormatError(f"not four position nibbles: {data.hex(' ')}")
    v = (data[0] << 12) | (data[1] << 8) | (data[2] << 4) | data[3]
    return v - 0x10000 if v & 0x8000 else v


def _msg(address: int, *body: int) -> bytes:
    return bytes((0x80 | address, *body, TERMINATOR))


def absolute_move(address: int, pan: int, tilt: int, pan_speed: int, tilt_speed: int) -> bytes:
    """Pan-tilt absolute position ``8x 01 06 02 VV WW 0Y×4 0Z×4 FF`` (counts, speed codes)."""
    for name, code, top in (("pan", pan_speed, MAX_SPEED[0]), ("tilt", tilt_speed, MAX_SPEED[1])):
        if not 1 <= code <= top:
            raise ValueError(f"VISCA {name} speed {code} is outside 1..{top}")
    return _msg(address, 0x01, 0x06, 0x02, pan_speed, tilt_speed, *s16_nibbles(pan), *s16_nibbles(tilt))


def home(address: int) -> bytes:
    return _msg(address, 0x01, 0x06, 0x04)


def stop(address: int, pan_speed: int = 1, tilt_speed: int = 1) -> bytes:
    """Pan-tilt drive stop; the speed bytes must be valid codes (some heads refuse 0)."""
    return _msg(address, 0x01, 0x06, 0x01, pan_speed, tilt_speed, 0x03, 0x03)


def position_inquiry(address: int) -> bytes:
    return _msg(address, 0x09, 0x06, 0x12)


def if_clear(address: int) -> bytes:
    """Clear the command buffers (over serial the broadcast form ``88 01 00 01 FF`` reaches every head)."""
    return _msg(address, 0x01, 0x00, 0x01)


def cancel(address: int, socket_no: int) -> bytes:
    return _msg(address, 0x20 | (socket_no & 0x0F))


@dataclass(frozen=True)
class Reply:
    kind: str  # "ack" | "completion" | "error" | "answer" (inquiry reply with data)
    socket: int
    error: int | None = None
    data: bytes = b""

    def describe(self) -> str:
        if self.kind == "error":
            return ERRORS.get(self.error, f"error code {self.error:#04x}")
        return self.kind


def parse_reply(message: bytes) -> Reply:
    """One FF-terminated reply; raises :class:`ViscaFormatError` for anything else."""
    if len(message) < 3 or message[-1] != TERMINATOR or TERMINATOR in message[:-1]:
        raise ViscaFormatError(f"not a VISCA message: {message.hex(' ')}")
    first, second = message[0], message[1]
    if first & 0x8F != 0x80 or first < 0x90:
        raise ViscaFormatError(f"not a reply from a camera: {message.hex(' ')}")
    kind_nibble, socket_no = second >> 4, second & 0x0F
    if kind_nibble == 0x4 and len(message) == 3:
        return Reply("ack", socket_no)
    if kind_nibble == 0x5 and len(message) == 3:
        return Reply("completion", socket_no)
    if kind_nibble == 0x5 and socket_no == 0:
        return Reply("answer", 0, data=bytes(message[2:-1]))
    if kind_nibble == 0x6 and len(message) == 4:
        return Reply("error", socket_no, error=message[2])
    raise ViscaFormatError(f"unknown VISCA reply: {message.hex(' ')}")


def parse_position(reply: Reply) -> tuple[int, int]:
    """Pan and tilt counts from the answer to :func:`position_inquiry`."""
    if reply.kind != "answer" or len(reply.data) != 8:
        raise ViscaFormatError(f"not a pan-tilt position answer: {reply}")
    return nibbles_s16(reply.data[:4]), nibbles_s16(reply.data[4:])


def split_messages(buffer: bytearray, limit: int = 64) -> list[bytes]:
    """Take every complete FF-terminated message off the front of ``buffer`` (a byte stream); a run of more
    than ``limit`` bytes without a terminator is garbage and is dropped as one message."""
    out = []
    while True:
        end = buffer.find(TERMINATOR)
        if end < 0:
            if len(buffer) > limit:
                out.append(bytes(buffer))
                buffer.clear()
            return out
        out.append(bytes(buffer[:end + 1]))
        del buffer[:end + 1]


def ip_pack(payload_type: int, payload: bytes, sequence: int) -> bytes:
    """A VISCA over IP datagram: type, length, sequence number, payload."""
    return IP_HEADER.pack(payload_type, len(payload), sequence & 0xFFFFFFFF) + payload


def ip_unpack(datagram: bytes) -> tuple[int, int, bytes]:
    """(payload type, sequence number, payload) of a VISCA over IP datagram."""
    if len(datagram) < IP_HEADER.size:
        raise ViscaFormatError(f"VISCA over IP datagram too short: {datagram.hex(' ')}")
    ptype, length, seq = IP_HEADER.unpack_from(datagram)
    payload = datagram[IP_HEADER.size:]
    if length != len(payload):
        raise ViscaFormatError(f"VISCA over IP length {length} but {len(payload)} payload bytes")
    return ptype, seq, payload


# ---------------------------------------------------------------- transports

class UdpTransport:
    """Sony VISCA over IP. The local socket binds an ephemeral port (never the camera's), so a camera and a
    controller can share one machine, and is connected to the camera: datagrams from any other address are
    never read. Every message carries a sequence number that the reply echoes."""

    datagrams = True  # may be lost: the head re-sends

    def __init__(self, host: str, port: int = UDP_PORT):
        self.name = f"VISCA over IP udp://{host}:{port}"
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("", 0))
        try:
            self.sock.connect((host, port))
        except OSError as exc:
            self.sock.close()
            raise PtzTimeout(f"{self.name}: cannot reach ({exc.strerror or exc}); check the address") from None
        self.peer = self.sock.getpeername()
        self.sequence = 0
        self._last = b""

    def send(self, message: bytes, inquiry: bool = False) -> int:
        self.sequence = (self.sequence + 1) & 0xFFFFFFFF
        self._last = ip_pack(IP_INQUIRY if inquiry else IP_COMMAND, message, self.sequence)
        self._write(self._last)
        return self.sequence

    def resend(self) -> None:
        """The last datagram again, with its sequence number: a retransmission, not a new request."""
        self._write(self._last)

    def _write(self, datagram: bytes) -> None:
        try:
            self.sock.send(datagram)
        except OSError:  # ICMP port unreachable from an earlier datagram: the re-send policy covers it
            pass

    def receive(self, timeout_s: float) -> tuple[int | None, int, bytes] | None:
        """(sequence, payload type, payload) of the next datagram from the camera, or None after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data, sender = self.sock.recvfrom(2048)
            except socket.timeout:
                return None
            except OSError:  # ICMP port unreachable surfaces here on Linux: nobody listens yet
                continue
            if sender[:2] != self.peer[:2]:  # the connected socket filters already; never trust another sender
                continue
            ptype, seq, payload = ip_unpack(data)
            return seq, ptype, payload

    def reset(self, timeout_s: float, attempts: int = 1) -> None:
        """Reset the camera's sequence number (control command, re-sent ``attempts`` times within ``timeout_s``);
        raises PtzTimeout without an answer."""
        self.sequence = 0
        for _ in range(attempts):
            self._write(ip_pack(IP_CONTROL, CONTROL_RESET, 0))
            deadline = time.monotonic() + timeout_s / attempts
            while (left := deadline - time.monotonic()) > 0:
                try:
                    got = self.receive(left)
                except ViscaFormatError:
                    continue
                if got is None:
                    break
                _, ptype, payload = got
                if ptype == IP_CONTROL_REPLY and payload == CONTROL_RESET:
                    return
        raise PtzTimeout(f"{self.name}: no answer to the sequence reset within {timeout_s:g} s; check the "
                         f"address, that the camera is on and that VISCA over IP is enabled in its menu")

    def close(self) -> None:
        self.sock.close()


class StreamTransport:
    """Plain VISCA without the IP header over a TCP socket, a serial port or raw UDP datagrams: no sequence
    numbers; replies are split on the FF terminator."""

    def __init__(self, name: str, read: Callable[[float], bytes], write: Callable[[bytes], None],
                 close: Callable[[], None], datagrams: bool = False):
        self.name = name
        self.datagrams = datagrams  # raw UDP: may be lost, the head re-sends
        self._read, self._write, self._close = read, write, close
        self._buffer = bytearray()
        self._ready: list[bytes] = []
        self._last = b""

    @classmethod
    def tcp(cls, host: str, port: int = TCP_PORT, timeout_s: float = 1.0) -> "StreamTransport":
        name = f"VISCA over TCP tcp://{host}:{port}"
        try:
            sock = socket.create_connection((host, port), timeout=timeout_s)
        except OSError as exc:
            raise PtzTimeout(f"{name}: cannot connect ({exc.strerror or exc}); check the address and that "
                             f"the camera's VISCA TCP port is {port}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def read(timeout: float) -> bytes:
            sock.settimeout(max(timeout, 1e-3))
            try:
                data = sock.recv(1024)
            except socket.timeout:
                return b""
            if not data:
                raise PtzTimeout(f"{name}: the camera closed the connection")
            return data
        return cls(name, read, sock.sendall, sock.close)

    @classmethod
    def udp_raw(cls, host: str, port: int = UDP_PORT) -> "StreamTransport":
        """Raw VISCA bytes in UDP datagrams (no VISCA over IP header), as some PTZOptics heads take on 52381;
        the socket is connected, so only the camera's datagrams are read."""
        name = f"raw VISCA over UDP udp://{host}:{port}"
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.connect((host, port))
        except OSError as exc:
            sock.close()
            raise PtzTimeout(f"{name}: cannot reach ({exc.strerror or exc}); check the address") from None

        def read(timeout: float) -> bytes:
            sock.settimeout(max(timeout, 1e-3))
            try:
                return sock.recv(2048)
            except socket.timeout:
                return b""
            except OSError:  # ICMP port unreachable: nobody listens (yet); the re-send policy covers it
                return b""

        def write(data: bytes) -> None:
            try:
                sock.send(data)
            except OSError:
                pass
        return cls(name, read, write, sock.close, datagrams=True)

    @classmethod
    def serial(cls, device: str, baudrate: int = 9600) -> "StreamTransport":
        """``device`` is a port (/dev/ttyUSB0) or any pyserial URL (``socket://host:port``, ``rfc2217://…``)."""
        import serial  # pyserial

        name = f"VISCA over serial {device} @ {baudrate} Bd"
        try:
            port = serial.serial_for_url(device, baudrate=baudrate, timeout=0.05)
        except (serial.SerialException, ValueError) as exc:
            raise PtzTimeout(f"{name}: cannot open ({exc}); check the device path and that you may use it "
                             f"(group dialout)") from None

        def read(timeout: float) -> bytes:
            port.timeout = max(timeout, 1e-3)
            return port.read(max(1, port.in_waiting))
        return cls(name, read, port.write, port.close)

    def send(self, message: bytes, inquiry: bool = False) -> None:
        self._last = message
        self._write(message)

    def resend(self) -> None:
        self._write(self._last)

    def receive(self, timeout_s: float) -> tuple[None, int, bytes] | None:
        deadline = time.monotonic() + timeout_s
        while not self._ready:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._buffer += self._read(left)
            self._ready += split_messages(self._buffer)
        return None, IP_REPLY, self._ready.pop(0)

    def reset(self, timeout_s: float, attempts: int = 1) -> None:
        self._buffer.clear()
        self._ready.clear()

    def close(self) -> None:
        self._close()


def open_transport(conn: PtzConnection):
    """The transport a connection names (it does not talk to the camera yet)."""
    if conn.transport == "udp":
        return UdpTransport(conn.host, conn.port or UDP_PORT)
    if conn.transport == "udp_raw":
        return StreamTransport.udp_raw(conn.host, conn.port or UDP_PORT)
    if conn.transport == "tcp":
        return StreamTransport.tcp(conn.host, conn.port or TCP_PORT, conn.timeout_s)
    return StreamTransport.serial(conn.serial_device, conn.baudrate)


# ---------------------------------------------------------------- the driver

class _ControlError(Exception):
    """The camera's control reply 0F 01 / 0F 02 (its view of our sequence numbers); the text names it."""


class ViscaHead:
    """A VISCA pan-tilt head (see :class:`~panoseeker_ros.drivers.head.PanTiltHead`). Requests are serialised.
    The retry policy, the same for every request: over a datagram transport a request without an answer is
    re-sent (same sequence number) every ``timeout_s / attempts`` seconds, ``attempts`` sends in all; a request
    still unanswered after ``timeout_s`` raises :class:`PtzTimeout`, an error reply :class:`PtzError`. A
    sequence error from the camera (control reply 0F 01 abnormal sequence number, 0F 02 abnormal message type)
    resets the sequence number and sends the request again, once. Stray replies (garbage, unknown sequence
    numbers) go to ``on_stray`` and are skipped; the duplicate answers a re-send causes are dropped quietly."""

    def __init__(self, transport, profile: PtzProfile, address: int = 1, timeout_s: float = 1.0,
                 on_stray: Callable[[str, str], None] | None = None, attempts: int | None = None):
        self.transport = transport
        self.profile = profile
        self.address = address
        self.timeout_s = timeout_s
        self.attempts = attempts or (DATAGRAM_ATTEMPTS if getattr(transport, "datagrams", False) else 1)
        self.on_stray = on_stray or (lambda key, text: None)
        self.resends = 0  # requests sent again after a silence (diagnostics)
        self.resyncs = 0  # sequence resets after the camera's sequence errors
        self.last_reply_s: float | None = None  # round trip of the last answered request [s]
        self._lock = threading.Lock()
        self._open_sockets: set[int] = set()  # sockets whose completion is still to come
        self._open_seqs: deque[int] = deque(maxlen=32)  # UDP: sequence numbers whose completion is still to come
        self._answered: deque[int] = deque(maxlen=32)  # UDP: sequence numbers already answered (duplicates follow)

    @classmethod
    def connect(cls, conn: PtzConnection, profile: PtzProfile, on_stray=None) -> "ViscaHead":
        head = cls(open_transport(conn), profile, conn.visca_address, conn.timeout_s, on_stray)
        try:
            head.reset()
        except PtzError:
            head.close()
            raise
        return head

    @property
    def name(self) -> str:
        return self.transport.name

    def reset(self) -> None:
        """Re-synchronise: sequence number reset (UDP), clear the camera's command buffers."""
        with self._lock:
            self._resync()
            self._request(if_clear(self.address), "clear the command buffer", inquiry=False)

    def _resync(self) -> None:
        self.transport.reset(self.timeout_s, self.attempts)
        self._open_sockets.clear()
        self._open_seqs.clear()
        self._answered.clear()

    def move_to(self, theta: float, phi: float) -> None:
        pan, tilt = self.profile.to_units(theta, phi)
        speed = self.profile.speed
        try:
            message = absolute_move(self.address, pan, tilt, speed[0], speed[1])
        except ValueError as exc:
            raise PtzError(f"{self.name}: {exc}; check profile '{self.profile.name}'") from None
        with self._lock:
            self._request(message, f"absolute move to θ={theta:.1f}° ϕ={phi:.1f}° ({pan}, {tilt} counts)",
                          inquiry=False)

    def position_units(self) -> tuple[int, int]:
        with self._lock:
            reply = self._request(position_inquiry(self.address), "pan-tilt position inquiry", inquiry=True)
        try:
            return parse_position(reply)
        except ViscaFormatError as exc:
            raise PtzError(f"{self.name}: {exc}") from None

    def position(self) -> tuple[float, float]:
        return self.profile.to_degrees(*self.position_units())

    def home(self) -> None:
        with self._lock:
            self._request(home(self.address), "home", inquiry=False)

    def stop(self) -> None:
        with self._lock:
            self._request(stop(self.address), "stop", inquiry=False)

    def describe(self) -> str:
        return f"{self.name}, camera address {self.address}, profile {self.profile.name}"

    def close(self) -> None:
        self.transport.close()

    def _request(self, message: bytes, what: str, inquiry: bool) -> Reply:
        """Send, re-send on silence, resynchronise once on a sequence error; the answer (see :meth:`_await`)."""
        t0 = time.monotonic()
        seq = self.transport.send(message, inquiry=inquiry)
        wait = self.timeout_s / self.attempts
        sends, resynced = 1, False
        while True:
            try:
                reply = self._await(seq, what, inquiry, wait)
            except _ControlError as exc:
                if resynced:
                    raise PtzError(f"{self.name}: the camera reported {exc} again after a sequence reset; "
                                   f"'{what}' not done. Restart the camera's VISCA over IP or check that no "
                                   f"other controller talks to it") from None
                resynced = True
                self.resyncs += 1
                self.on_stray("sequence error", f"{self.name}: the camera reported {exc}; the sequence number "
                                                f"was reset and '{what}' sent again")
                self._resync()
                seq, sends = self.transport.send(message, inquiry=inquiry), 1
                continue
            if reply is not None:
                if seq is not None:
                    self._answered.append(seq)
                self.last_reply_s = time.monotonic() - t0
                return reply
            if sends >= self.attempts:
                break
            self.transport.resend()
            self.resends += 1
            sends += 1
        raise PtzTimeout(f"{self.name}: no answer to '{what}' within {self.timeout_s:g} s ({sends} sends); check "
                         f"the cable or network, the camera's power and its VISCA address ({self.address})")

    # The reply to a request: for a command its ACK (or completion, for heads that skip the ACK), for an
    # inquiry its answer; None after ``wait`` seconds. Completions of earlier moves are consumed on the way.
    def _await(self, seq, what: str, inquiry: bool, wait: float) -> Reply | None:
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            try:
                got = self.transport.receive(left)
            except ViscaFormatError as exc:
                self.on_stray("garbage", f"{self.name}: ignored bytes that are not VISCA over IP ({exc})")
                continue
            if got is None:
                return None
            rseq, ptype, payload = got
            if ptype == IP_CONTROL_REPLY:
                code = payload[1] if len(payload) == 2 and payload[0] == 0x0F else None
                if code in CONTROL_ERRORS:
                    raise _ControlError(f"{CONTROL_ERRORS[code]} (control reply 0F {code:02X})")
                self.on_stray("control", f"{self.name}: ignored a control reply {payload.hex(' ')}")
                continue
            try:
                reply = parse_reply(payload)
            except ViscaFormatError as exc:
                self.on_stray("garbage", f"{self.name}: ignored a reply that is not VISCA ({exc})")
                continue
            if rseq is not None and rseq != seq:
                if reply.kind in ("completion", "error") and rseq in self._open_seqs:
                    self._open_seqs.remove(rseq)
                    self._open_sockets.discard(reply.socket)
                elif reply.kind in ("ack", "answer") and rseq in self._answered:
                    pass  # the camera answered a re-send of a request already answered
                else:
                    self.on_stray("sequence", f"{self.name}: ignored a reply with sequence number {rseq} "
                                              f"while waiting for {seq}")
                continue
            if inquiry:
                if reply.kind == "answer":
                    return reply
                if reply.kind == "error":
                    raise PtzError(f"{self.name}: {what} refused: {reply.describe()}")
                self._consume_late(reply)
                continue
            if reply.kind == "ack":
                self._open_sockets.add(reply.socket)
                if seq is not None:
                    self._open_seqs.append(seq)
                return reply
            if reply.kind == "completion":
                if rseq is None and reply.socket in self._open_sockets:
                    self._open_sockets.discard(reply.socket)  # an earlier move arrived
                    continue
                return reply  # done at once (no ACK) or a command that completes immediately
            if reply.kind == "error":
                if reply.error == 0x04 and reply.socket in self._open_sockets and rseq is None:
                    self._open_sockets.discard(reply.socket)  # an earlier move was cancelled by this one
                    continue
                raise PtzError(f"{self.name}: {what} refused: {reply.describe()}")
            self.on_stray("answer", f"{self.name}: ignored an inquiry answer while waiting for {what}")
        return None

    def _consume_late(self, reply: Reply) -> None:
        if reply.kind in ("completion", "error") and reply.socket in self._open_sockets:
            self._open_sockets.discard(reply.socket)
        else:
            self.on_stray("late", f"{self.name}: ignored a stray {reply.describe()} reply")
