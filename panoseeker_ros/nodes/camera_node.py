"""camera_node: the pan-tilt camera on ROS, behind the core :class:`~panoseeker_ros.core.camera.Camera`
interface (driver ``sim``: views rendered from a panorama; ``visca`` and ``onvif``: a real pan-tilt head,
:class:`~panoseeker_ros.drivers.ptz_camera.PtzCamera`).

Topics (relative to the namespace, default ``/panoseeker``; QoS names from ``interface.py``)
    publishes  camera/image        sensor_msgs/Image rgb8          image    the view
               camera/camera_info  sensor_msgs/CameraInfo          image    its pinhole intrinsics
               camera/joint_states sensor_msgs/JointState          command  pan, tilt [rad, REP-103]
               (all three share one header stamp: the time the view was captured)
               camera/status       std_msgs/String (JSON)          latched  {state: ready | moving | error, message}
                                                                            (sim: ready once; a real head:
                                                                            moving, then ready, per request)
               /diagnostics        diagnostic_msgs/DiagnosticArray  1 Hz    connection, faults, reply latency,
                                                                            settle time, video frame age
    subscribes camera/move         sensor_msgs/JointState          command  relative [Δpan, Δtilt] rad;
                                                                            all zero re-captures the view
               camera/look         sensor_msgs/JointState          command  absolute [pan, tilt] rad
Services
    camera/reset  std_srvs/Trigger  point at the episode's start pose and publish that view
    camera/stop   std_srvs/Trigger  stop the head now: a look under way ends without a view (cancel, shutdown)
Parameters
    driver (string, read-only): sim | visca | onvif
    dataset, split, episode_id (string, read-only): the simulated episode (scene and start pose; with a real
        driver only the start pose, so a fake camera can replay a simulated scene)
    panorama (string, read-only): sim: a plain ERP image instead of a dataset episode
    start_pan, start_tilt (double, rad): start pose when no dataset is given
    profile, host, port, transport, serial_device, baudrate, visca_address, onvif_user, onvif_password_file,
    onvif_https, onvif_ca_file,
    video_source, timeout_s, retry_s, retry_max_s (read-only): visca / onvif, see drivers/profile.py (the
    ONVIF password itself is never a parameter: PANOSEEKER_ONVIF_PASSWORD or the 0600 file)
    max_commands_per_s (read-only): moves, looks and resets beyond this rate are dropped (one log line)
    frame_id (string, applied at run time): header frame of every output
    camera.* (read-only): field of view, size and tilt limits, shared with the other nodes
Every move and look is answered by exactly one view, in the order they arrive (but see the error state
below). They are clamped to the tilt limits (pan turns freely; a real head also to its profile's pan
limits); malformed ones (NaN, beyond ±2π) are dropped with one log line. The published pose is the head's read-back. A move that
does not settle within the profile's timeout is stopped and gets no view (camera/status error). A camera (or video)
that does not answer sets camera/status to error with one log line and leaves that request without a
view; the node retries with back-off (retry_s doubling to retry_max_s) and says ready when the head
and its video answer again. Requests that arrive meanwhile get no view either (one log line per
outage): the client sends its request again on ready, as the policy node does.
"""
from __future__ import annotations

import math
import sys
import time

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from ..core.camera import Camera, PanoramaCamera
from ..core.config import ConfigError
from ..core.dataset import DatasetError, load_dataset, load_rgb
from ..core.geometry import Pose, pan_tilt_to_pose
from ..core.limits import RateLimit
from ..drivers import ptz_camera as ptz
from ..drivers.head import PtzError, PtzStopped
from ..drivers.profile import DESCRIPTIONS, PtzConnection, connection_fields, connection_from_params, load_profile
from ..drivers.video import VideoError
from . import interface as api
from .conversions import (MessageError, camera_info, diagnostic_array, header, joint_state_to_move,
                          joint_state_to_pose, pose_to_joint_state, rgb_to_image)
from .params import declare, declare_seek_config, declare_sim_episode
from .runtime import WarnOnce, load_sim_env, run_node

