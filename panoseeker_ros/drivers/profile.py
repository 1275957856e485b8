"""Calibration profiles of pan-tilt heads (``config/ptz/*.yaml``) and the connection settings of one camera.

A profile says how a head's device units map to the core angles, where it may point, what its lens
sees at the configured zoom and when a move counts as finished. A connection says how to reach one
camera (address, transport, video source). Both come from YAML and fail with one line naming the key
and the fix.
"""
from __future__ import annotations

import dataclasses
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..core.config import ConfigError
from ..paths import share_dir

PROFILE_SUFFIX = ".yaml"
VISCA_MAX_SPEED = (0x18, 0x17)  # highest pan / tilt speed codes VISCA defines (heads may accept less)


@dataclass(frozen=True)
class PtzProfile:
    """One head model at one zoom. Angles in degrees (θ right-positive, ϕ up-positive)."""

    name: str = "unnamed"
    units_per_deg: tuple[float, float] = (14.4, 14.4)  # VISCA position counts per degree (pan, tilt)
    sign: tuple[int, int] = (1, 1)  # +1: growing device units turn right (pan) / up (tilt)
    pan_limits_deg: tuple[float, float] = (-170.0, 170.0)  # mechanical pan range; never commanded beyond
    tilt_limits_deg: tuple[float, float] = (-30.0, 90.0)
    fov_deg: tuple[float, float] = (60.7, 36.5)  # lens field of view at the configured zoom (h, v)
    image_size: tuple[int, int] = (1920, 1080)  # stream frame size [px] (w, h)
    speed: tuple[int, int] = (24, 20)  # VISCA speed codes (pan 1..24, tilt 1..20 on most heads)
    onvif_pan_deg: tuple[float, float] = (-170.0, 170.0)  # ONVIF: degrees at the ends of the x range
    onvif_tilt_deg: tuple[float, float] = (-30.0, 90.0)  # ONVIF: degrees at the ends of the y range
    settle_tolerance_deg: float = 0.5  # read-back within this of the target, twice in a row: settled
    settle_timeout_s: float = 10.0  # give up waiting (the view is taken where the head is)
    poll_period_s: float = 0.05  # position inquiry period while settling
    frame_delay_s: float = 0.2  # a frame counts only when received this long after the head settled
    source: str = ""  # where the numbers come from

    def to_units(self, theta: float, phi: float) -> tuple[int, int]:
        """Core angles [deg] to device position counts (pan, tilt)."""
        return (round(self.sign[0] * theta * self.units_per_deg[0]),
                round(self.sign[1] * phi * self.units_per_deg[1]))

    def to_degrees(self, pan_units: float, tilt_units: float) -> tuple[float, float]:
        """Device position counts to core angles [deg] (θ, ϕ)."""
        return (self.sign[0] * pan_units / self.units_per_deg[0], self.sign[1] * tilt_units / self.units_per_deg[1])


@dataclass(frozen=True)
class PtzConnection:
    """How to reach one camera; the ``camera_node`` parameters of the same names (and ``panoseeker ptz``)."""

    profile: str = "ptzoptics_20x"  # a name in config/ptz/ or a path to a profile YAML
    host: str = "192.168.100.88"  # camera address (visca over UDP/TCP, onvif)
    port: int = 0  # 0: the transport's default (UDP 52381, TCP 5678, ONVIF 80)
    transport: str = "udp"  # visca: udp (Sony VISCA over IP) | udp_raw (VISCA bytes in UDP) | tcp (plain VISCA) | serial
    serial_device: str = "/dev/ttyUSB0"  # visca over serial: device or pyserial URL
    baudrate: int = 9600
    visca_address: int = 1  # VISCA camera address 1..7
    onvif_user: str = "admin"
    onvif_password_file: str = ""  # a file (mode 0600) holding the ONVIF password; see onvif_password()
    onvif_https: bool = False  # ONVIF over HTTPS, the camera's certificate and host name checked (port 443)
    onvif_ca_file: str = ""  # PEM: the CA (or the camera's self-signed certificate) to trust; "": the system's
    video_source: str = ""  # OpenCV VideoCapture source: rtsp://…, http://…, a device number, a file
    timeout_s: float = 1.0  # one reply from the camera [s]
    retry_s: float = 0.5  # first reconnect attempt after a fault [s]; doubles on each failure ...
    retry_max_s: float = 10.0  # ... up to this [s]


