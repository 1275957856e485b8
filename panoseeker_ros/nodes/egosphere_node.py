"""egosphere_node: integrates every (view, pose) pair into a core
:class:`~panoseeker_ros.core.egosphere.EgoSphere` and publishes the canvas the policy reads.

Topics (relative to the namespace; QoS names from ``interface.py``)
    subscribes camera/image         sensor_msgs/Image rgb8 or bgr8   image
               camera/joint_states  sensor_msgs/JointState           command  (matched to the view by stamp)
    publishes  egosphere/canvas     sensor_msgs/Image rgb8           image    EgoSphere.render(): canvas,
                                                                              30° grid, path, crosshair
               egosphere/explored   sensor_msgs/Image mono8          image    explored pixels (255)
               (both carry the header of the view they integrated)
Services
    egosphere/reset  std_srvs/Trigger  clear the canvas; views stamped before the reset are ignored
Parameters
    camera.*, episode.canvas_width, episode.canvas_height (read-only, shared)
Images of another encoding or size are dropped with one log line.
"""
from __future__ import annotations

import sys

from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import Trigger

from ..core.egosphere import EgoSphere
from . import interface as api
from .conversions import MessageError, image_to_rgb, joint_state_to_pose, mask_to_image, rgb_to_image
from .params import declare_seek_config
from .runtime import WarnOnce, run_node
from .sync import ExactTimeSync


class EgoSphereNode(Node):
    def __init__(self):
        super().__init__("egosphere_node")
        self.config = declare_seek_config(self)
        intr = self.config.camera.intrinsics()
        self.view_size = (intr.width, intr.height)
        self.egosphere = EgoSphere(intr, (self.config.episode.canvas_width, self.config.episode.canvas_height))
        self.warn_once = WarnOnce(self)
        self.reset_ns = 0  # views stamped at or before this belong to the previous episode

        self.pub_canvas = self.create_publisher(Image, api.CANVAS, api.IMAGE_QOS)
        self.pub_explored = self.create_publisher(Image, api.EXPLORED, api.IMAGE_QOS)
        self.sync = ExactTimeSync(2, self._on_pair)
        self.create_subscription(Image, api.IMAGE, self._on_image, api.IMAGE_QOS)
        self.create_subscription(JointState, api.POSE, lambda m: self.sync.add(1, m), api.COMMAND_QOS)
        self.create_service(Trigger, api.EGOSPHERE_RESET, self._on_reset)
        self.get_logger().info(f"EgoSphere {self.egosphere.width}x{self.egosphere.height} ready")

    def _on_image(self, msg: Image) -> None:
        if not self.warn_once.image_ok(msg, self.view_size, "an image", api.IMAGE):
            return
        self.sync.add(0, msg)

    def _on_pair(self, stamp: int, image: Image, joints: JointState) -> None:
        if stamp <= self.reset_ns:
            return
        try:
            view = image_to_rgb(image, self.view_size)
            pose = joint_state_to_pose(joints)
        except MessageError as exc:
            self.warn_once(("pose", str(exc)), f"dropped a pose on {api.POSE}: {exc}")
            return
        self.egosphere.integrate(view, pose)
        self.pub_canvas.publish(rgb_to_image(self.egosphere.render(), image.header))
        self.pub_explored.publish(mask_to_image(self.egosphere.explored, image.header))

    def _on_reset(self, request, response):
        self.reset_ns = self.get_clock().now().nanoseconds
        self.sync.clear()
        self.egosphere.reset()
        response.success = True
        response.message = "EgoSphere cleared"
        return response


def main(args=None) -> int:
    return run_node(EgoSphereNode, args, threads=1, name="egosphere_node")


if __name__ == "__main__":
    sys.exit(main())