DRIVERS = ("sim",) + ptz.DRIVERS
CAMERA_FAULTS = (PtzError, VideoError)
DIAGNOSTICS = "/diagnostics"  # absolute: the robot-wide topic monitors (rqt_robot_monitor, aggregators) read
DIAGNOSTICS_PERIOD_S = 1.0


def declare_connection(node: Node) -> PtzConnection:
    """The real drivers' parameters, one per :class:`PtzConnection` field (read-only)."""
    values = {f.name: declare(node, f.name, f.default, DESCRIPTIONS[f.name]) for f in connection_fields()}
    return connection_from_params(values, node.get_name())


def start_pose(node: Node, dataset: str, episode_id: str, start_pan: float, start_tilt: float,
               split: str = "") -> Pose:
    """The dataset episode's start pose, else the start_pan / start_tilt parameters."""
    if not dataset:
        return pan_tilt_to_pose(start_pan, start_tilt)
    try:
        ds = load_dataset(dataset, split or None)
        return (ds.by_id(episode_id) if episode_id else ds.episodes[0]).initial_pose
    except DatasetError as exc:
        raise ConfigError(f"{node.get_name()}: parameter 'dataset' / 'split' / 'episode_id': {exc}") from None


def make_camera(node: Node, config, driver: str, dataset: str, episode_id: str, panorama: str,
                start_pan: float, start_tilt: float, conn: PtzConnection, on_event,
                split: str = "") -> tuple[Camera, Pose]:
    """The driver's camera and its start pose; a real head is opened lazily (its faults are the node's to handle)."""
    if driver != "sim":
        profile = load_profile(conn.profile)
        camera = ptz.open_ptz_camera(driver, conn, profile, config.camera, on_event=on_event, connect_now=False)
        return camera, start_pose(node, dataset, episode_id, start_pan, start_tilt, split)
    tilt_limits = (config.camera.tilt_min_deg, config.camera.tilt_max_deg)
    if dataset:
        env = load_sim_env(dataset, episode_id, config, node.get_name(), split)
        return env.camera, env.spec.initial_pose
    if panorama:
        try:
            cam = PanoramaCamera(load_rgb(panorama), config.camera.intrinsics(), tilt_limits)
        except (DatasetError, ValueError) as exc:
            raise ConfigError(f"{node.get_name()}: parameter 'panorama': {exc}") from None
        return cam, pan_tilt_to_pose(start_pan, start_tilt)
    raise ConfigError(f"{node.get_name()}: the sim driver needs a scene; set parameter 'dataset' (a dataset.json) "
                      f"or 'panorama' (an equirectangular image)")


