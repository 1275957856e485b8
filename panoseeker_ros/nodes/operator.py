"""The operator's client of the graph (``panoseeker seek``): publish an instruction, print the search's
feedback as it happens, and return the result (optionally saving the overlay picture).

A line per decision, e.g.::

    step  1 at θ= -90.0° ϕ=  0.0°  MOVE 180 0        policy 0.081 s  graph 0.094 s
    result: success: aligned; IoU 0.93, 1.2° from the target centroid (mask 41210 px at θ= 89.0° ϕ=  0.0°)

Messages that belong to an earlier search are told apart by stamp: only statuses, feedback and results
that arrive after this client's instruction (and, for results, that are stamped after it) count.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import rclpy
import rclpy.executors
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image
from std_msgs.msg import String

from ..core.geometry import pan_tilt_to_pose
from . import interface as api
from .conversions import image_to_rgb, stamp_ns


@dataclass
class SeekOutcome:
    state: str  # success | failure | rejected | cancelled | timeout | unreachable
    message: str
    result: dict | None = None
    feedback: list = field(default_factory=list)
    overlay_path: Path | None = None

    @property
    def exit_code(self) -> int:
        return {"success": 0, "rejected": 2, "unreachable": 3}.get(self.state, 1)


def pose_text(pan, tilt) -> str:
    """Human-readable pose in the core's degrees."""
    if pan is None or tilt is None:
        return "θ=   ?   ϕ=  ?  "
    p = pan_tilt_to_pose(pan, tilt)
    return f"θ={p.theta:7.1f}° ϕ={p.phi:6.1f}°"


def feedback_line(fb: dict) -> str:
    return (f"step {fb.get('step', 0):2d} at {pose_text(fb.get('pan'), fb.get('tilt'))}  {fb.get('action', ''):<22} "
            f"policy {fb.get('latency_s', 0.0):.3f} s  graph {fb.get('observe_s', 0.0):.3f} s")


def result_line(res: dict) -> str:
    verdict = "success" if res.get("success") else "failure"
    return (f"result: {verdict}: {res.get('message', '')} (mask {res.get('mask_pixels', 0)} px at "
            f"{pose_text(res.get('pan'), res.get('tilt'))})")


