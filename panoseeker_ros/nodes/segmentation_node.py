"""segmentation_node: a box → mask backend. For each ``target`` (a box on the view with the same header
stamp) it segments that view and publishes the mask with the target's header; for each
``segmentation/track`` (a view's header) it follows the object of the last target into that view (the
official alignment) and publishes its mask with that header. Which boxes to segment and which views to
track into is the episode's business, in the policy node. Lifecycle node: the segmenter loads on
activate and is freed on deactivate.

Topics (relative to the namespace; QoS names from ``interface.py``)
    subscribes target               geometry_msgs/PolygonStamped command  box in view pixels, header of its view
               segmentation/track   std_msgs/Header              command  track the last target into this view
               segmentation/view      sensor_msgs/Image rgb8     image  ┐ the view a target or track request is on
               segmentation/view_pose sensor_msgs/JointState     command┘ and its pose, sent by the policy node with
                                                                          the request (only the views it is asked
                                                                          about, never the camera's stream); matched
                                                                          by stamp
    publishes  segmentation/mask    sensor_msgs/Image mono8      image    the target's mask (255 = target)
               segmentation/status  std_msgs/String (JSON)       status   {state: active | inactive, backend, message,
                                                                          failed_stamp: the target that failed}
Parameters (read-only unless marked live)
    autostart, backend (sam3 | oracle: the simulated scene's ground-truth mask), model, device
    view_timeout_s (live): wait for the view a target is on [s]
    dataset, split, episode_id: the simulated episode (oracle backend)
    camera.*, episode.*, reward.*, alignment.*, segmentation.* (read-only, shared; segmentation.point_prompts:
        entropy adds SAM-3's own entropy-ranked points; a target's extra polygon points are VBR point prompts)
"""
from __future__ import annotations

import sys
import threading
import time

from geometry_msgs.msg import PolygonStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.duration import Duration
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Header, String

from ..core.config import ConfigError
from ..core.dataset import DatasetError
from ..core.environment import segment, track
from ..models.registry import SEGMENTERS, make_segmenter, needs_truth
from . import interface as api
from .conversions import (MessageError, image_to_rgb, joint_state_to_pose, mask_to_image, polygon_points,
                          polygon_to_box, stamp_ns)
from .params import declare, declare_seek_config, declare_sim_episode
from .runtime import AutostartMixin, WarnOnce, free_accelerator_memory, load_sim_env, resolve_model_param, run_node
from .sync import ExactTimeSync

VIEW_BUFFER = 8  # recent (view, pose) pairs kept to find the one a box was drawn on