TRANSPORTS = ("udp", "udp_raw", "tcp", "serial")
DESCRIPTIONS = {
    "profile": "calibration profile: a name in config/ptz/ or a YAML path",
    "host": "camera IP address or host name",
    "port": "camera port; 0 = default (VISCA UDP and raw UDP 52381, TCP 5678, ONVIF 80, ONVIF over HTTPS 443)",
    "transport": "VISCA transport: udp (VISCA over IP) | udp_raw (raw VISCA in UDP) | tcp | serial",
    "serial_device": "VISCA serial device or pyserial URL",
    "baudrate": "VISCA serial baud rate",
    "visca_address": "VISCA camera address 1..7",
    "onvif_user": "ONVIF user name",
    "onvif_password_file": "file (mode 0600) with the ONVIF password; empty: environment variable "
                           "PANOSEEKER_ONVIF_PASSWORD",
    "onvif_https": "ONVIF over HTTPS: the camera's certificate and host name are checked; services it "
                   "advertises over plain http are refused",
    "onvif_ca_file": "with onvif_https: PEM file of the CA (or the camera's self-signed certificate) to trust; "
                     "empty: the system's CAs",
    "video_source": "video for cv2.VideoCapture: rtsp://..., http://..., a device number or a file",
    "timeout_s": "wait for one camera reply [s]",
    "retry_s": "first reconnect attempt after a camera fault [s]; doubles on each failure",
    "retry_max_s": "longest wait between reconnect attempts [s]",
}


ONVIF_PASSWORD_ENV = "PANOSEEKER_ONVIF_PASSWORD"


def onvif_password(conn: PtzConnection, environ=None) -> str:
    """The ONVIF password: the environment variable ``PANOSEEKER_ONVIF_PASSWORD``, else the first line of
    ``onvif_password_file``, which must be readable by its owner only (mode 0600). Never a ROS parameter: any
    node on the graph may read parameters. Errors name the file, never the secret."""
    environ = os.environ if environ is None else environ
    if environ.get(ONVIF_PASSWORD_ENV):
        return environ[ONVIF_PASSWORD_ENV]
    if not conn.onvif_password_file:
        return ""
    path = Path(conn.onvif_password_file).expanduser()
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"ONVIF password file {path} is readable by others (mode {stat.S_IMODE(mode):04o}); "
                              f"run: chmod 600 {path}")
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"ONVIF password file {path}: {exc.strerror or exc}; set 'onvif_password_file' to a "
                          f"readable file (mode 0600) or set {ONVIF_PASSWORD_ENV}") from None
    return lines[0] if lines else ""


