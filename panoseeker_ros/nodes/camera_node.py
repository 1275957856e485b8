"""camera_node: the pan-tilt camera on ROS, behind the core :class:`~panoseeker_ros.core.camera.Camera`
interface (driver ``sim``: views rendered from a panorama; a real PTZ driver plugs in the same way).

Topics (relative to the namespace, default ``/panoseeker``; QoS names from ``interface.py``)
    publishes  camera/image        sensor_msgs/Image rgb8          image    the view
               camera/camera_info  sensor_msgs/CameraInfo          image    its pinhole intrinsics
               camera/joint_states sensor_msgs/JointState          command  pan, tilt [rad, REP-103]
               (all three share one header stamp: the time the view was captured)
               camera/status       std_msgs/String (JSON)          latched  {state: ready | moving | error, message}
    subscribes camera/move         sensor_msgs/JointState          command  relative [Δpan, Δtilt] rad;
                                                                            all zero re-captures the view
               camera/look         sensor_msgs/JointState          command  absolute [pan, tilt] rad
Services
    camera/reset  std_srvs/Trigger  point at the episode's start pose and publish that view
Parameters
    driver (string, read-only): sim
    dataset, episode_id (string, read-only): the simulated episode (scene and start pose)
    panorama (string, read-only): a plain ERP image instead of a dataset episode
    start_pan, start_tilt (double, rad): start pose with ``panorama``
    frame_id (string, applied at run time): header frame of every output
    camera.* (read-only): field of view, size and tilt limits, shared with the other nodes
Every move and look is answered by exactly one view, in the order they arrive. They are clamped to the
tilt limits (pan turns freely); malformed ones (NaN, beyond ±2π) are dropped with one log line.
"""
from __future__ import annotations

import math
import sys

from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from ..core.camera import Camera, PanoramaCamera
from ..core.config import ConfigError
from ..core.dataset import DatasetError, load_rgb
from ..core.geometry import Pose, pan_tilt_to_pose
from . import interface as api
from .conversions import (MessageError, camera_info, header, joint_state_to_move, joint_state_to_pose,
                          pose_to_joint_state, rgb_to_image)
from .params import declare, declare_seek_config, declare_sim_episode
from .runtime import WarnOnce, load_sim_env, run_node

DRIVERS = ("sim",)


def make_camera(node: Node, config, dataset: str, episode_id: str, panorama: str,
                start_pan: float, start_tilt: float) -> tuple[Camera, Pose]:
    """The driver's camera and its start pose."""
    tilt_limits = (config.camera.tilt_min_deg, config.camera.tilt_max_deg)
    if dataset:
        env = load_sim_env(dataset, episode_id, config, node.get_name())
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
        dataset, episode_id = declare_sim_episode(self)
        declare(self, "driver", "sim", "camera driver", choices=DRIVERS)
        panorama = declare(self, "panorama", "", "sim: ERP image when no dataset is given")
        start_pan = declare(self, "start_pan", 0.0, "sim with panorama: start pan [rad]", lo=-math.pi, hi=math.pi)
        start_tilt = declare(self, "start_tilt", 0.0, "sim with panorama: start tilt [rad]", lo=-math.pi / 2,
                             hi=math.pi / 2)
        self.frame_id = declare(self, "frame_id", "camera", "header frame_id of the view, info and pose",
                                on_change=lambda v: setattr(self, "frame_id", v))
        self.camera, self.start_pose = make_camera(self, self.config, dataset, episode_id, panorama,
                                                   start_pan, start_tilt)
        self.warn_once = WarnOnce(self)

        self.pub_image = self.create_publisher(Image, api.IMAGE, api.IMAGE_QOS)
        self.pub_info = self.create_publisher(CameraInfo, api.CAMERA_INFO, api.IMAGE_QOS)
        self.pub_pose = self.create_publisher(JointState, api.POSE, api.COMMAND_QOS)
        self.pub_status = self.create_publisher(String, api.CAMERA_STATUS, api.LATCHED_QOS)
        self.create_subscription(JointState, api.MOVE, self._on_move, api.COMMAND_QOS)
        self.create_subscription(JointState, api.LOOK, self._on_look, api.COMMAND_QOS)
        self.create_service(Trigger, api.CAMERA_RESET, self._on_reset)
        self.look(self.start_pose)
        p = self.camera.pose()
        text = f"sim camera ready at θ={p.theta:.1f}° ϕ={p.phi:.1f}° ({self.intrinsics.width}x{self.intrinsics.height})"
        self.pub_status.publish(String(data=api.dumps({"state": "ready", "message": text})))
        self.get_logger().info(text)

    def look(self, pose: Pose) -> Pose:
        """Point the camera (the driver clamps), publish view + info + pose with one stamp; the pose reached."""
        view = self.camera.look(pose.theta, pose.phi)
        reached = self.camera.pose()
        h = header(self.get_clock().now().to_msg(), self.frame_id)
        self.pub_image.publish(rgb_to_image(view, h))
        self.pub_info.publish(camera_info(self.intrinsics, h))
        self.pub_pose.publish(pose_to_joint_state(reached, h))
        return reached

    def _on_move(self, msg: JointState) -> None:
        try:
            dtheta, dphi = joint_state_to_move(msg)
        except MessageError as exc:
            self.warn_once(("move", str(exc)), f"dropped a message on {api.MOVE}: {exc}")
            return
        current = self.camera.pose()
        reached = self.look(current.moved(dtheta, dphi))
        wanted_phi = current.phi + dphi
        if abs(reached.phi - wanted_phi) > 1e-6:
            self.get_logger().info(f"move Δϕ={dphi:+.1f}° from ϕ={current.phi:.1f}° clamped to ϕ={reached.phi:.1f}° "
                                   f"(tilt limits {self.config.camera.tilt_min_deg:g}.."
                                   f"{self.config.camera.tilt_max_deg:g}°)")

    def _on_look(self, msg: JointState) -> None:
        try:
            pose = joint_state_to_pose(msg, self.camera.pose())
        except MessageError as exc:
            self.warn_once(("look", str(exc)), f"dropped a message on {api.LOOK}: {exc}")
            return
        self.look(pose)

    def _on_reset(self, request, response):
        p = self.look(self.start_pose)
        response.success = True
        response.message = f"camera at the start pose θ={p.theta:.1f}° ϕ={p.phi:.1f}°"
        return response


def main(args=None) -> int:
    return run_node(CameraNode, args, threads=1, name="camera_node")


if __name__ == "__main__":
    sys.exit(main())
