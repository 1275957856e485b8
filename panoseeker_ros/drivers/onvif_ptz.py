"""ONVIF PTZ through the maintained ``onvif-zeep-async`` client: ``GetProfiles`` (the first profile with a PTZ
configuration), ``GetConfigurationOptions`` (the absolute pan-tilt position space and its ranges),
``AbsoluteMove``, ``GetStatus`` (position), ``GotoHomePosition`` and ``Stop``.

The client is asynchronous; :class:`OnvifHead` runs its own event loop in a thread and offers the
blocking :class:`~panoseeker_ros.drivers.head.PanTiltHead` calls. The position space's x / y ranges map
linearly to the degrees the profile names for their ends (``onvif_pan_deg``, ``onvif_tilt_deg``).

``onvif_https``: every request goes over HTTPS with the camera's certificate and host name checked against
``onvif_ca_file`` (or the system's CAs), and a service the camera advertises over plain http is refused, not
followed. The client library's own connections never check certificates; :func:`_https_camera` gives each
of its services a connection that does.
"""
from __future__ import annotations

import asyncio
import math
import ssl
import threading
import time

from ..core.config import ConfigError
from .head import PtzError, PtzTimeout
from .profile import PtzConnection, PtzProfile, onvif_password, redact

DEFAULT_PORT = 80
DEFAULT_HTTPS_PORT = 443
GENERIC_SPACE = "http://www.onvif.org/ver10/tptz/PanTiltSpaces/PositionGenericSpace"


def _lerp(value: float, a0: float, a1: float, b0: float, b1: float) -> float:
    return b0 + (value - a0) * (b1 - b0) / (a1 - a0)


class OnvifHead:
    """One ONVIF PTZ camera; see the module docstring. Every call waits at most ``timeout_s``."""

    def __init__(self, conn: PtzConnection, profile: PtzProfile):
        self.conn, self.profile = conn, profile
        try:
            self._password = onvif_password(conn)
        except ConfigError as exc:
            raise PtzError(str(exc)) from None
        self.port = conn.port or (DEFAULT_HTTPS_PORT if conn.onvif_https else DEFAULT_PORT)
        self.name = f"ONVIF {'https' if conn.onvif_https else 'http'}://{conn.host}:{self.port}"
        self._tls = _tls_context(conn) if conn.onvif_https else None
        self.timeout_s = conn.timeout_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="onvif-loop", daemon=True)
        self._thread.start()
        self._camera = self._ptz = None
        self.token = ""
        self.space = GENERIC_SPACE
        self.x_range = self.y_range = (-1.0, 1.0)
        self.moving: bool | None = None  # GetStatus MoveStatus.PanTilt at the last read-back (None: unknown)
        self.last_reply_s: float | None = None  # round trip of the last answered request [s]

    @classmethod
    def connect(cls, conn: PtzConnection, profile: PtzProfile) -> "OnvifHead":
        head = cls(conn, profile)
        try:
            head._run(head._setup(), "connect (GetServices, GetProfiles, GetConfigurationOptions)",
                      timeout_s=4 * conn.timeout_s)
        except PtzError:
            head.close()
            raise
        return head

    async def _setup(self) -> None:
        from onvif import ONVIFCamera

        camera, host = ((ONVIFCamera, self.conn.host) if self._tls is None else
                        (_https_camera(self._tls, self.name), f"https://{self.conn.host}"))
        self._camera = camera(host, self.port, self.conn.onvif_user, self._password)
        await self._camera.update_xaddrs()
        media = await self._camera.create_media_service()
        self._ptz = await self._camera.create_ptz_service()
        profiles = await media.GetProfiles()
        with_ptz = [p for p in profiles or [] if getattr(p, "PTZConfiguration", None) is not None]
        if not with_ptz:
            raise PtzError(f"{self.name}: no media profile has a PTZ configuration; enable PTZ in the camera's web UI")
        chosen = with_ptz[0]
        self.token = chosen.token
        options = await self._ptz.GetConfigurationOptions({"ConfigurationToken": chosen.PTZConfiguration.token})
        spaces = list(getattr(options.Spaces, "AbsolutePanTiltPositionSpace", None) or [])
        if not spaces:
            raise PtzError(f"{self.name}: the PTZ configuration has no absolute pan-tilt position space; this "
                           f"camera cannot be pointed by angle")
        space = next((s for s in spaces if s.URI == GENERIC_SPACE), spaces[0])
        self.space = space.URI
        self.x_range = self._range(space, "XRange")
        self.y_range = self._range(space, "YRange")

    def _range(self, space, key: str) -> tuple[float, float]:
        try:
            lo, hi = float(getattr(space, key).Min), float(getattr(space, key).Max)
        except (AttributeError, TypeError, ValueError):
            lo = hi = math.nan
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo == hi:
            raise PtzError(f"{self.name}: the absolute pan-tilt space's {key} is [{lo}, {hi}], not a range of "
                           f"positions; this camera cannot be pointed by angle over ONVIF (try its VISCA port)")
        return lo, hi

    def _run(self, coro, what: str, timeout_s: float | None = None):
        try:
            return self._call(coro, what, timeout_s)
        except PtzError as exc:  # no error text may carry the password, whatever the library put in it
            raise type(exc)(redact(str(exc), self._password)) from None

    def _call(self, coro, what: str, timeout_s: float | None = None):
        import aiohttp
        import zeep.exceptions
        from onvif.exceptions import ONVIFError

        timeout = timeout_s or self.timeout_s
        t0 = time.monotonic()
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, timeout), self._loop)
        try:
            answer = future.result(timeout + 1.0)
            self.last_reply_s = time.monotonic() - t0
            return answer
        except PtzError:
            raise
        except (asyncio.TimeoutError, TimeoutError):
            raise PtzTimeout(f"{self.name}: no answer to {what} within {timeout:g} s; check the address, port "
                             f"and that ONVIF is enabled on the camera") from None
        except zeep.exceptions.Fault as exc:
            raise PtzError(f"{self.name}: {what} refused: {exc.message}") from None
        except aiohttp.ClientSSLError as exc:
            why = getattr(exc, "certificate_error", None) or exc
            raise PtzError(f"{self.name}: {what}: TLS failed ({why}); give the camera's CA or its self-signed "
                           f"certificate (PEM) as onvif_ca_file, and a host name or address its certificate "
                           f"names") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise PtzTimeout(f"{self.name}: {what} failed ({type(exc).__name__}: {exc}); check the address and "
                             f"port") from None
        except ONVIFError as exc:
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise PtzError(f"{self.name}: {what} failed: {text}; check the user name and password") from None

    def to_space(self, theta: float, phi: float) -> tuple[float, float]:
        """Core angles [deg] to the position space's x, y."""
        p = self.profile
        return (_lerp(theta, *p.onvif_pan_deg, *self.x_range), _lerp(phi, *p.onvif_tilt_deg, *self.y_range))

    def to_degrees(self, x: float, y: float) -> tuple[float, float]:
        p = self.profile
        return (_lerp(x, *self.x_range, *p.onvif_pan_deg), _lerp(y, *self.y_range, *p.onvif_tilt_deg))

    def move_to(self, theta: float, phi: float) -> None:
        x, y = self.to_space(theta, phi)
        request = {"ProfileToken": self.token, "Position": {"PanTilt": {"x": x, "y": y, "space": self.space}}}
        self._run(self._ptz.AbsoluteMove(request),
                  f"AbsoluteMove to θ={theta:.1f}° ϕ={phi:.1f}° (x={x:.4f} y={y:.4f})")

    def position(self) -> tuple[float, float]:
        status = self._run(self._ptz.GetStatus({"ProfileToken": self.token}), "GetStatus")
        pan_tilt = getattr(getattr(status, "Position", None), "PanTilt", None)
        move = getattr(getattr(status, "MoveStatus", None), "PanTilt", None)
        self.moving = {"MOVING": True, "IDLE": False}.get(str(move).upper()) if move is not None else None
        if pan_tilt is None:
            raise PtzError(f"{self.name}: GetStatus has no pan-tilt position; this camera does not report where "
                           f"it points")
        try:
            x, y = float(pan_tilt.x), float(pan_tilt.y)
        except (AttributeError, TypeError, ValueError):
            x = y = math.nan
        if not (math.isfinite(x) and math.isfinite(y)):
            raise PtzError(f"{self.name}: GetStatus position x={getattr(pan_tilt, 'x', None)!r} "
                           f"y={getattr(pan_tilt, 'y', None)!r} is not a pair of numbers; check the camera's firmware")
        return self.to_degrees(x, y)

    def home(self) -> None:
        self._run(self._ptz.GotoHomePosition({"ProfileToken": self.token}), "GotoHomePosition")

    def stop(self) -> None:
        self._run(self._ptz.Stop({"ProfileToken": self.token, "PanTilt": True, "Zoom": False}), "Stop")

    def describe(self) -> str:
        return (f"{self.name}, profile token {self.token}, space {self.space.rsplit('/', 1)[-1]} "
                f"x {self.x_range} y {self.y_range}, calibration {self.profile.name}")

    def close(self) -> None:
        if self._camera is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._camera.close(), self._loop).result(2.0)
            except Exception:  # noqa: BLE001 - closing a dead connection must not hide the first error
                pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=2)
        self._loop.close()


