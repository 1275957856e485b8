"""The one place where ROS messages become core objects and back.

* sensor_msgs/Image ↔ RGB uint8 (H, W, 3) numpy arrays: ``rgb8`` is taken without a copy, ``bgr8`` is
  converted, everything else is refused with a :class:`MessageError` naming the encoding and the fix.
* sensor_msgs/CameraInfo from core :class:`~panoseeker_ros.core.geometry.Intrinsics`.
* sensor_msgs/JointState (joints ``pan`` and ``tilt``, radians, REP-103) ↔ core poses (degrees),
  through :mod:`panoseeker_ros.core.geometry`'s pan/tilt functions.
* geometry_msgs/PolygonStamped ↔ a pixel box (x1, y1, x2, y2): its corners have z = 0; point prompts
  (VBR) follow as more points with z = +1 (on the object) or z = -1 (off it).
* builtin_interfaces/Time ↔ seconds / nanoseconds.
"""
from __future__ import annotations

import array
import math

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point32, PolygonStamped
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Header

from ..core.geometry import (Intrinsics, Pose, joint_delta_from_move, move_from_joint_delta, pan_tilt_to_pose,
                             pose_to_pan_tilt)
from .interface import JOINTS


class MessageError(ValueError):
    """A message the graph cannot use; the text is one line naming the problem and the fix."""


MAX_ANGLE_RAD = 2.0 * math.pi  # one full turn: any joint angle or move beyond it is a mistake, not a request


# ---------------------------------------------------------------------------------------------
# Time


def stamp_ns(stamp: Time) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def stamp_s(stamp: Time) -> float:
    return stamp_ns(stamp) * 1e-9


def time_msg(ns: int) -> Time:
    return Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


# ---------------------------------------------------------------------------------------------
# Images


def _buffer(arr: np.ndarray) -> array.array:
    """The bytes of a contiguous array as the array.array rosidl keeps (one memcpy, no list)."""
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(arr).data)
    return data


