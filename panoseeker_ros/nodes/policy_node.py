"""policy_node: runs the search for each instruction with a core
:class:`~panoseeker_ros.core.session.SearchSession` (a :class:`~panoseeker_ros.core.episode.SeekAgent`
plus the stamp rule) and the policy backend chosen by parameter. Lifecycle node: the backend loads on
activate and is dropped (GPU memory freed) on deactivate.

Topics (relative to the namespace; QoS names from ``interface.py``)
    subscribes instruction          std_msgs/String             command  starts a search (pre-empts the current one)
               camera/image         sensor_msgs/Image rgb8      image  ┐ matched by header stamp; only an
               camera/joint_states  sensor_msgs/JointState      command├ observation stamped after the last
               egosphere/canvas     sensor_msgs/Image rgb8      image  ┘ move / reset is used
               result               std_msgs/String (JSON)      latched  ends the search (done / failed)
    publishes  camera/move          sensor_msgs/JointState      command  [Δpan, Δtilt] rad (REP-103)
               target               geometry_msgs/PolygonStamped command STOP box in view pixels (no points:
                                                                          no target), header of its view
               status               std_msgs/String (JSON)      latched  {state, message, instruction, episode}
               feedback             std_msgs/String (JSON)      command  one per decision: step, pose, action,
                                                                          policy latency, observation wait
Services
    cancel  std_srvs/Trigger  stop the current search (and its segmentation)
    clients: egosphere/reset, camera/reset, segmentation/cancel
Parameters
    autostart (bool, read-only): configure + activate at start-up
    backend (string, read-only): qwen | expert | scan | random  (expert and scan read the simulated
        scene's ground truth: expert plans on it, scan uses the oracle detector)
    model, adapter, memory, device, decoding (string, read-only): qwen options; model and adapter are
        local directories (or hub ids ``org/name``)
    seed (int): random backend
    reset_camera (bool): a new search first returns the camera to its start pose (else it starts where it is)
    observation_timeout_s, service_timeout_s, result_timeout_s (double, s): how long to wait for the graph
    min_step_period_s (double, s): least time between two decisions (pace a simulated search for people)
    dataset, episode_id (string, read-only): the simulated episode (expert / scan)
    camera.*, episode.*, reward.* (read-only, shared)
Threads: inference runs in its own MutuallyExclusiveCallbackGroup under a MultiThreadedExecutor, so the
cancel service, new instructions and lifecycle transitions are served during a forward pass.
"""
from __future__ import annotations

import sys
import threading
import time

from geometry_msgs.msg import PolygonStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from ..core.actions import box_to_pixels
from ..core.config import ConfigError
from ..core.dataset import DatasetError
from ..core.geometry import pose_to_pan_tilt
from ..core.session import SearchSession
from . import interface as api
from .conversions import (MessageError, box_to_polygon, header, image_to_rgb, joint_state_to_pose,
                          move_to_joint_state, stamp_ns)
from .params import declare, declare_seek_config, declare_sim_episode
from .runtime import (AutostartMixin, WarnOnce, call_service, free_accelerator_memory, load_sim_env,
                      resolve_model_param, run_node)
from .sync import ExactTimeSync

BACKENDS = ("qwen", "expert", "scan", "random")