class CameraNode(Node):
    def __init__(self):
        super().__init__("camera_node")
        self.config = declare_seek_config(self)
        self.intrinsics = self.config.camera.intrinsics()
        dataset, episode_id, split = declare_sim_episode(self)
        self.driver = declare(self, "driver", "sim", "camera driver", choices=DRIVERS)
        panorama = declare(self, "panorama", "", "sim: ERP image when no dataset is given")
        start_pan = declare(self, "start_pan", 0.0, "start pan when no dataset is given [rad]", lo=-math.pi,
                            hi=math.pi)
        start_tilt = declare(self, "start_tilt", 0.0, "start tilt when no dataset is given [rad]", lo=-math.pi / 2,
                             hi=math.pi / 2)
        self.frame_id = declare(self, "frame_id", "camera", "header frame_id of the view, info and pose",
                                on_change=lambda v: setattr(self, "frame_id", v))
        self.conn = declare_connection(self)
        self.command_rate = RateLimit(declare(self, "max_commands_per_s", 50.0, "moves, looks and resets per second "
                                              "beyond which they are dropped", lo=0.1, hi=1000.0))
        self.warn_once = WarnOnce(self)
        self.pub_status = self.create_publisher(String, api.CAMERA_STATUS, api.LATCHED_QOS)
        self.state, self.status_message = "", ""
        self.report_moves = self.driver != "sim"  # a real head's moves take time; a simulated look does not
        self.dropped = 0  # requests refused during the current outage
        self.retry_s = self.conn.retry_s
        self.retry_timer = None
        self.camera, self.start_pose = make_camera(self, self.config, self.driver, dataset, episode_id, panorama,
                                                   start_pan, start_tilt, self.conn, self._on_driver_event, split)

        self.pub_image = self.create_publisher(Image, api.IMAGE, api.IMAGE_QOS)
        self.pub_info = self.create_publisher(CameraInfo, api.CAMERA_INFO, api.IMAGE_QOS)
        self.pub_pose = self.create_publisher(JointState, api.POSE, api.COMMAND_QOS)
        self.create_subscription(JointState, api.MOVE, self._on_move, api.COMMAND_QOS)
        self.create_subscription(JointState, api.LOOK, self._on_look, api.COMMAND_QOS)
        self.create_service(Trigger, api.CAMERA_RESET, self._on_reset)
        quick = MutuallyExclusiveCallbackGroup()  # never behind a look in progress
        self.create_service(Trigger, api.CAMERA_STOP, self._on_stop, callback_group=quick)
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, DIAGNOSTICS, 10)
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics, callback_group=quick)
        if self.look(self.start_pose) is not None:
            p = self.camera.pose()
            self.get_logger().info(f"{self.driver} camera ready at θ={p.theta:.1f}° ϕ={p.phi:.1f}° "
                                   f"({self.intrinsics.width}x{self.intrinsics.height})")

    def destroy_node(self):
        # a real head: stop it, the frame grabber and the link (no camera yet when its parameters were refused)
        close = getattr(getattr(self, "camera", None), "close", None)
        if close is not None:
            close()
        return super().destroy_node()

    def publish_status(self, state: str, message: str) -> None:
        self.state, self.status_message = state, message
        self.pub_status.publish(String(data=api.dumps({"state": state, "message": message})))

    def look(self, pose: Pose) -> Pose | None:
        """Point the camera (the driver clamps), publish view + info + pose with one stamp; the pose reached,
        or None when the camera failed or is away (then the request gets no view)."""
        if self.retry_timer is not None:  # the camera is away: the client asks again on ready
            if self.dropped == 0:
                self.get_logger().warning("the camera is in the error state: a request is dropped without a view; "
                                          "send it again once camera/status says ready (logged once per outage)")
            self.dropped += 1
            return None
        if self.report_moves:
            self.publish_status("moving", f"to θ={pose.theta:.1f}° ϕ={pose.phi:.1f}°")
        try:
            view = self.camera.look(pose.theta, pose.phi)
        except PtzStopped as exc:
            self.publish_status("ready", str(exc))
            return None
        except CAMERA_FAULTS as exc:
            self._fault(exc)
            return None
        reached = self.camera.pose()
        h = header(self.get_clock().now().to_msg(), self.frame_id)
        self.pub_image.publish(rgb_to_image(view, h))
        self.pub_info.publish(camera_info(self.intrinsics, h))
        self.pub_pose.publish(pose_to_joint_state(reached, h))
        if self.report_moves or self.state != "ready":
            self.publish_status("ready", f"{self.driver} camera at θ={reached.theta:.1f}° ϕ={reached.phi:.1f}°")
        return reached

    def _fault(self, exc: Exception) -> None:
        """Error state, one log line per outage, a retry after the back-off (doubling up to retry_max_s)."""
        first = self.state != "error"
        text = str(exc).splitlines()[0]
        self.publish_status("error", text)
        if first:
            self.get_logger().error(f"camera fault: {text}; retrying every {self.retry_s:g}…"
                                    f"{self.conn.retry_max_s:g} s")
        self.retry_timer = self.create_timer(self.retry_s, self._retry)
        self.retry_s = min(self.retry_s * 2, self.conn.retry_max_s)

    def _retry(self) -> None:
        """Reopen the head and wait for a fresh frame; ready when both answer, else the next back-off."""
        self.destroy_timer(self.retry_timer)
        self.retry_timer = None
        try:
            p = getattr(self.camera, "reconnect", self.camera.pose)()  # the sim camera never goes away
        except CAMERA_FAULTS as exc:
            self._fault(exc)
            return
        self.retry_s, self.dropped = self.conn.retry_s, 0
        text = f"{self.driver} camera answers again at θ={p.theta:.1f}° ϕ={p.phi:.1f}°"
        self.publish_status("ready", text)
        self.get_logger().info(text)

    def _on_driver_event(self, kind: str, text: str) -> None:
        """Driver threads report here: settle timeouts, video lost / back, and stray replies (one line per kind)."""
        if kind == "back":
            self.get_logger().info(text)
            if self.state == "error" and self.retry_timer is None:
                self.publish_status("ready", text)
        elif kind == "lost":
            self.get_logger().warning(text)
            if self.state != "error":
                self.publish_status("error", text)
        elif kind == "settle":
            self.get_logger().warning(text)
        else:
            self.warn_once(("driver", kind), text)

    def _rate_ok(self, what: str) -> bool:
        if self.command_rate.allow(time.monotonic()):
            return True
        self.warn_once(("rate", what), f"dropped a {what}: more than {self.command_rate.per_s:g} camera commands per "
                                       f"second (parameter max_commands_per_s)")
        return False

    def _on_move(self, msg: JointState) -> None:
        try:
            dtheta, dphi = joint_state_to_move(msg)
        except MessageError as exc:
            self.warn_once(("move", str(exc)), f"dropped a message on {api.MOVE}: {exc}")
            return
        if not self._rate_ok("move"):
            return
        current = self.camera.pose()
        wanted = current.moved(dtheta, dphi)
        reached = self.look(wanted)
        target = self.camera.clamp(wanted.theta, wanted.phi)  # what was commanded: the read-back also rounds
        if reached is not None and abs(target.phi - wanted.phi) > 1e-6:
            lo, hi = self.camera.tilt_limits
            self.get_logger().info(f"move Δϕ={dphi:+.1f}° from ϕ={current.phi:.1f}° clamped to "
                                   f"ϕ={target.phi:.1f}° (tilt limits {lo:g}..{hi:g}°)")

    def _on_look(self, msg: JointState) -> None:
        if not self._rate_ok("look"):
            return
        try:
            pose = joint_state_to_pose(msg, self.camera.pose())
        except MessageError as exc:
            self.warn_once(("look", str(exc)), f"dropped a message on {api.LOOK}: {exc}")
            return
        self.look(pose)

    def _on_stop(self, request, response):
        stop = getattr(self.camera, "stop", None)  # the simulated camera never moves between requests
        try:
            if stop is not None:
                stop()
        except CAMERA_FAULTS as exc:
            response.success, response.message = False, f"could not stop the head: {str(exc).splitlines()[0]}"
            return response
        response.success, response.message = True, f"{self.driver} camera stopped"
        return response

    def _publish_diagnostics(self) -> None:
        health = getattr(self.camera, "health", lambda: {"connected": True})()
        hardware = self.driver if self.driver == "sim" else f"{self.driver} {self.conn.host} ({self.conn.profile})"
        self.pub_diagnostics.publish(diagnostic_array(
            self.get_clock().now().to_msg(), f"{self.get_fully_qualified_name()}: camera", hardware,
            self.state or "starting", api.echo(self.status_message), health))

    def _on_reset(self, request, response):
        if not self._rate_ok("reset"):
            response.success, response.message = False, "too many camera commands; try again in a second"
            return response
        p = self.look(self.start_pose)
        response.success = p is not None
        response.message = (f"camera at the start pose θ={p.theta:.1f}° ϕ={p.phi:.1f}°" if p is not None else
                            "the camera is in the error state (see camera/status); call camera/reset again once "
                            "it says ready")
        return response


def main(args=None) -> int:
    return run_node(CameraNode, args, threads=2, name="camera_node")  # stop and diagnostics beside a look


if __name__ == "__main__":
    sys.exit(main())