def _tls_context(conn: PtzConnection) -> ssl.SSLContext:
    """Certificate and host-name checks on, trusting ``onvif_ca_file`` (PEM) or else the system's CAs."""
    try:
        return ssl.create_default_context(cafile=conn.onvif_ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise PtzError(f"onvif_ca_file {conn.onvif_ca_file!r}: {getattr(exc, 'strerror', None) or exc}; give a "
                       f"readable PEM file of the camera's CA (or its self-signed certificate)") from None


def _https_camera(tls: ssl.SSLContext, name: str):
    """An ``ONVIFCamera`` class whose services talk through ``tls`` and only over https (see the module)."""
    from aiohttp import ClientSession, TCPConnector
    from onvif import ONVIFCamera

    class HttpsOnvifCamera(ONVIFCamera):
        async def create_onvif_service(self, service_name, port_type=None, read_timeout=None, write_timeout=None):
            xaddr = self.get_definition(service_name.lower(), port_type)[0]
            if not str(xaddr).lower().startswith("https://"):
                raise PtzError(f"{name}: the camera advertises its {service_name} service at {xaddr}, not over "
                               f"https; turn on HTTPS-only in the camera's network settings, or set onvif_https "
                               f"false on an isolated camera network")
            service = await super().create_onvif_service(service_name, port_type, read_timeout, write_timeout)
            if not vars(service).get("_checked_tls"):  # a service is created once per address, then reused
                unchecked = service._session, service._connector
                service._connector = TCPConnector(ssl=tls)
                service._session = ClientSession(connector=service._connector, timeout=unchecked[0].timeout)
                service.transport.session = service._session
                vars(service)["_checked_tls"] = True
                await unchecked[0].close()
                await unchecked[1].close()
            return service

    return HttpsOnvifCamera