class Operator:
    """Subscribes to status, feedback, result and overlay of one namespace; publishes instructions."""

    def __init__(self, node: Node, executor=None):
        self.node = node
        if executor is None:
            executor = rclpy.executors.SingleThreadedExecutor(context=node.context)
            executor.add_node(node)
        self.executor = executor
        self.events: list[tuple[str, float, dict]] = []  # (status | feedback, arrival s, payload), in order
        self.statuses: list[tuple[float, dict]] = []
        self.results: list[tuple[float, dict]] = []
        self.overlays: dict[int, Image] = {}
        self.pub = node.create_publisher(String, api.INSTRUCTION, api.COMMAND_QOS)
        self.subs = {
            "policy_node": node.create_subscription(String, api.STATUS,
                                                    lambda m: self._keep(self.statuses, m, "status"), api.STATUS_QOS),
            "policy_node feedback": node.create_subscription(String, api.FEEDBACK,
                                                             lambda m: self._keep(None, m, "feedback"),
                                                             api.COMMAND_QOS),
            "segmentation_node": node.create_subscription(String, api.RESULT, lambda m: self._keep(self.results, m),
                                                          api.LATCHED_QOS),
            "segmentation_node overlay": node.create_subscription(Image, api.OVERLAY, self._on_overlay, api.IMAGE_QOS),
        }

    def _now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def _keep(self, store: list | None, msg: String, kind: str | None = None) -> None:
        payload = api.loads(msg.data)
        if payload is None:
            return
        now = self._now()
        if store is not None:
            store.append((now, payload))
        if kind is not None:
            self.events.append((kind, now, payload))

    def _on_overlay(self, msg: Image) -> None:
        self.overlays[stamp_ns(msg.header.stamp)] = msg
        for old in sorted(self.overlays)[:-4]:
            del self.overlays[old]

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=min(0.05, max(0.0, end - time.monotonic())))

    def wait_ready(self, timeout: float, abort: Callable[[], str | None] | None = None) -> str | None:
        """Wait until a policy_node listens and reports a state other than inactive, and the feedback,
        result and overlay publishers are matched; None when so, else a one-line reason."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.spin_for(0.1)
            if abort is not None and (why := abort()):
                return why
            last = self.statuses[-1][1] if self.statuses else None
            matched = all(sub.get_publisher_count() > 0 for sub in self.subs.values())
            listening = self.pub.get_subscription_count() > 0
            if listening and matched and last is not None and last.get("state") != "inactive":
                return None
        ns = self.node.get_namespace()
        if self.pub.get_subscription_count() == 0:
            return (f"no policy_node listens on {ns}/{api.INSTRUCTION} after {timeout:g} s; start the graph "
                    f"('panoseeker launch') or pass the right --namespace")
        missing = [who for who, sub in self.subs.items() if sub.get_publisher_count() == 0]
        if missing:
            return f"{', '.join(missing)} not found in {ns} after {timeout:g} s; is the whole graph running?"
        last = self.statuses[-1][1] if self.statuses else {}
        return f"policy_node is not active after {timeout:g} s: {last.get('message', 'no status')}"

    def seek(self, instruction: str, timeout: float, on_line: Callable[[str], None] = print,
             overlay_path=None, ready_timeout: float = 10.0,
             abort: Callable[[], str | None] | None = None) -> SeekOutcome:
        """Send ``instruction`` and follow it to its result (or rejection, cancellation, timeout).
        ``abort`` is polled: a non-empty reason ends the wait (e.g. a node process died)."""
        reason = self.wait_ready(ready_timeout, abort)
        if reason is not None:
            return SeekOutcome("unreachable", reason)
        sent = self._now()
        self.pub.publish(String(data=instruction))
        text = instruction.strip()
        episode, seen = None, 0
        outcome = SeekOutcome("timeout", f"no result within {timeout:g} s of the instruction")
        end = time.monotonic() + timeout
        failed_at = None
        while time.monotonic() < end:
            self.spin_for(0.05)
            if abort is not None and (why := abort()):
                return SeekOutcome("unreachable", why, feedback=outcome.feedback)
            for kind, arrived, payload in self.events[seen:]:
                if arrived < sent:
                    continue
                if kind == "feedback":
                    if payload.get("instruction") == text and (episode is None or payload.get("episode") == episode):
                        outcome.feedback.append(payload)
                        on_line(feedback_line(payload))
                    continue
                state = payload.get("state")
                if state == "rejected" and payload.get("instruction") == instruction:
                    return SeekOutcome("rejected", f"rejected: {payload.get('message')}")
                if payload.get("instruction") != text or (episode is not None and payload.get("episode") != episode):
                    continue
                if state == "searching" and episode is None:
                    episode = payload.get("episode")
                if state in ("searching", "failed", "cancelled"):  # STOP and the result have lines of their own
                    on_line(f"{state}: {payload.get('message')}")
                if state == "cancelled":
                    return SeekOutcome("cancelled", payload.get("message", "cancelled"), feedback=outcome.feedback)
                if state == "failed" and failed_at is None:
                    failed_at = time.monotonic()
            seen = len(self.events)
            fresh = [r for arrived, r in self.results if isinstance(r.get("stamp"), int) and r["stamp"] * 1e-9 > sent]
            if fresh:
                res = fresh[-1]
                on_line(result_line(res))
                outcome = SeekOutcome("success" if res.get("success") else "failure", res.get("message", ""), res,
                                      outcome.feedback)
                if overlay_path is not None:
                    outcome.overlay_path = self._save_overlay(res["stamp"], Path(overlay_path), on_line)
                return outcome
            if failed_at is not None and time.monotonic() - failed_at > 5.0:
                return SeekOutcome("failure", "the search failed and no result followed", feedback=outcome.feedback)
        return outcome

    def _save_overlay(self, stamp: int, path: Path, on_line) -> Path | None:
        from ..core.visualize import save_rgb

        end = time.monotonic() + 5.0
        while stamp not in self.overlays and time.monotonic() < end:
            self.spin_for(0.05)
        msg = self.overlays.get(stamp)
        if msg is None:
            on_line(f"no overlay image stamped like the result arrived; {path} not written")
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        save_rgb(path, image_to_rgb(msg))
        on_line(f"wrote {path}")
        return path


def run_seek(instruction: str, namespace: str, timeout: float, overlay_path=None, ready_timeout: float = 10.0,
             on_line: Callable[[str], None] = print, abort: Callable[[], str | None] | None = None) -> SeekOutcome:
    """Init rclpy (Python's own signal handlers stay), run one :meth:`Operator.seek`, shut down."""
    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    try:
        node = Node(f"operator_{os.getpid()}", namespace=namespace, context=context)
        return Operator(node).seek(instruction, timeout, on_line, overlay_path, ready_timeout, abort)
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=context)
