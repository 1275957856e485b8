"""policy_node: runs one core :class:`~panoseeker_ros.core.episode.Episode` per instruction and answers its
requests over topics; the episode itself (decisions, EgoSphere, alignment, scoring) is the core's.

    Capture → camera/reset (or a zero move), the next view stamped after it
    Move    → camera/move, the next view          Look → camera/look, the next view
    Decide  → the policy backend (inference thread); a review turn (ACCEPT | REFINE | MOVE) too
    Verify  → the policy backend's yes/no answers on marked points (inference thread; VBR)
    Segment → target (box on a view, VBR points after its corners), the segmentation/mask stamped like that view
    Track   → segmentation/track (the view's header), the segmentation/mask stamped like that view
    Done    → result/mask, result/overlay, result/pose, then result and the final status

Topics (relative to the namespace; QoS names from ``interface.py``)
    subscribes instruction          std_msgs/String             instruction  plain text (gets an id "plain-<start s>-<n>")
                                                                             or {"id", "instruction"}; at most 512
                                                                             characters, max_instructions_per_s
               camera/image         sensor_msgs/Image rgb8      image    ┐ matched by header stamp; a view answers
               camera/joint_states  sensor_msgs/JointState      command  ┘ a request only if stamped after it
               camera/status        std_msgs/String (JSON)      latched  error pauses the search, ready resumes it
               segmentation/mask    sensor_msgs/Image mono8     image    the answer to a target
               segmentation/status  std_msgs/String (JSON)      status   active / inactive / failed targets; its
                                                                         liveliness: a segmentation node that
                                                                         stopped fails the search waiting on it
    publishes  camera/move, camera/look (JointState), target (PolygonStamped), segmentation/track (Header),
               each with its view and pose (segmentation/view, segmentation/view_pose), egosphere/canvas (Image),
               status, feedback, result (String JSON), result/mask, result/overlay, result/pose
Services
    cancel  std_srvs/Trigger  stop the current search (status cancelled, no result) and the head (camera/stop)
    clients: camera/reset, camera/stop
Parameters (read-only unless marked live: ``ros2 param set`` applies those at once)
    autostart, backend (qwen | expert | scan | random), model, adapter, memory, device, decoding, seed
    dataset, split, episode_id: the simulated episode (expert and scan plan on its ground truth; with a dataset
        every result is scored against it)
    reset_camera (live): a new search first returns the camera to its start pose (else it starts where it is)
    observation_timeout_s (live): wait for the view after a camera request (one re-capture, then fail) [s]
    segmentation_timeout_s (live): wait for the mask of a target [s]
    min_step_period_s (live): least time between two decisions; > 0 paces a simulated search for people [s]
    max_instructions_per_s (read-only): instructions beyond this rate are rejected with a status
    alignment.*, segmentation.* (live; the next search uses them), camera.*, episode.*, reward.* (read-only, shared)
Threads: decisions and point questions (the policy's forward passes) run only in the inference group (one
MutuallyExclusiveCallbackGroup under a MultiThreadedExecutor); a view or mask is given to the episode in the
io group where it arrives (the episode waits for it, so no other thread touches it then; no executor hop per
step); instructions, cancel, observations and the watchdog never wait for a forward pass.
"""
from __future__ import annotations

import math
import sys
import threading
import time
from dataclasses import dataclass, field

from geometry_msgs.msg import PolygonStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.duration import Duration
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Header, String
from std_srvs.srv import Trigger

from ..core.config import ConfigError
from ..core.dataset import DatasetError
from ..core.actions import pixels_to_box
from ..core.environment import verify
from ..core.episode import (Capture, Decide, Decision, Done, Episode, EpisodeResult, Frame, Look, Move, Segment,
                            Track, Verify, episode_record)
from ..core.geometry import pose_to_pan_tilt
from ..core.limits import RateLimit
from ..core.visualize import overlay_mask
from ..models.registry import POLICIES, make_policy, needs_truth
from . import interface as api
from .conversions import (MessageError, box_to_polygon, header, image_to_mask, image_to_rgb, joint_state_to_pose,
                          mask_to_image, move_to_joint_state, pose_to_joint_state, rgb_to_image, stamp_ns, time_msg)
