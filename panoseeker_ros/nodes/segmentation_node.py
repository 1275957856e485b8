"""segmentation_node: turns the policy's STOP box into the final mask with core
:class:`~panoseeker_ros.core.episode.ActiveAlignment` (segment, look so the mask's centroid reaches the
optical centre, re-segment with the box carried over). Lifecycle node: the segmenter loads on activate.

Topics (relative to the namespace; QoS names from ``interface.py``)
    subscribes target               geometry_msgs/PolygonStamped command  box in view pixels, header of its view
               camera/image         sensor_msgs/Image rgb8       image  ┐ views and poses, matched by stamp
               camera/joint_states  sensor_msgs/JointState       command┘
    publishes  camera/look          sensor_msgs/JointState       command  alignment look: absolute [pan, tilt] rad
               segmentation/mask    sensor_msgs/Image mono8      image    the final mask (255 = target)
               segmentation/overlay sensor_msgs/Image rgb8       image    the final view with the mask tinted
               result/pose          sensor_msgs/JointState       latched  the final pose
               result               std_msgs/String (JSON)       latched  {success, found, aligned, pan, tilt, box,
                                                                          mask_pixels, iou, distance, backend,
                                                                          message, stamp}
               (all four carry the header of the view the final mask was segmented on)
Services
    segmentation/cancel  std_srvs/Trigger  abandon the segmentation in progress; boxes stamped earlier are ignored
Parameters
    autostart (bool, read-only): configure + activate at start-up
    backend (string, read-only): sam3 | oracle (oracle: the simulated scene's ground-truth mask)
    model, device (string, read-only): sam3 options; model is a local directory (or a hub id)
    point_prompts (bool, read-only): sam3: add entropy-ranked point prompts inside the box
    align (bool): perform the alignment look (false: segment the STOP view only)
    view_timeout_s, alignment_timeout_s (double, s): wait for the box's view / the view after the look
    dataset, episode_id (string, read-only): the simulated episode (oracle backend; IoU in the result)
    camera.*, episode.*, reward.* (read-only, shared)
``success`` is the benchmark's criterion (distance < reward.tau_deg and IoU ≥ reward.iou_success) when
the ground truth is known, else whether the mask is non-empty.
"""
from __future__ import annotations

import math
import sys
import threading
from dataclasses import dataclass

import numpy as np
from geometry_msgs.msg import PolygonStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Header, String
from std_srvs.srv import Trigger

from ..core.config import ConfigError
from ..core.dataset import DatasetError
from ..core.episode import ActiveAlignment
from ..core.geometry import Pose, pose_to_pan_tilt
from ..core.session import score_against_truth
from ..core.visualize import overlay_mask
from . import interface as api
from .conversions import (MessageError, image_to_rgb, joint_state_to_pose, mask_to_image,
                          polygon_to_box, pose_to_joint_state, rgb_to_image, stamp_ns)
from .params import declare, declare_seek_config, declare_sim_episode
from .runtime import (AutostartMixin, WarnOnce, free_accelerator_memory, load_sim_env, resolve_model_param,
                      run_node)
from .sync import ExactTimeSync

BACKENDS = ("sam3", "oracle")
VIEW_BUFFER = 8  # recent (view, pose) pairs kept to find the one a box was drawn on


@dataclass
class Job:
    """One box being segmented: ``new`` → (``aligning`` → ) done."""

    target: PolygonStamped
    stamp: int
    received_s: float
    phase: str = "new"
    aligner: ActiveAlignment | None = None
    source: tuple | None = None  # (image msg, view, pose) the box was drawn on
    box_px: tuple | None = None
    look_ns: int = 0
    look_s: float = 0.0