class SegmentationNode(AutostartMixin, LifecycleNode):
    def __init__(self):
        super().__init__("segmentation_node")
        self.config = declare_seek_config(self)
        intr = self.config.camera.intrinsics()
        self.view_size = (intr.width, intr.height)
        self.dataset, self.episode_id, self.split = declare_sim_episode(self)
        declare(self, "autostart", True, "configure and activate at start-up")
        self.backend = declare(self, "backend", "oracle", "segmenter backend", choices=SEGMENTERS)
        self.model = declare(self, "model", "", "sam3: model directory, or hub id pinned as org/name@<commit>")
        self.device = declare(self, "device", "", "sam3: torch device; empty: automatic")
        self.view_timeout_s = declare(self, "view_timeout_s", 5.0, "wait for the view a target is on [s]",
                                      lo=0.1, hi=600.0, on_change=lambda v: setattr(self, "view_timeout_s", v))
        self.warn_once = WarnOnce(self)

        self.lock = threading.Lock()
        self.segmenter = None
        self.active = False
        self.views: dict[int, tuple] = {}  # stamp → (image, joints)
        # the newest request waiting (a target box, or a view header to track into) and when it came
        self.target: tuple[PolygonStamped | Header, float] | None = None

        inference = MutuallyExclusiveCallbackGroup()
        io = MutuallyExclusiveCallbackGroup()
        self.pub_mask = self.create_publisher(Image, api.MASK, api.IMAGE_QOS)
        self.pub_status = self.create_publisher(String, api.SEGMENTATION_STATUS, api.STATUS_QOS)
        self.sync = ExactTimeSync(2, self._on_pair)
        self.create_subscription(Image, api.SEGMENTATION_VIEW, self._on_image, api.IMAGE_QOS, callback_group=io)
        self.create_subscription(JointState, api.SEGMENTATION_POSE, lambda m: self.sync.add(1, m), api.COMMAND_QOS,
                                 callback_group=io)
        self.create_subscription(PolygonStamped, api.TARGET, self._on_target, api.COMMAND_QOS, callback_group=io)
        self.create_subscription(Header, api.TRACK, self._on_target, api.COMMAND_QOS, callback_group=io)
        self.work = self.create_guard_condition(self._work, callback_group=inference)
        self.create_timer(0.25, self._tick, callback_group=io)
        self._status("inactive", f"backend {self.backend} not loaded yet")

    # ------------------------------------------------------------------ lifecycle

    def on_configure(self, state) -> TransitionCallbackReturn:
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        try:
            self.segmenter = self._load()
        except (ConfigError, DatasetError) as exc:
            return self._activation_failed(str(exc))
        except Exception as exc:  # noqa: BLE001 - a backend failing to load must not kill the node
            first = str(exc).splitlines()[0] if str(exc) else ""
            return self._activation_failed(f"segmentation_node: backend {self.backend} failed to load: "
                                           f"{type(exc).__name__}: {first}")
        self.active = True
        self._status("active", f"segmenter {self.backend} ready")
        return super().on_activate(state)

    def _activation_failed(self, text: str) -> TransitionCallbackReturn:
        self.get_logger().error(text)
        self._status("inactive", text, log=False)
        return TransitionCallbackReturn.FAILURE

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self.active = False
        with self.lock:
            self.target = None
        self.segmenter = None
        free_accelerator_memory()
        self._status("inactive", "deactivated; the segmenter was unloaded")
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self.active = False
        self.segmenter = None
        return TransitionCallbackReturn.SUCCESS

    def farewell(self) -> None:
        self.active = False
        self._status("inactive", "segmentation_node is shutting down")
        self.pub_status.wait_for_all_acked(Duration(seconds=2.0))

    def _load(self):
        who = self.get_name()
        if needs_truth("segmenter", self.backend):
            if not self.dataset:
                raise ConfigError(f"{who}: backend {self.backend} reads the simulated scene's ground truth; set "
                                  f"parameter 'dataset' (a dataset.json) or use backend sam3")
            return make_segmenter(self.backend, self.config, load_sim_env(self.dataset, self.episode_id,
                                                                          self.config, who, self.split).truth)
        opts = {"model": resolve_model_param(who, "model", self.model, "a local SAM-3 model directory",
                                             required=True),
                "device": self.device or None}
        return make_segmenter(self.backend, self.config, **{k: v for k, v in opts.items() if v is not None})

    def _status(self, state: str, message: str, log: bool = True, **extra) -> None:
        self.pub_status.publish(String(data=api.dumps({"state": state, "backend": self.backend, "message": message,
                                                       **extra})))
        if log:
            self.get_logger().info(f"{state}: {message}")

    def _failed(self, stamp: int, message: str) -> None:
        """Tell the policy that the target stamped ``stamp`` gets no mask, and why."""
        self.get_logger().warning(f"target at {stamp}: {message}")
        self._status("active" if self.active else "inactive", message, log=False, failed_stamp=stamp)

    # ------------------------------------------------------------------ inputs (io group)

    def _on_image(self, msg: Image) -> None:
        if self.warn_once.image_ok(msg, self.view_size, "an image", api.SEGMENTATION_VIEW):
            self.sync.add(0, msg)

    def _on_pair(self, stamp: int, image: Image, joints: JointState) -> None:
        with self.lock:
            self.views[stamp] = (image, joints)
            for old in sorted(self.views)[:-VIEW_BUFFER]:
                del self.views[old]
            waiting = self.target is not None
        if waiting:
            self.work.trigger()

    def _on_target(self, msg: PolygonStamped | Header) -> None:
        stamp = stamp_ns(_header(msg).stamp)
        if not self.active:
            return self._failed(stamp, "segmentation_node is not active; activate it (autostart:=true or "
                                       "'ros2 lifecycle set segmentation_node activate')")
        with self.lock:
            self.target = (msg, time.monotonic())  # a newer target replaces one still waiting
        self.work.trigger()

    def _tick(self) -> None:
        if self.target is not None:
            self.work.trigger()  # lets _work notice a view that never came

    # ------------------------------------------------------------------ the work (inference group)

    def _work(self) -> None:
        with self.lock:
            if self.target is None:
                return
            msg, since = self.target
            stamp = stamp_ns(_header(msg).stamp)
            pair = self.views.get(stamp)
            if pair is None and time.monotonic() - since <= self.view_timeout_s:
                return  # the view is still on its way
            self.target = None
        if pair is None:
            return self._failed(stamp, f"no view stamped like the target arrived within {self.view_timeout_s:g} s")
        try:
            image, joints = pair
            view, pose = image_to_rgb(image, self.view_size), joint_state_to_pose(joints)
            if isinstance(msg, Header):
                mask = track(self.segmenter, view, pose)
            else:
                box = polygon_to_box(msg)
                if box is None:
                    raise MessageError("the target has no points; send the 4 corners of a box in view pixels")
                mask = segment(self.segmenter, view, box, pose, *polygon_points(msg))
        except MessageError as exc:
            return self._failed(stamp, f"bad target: {exc}")
        except Exception as exc:  # noqa: BLE001 - a backend error fails this target, not the node
            return self._failed(stamp, f"the {self.backend} segmenter failed: {type(exc).__name__}: {exc}")
        self.pub_mask.publish(mask_to_image(mask, _header(msg)))


def _header(msg: PolygonStamped | Header) -> Header:
    return msg if isinstance(msg, Header) else msg.header


def main(args=None) -> int:
    return run_node(SegmentationNode, args, threads=3, name="segmentation_node")


if __name__ == "__main__":
    sys.exit(main())