from .params import declare, declare_seek_config, declare_sim_episode
from .runtime import AutostartMixin, WarnOnce, free_accelerator_memory, load_sim_env, resolve_model_param, run_node
from .sync import ExactTimeSync

ENDINGS = ("preempted", "cancelled", "done", "failed")  # a search ends with exactly one of these


@dataclass
class Search:
    """One instruction's search as the node drives it: the core episode and the request in flight."""

    episode: Episode
    id: str | None
    instruction: str
    number: int
    request: object = None  # the episode's pending request
    sent_ns: int = 0  # when it went out: only answers stamped later count (0: not sent yet)
    sent_s: float = 0.0  # the same on the monotonic clock, for timeouts
    queued_s: float = 0.0  # when a camera request started to wait (camera busy, pacing)
    not_before_s: float = 0.0  # pacing: the next move goes out no earlier (monotonic)
    retried: bool = False  # the request timed out once: a zero move re-captures where the camera is
    absolute: bool = False  # a camera error interrupted it: a move goes again as an absolute look
    paused: bool = False
    answer: object = None  # a Frame or mask waiting for the inference thread
    observe_s: float = 0.0  # camera request → observation ready (view integrated, canvas drawn), for feedback
    ended: str = ""  # one of ENDINGS once over
    stamps: dict = field(default_factory=dict)  # id(Frame) → header stamp [ns] and frame_id

    def tag(self) -> dict:
        return {"id": self.id, "instruction": api.echo(self.instruction), "episode": self.number}