def rgb_to_image(rgb: np.ndarray, header: Header) -> Image:
    """RGB uint8 (H, W, 3) → rgb8 Image with ``header``."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise MessageError(f"expected an RGB uint8 (H, W, 3) array, got {rgb.dtype} {rgb.shape}")
    h, w = rgb.shape[:2]
    return Image(header=header, height=h, width=w, encoding="rgb8", is_bigendian=0, step=3 * w, data=_buffer(rgb))


def mask_to_image(mask: np.ndarray, header: Header) -> Image:
    """bool (H, W) → mono8 Image, 255 inside the mask."""
    mono = np.where(np.asarray(mask, dtype=bool), np.uint8(255), np.uint8(0))
    h, w = mono.shape
    return Image(header=header, height=h, width=w, encoding="mono8", is_bigendian=0, step=w, data=_buffer(mono))


def check_image(msg: Image, expect_size: tuple[int, int] | None = None) -> None:
    """Raise :class:`MessageError` unless ``msg`` is an rgb8/bgr8 image (of ``expect_size`` = (width, height))."""
    enc = msg.encoding.lower()
    if enc not in ("rgb8", "bgr8"):
        raise MessageError(f"image encoding {msg.encoding!r} is not supported; publish rgb8 or bgr8")
    w, h = int(msg.width), int(msg.height)
    if expect_size is not None and (w, h) != tuple(expect_size):
        raise MessageError(f"image is {w}x{h}, the graph expects {expect_size[0]}x{expect_size[1]}; "
                           f"set camera.width / camera.height in the params file to match the camera")
    if int(msg.step) < 3 * w or len(msg.data) < int(msg.step) * h:
        raise MessageError(f"image data holds {len(msg.data)} bytes, too few for {w}x{h} {enc} "
                           f"with step {msg.step}; the publisher's step or size fields are wrong")


def image_to_rgb(msg: Image, expect_size: tuple[int, int] | None = None) -> np.ndarray:
    """rgb8 / bgr8 Image → RGB uint8 (H, W, 3); rgb8 is a read-only view of the message's buffer.

    ``expect_size`` is (width, height); a different size raises :class:`MessageError`.
    """
    check_image(msg, expect_size)
    w, h, step = int(msg.width), int(msg.height), int(msg.step)
    flat = np.frombuffer(msg.data, dtype=np.uint8, count=step * h)
    img = flat.reshape(h, step)[:, :3 * w].reshape(h, w, 3)
    if msg.encoding.lower() == "bgr8":
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    img.flags.writeable = False
    return img


def image_to_mask(msg: Image) -> np.ndarray:
    """mono8 Image → bool (H, W)."""
    if msg.encoding.lower() != "mono8":
        raise MessageError(f"mask encoding {msg.encoding!r} is not supported; publish mono8")
    w, h, step = int(msg.width), int(msg.height), int(msg.step)
    if len(msg.data) < step * h:
        raise MessageError(f"mask data holds {len(msg.data)} bytes, too few for {w}x{h} mono8")
    return np.frombuffer(msg.data, dtype=np.uint8, count=step * h).reshape(h, step)[:, :w] > 0


# ---------------------------------------------------------------------------------------------
# Camera model


def camera_info(intr: Intrinsics, header: Header) -> CameraInfo:
    """CameraInfo of an undistorted pinhole view with core intrinsics (pixels)."""
    k = [intr.fx, 0.0, intr.cx, 0.0, intr.fy, intr.cy, 0.0, 0.0, 1.0]
    p = [intr.fx, 0.0, intr.cx, 0.0, 0.0, intr.fy, intr.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return CameraInfo(header=header, width=intr.width, height=intr.height, distortion_model="plumb_bob",
                      d=[0.0] * 5, k=[float(v) for v in k], r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                      p=[float(v) for v in p])


# ---------------------------------------------------------------------------------------------
# Joint states


def _joint_values(msg: JointState, what: str) -> dict[str, float]:
    """{joint: position} of a pan/tilt JointState; names optional (then the order is pan, tilt)."""
    names, positions = list(msg.name), list(msg.position)
    if not names:
        if len(positions) > len(JOINTS):
            raise MessageError(f"{what} has {len(positions)} positions and no names; "
                               f"send [pan, tilt] or name the joints")
        names = list(JOINTS[:len(positions)])
    if len(names) != len(positions):
        raise MessageError(f"{what} names {len(names)} joints but has {len(positions)} positions; "
                           f"give one position per name")
    values = {}
    for name, value in zip(names, positions):
        if name not in JOINTS:
            raise MessageError(f"{what} names joint {name!r}; the pan-tilt head's joints are {', '.join(JOINTS)}")
        if not math.isfinite(value):
            raise MessageError(f"{what} sets {name} to {value}; give a finite angle in radians")
        if abs(value) > MAX_ANGLE_RAD:  # checked before any arithmetic: 1e308 must not overflow to inf
            raise MessageError(f"{what} sets {name} to {value:g} rad, beyond one turn (±{MAX_ANGLE_RAD:.4f}); "
                               f"give an angle in radians")
        values[name] = float(value)
    if not values:
        raise MessageError(f"{what} has no positions; send position=[pan, tilt] in radians")
    return values


def pose_to_joint_state(pose: Pose, header: Header) -> JointState:
    pan, tilt = pose_to_pan_tilt(pose)
    return JointState(header=header, name=list(JOINTS), position=[pan, tilt])


def joint_state_to_pose(msg: JointState, current: Pose | None = None) -> Pose:
    """An absolute pan/tilt JointState → core pose; a joint left out keeps its angle in ``current``."""
    values = _joint_values(msg, "joint state")
    if len(values) < 2 and current is None:
        raise MessageError("joint state needs both pan and tilt positions")
    pan0, tilt0 = pose_to_pan_tilt(current) if current is not None else (0.0, 0.0)
    return pan_tilt_to_pose(values.get("pan", pan0), values.get("tilt", tilt0))


def joint_state_to_move(msg: JointState) -> tuple[float, float]:
    """A relative JointState (Δpan, Δtilt rad) → (Δθ, Δϕ) degrees; a joint left out moves 0."""
    values = _joint_values(msg, "move")
    return move_from_joint_delta(values.get("pan", 0.0), values.get("tilt", 0.0))


def move_to_joint_state(dtheta: float, dphi: float, header: Header) -> JointState:
    """(Δθ, Δϕ) degrees → relative JointState (Δpan, Δtilt rad)."""
    dpan, dtilt = joint_delta_from_move(dtheta, dphi)
    return JointState(header=header, name=list(JOINTS), position=[dpan, dtilt])


# ---------------------------------------------------------------------------------------------
# Boxes


def box_to_polygon(box_px, header: Header, points=(), labels=()) -> PolygonStamped:
    """Pixel box (x1, y1, x2, y2) → its 4 corners (z = 0), clockwise from top-left; None → no points. Point
    prompts ((x, y) pixels, labels 1 / 0) follow with z = +1 / -1."""
    msg = PolygonStamped(header=header)
    if box_px is not None:
        x1, y1, x2, y2 = (float(v) for v in box_px)
        msg.polygon.points = [Point32(x=x1, y=y1), Point32(x=x2, y=y1), Point32(x=x2, y=y2), Point32(x=x1, y=y2)]
        msg.polygon.points += [Point32(x=float(x), y=float(y), z=1.0 if label else -1.0)
                               for (x, y), label in zip(points, labels)]
    return msg


def polygon_points(msg: PolygonStamped) -> tuple[list, list]:
    """The point prompts of a target: ((x, y) pixels, labels 1 for z > 0, 0 for z < 0)."""
    pts = [p for p in msg.polygon.points if p.z != 0]
    if not all(math.isfinite(v) for p in pts for v in (p.x, p.y)):
        raise MessageError("target point prompts have non-finite coordinates; send pixel coordinates")
    return [(float(p.x), float(p.y)) for p in pts], [1 if p.z > 0 else 0 for p in pts]


def polygon_to_box(msg: PolygonStamped):
    """PolygonStamped → pixel box (x1, y1, x2, y2) around its corners (z = 0); None when it has none."""
    pts = [p for p in msg.polygon.points if p.z == 0]
    if not pts:
        return None
    xs, ys = [p.x for p in pts], [p.y for p in pts]
    if not all(math.isfinite(v) for v in xs + ys):
        raise MessageError("target polygon has non-finite corners; send pixel coordinates")
    box = (min(xs), min(ys), max(xs), max(ys))
    if box[2] <= box[0] or box[3] <= box[1]:
        raise MessageError(f"target box {box} is empty; send 4 corners spanning a non-empty box in view pixels")
    return box


def header(stamp: Time | None, frame_id: str) -> Header:
    return Header(stamp=stamp if stamp is not None else Time(), frame_id=frame_id)


DIAGNOSTIC_LEVELS = {"ready": DiagnosticStatus.OK, "moving": DiagnosticStatus.OK, "error": DiagnosticStatus.ERROR}


def diagnostic_array(stamp: Time, name: str, hardware_id: str, state: str, message: str,
                     values: dict) -> DiagnosticArray:
    """One DiagnosticStatus (level from ``state``: ready / moving OK, error ERROR, else STALE) with ``values``
    as key/value strings (None: "unknown"; floats to 4 decimals)."""
    def text(v) -> str:
        if v is None:
            return "unknown"
        if isinstance(v, bool):
            return str(v).lower()
        return f"{v:.4f}" if isinstance(v, float) else str(v)
    status = DiagnosticStatus(level=DIAGNOSTIC_LEVELS.get(state, DiagnosticStatus.STALE), name=name,
                              message=f"{state}: {message}"[:256], hardware_id=hardware_id,
                              values=[KeyValue(key=k, value=text(v)) for k, v in values.items()])
    return DiagnosticArray(header=header(stamp, ""), status=[status])