def redact(text: str, *secrets: str) -> str:
    """``text`` with every non-empty secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def shipped_profiles() -> dict[str, Path]:
    """The profiles in config/ptz/, by name."""
    return {p.stem: p for p in sorted((share_dir() / "config" / "ptz").glob("*" + PROFILE_SUFFIX))}


def _typed(cls, values: dict, where: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping of keys to values; check the YAML indentation")
    defaults = cls()
    known = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key '{key}'; known keys: {', '.join(sorted(known))}")
        default = getattr(defaults, key)
        try:
            if isinstance(default, tuple):
                if not isinstance(value, (list, tuple)) or len(value) != len(default):
                    raise ValueError
                out[key] = tuple(type(d)(v) for d, v in zip(default, value))
            elif isinstance(default, str):
                out[key] = str(value)
            elif isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ValueError
                out[key] = value
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError
            else:
                out[key] = type(default)(value)
        except (TypeError, ValueError):
            shape = f"a list of {len(default)} numbers" if isinstance(default, tuple) else type(default).__name__
            raise ConfigError(f"{where}: '{key}' must be {shape}, got {value!r}") from None
    return cls(**out)


def check_profile(p: PtzProfile, where: str) -> PtzProfile:
    """The profile when its values make sense; otherwise one line naming the key."""
    def bad(key, why):
        return ConfigError(f"{where}: '{key}' {why}")
    if min(p.units_per_deg) <= 0:
        raise bad("units_per_deg", f"must be positive, got {list(p.units_per_deg)}")
    if any(s not in (-1, 1) for s in p.sign):
        raise bad("sign", f"must be [±1, ±1], got {list(p.sign)}")
    for key in ("pan_limits_deg", "tilt_limits_deg"):
        lo, hi = getattr(p, key)
        span = 180.0 if key == "pan_limits_deg" else 90.0
        if not -span <= lo < hi <= span:
            raise bad(key, f"must be [min, max] with -{span:g} <= min < max <= {span:g}, got [{lo}, {hi}]")
    if not all(1 <= code <= top for code, top in zip(p.speed, VISCA_MAX_SPEED)):
        raise bad("speed", f"must be VISCA speed codes [pan 1..{VISCA_MAX_SPEED[0]}, tilt 1..{VISCA_MAX_SPEED[1]}], "
                           f"got {list(p.speed)}")
    for key in ("onvif_pan_deg", "onvif_tilt_deg"):
        lo, hi = getattr(p, key)
        if lo == hi:
            raise bad(key, f"must be [degrees at the range's min, at its max], two different angles; got [{lo}, {hi}]")
    if not all(0 < f < 180 for f in p.fov_deg):
        raise bad("fov_deg", f"must be two angles in (0, 180) degrees, got {list(p.fov_deg)}")
    if min(p.image_size) <= 0:
        raise bad("image_size", f"must be positive pixels, got {list(p.image_size)}")
    for key in ("settle_tolerance_deg", "settle_timeout_s", "poll_period_s"):
        if getattr(p, key) <= 0:
            raise bad(key, f"must be positive, got {getattr(p, key)}")
    if p.frame_delay_s < 0:
        raise bad("frame_delay_s", f"must be >= 0, got {p.frame_delay_s}")
    return p


def load_profile(name_or_path: str) -> PtzProfile:
    """A shipped profile by name, or a profile YAML by path."""
    shipped = shipped_profiles()
    path = shipped.get(name_or_path) or Path(name_or_path).expanduser()
    if not path.is_file():
        raise ConfigError(f"PTZ profile '{name_or_path}' is neither a shipped profile ({', '.join(shipped)}) "
                          f"nor a YAML file; set 'profile' to one of them")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        raise ConfigError(f"PTZ profile {path} is not valid YAML; fix its syntax") from None
    if isinstance(doc, dict) and "name" not in doc:
        doc = {"name": path.stem, **doc}
    return check_profile(_typed(PtzProfile, doc, f"PTZ profile {path}"), f"PTZ profile {path}")


def save_profile(profile: PtzProfile, path) -> Path:
    """Write a profile YAML (as ``panoseeker ptz calibrate --write`` does)."""
    path = Path(path)
    doc = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(profile).items()}
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return path


def connection_from_params(params: dict, where: str = "camera_node") -> PtzConnection:
    """The connection settings from a parameter mapping (other keys are ignored)."""
    names = {f.name for f in dataclasses.fields(PtzConnection)}
    conn = _typed(PtzConnection, {k: v for k, v in params.items() if k in names}, where)
    if conn.transport not in TRANSPORTS:
        raise ConfigError(f"{where}: 'transport' = {conn.transport!r}; choose one of {', '.join(TRANSPORTS)}")
    if not 1 <= conn.visca_address <= 7:
        raise ConfigError(f"{where}: 'visca_address' = {conn.visca_address} must be 1..7 (the camera's menu shows it)")
    for key in ("timeout_s", "retry_s", "retry_max_s"):
        if getattr(conn, key) <= 0:
            raise ConfigError(f"{where}: '{key}' must be positive, got {getattr(conn, key)}")
    return conn


def connection_fields() -> list[dataclasses.Field]:
    """The connection's fields, in order (the node declares one parameter per field)."""
    return list(dataclasses.fields(PtzConnection))


__all__ = ["PtzProfile", "PtzConnection", "onvif_password", "redact", "ONVIF_PASSWORD_ENV", "load_profile", "save_profile", "shipped_profiles", "check_profile",
           "connection_from_params", "connection_fields", "TRANSPORTS", "DESCRIPTIONS"]