class PolicyNode(AutostartMixin, LifecycleNode):
    def __init__(self):
        super().__init__("policy_node")
        self.config = declare_seek_config(self)
        intr = self.config.camera.intrinsics()
        self.intrinsics = intr
        self.view_size = (intr.width, intr.height)
        self.canvas_size = (self.config.episode.canvas_width, self.config.episode.canvas_height)
        self.dataset, self.episode_id = declare_sim_episode(self)
        declare(self, "autostart", True, "configure and activate at start-up", read_only=True)
        self.backend = declare(self, "backend", "expert", "policy backend", choices=BACKENDS, read_only=True)
        self.model = declare(self, "model", "", "qwen: model directory (or hub id); empty: the default",
                             read_only=True)
        self.adapter = declare(self, "adapter", "", "qwen: LoRA adapter directory; empty: none", read_only=True)
        self.memory = declare(self, "memory", "", "qwen: memory kind (e.g. egosphere); empty: the default",
                              read_only=True)
        self.device = declare(self, "device", "", "qwen: torch device (e.g. cuda, cpu); empty: automatic",
                              read_only=True)
        self.decoding = declare(self, "decoding", "", "qwen: decoding (e.g. constrained, greedy); empty: the default",
                                read_only=True)
        self.seed = declare(self, "seed", 0, "random backend: seed", lo=0, hi=2**31 - 1, read_only=True)
        self.reset_camera = declare(self, "reset_camera", True, "a new search starts from the camera's start pose")
        self.observation_timeout_s = declare(self, "observation_timeout_s", 10.0,
                                             "wait for the view + canvas after a move [s]", lo=0.1, hi=3600.0)
        self.service_timeout_s = declare(self, "service_timeout_s", 5.0, "wait for a reset / cancel service [s]",
                                         lo=0.1, hi=600.0)
        self.result_timeout_s = declare(self, "result_timeout_s", 60.0, "wait for segmentation's result [s]",
                                        lo=0.1, hi=3600.0)
        self.min_step_period_s = declare(self, "min_step_period_s", 0.0, "least time between decisions [s]",
                                         lo=0.0, hi=60.0)
        self.warn_once = WarnOnce(self)

        self.lock = threading.Lock()
        self.moved = threading.Condition(self.lock)
        self.policy = None
        self.active = False
        self.session: SearchSession | None = None
        self.episodes = 0
        self.latest = None  # (stamp_ns, image, joints, canvas, arrival_s) of the newest matched observation
        self.last_view_ns = 0
        self.last_move_ns = 0  # the newest move this node sent; the camera answers it with a later view
        self.result_pending_since: float | None = None
        self.stop_stamp_ns = 0
        self.retried = False
        self.last_decision_s = 0.0

        control = MutuallyExclusiveCallbackGroup()  # instructions and cancel, one at a time
        inference = MutuallyExclusiveCallbackGroup()  # the policy's forward pass
        io = MutuallyExclusiveCallbackGroup()  # incoming observations, results, the watchdog: quick
        clients = ReentrantCallbackGroup()  # service responses arrive while control waits on them

        self.pub_status = self.create_publisher(String, api.STATUS, api.STATUS_QOS)
        self.pub_feedback = self.create_publisher(String, api.FEEDBACK, api.COMMAND_QOS)
        self.pub_move = self.create_publisher(JointState, api.MOVE, api.COMMAND_QOS)
        self.pub_target = self.create_publisher(PolygonStamped, api.TARGET, api.COMMAND_QOS)
        self.sync = ExactTimeSync(3, self._on_observation)
        self.create_subscription(String, api.INSTRUCTION, self._on_instruction, api.COMMAND_QOS, callback_group=control)
        self.create_subscription(Image, api.IMAGE, self._on_image, api.IMAGE_QOS, callback_group=io)
        self.create_subscription(JointState, api.POSE, lambda m: self.sync.add(1, m), api.COMMAND_QOS,
                                 callback_group=io)
        self.create_subscription(Image, api.CANVAS, self._on_canvas, api.IMAGE_QOS, callback_group=io)
        self.create_subscription(String, api.RESULT, self._on_result, api.LATCHED_QOS, callback_group=io)
        self.create_service(Trigger, api.CANCEL, self._on_cancel, callback_group=control)
        self.cli_egosphere = self.create_client(Trigger, api.EGOSPHERE_RESET, callback_group=clients)
        self.cli_camera = self.create_client(Trigger, api.CAMERA_RESET, callback_group=clients)
        self.cli_segmentation = self.create_client(Trigger, api.SEGMENTATION_CANCEL, callback_group=clients)
        self.think = self.create_guard_condition(self._think, callback_group=inference)
        self.create_timer(0.25, self._watchdog, callback_group=io)
        self._status("inactive", f"backend {self.backend} not loaded yet")

    # ------------------------------------------------------------------ lifecycle

    def on_configure(self, state) -> TransitionCallbackReturn:
        self._status("inactive", f"configured; backend {self.backend} loads on activate")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        try:
            self.policy = self._load_policy()
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
        self._preempt("policy_node was deactivated")
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

    def _load_policy(self):
        from ..models.registry import policy_factory

        who = self.get_name()
        if self.backend in ("expert", "scan"):
            env = load_sim_env(self.dataset, self.episode_id, self.config, who)
            return policy_factory(self.backend)(env)
        if self.backend == "random":
            return policy_factory("random", seed=self.seed)(None)
        opts = {"model": resolve_model_param(who, "model", self.model, "a local Qwen3-VL model directory"),
                "adapter": resolve_model_param(who, "adapter", self.adapter, "a LoRA adapter directory"),
                "memory": self.memory or None, "device": self.device or None, "decoding": self.decoding or None}
        return policy_factory("qwen", **{k: v for k, v in opts.items() if v is not None})(None)

    # ------------------------------------------------------------------ status and feedback

    def _status(self, state: str, message: str, session: SearchSession | None = None, instruction=None,
                log: bool = True) -> None:
        payload = {"state": state, "message": message,
                   "instruction": session.instruction if session else instruction,
                   "episode": session.episode if session else None}
        self.pub_status.publish(String(data=api.dumps(payload)))
        if not log:
            return
        if state in ("failed", "rejected"):
            self.get_logger().warning(f"{state}: {message}")
        else:
            self.get_logger().info(f"{state}: {message}")

    def _fail(self, session: SearchSession, message: str) -> None:
        with self.lock:
            if self.session is not session or session.state == "cancelled":
                return
            if session.active:
                session.end("failed")
        self._status("failed", message, session)

    # ------------------------------------------------------------------ instructions and pre-emption

    def _on_instruction(self, msg: String) -> None:
        if not self.active:
            self._status("rejected", f"policy_node is not active (backend {self.backend}); activate it "
                                     f"(autostart:=true or 'ros2 lifecycle set policy_node activate')",
                         instruction=msg.data)
            return
        try:
            session = SearchSession(self.policy, msg.data, self.config.episode.max_steps, self.episodes + 1)
        except ValueError as exc:
            self._status("rejected", str(exc), instruction=msg.data)
            return
        self.episodes += 1
        self._preempt(f"pre-empted by a new instruction: {session.instruction!r}", replacement=session)
        self._start(session)

    def _on_cancel(self, request, response):
        with self.lock:
            session = self.session
            busy = session is not None and (session.active or self.result_pending_since is not None)
        if not busy:
            response.success, response.message = False, "no search in progress"
            return response
        self._preempt("cancelled by request")
        response.success, response.message = True, f"cancelled the search for {session.instruction!r}"
        return response

    def _preempt(self, reason: str, replacement: SearchSession | None = None) -> None:
        """End the current search, let the camera answer our last move, and cancel its segmentation."""
        with self.lock:
            old, self.session = self.session, replacement
            self.latest = None
            was_segmenting = self.result_pending_since is not None
            self.result_pending_since = None
            if old is not None and (old.active or was_segmenting):
                old.end("cancelled")
            else:
                old = None
            # the view answering our last move may still be on its way: let it land before the next reset
            self.moved.wait_for(lambda: self.last_view_ns >= self.last_move_ns, timeout=self.service_timeout_s)
        if old is not None:
            self._status("cancelled", reason, old)
        if was_segmenting and call_service(self.cli_segmentation, Trigger.Request(), self.service_timeout_s) is None:
            self.get_logger().warning("segmentation_node did not answer segmentation/cancel; its result, if any, "
                                      "is ignored")

    def _start(self, session: SearchSession) -> None:
        self.retried = False
        self._status("searching", f"searching for {session.instruction!r} with {self.backend}", session)
        if call_service(self.cli_egosphere, Trigger.Request(), self.service_timeout_s) is None:
            return self._fail(session, f"egosphere_node did not answer {api.EGOSPHERE_RESET} within "
                                       f"{self.service_timeout_s:g} s; is it running in {self.get_namespace()}?")
        with self.lock:
            if self.session is not session:
                return
            session.expect_after(self._now_s())
        if self.reset_camera:
            if call_service(self.cli_camera, Trigger.Request(), self.service_timeout_s) is None:
                return self._fail(session, f"camera_node did not answer {api.CAMERA_RESET} within "
                                           f"{self.service_timeout_s:g} s; is it running in {self.get_namespace()}?")
        else:
            self._capture()

    def _capture(self) -> None:
        """A zero move: the camera publishes a fresh view where it is."""
        with self.lock:
            self.last_move_ns = self.get_clock().now().nanoseconds
            self.pub_move.publish(move_to_joint_state(0.0, 0.0, self._header()))

    # ------------------------------------------------------------------ observations

    def _on_image(self, msg: Image) -> None:
        if not self.warn_once.image_ok(msg, self.view_size, "an image", api.IMAGE):
            return
        with self.lock:
            self.last_view_ns = max(self.last_view_ns, stamp_ns(msg.header.stamp))
            self.moved.notify_all()
        self.sync.add(0, msg)

    def _on_canvas(self, msg: Image) -> None:
        if not self.warn_once.image_ok(msg, self.canvas_size, "a canvas", api.CANVAS):
            return
        self.sync.add(2, msg)

    def _on_observation(self, stamp: int, image: Image, joints: JointState, canvas: Image) -> None:
        with self.lock:
            self.latest = (stamp, image, joints, canvas, self._now_s())
        self.think.trigger()

    def _think(self) -> None:
        """One decision (inference group): only for the observation the current session waits for."""
        with self.lock:
            session, latest = self.session, self.latest
            if session is None or latest is None or not session.wants(latest[0] * 1e-9):
                return
            self.latest = None
        stamp, image, joints, canvas_msg, arrival = latest
        observe_s = arrival - session.after
        try:
            view = image_to_rgb(image, self.view_size)
            canvas = image_to_rgb(canvas_msg, self.canvas_size)
            pose = joint_state_to_pose(joints)
        except MessageError as exc:
            self.warn_once(("observation", str(exc)), f"dropped an observation: {exc}")
            return
        wait = self.last_decision_s + self.min_step_period_s - time.monotonic()
        if wait > 0:
            time.sleep(wait)
            if self.session is not session:
                return
        try:
            decision = session.decide(view, canvas, pose, stamp * 1e-9)
        except Exception as exc:  # noqa: BLE001 - a backend error ends this search, not the node
            return self._fail(session, f"the {self.backend} policy failed at step {session.agent.steps + 1}: "
                                       f"{type(exc).__name__}: {exc}")
        self.last_decision_s = time.monotonic()
        record = session.agent.records[-1]
        with self.lock:
            if self.session is not session:
                return  # pre-empted during the forward pass: the decision is dropped
            pan, tilt = pose_to_pan_tilt(pose)
            self.pub_feedback.publish(String(data=api.dumps({
                "episode": session.episode, "instruction": session.instruction, "step": record.step,
                "pan": pan, "tilt": tilt, "action": record.action.to_text(), "text": record.text,
                "latency_s": round(record.latency_s, 6), "observe_s": round(observe_s, 6), "stamp": stamp})))
            if not session.agent.done:
                self.retried = False
                session.expect_after(self._now_s())
                self.last_move_ns = self.get_clock().now().nanoseconds
                self.pub_move.publish(move_to_joint_state(decision.action.dtheta, decision.action.dphi,
                                                          self._header(image.header.frame_id)))
                return
            box = session.box
            box_px = None if box is None else box_to_pixels(box, *self.view_size)
            self.pub_target.publish(box_to_polygon(box_px, image.header))
            self.result_pending_since = self._now_s()
            self.stop_stamp_ns = stamp
        if box is None:
            why = (f"step limit T={session.agent.max_steps} reached without STOP" if session.agent.truncated
                   else "the policy stopped without finding the target")
            self._status("failed", why, session)
        else:
            self._status("segmenting", f"STOP after {record.step} steps; segmenting box {list(box)}", session)

    def _on_result(self, msg: String) -> None:
        payload = api.loads(msg.data)
        if payload is None:
            return
        with self.lock:
            session = self.session
            fresh = (self.result_pending_since is not None and isinstance(payload.get("stamp"), int)
                     and payload["stamp"] >= self.stop_stamp_ns)
            if not fresh:
                return
            self.result_pending_since = None
        if session is not None and session.box is not None:
            ok = payload.get("success")
            self._status("done" if ok else "failed", f"result: {payload.get('message', '')}", session)

    def _watchdog(self) -> None:
        """Re-capture once when the observation after a move is late, then give up; same for the result."""
        with self.lock:
            session = self.session
            pending = self.result_pending_since
        if session is None:
            return
        now = self._now_s()
        if session.state == "observing" and now - session.after > self.observation_timeout_s:
            if not self.retried:
                self.retried = True
                self.get_logger().warning(f"no view + canvas {self.observation_timeout_s:g} s after the request; "
                                          f"asking the camera to capture again")
                with self.lock:
                    session.expect_after(now)
                self._capture()
            else:
                self._fail(session, f"no view and canvas arrived within {self.observation_timeout_s:g} s of a move; "
                                    f"check camera_node and egosphere_node run in {self.get_namespace()}")
        elif pending is not None and now - pending > self.result_timeout_s:
            with self.lock:
                self.result_pending_since = None
            self._status("failed", f"no result from segmentation_node within {self.result_timeout_s:g} s; "
                                   f"is it running in {self.get_namespace()}?", session)

    # ------------------------------------------------------------------ helpers

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _header(self, frame_id: str = ""):
        return header(self.get_clock().now().to_msg(), frame_id)


def main(args=None) -> int:
    return run_node(PolicyNode, args, threads=6, name="policy_node")


if __name__ == "__main__":
    sys.exit(main())