class SegmentationNode(AutostartMixin, LifecycleNode):
    def __init__(self):
        super().__init__("segmentation_node")
        self.config = declare_seek_config(self)
        self.intrinsics = self.config.camera.intrinsics()
        self.view_size = (self.intrinsics.width, self.intrinsics.height)
        self.dataset, self.episode_id = declare_sim_episode(self)
        declare(self, "autostart", True, "configure and activate at start-up", read_only=True)
        self.backend = declare(self, "backend", "oracle", "segmenter backend", choices=BACKENDS, read_only=True)
        self.model = declare(self, "model", "", "sam3: model directory (or hub id); empty: the default",
                             read_only=True)
        self.device = declare(self, "device", "", "sam3: torch device; empty: automatic", read_only=True)
        self.point_prompts = declare(self, "point_prompts", False, "sam3: entropy-ranked point prompts",
                                     read_only=True)
        self.align = declare(self, "align", True, "perform the alignment look before the final mask")
        self.view_timeout_s = declare(self, "view_timeout_s", 5.0, "wait for the view a box was drawn on [s]",
                                      lo=0.1, hi=600.0)
        self.alignment_timeout_s = declare(self, "alignment_timeout_s", 10.0, "wait for the view after the look [s]",
                                           lo=0.1, hi=600.0)
        self.warn_once = WarnOnce(self)

        self.lock = threading.Lock()
        self.landed = threading.Condition(self.lock)
        self.segmenter = None
        self.env = None  # the simulated episode, when known: ground truth for oracle and for scoring
        self.active = False
        self.job: Job | None = None
        self.views: dict[int, tuple] = {}  # stamp → (image, joints)
        self.last_view_ns = 0
        self.cancelled_ns = 0

        inference = MutuallyExclusiveCallbackGroup()
        io = MutuallyExclusiveCallbackGroup()
        control = MutuallyExclusiveCallbackGroup()
        self.pub_look = self.create_publisher(JointState, api.LOOK, api.COMMAND_QOS)
        self.pub_mask = self.create_publisher(Image, api.MASK, api.IMAGE_QOS)
        self.pub_overlay = self.create_publisher(Image, api.OVERLAY, api.IMAGE_QOS)
        self.pub_result = self.create_publisher(String, api.RESULT, api.LATCHED_QOS)
        self.pub_result_pose = self.create_publisher(JointState, api.RESULT_POSE, api.LATCHED_QOS)
        self.sync = ExactTimeSync(2, self._on_pair)
        self.create_subscription(Image, api.IMAGE, self._on_image, api.IMAGE_QOS, callback_group=io)
        self.create_subscription(JointState, api.POSE, lambda m: self.sync.add(1, m), api.COMMAND_QOS,
                                 callback_group=io)
        self.create_subscription(PolygonStamped, api.TARGET, self._on_target, api.COMMAND_QOS, callback_group=io)
        self.create_service(Trigger, api.SEGMENTATION_CANCEL, self._on_cancel, callback_group=control)
        self.work = self.create_guard_condition(self._work, callback_group=inference)
        self.create_timer(0.25, self._tick, callback_group=io)

    # ------------------------------------------------------------------ lifecycle

    def on_configure(self, state) -> TransitionCallbackReturn:
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        try:
            self.env, self.segmenter = self._load()
        except (ConfigError, DatasetError) as exc:
            self.get_logger().error(str(exc))
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:  # noqa: BLE001 - a backend failing to load must not kill the node
            first = str(exc).splitlines()[0] if str(exc) else ""
            self.get_logger().error(f"segmentation_node: backend {self.backend} failed to load: "
                                    f"{type(exc).__name__}: {first}")
            return TransitionCallbackReturn.FAILURE
        self.active = True
        self.get_logger().info(f"segmenter {self.backend} ready"
                               + ("" if self.env is None else f" (ground truth of episode {self.env.spec.id})"))
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self.active = False
        with self.lock:
            self.job = None
        self.segmenter = None
        self.env = None
        free_accelerator_memory()
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self.active = False
        self.segmenter = None
        return TransitionCallbackReturn.SUCCESS

    def _load(self):
        from ..models.registry import segmenter_factory

        who = self.get_name()
        env = load_sim_env(self.dataset, self.episode_id, self.config, who) if self.dataset else None
        if self.backend == "oracle":
            if env is None:
                raise ConfigError(f"{who}: backend oracle reads the simulated scene's ground truth; set parameter "
                                  f"'dataset' (a dataset.json) or use backend sam3")
            return env, segmenter_factory("oracle")(env)
        opts = {"model": resolve_model_param(who, "model", self.model, "a local SAM-3 model directory"),
                "device": self.device or None, "point_prompts": self.point_prompts}
        return env, segmenter_factory("sam3", **{k: v for k, v in opts.items() if v is not None})(env)

    # ------------------------------------------------------------------ inputs

    def _on_image(self, msg: Image) -> None:
        if not self.warn_once.image_ok(msg, self.view_size, "an image", api.IMAGE):
            return
        self.sync.add(0, msg)

    def _on_pair(self, stamp: int, image: Image, joints: JointState) -> None:
        with self.lock:
            self.views[stamp] = (image, joints)
            for old in sorted(self.views)[:-VIEW_BUFFER]:
                del self.views[old]
            self.last_view_ns = max(self.last_view_ns, stamp)
            self.landed.notify_all()
            busy = self.job is not None
        if busy:
            self.work.trigger()

    def _on_target(self, msg: PolygonStamped) -> None:
        stamp = stamp_ns(msg.header.stamp)
        if not self.active:
            self.warn_once("inactive", "dropped a target: segmentation_node is not active")
            return
        with self.lock:
            if stamp <= self.cancelled_ns:
                return  # a box from a search that was cancelled
            self.job = Job(msg, stamp, self._now_s())
        self.work.trigger()

    def _on_cancel(self, request, response):
        with self.lock:
            self.cancelled_ns = self.get_clock().now().nanoseconds
            job, self.job = self.job, None
            if job is not None and job.phase == "aligning":
                # the view answering our look may still be on its way: let it land first
                self.landed.wait_for(lambda: self.last_view_ns > job.look_ns, timeout=self.alignment_timeout_s)
        response.success = True
        response.message = "cancelled the segmentation in progress" if job is not None else "nothing in progress"
        return response

    def _tick(self) -> None:
        if self.job is not None:
            self.work.trigger()  # lets _work notice its timeouts

    # ------------------------------------------------------------------ the work (inference group)

    def _work(self) -> None:
        with self.lock:
            job = self.job
        if job is None:
            return
        try:
            if job.phase == "new":
                self._begin(job)
            elif job.phase == "aligning":
                self._finish(job)
        except MessageError as exc:
            self.warn_once(("job", str(exc)), f"dropped a target: {exc}")
            self._publish(job, None, None, None, job.target.header, False, f"bad input: {exc}")
        except Exception as exc:  # noqa: BLE001 - a backend error ends this segmentation, not the node
            self.get_logger().error(f"the {self.backend} segmenter failed: {type(exc).__name__}: {exc}")
            self._publish(job, None, None, None, job.target.header, False,
                          f"the {self.backend} segmenter failed: {type(exc).__name__}: {exc}")

    def _begin(self, job: Job) -> None:
        box_px = polygon_to_box(job.target)
        with self.lock:
            pair = self.views.get(job.stamp)
        if pair is None:
            if box_px is None:  # no target: nothing to segment, the view is only for the picture
                return self._publish(job, None, None, None, job.target.header, False,
                                     "the search ended without a target")
            if self._now_s() - job.received_s > self.view_timeout_s:
                self._publish(job, None, None, None, job.target.header, False,
                              f"no view stamped like the box arrived within {self.view_timeout_s:g} s")
            return
        image, joints = pair
        view, pose = image_to_rgb(image, self.view_size), joint_state_to_pose(joints)
        if box_px is None:
            return self._publish(job, np.zeros(view.shape[:2], bool), view, pose, image.header, False,
                                 "the search ended without a target")
        aligner = ActiveAlignment(self.segmenter, self.intrinsics)
        goal = aligner.start(view, pose, box_px)
        job.aligner, job.source, job.box_px = aligner, (image, view, pose), box_px
        if goal is None or not self.align:
            return self._publish(job, aligner.first_mask, view, pose, image.header, False,
                                 "empty mask: nothing to align" if goal is None else "segmented without alignment")
        self._look(job, goal, image.header.frame_id)

    def _look(self, job: Job, goal: Pose, frame_id: str) -> None:
        """Publish an alignment look; the next view stamped after it answers it."""
        with self.lock:
            if self.job is not job:
                return  # cancelled meanwhile: no look
            job.phase, job.look_s = "aligning", self._now_s()
            job.look_ns = self.get_clock().now().nanoseconds
            self.pub_look.publish(pose_to_joint_state(goal, Header(stamp=self.get_clock().now().to_msg(),
                                                                   frame_id=frame_id)))

    def _finish(self, job: Job) -> None:
        with self.lock:
            after = [s for s in self.views if s > job.look_ns]
            pair = self.views[max(after)] if after else None
        if pair is None:
            if self._now_s() - job.look_s > self.alignment_timeout_s:
                image, view, pose = job.source  # the view the newest mask was segmented on
                looked = job.aligner.looks > 0
                self._publish(job, job.aligner.final_mask if looked else job.aligner.first_mask, view, pose,
                              image.header, looked,
                              f"no view after the alignment look within {self.alignment_timeout_s:g} s; "
                              f"kept the {'last' if looked else 'first'} mask")
            return
        image, joints = pair
        view, pose = image_to_rgb(image, self.view_size), joint_state_to_pose(joints)
        mask = job.aligner.finish(view, pose)
        if job.aligner.carried_box_px is not None:
            job.box_px = job.aligner.carried_box_px
        if job.aligner.next_look is not None:  # the mask is still cut by the border: look once more
            job.source = (image, view, pose)
            return self._look(job, job.aligner.next_look, image.header.frame_id)
        self._publish(job, mask, view, pose, image.header, True, "aligned")

    def _publish(self, job: Job, mask, view, pose: Pose | None, hdr: Header, aligned: bool, message: str) -> None:
        with self.lock:
            if self.job is not job:
                return
            self.job = None
        found = mask is not None and bool(mask.any())
        score = None
        if self.env is not None and pose is not None:
            score = score_against_truth(mask if mask is not None else np.zeros(self.view_size[::-1], bool), pose,
                                        self.env.truth, self.intrinsics, self.config.reward)
            message += f"; IoU {score.iou:.2f}, {score.distance_deg:.1f}° from the target centroid"
        pan, tilt = pose_to_pan_tilt(pose) if pose is not None else (None, None)
        payload = {"success": score.success if score is not None else found, "found": found, "aligned": aligned,
                   "pan": pan, "tilt": tilt, "box": [float(v) for v in job.box_px] if job.box_px else None,
                   "mask_pixels": int(mask.sum()) if mask is not None else 0,
                   "iou": score.iou if score is not None else None,
                   "distance": math.radians(score.distance_deg) if score is not None else None,
                   "backend": self.backend, "message": message, "stamp": stamp_ns(hdr.stamp)}
        if mask is not None:
            self.pub_mask.publish(mask_to_image(mask, hdr))
        if view is not None:
            self.pub_overlay.publish(rgb_to_image(overlay_mask(view, mask) if mask is not None else
                                                  np.array(view), hdr))
        if pose is not None:
            self.pub_result_pose.publish(pose_to_joint_state(pose, hdr))
        self.pub_result.publish(String(data=api.dumps(payload)))
        self.get_logger().info(f"result: {'success' if payload['success'] else 'failure'}: {message}")

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9


def main(args=None) -> int:
    return run_node(SegmentationNode, args, threads=4, name="segmentation_node")


if __name__ == "__main__":
    sys.exit(main())
