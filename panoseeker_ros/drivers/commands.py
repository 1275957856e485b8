"""``panoseeker ptz``: talk to the configured pan-tilt camera without the ROS graph (bring-up and calibration).

The camera is the one the ``camera_node`` section of the params file names (``driver: visca|onvif``,
``profile``, ``host``, ``port``, ``transport``, ``video_source`` …); ``-p key=value`` overrides one.
Angles on this command line are degrees in the core convention: pan right-positive, tilt up-positive.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import yaml

from ..core.config import CameraConfig, ConfigError, config_from_dict, read_ros_parameters
from ..paths import default_params

NODE_SECTION = "/**/camera_node"


def _params(args) -> dict:
    path = Path(args.params) if args.params else default_params()
    params = read_ros_parameters(path, NODE_SECTION)
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"-p {item!r} must be key=value, e.g. -p host=192.168.1.20")
        params[key] = yaml.safe_load(value) if value else ""
    return params


def _open(args):
    """The PtzCamera the params describe, at the stream's own size and the profile's FoV."""
    from .head import PtzError
    from .profile import connection_from_params, load_profile
    from .ptz_camera import DRIVERS, open_ptz_camera
    from .video import VideoError

    params = _params(args)
    driver = params.get("driver", "sim")
    if driver not in DRIVERS:
        raise ConfigError(f"camera_node.driver is {driver!r}; 'ptz' needs a real camera: set driver to one of "
                          f"{', '.join(DRIVERS)} in the params file or pass -p driver=visca")
    conn = connection_from_params(params)
    profile = load_profile(conn.profile)
    graph = config_from_dict(params).camera
    camera = CameraConfig(profile.fov_deg, profile.image_size[0], profile.image_size[1], graph.tilt_min_deg,
                          graph.tilt_max_deg)

    def say(kind: str, text: str) -> None:
        if kind != "back":
            print(f"  [{kind}] {text}")
    try:
        return open_ptz_camera(driver, conn, profile, camera, on_event=say), conn
    except (PtzError, VideoError) as exc:
        raise ConfigError(str(exc)) from None


def _pose(p) -> str:
    return f"pan {p.theta:+.2f}° tilt {p.phi:+.2f}°"


def cmd_ptz(args) -> int:
    from .head import PtzError
    from .video import VideoError

    cam, conn = _open(args)
    try:
        if args.action == "status":
            head = cam.head()
            print(f"camera: {head.describe()}")
            print(f"position (read back): {_pose(cam.read_pose())}")
            p = cam.profile
            print(f"profile {p.name}: {p.units_per_deg[0]:g}/{p.units_per_deg[1]:g} units/deg, pan "
                  f"{p.pan_limits_deg[0]:g}..{p.pan_limits_deg[1]:g}°, tilt {cam.tilt_limits[0]:g}.."
                  f"{cam.tilt_limits[1]:g}°, FoV {p.fov_deg[0]:g}°×{p.fov_deg[1]:g}°")
            frame = cam.frames.frame_after(0.0, cam.frame_timeout_s)
            size = (frame.rgb.shape[1], frame.rgb.shape[0])
            note = ("" if size == p.image_size else
                    f" (profile says {p.image_size[0]}x{p.image_size[1]}: frames are resized)")
            print(f"video {cam.frames.name}: {size[0]}x{size[1]}{note}")
        elif args.action == "look":
            cam.look(args.pan, args.tilt)
            r = cam.last
            print(f"asked {_pose(r.target)}; reached {_pose(r.reached)} in {r.settle_s:.2f} s"
                  f"{'' if r.settled else ' (NOT settled: timeout)'}; frame {r.frame_wait_s:.2f} s after settling")
        elif args.action == "home":
            print(f"home: {_pose(cam.home())}")
        elif args.action == "snapshot":
            from ..core.visualize import save_rgb

            save_rgb(args.out, cam.snapshot())
            print(f"wrote {args.out} at {_pose(cam.read_pose())}")
        elif args.action == "calibrate":
            return _calibrate(cam, args)
        return 0
    except (PtzError, VideoError) as exc:
        raise ConfigError(str(exc)) from None
    finally:
        cam.close()


def _calibrate(cam, args) -> int:
    from .calibration import CalibrationError, calibrate_head
    from .profile import save_profile

    p = cam.profile
    step = (args.step, args.step * p.fov_deg[1] / p.fov_deg[0]) if args.step else None
    try:
        pan, tilt = calibrate_head(cam, step)
    except CalibrationError as exc:
        raise ConfigError(str(exc)) from None
    print(f"calibration of profile {p.name} (image {p.image_size[0]}x{p.image_size[1]}):")
    for i, c in enumerate((pan, tilt)):
        r = c.rotation
        print(f"  {c.axis:4s}: turned {c.units:+.0f} units; images say {r.angle_deg:+.2f}° -> {c.units_per_deg:.2f} "
              f"units/deg (profile {p.units_per_deg[i]:g}, x{c.units_per_deg / p.units_per_deg[i]:.3f}); FoV "
              f"{c.fov_deg:.1f}° (profile {p.fov_deg[i]:g}°)  [{r.matches} matches, rms {r.rms_px:.2f} px]")
        if r.angle_deg * c.commanded_deg < 0:
            print(f"  {c.axis}: the image turned the other way: set sign[{i}] to {-p.sign[i]} in profile {p.name}")
    if args.write:
        measured = dataclasses.replace(p, units_per_deg=(round(pan.units_per_deg, 3), round(tilt.units_per_deg, 3)),
                                       fov_deg=(round(pan.fov_deg, 2), round(tilt.fov_deg, 2)),
                                       source=f"panoseeker ptz calibrate from profile {p.name}")
        print(f"wrote {save_profile(measured, args.write)}; use it with profile: {args.write}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("ptz", help="talk to the configured pan-tilt camera (bring-up, calibration)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", help="params YAML (default: the shipped config/seek.yaml)")
    p.add_argument("-p", dest="set", action="append", metavar="KEY=VALUE",
                   help="override a camera_node parameter, e.g. -p driver=visca -p host=192.168.1.20")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("status", help="camera, read-back position, profile and video")
    look = actions.add_parser("look", help="point the camera (degrees: pan right-positive, tilt up-positive)")
    look.add_argument("pan", type=float, metavar="PAN_DEG")
    look.add_argument("tilt", type=float, metavar="TILT_DEG")
    actions.add_parser("home", help="the head's home position")
    snap = actions.add_parser("snapshot", help="save the current frame")
    snap.add_argument("out", metavar="OUT.png")
    cal = actions.add_parser("calibrate", help="measure units/degree and field of view from feature matches")
    cal.add_argument("--step", type=float, help="pan turn [deg] (tilt: scaled by the FoV ratio); default FoV/3")
    cal.add_argument("--write", metavar="PROFILE.yaml", help="save a profile with the measured values")
    p.set_defaults(func=cmd_ptz)