class PolicyNode(AutostartMixin, LifecycleNode):
    def __init__(self):
        super().__init__("policy_node")
        self.config = declare_seek_config(self, live=lambda cfg: setattr(self, "config", cfg))
        intr = self.config.camera.intrinsics()
        self.view_size = (intr.width, intr.height)
        self.dataset, self.episode_id, self.split = declare_sim_episode(self)
        declare(self, "autostart", True, "configure and activate at start-up")
        self.backend = declare(self, "backend", "expert", "policy backend", choices=POLICIES)
        self.model = declare(self, "model", "", "qwen: model directory, or hub id pinned as org/name@<commit>")
        self.adapter = declare(self, "adapter", "", "qwen: LoRA adapter directory, or SFT_DIR,RL_DIR applied in "
                                                    "order; empty: none")
        self.memory = declare(self, "memory", "", "qwen: memory kind (e.g. egosphere); empty: the default")
        self.device = declare(self, "device", "", "qwen: torch device (e.g. cuda, cpu); empty: automatic")
        self.decoding = declare(self, "decoding", "", "qwen: decoding (e.g. constrained, greedy); empty: the default")
        self.seed = declare(self, "seed", 0, "random backend: seed", lo=0, hi=2**31 - 1)

        def live(name):
            return lambda v: setattr(self, name, v)

        self.reset_camera = declare(self, "reset_camera", True, "a new search starts from the camera's start pose",
                                    on_change=live("reset_camera"))
        self.observation_timeout_s = declare(self, "observation_timeout_s", 10.0,
                                             "wait for the view after a camera request [s]", lo=0.1, hi=3600.0,
                                             on_change=live("observation_timeout_s"))
        self.segmentation_timeout_s = declare(self, "segmentation_timeout_s", 60.0, "wait for the mask of a target [s]",
                                              lo=0.1, hi=3600.0, on_change=live("segmentation_timeout_s"))
        self.min_step_period_s = declare(self, "min_step_period_s", 0.0, "least time between decisions [s]",
                                         lo=0.0, hi=60.0, on_change=live("min_step_period_s"))
        self.instruction_rate = RateLimit(declare(self, "max_instructions_per_s", 20.0, "instructions per second "
                                                  "beyond which they are rejected", lo=0.1, hi=1000.0))
        self.plain_ids = f"plain-{int(time.time())}"  # plain-text instructions get ids <this>-1, -2, ...
        self.instructions = 0
        self.warn_once = WarnOnce(self)

        self.lock = threading.Lock()
        self.policy = None
        self.scene = None  # the simulated episode (dataset parameter): ground truth for scoring
        self.active = False
        self.search: Search | None = None
        self.searches = 0
        self.camera_sent_ns = 0  # the newest camera command this node sent ...
        self.newest_view_ns = 0  # ... and the newest view: the camera is idle once this is later
        self.segmenter_state = "unknown"
        self.segmenter_lost = False  # its status publisher's liveliness lapsed (killed, stopped, machine gone)

        control = MutuallyExclusiveCallbackGroup()  # instructions and cancel, one at a time
        inference = MutuallyExclusiveCallbackGroup()  # the episode advances here only
        io = MutuallyExclusiveCallbackGroup()  # observations, masks, states, the watchdog: quick
        self.pub_status = self.create_publisher(String, api.STATUS, api.STATUS_QOS)
        self.pub_feedback = self.create_publisher(String, api.FEEDBACK, api.HISTORY_QOS)
        self.pub_move = self.create_publisher(JointState, api.MOVE, api.COMMAND_QOS)
        self.pub_look = self.create_publisher(JointState, api.LOOK, api.COMMAND_QOS)
        self.pub_target = self.create_publisher(PolygonStamped, api.TARGET, api.COMMAND_QOS)
        self.pub_track = self.create_publisher(Header, api.TRACK, api.COMMAND_QOS)
        self.pub_target_view = self.create_publisher(Image, api.SEGMENTATION_VIEW, api.IMAGE_QOS)
        self.pub_target_pose = self.create_publisher(JointState, api.SEGMENTATION_POSE, api.COMMAND_QOS)
        self.pub_canvas = self.create_publisher(Image, api.CANVAS, api.IMAGE_QOS)
        self.pub_result_mask = self.create_publisher(Image, api.RESULT_MASK, api.LATCHED_QOS)
        self.pub_overlay = self.create_publisher(Image, api.RESULT_OVERLAY, api.LATCHED_QOS)
        self.pub_result_pose = self.create_publisher(JointState, api.RESULT_POSE, api.LATCHED_QOS)
        self.pub_result = self.create_publisher(String, api.RESULT, api.LATCHED_QOS)
        self.sync = ExactTimeSync(2, self._on_frame)
        self.create_subscription(String, api.INSTRUCTION, self._on_instruction, api.INSTRUCTION_QOS,
                                 callback_group=control)
        self.create_subscription(Image, api.IMAGE, self._on_image, api.IMAGE_QOS, callback_group=io)
        self.create_subscription(JointState, api.POSE, lambda m: self.sync.add(1, m), api.COMMAND_QOS,
                                 callback_group=io)
        self.create_subscription(String, api.CAMERA_STATUS, self._on_camera_status, api.LATCHED_QOS, callback_group=io)
        self.create_subscription(Image, api.MASK, self._on_mask, api.IMAGE_QOS, callback_group=io)
        self.create_subscription(String, api.SEGMENTATION_STATUS, self._on_segmentation_status, api.STATUS_QOS,
                                 callback_group=io, event_callbacks=SubscriptionEventCallbacks(
                                     liveliness=self._on_segmenter_liveliness))
        self.create_service(Trigger, api.CANCEL, self._on_cancel, callback_group=control)
        self.cli_camera = self.create_client(Trigger, api.CAMERA_RESET, callback_group=ReentrantCallbackGroup())
        self.cli_stop = self.create_client(Trigger, api.CAMERA_STOP, callback_group=ReentrantCallbackGroup())
        self.think = self.create_guard_condition(self._work, callback_group=inference)
        self.create_timer(0.05, self._watchdog, callback_group=io)
        self._status("inactive", f"backend {self.backend} not loaded yet")

    # ------------------------------------------------------------------ lifecycle

    def on_configure(self, state) -> TransitionCallbackReturn:
        self._status("inactive", f"configured; backend {self.backend} loads on activate")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        try:
            self.scene, self.policy = self._load()
        except (ConfigError, DatasetError) as exc:
            return self._activation_failed(str(exc))
        except Exception as exc:  # noqa: BLE001 - a backend failing to load must not kill the node
            first = str(exc).splitlines()[0] if str(exc) else ""
            return self._activation_failed(f"policy_node: backend {self.backend} failed to load: "
                                           f"{type(exc).__name__}: {first}")
        self.active = True
        self._status("ready", f"backend {self.backend} loaded; send an instruction on {api.INSTRUCTION}")
        return super().on_activate(state)

    def _activation_failed(self, text: str) -> TransitionCallbackReturn:
        self.get_logger().error(text)
        self._status("inactive", text, log=False)
        return TransitionCallbackReturn.FAILURE

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self.active = False
        self._end_current("cancelled", "policy_node was deactivated")
        self.policy = None
        free_accelerator_memory()
        self._status("inactive", "deactivated; the backend was unloaded")
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self.active = False
        self.policy = None
        return TransitionCallbackReturn.SUCCESS

    def farewell(self) -> None:
        """Before the node goes (SIGINT, SIGTERM): end the search and say so, and wait until it is heard."""
        self.active = False
        self._end_current("cancelled", "policy_node is shutting down")
        self._stop_camera()
        self._status("inactive", "policy_node is shutting down")
        self.pub_status.wait_for_all_acked(Duration(seconds=2.0))

    def _stop_camera(self) -> None:
        """Ask camera_node to stop the head (a look under way ends without a view); fire and forget."""
        if self.cli_stop.service_is_ready():
            self.cli_stop.call_async(Trigger.Request())

    def _load(self):
        who = self.get_name()
        scene = load_sim_env(self.dataset, self.episode_id, self.config, who, self.split) if self.dataset else None
        if needs_truth("policy", self.backend):
            if scene is None:
                raise ConfigError(f"{who}: backend {self.backend} reads the simulated scene's ground truth; set "
                                  f"parameter 'dataset' (a dataset.json) or use backend qwen or random")
            return scene, make_policy(self.backend, self.config, scene.truth)
        if self.backend == "random":
            return scene, make_policy("random", self.config, seed=self.seed)
        opts = {"model": resolve_model_param(who, "model", self.model, "a local Qwen3-VL model directory",
                                             required=True),
                "adapter": ",".join(resolve_model_param(who, "adapter", part, "a LoRA adapter directory")
                                    for part in self.adapter.split(",") if part.strip()) or None,
                "memory": self.memory or None, "device": self.device or None, "decoding": self.decoding or None}
        return scene, make_policy("qwen", self.config, **{k: v for k, v in opts.items() if v is not None})

    # ------------------------------------------------------------------ status

    def _status(self, state: str, message: str, search: Search | None = None, log: bool = True, **tag) -> None:
        payload = {"state": state, "message": message,
                   **(search.tag() if search is not None else {"id": None, "instruction": None, "episode": None}),
                   **tag}
        self.pub_status.publish(String(data=api.dumps(payload)))
        if log and state in ("failed", "rejected"):  # one call site per severity (rclpy requires it)
            self.get_logger().warning(f"{state}: {message}")
        elif log:
            self.get_logger().info(f"{state}: {message}")

    def _end(self, search: Search, state: str, message: str) -> bool:
        """End ``search`` as ``state`` (once: a search has exactly one ending) and say so."""
        with self.lock:
            if search.ended:
                return False
            search.ended = state
        self._status(state, message, search)
        return True

    def _end_current(self, state: str, message: str) -> None:
        with self.lock:
            search = self.search
        if search is not None:
            self._end(search, state, message)

    # ------------------------------------------------------------------ instructions, cancel

    def _on_instruction(self, msg: String) -> None:
        rid = None
        self.instructions += 1
        try:
            rid, text = api.parse_instruction(msg.data)
            if rid is None:
                rid = f"{self.plain_ids}-{self.instructions}"
            if not self.instruction_rate.allow(time.monotonic()):
                raise ValueError(f"too many instructions: more than {self.instruction_rate.per_s:g} per second "
                                 f"(parameter max_instructions_per_s); send it again later")
            if not self.active:
                raise ValueError(f"policy_node is not active (backend {self.backend}); activate it "
                                 f"(autostart:=true or 'ros2 lifecycle set policy_node activate')")
            scene = self.scene
            episode = Episode(self.config, scene.truth if scene else None,
                              scene.spec.id if scene else "", scene.spec.category if scene else "")
            first = episode.start(text)
        except ValueError as exc:
            rid = getattr(exc, "id", None) or rid or f"{self.plain_ids}-{self.instructions}"
            return self._status("rejected", str(exc), id=rid, instruction=api.echo(msg.data), episode=None)
        with self.lock:
            self.searches += 1
            search = Search(episode, rid, episode.instruction, self.searches)
            old, self.search = self.search, search
        if old is not None:
            self._end(old, "preempted", f"pre-empted by a new instruction: {search.instruction!r}")
        self._status("accepted", f"searching for {search.instruction!r} with {self.backend}", search)
        self._execute(search, first)

    def _on_cancel(self, request, response):
        with self.lock:
            search = self.search
        if search is None or not self._end(search, "cancelled", "cancelled by request"):
            response.success, response.message = False, "no search in progress"
        else:
            self._stop_camera()
            response.success, response.message = True, f"cancelled the search for {api.echo(search.instruction)!r}"
        return response

    # ------------------------------------------------------------------ requests out

    def _execute(self, search: Search, req) -> None:
        """Send the episode's request ``req`` (or hold it: camera busy, pacing, paused)."""
        with self.lock:
            if self.search is not search or search.ended:
                return
            search.request, search.sent_ns, search.retried, search.absolute = req, 0, False, False
            search.queued_s = time.monotonic()
        if isinstance(req, Done):
            return self._finish(search, req.result)
        if isinstance(req, (Decide, Verify)):
            return self.think.trigger()
        if isinstance(req, (Segment, Track)):
            return self._send_target(search, req)
        self._send_camera(search)

    def _send_camera(self, search: Search, force: bool = False) -> None:
        """Send the pending camera request once the camera has answered every earlier command (a view
        still in flight from a pre-empted search must not answer this one) and pacing allows. After a
        timeout (``search.retried``) any request becomes a zero move: a re-capture where the camera is."""
        fail = None
        with self.lock:
            req = search.request
            if self.search is not search or search.ended or search.sent_ns or search.paused:
                return
            idle = self.newest_view_ns > self.camera_sent_ns
            if not (idle or force) or time.monotonic() < search.not_before_s:
                return  # the watchdog or the next view sends it
            now = self.get_clock().now()
            hdr = header(now.to_msg(), "")
            if search.retried:
                self.pub_move.publish(move_to_joint_state(0.0, 0.0, hdr))
            elif isinstance(req, Move) and search.absolute:
                aim = search.episode.frame.pose.moved(req.dtheta, req.dphi)  # the episode waits: not changing
                self.pub_look.publish(pose_to_joint_state(aim, hdr))
            elif isinstance(req, Move):
                self.pub_move.publish(move_to_joint_state(req.dtheta, req.dphi, hdr))
            elif isinstance(req, Look):
                self.pub_look.publish(pose_to_joint_state(req.pose, hdr))
            elif not self.reset_camera:  # start where the camera is: a zero move re-captures the view
                self.pub_move.publish(move_to_joint_state(0.0, 0.0, hdr))
            elif self.cli_camera.service_is_ready():
                self.cli_camera.call_async(Trigger.Request())
            else:
                fail = f"camera_node offers no {api.CAMERA_RESET} in {self.get_namespace()}; is it running?"
            search.sent_ns, search.sent_s = now.nanoseconds, time.monotonic()
            self.camera_sent_ns = search.sent_ns
        if fail:
            self._end(search, "failed", fail)

    def _send_target(self, search: Search, req: Segment | Track) -> None:
        if self.segmenter_lost:
            return self._end(search, "failed", self._segmenter_lost_text()) and None
        if self.segmenter_state == "inactive":
            return self._end(search, "failed", "segmentation_node is inactive; activate it (autostart:=true or "
                                               "'ros2 lifecycle set segmentation_node activate')") and None
        topic, pub = (api.TRACK, self.pub_track) if isinstance(req, Track) else (api.TARGET, self.pub_target)
        if pub.get_subscription_count() == 0:
            if time.monotonic() - search.queued_s <= self.observation_timeout_s:
                return  # it may still be starting (discovery): the watchdog offers the box again
            return self._end(search, "failed", f"no segmentation_node subscribes to {topic} in "
                                               f"{self.get_namespace()} after {self.observation_timeout_s:g} s; "
                                               f"start it") and None
        stamp, frame_id = search.stamps[id(req.frame)]
        with self.lock:
            if self.search is not search or search.ended:
                return
            search.sent_ns, search.sent_s = stamp, time.monotonic()
            hdr = header(time_msg(stamp), frame_id)
            self.pub_target_view.publish(rgb_to_image(req.frame.view, hdr))  # only this view reaches the segmenter
            self.pub_target_pose.publish(pose_to_joint_state(req.frame.pose, hdr))
            pub.publish(hdr if isinstance(req, Track) else box_to_polygon(req.box_px, hdr, req.points, req.labels))
        if isinstance(req, Segment) and req.look == 0:
            box = list(pixels_to_box(req.box_px, *self.view_size))
            what = f"with {len(req.points)} verified points" if req.points else (
                f"refinement {search.episode.refinements}" if search.episode.refinements else
                f"STOP after {search.episode.steps} steps")
            self._status("segmenting", f"{what}; segmenting box {box}", search)

    # ------------------------------------------------------------------ answers in

    def _on_image(self, msg: Image) -> None:
        if self.warn_once.image_ok(msg, self.view_size, "an image", api.IMAGE):
            self.sync.add(0, msg)

    def _on_frame(self, stamp: int, image: Image, joints: JointState) -> None:
        with self.lock:
            self.newest_view_ns = max(self.newest_view_ns, stamp)
            search = self.search
            req = search.request if search is not None else None
            wanted = (search is not None and not search.ended and isinstance(req, (Capture, Move, Look))
                      and search.sent_ns and stamp > search.sent_ns and search.answer is None)
        if search is not None and not wanted and isinstance(req, (Capture, Move, Look)) and not search.sent_ns:
            return self._send_camera(search)  # the camera is idle now: send what waited
        if not wanted:
            return
        try:
            frame = Frame(image_to_rgb(image, self.view_size), joint_state_to_pose(joints), stamp * 1e-9)
        except MessageError as exc:
            return self.warn_once(("observation", str(exc)), f"dropped an observation: {exc}")
        with self.lock:
            if self.search is not search or search.request is not req:
                return
            search.stamps[id(frame)] = (stamp, image.header.frame_id)
        self._observe(search, frame)  # here, at once: a hop to another executor thread would add to every step

    def _on_mask(self, msg: Image) -> None:
        stamp = stamp_ns(msg.header.stamp)
        with self.lock:
            search = self.search
            if (search is None or search.ended or not isinstance(search.request, (Segment, Track))
                    or stamp != search.sent_ns):
                return
        try:
            mask = image_to_mask(msg)
        except MessageError as exc:
            return self._end(search, "failed", f"segmentation_node answered with a bad mask: {exc}") and None
        with self.lock:
            if self.search is search:
                search.answer = mask
        self.think.trigger()

    def _on_segmentation_status(self, msg: String) -> None:
        payload = api.loads(msg.data) or {}
        self.segmenter_state = payload.get("state", self.segmenter_state)
        with self.lock:
            search = self.search
            mine = (search is not None and isinstance(search.request, (Segment, Track)) and search.sent_ns
                    and payload.get("failed_stamp") == search.sent_ns)
        if mine:
            self._end(search, "failed", f"segmentation_node: {payload.get('message', 'segmentation failed')}")

    def _on_segmenter_liveliness(self, info) -> None:
        """The segmentation node's status publisher stopped asserting liveliness (its process hangs, was
        stopped or killed; a busy node's middleware threads keep asserting it) or came back. A search in
        progress fails at once: it could not end with a mask, and a hung reader of camera/image may stall
        the views too."""
        lost = info.alive_count == 0 and info.alive_count_change < 0
        with self.lock:
            self.segmenter_lost = lost or (self.segmenter_lost and info.alive_count == 0)
            search = self.search
        if lost and search is not None:
            self._end(search, "failed", self._segmenter_lost_text())

    def _segmenter_lost_text(self) -> str:
        return (f"segmentation_node stopped answering (no liveliness on {api.SEGMENTATION_STATUS} for "
                f"{api.LIVELINESS_LEASE_S:g} s): it hangs, was stopped or killed; restart it in {self.get_namespace()}")

    def _on_camera_status(self, msg: String) -> None:
        payload = api.loads(msg.data) or {}
        state, message = payload.get("state", "unknown"), payload.get("message", "")
        with self.lock:
            search = self.search
            if search is None or search.ended:
                return
            was, search.paused = search.paused, state == "error"
            resume = was and not search.paused
            if resume and isinstance(search.request, (Capture, Move, Look)) and search.answer is None:
                # send the request again: the camera may have lost it. A look or a reset is absolute and
                # safe to repeat; a relative move may have been made already, so it goes again as the
                # absolute look at the pose it aims for (made once, whatever happened before)
                search.sent_ns, search.absolute = 0, True
        if search.paused and not was:
            self._status("paused", f"camera error, search paused: {message}", search)
        elif resume:
            self._status("resumed", f"camera ready again: {message}", search)
            self._send_camera(search, force=True)

    # ------------------------------------------------------------------ the episode (inference group)

    def _observe(self, search: Search, answer) -> None:
        """Give the episode the answer to its request (a Frame or a mask) and send what it asks next; a decision
        goes to the inference group. Runs in the thread the answer arrived in: the episode waits for this answer,
        so nothing else touches it meanwhile."""
        try:
            req = search.episode.observe(answer)
        except Exception as exc:  # noqa: BLE001 - an episode error ends this search, not the node
            return self._end(search, "failed", f"the search failed at step {search.episode.steps + 1}: "
                                               f"{type(exc).__name__}: {exc}") and None
        if isinstance(req, Decide):  # request → view integrated and canvas drawn: the graph's step time
            search.observe_s = time.monotonic() - search.sent_s
        self._execute(search, req)

    def _work(self) -> None:
        with self.lock:
            search = self.search
            if search is None or search.ended:
                return
            req, answer, search.answer = search.request, search.answer, None
        if not isinstance(req, (Decide, Verify)):
            return self._observe(search, answer) if answer is not None else None  # a mask
        try:
            while isinstance(req, (Decide, Verify)):
                answer = self._decide(search, req.observation) if isinstance(req, Decide) else self._verify(search, req)
                if answer is None:
                    return
                req = search.episode.observe(answer)
        except Exception as exc:  # noqa: BLE001 - a backend or episode error ends this search, not the node
            return self._end(search, "failed", f"the search failed at step {search.episode.steps + 1}: "
                                               f"{type(exc).__name__}: {exc}") and None
        self._execute(search, req)

    def _verify(self, search: Search, req: Verify) -> list | None:
        """VBR: the policy's P(yes) for each marked point (None: the search ended meanwhile)."""
        self._status("verifying", f"asking the policy about {len(req.points)} marked points inside the box", search)
        try:
            confidences = verify(self.policy, req)
        except Exception as exc:  # noqa: BLE001
            self._end(search, "failed", f"the {self.backend} policy failed to verify points: "
                                        f"{type(exc).__name__}: {exc}")
            return None
        with self.lock:
            return None if self.search is not search or search.ended else confidences

    def _decide(self, search: Search, obs) -> Decision | None:
        """The policy's decision (None: the search ended meanwhile); publishes the canvas and feedback (a
        review turn: its number and the reviewed mask's pixel count too)."""
        stamp, frame_id = search.stamps[id(search.episode.frame)]
        hdr = header(time_msg(stamp), frame_id)
        review = {}
        if obs.review is not None:
            review = {"review": obs.review.turn, "mask_pixels": int(obs.review.mask.sum())}
            self._status("verifying", f"review {obs.review.turn} of the mask ({review['mask_pixels']} px)", search)
        if self.pub_canvas.get_subscription_count():
            self.pub_canvas.publish(rgb_to_image(obs.canvas, hdr))
        t0 = time.perf_counter()
        try:
            decision = self.policy.act(obs)
        except Exception as exc:  # noqa: BLE001
            self._end(search, "failed", f"the {self.backend} policy failed at step {obs.step + 1}: "
                                        f"{type(exc).__name__}: {exc}")
            return None
        decision.latency_s = time.perf_counter() - t0
        with self.lock:
            if self.search is not search or search.ended:
                return None  # pre-empted or cancelled during the forward pass: dropped
            search.not_before_s = time.monotonic() + self.min_step_period_s
        pan, tilt = pose_to_pan_tilt(obs.pose)
        self.pub_feedback.publish(String(data=api.dumps({
            **search.tag(), "step": obs.step + (0 if review else 1), "pan": pan, "tilt": tilt, "action": decision.action.to_text(),
            "text": decision.text, "latency_s": round(decision.latency_s, 6), "observe_s": round(search.observe_s, 6),
            "stamp": stamp, **review})))
        return decision

    def _finish(self, search: Search, result: EpisodeResult) -> None:
        """Final mask, overlay and pose, then the result, then the ending status (unless pre-empted)."""
        ok = result.success if result.success is not None else result.found
        state = "done" if ok else "failed"
        with self.lock:
            if search.ended:
                return
            search.ended = state
        stamp, frame_id = search.stamps[id(result.frame)]
        hdr = header(time_msg(stamp), frame_id)
        self.pub_result_mask.publish(mask_to_image(result.mask, hdr))
        self.pub_overlay.publish(rgb_to_image(overlay_mask(result.frame.view, result.mask), hdr))
        self.pub_result_pose.publish(pose_to_joint_state(result.final_pose, hdr))
        pan, tilt = pose_to_pan_tilt(result.final_pose)
        message = result.message
        if result.score is not None:
            o = result.score.outcome
            message += f"; IoU {o.iou:.2f}, {o.final_distance_deg:.1f}° from the target centroid"
        self.pub_result.publish(String(data=api.dumps({
            **search.tag(), "success": ok, "found": result.found, "aligned": result.looks > 0, "looks": result.looks,
            "steps": result.steps, "refinements": result.refinements, "pan": pan, "tilt": tilt,
            "mask_pixels": int(result.mask.sum()),
            "iou": result.score.outcome.iou if result.score else None,
            "distance": math.radians(result.score.outcome.final_distance_deg) if result.score else None,
            "message": message, "stamp": stamp,
            "record": episode_record(result, search.episode.initial_pose,
                                     self.scene.spec.target_centroid if self.scene is not None else None)})))
        self._status(state, f"result: {message}", search)

    # ------------------------------------------------------------------ timeouts (io group)

    def _watchdog(self) -> None:
        """Send held camera requests when due; re-capture once when a view is late, then fail; fail a late mask."""
        with self.lock:
            search = self.search
            if search is None or search.ended or search.paused or search.answer is not None:
                return
            req, sent, sent_s, queued_s, retried = (search.request, search.sent_ns, search.sent_s, search.queued_s,
                                                    search.retried)
        now = time.monotonic()
        if isinstance(req, (Capture, Move, Look)):
            if not sent:  # held: pacing, or the camera still owes an earlier view
                return self._send_camera(search, force=now - queued_s > self.observation_timeout_s)
            if now - sent_s <= self.observation_timeout_s:
                return
            if not retried:
                self.get_logger().warning(f"no view {self.observation_timeout_s:g} s after the camera request; "
                                          f"asking the camera to capture again")
                with self.lock:
                    search.retried, search.sent_ns = True, 0
                return self._send_camera(search, force=True)
            return self._end(search, "failed", f"no view arrived within {self.observation_timeout_s:g} s of a camera "
                                               f"request; check that camera_node runs in {self.get_namespace()}") and None
        if isinstance(req, (Segment, Track)) and not sent:  # held: no segmentation_node matched yet
            return self._send_target(search, req)
        if isinstance(req, (Segment, Track)) and sent and now - sent_s > self.segmentation_timeout_s:
            self._end(search, "failed", f"no mask from segmentation_node within {self.segmentation_timeout_s:g} s; "
                                        f"is it running in {self.get_namespace()}?")


def main(args=None) -> int:
    return run_node(PolicyNode, args, threads=4, name="policy_node")


if __name__ == "__main__":
    sys.exit(main())
