"""The operator's client of the graph (``panoseeker seek``): publish an instruction, print the search's
feedback as it happens, and return the result (optionally saving the overlay picture).

A line per decision, e.g.::

    step  1 at θ= -90.0° ϕ=  0.0°  MOVE 180 0        policy 0.081 s  graph 0.094 s
    result: success: aligned; IoU 0.93, 1.2° from the target centroid (mask 41210 px at θ= 89.0° ϕ=  0.0°)

The instruction goes out as JSON with an id of this client's own; only statuses, feedback and results
carrying that id count, so a stale or superseded search is never mistaken for this one. A graph that
goes away (no policy node listens any more, or the launcher reports a node that exited) ends the wait
within a few seconds.
"""
from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import rclpy
import rclpy.executors
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image
from std_msgs.msg import String

from ..core.geometry import pan_tilt_to_pose
from . import interface as api
from .conversions import image_to_rgb, stamp_ns


@dataclass
class SeekOutcome:
    state: str  # success | failure | rejected | cancelled | preempted | timeout | unreachable
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
    if "review" in fb:  # a review turn of the mask after STOP
        return (f"review {fb['review']} of the mask ({fb.get('mask_pixels', 0)} px): {fb.get('action', ''):<22} "
                f"policy {fb.get('latency_s', 0.0):.3f} s")
    return (f"step {fb.get('step', 0):2d} at {pose_text(fb.get('pan'), fb.get('tilt'))}  {fb.get('action', ''):<22} "
            f"policy {fb.get('latency_s', 0.0):.3f} s  graph {fb.get('observe_s', 0.0):.3f} s")


def result_line(res: dict) -> str:
    verdict = "success" if res.get("success") else "failure"
    return (f"result: {verdict}: {res.get('message', '')} (mask {res.get('mask_pixels', 0)} px at "
            f"{pose_text(res.get('pan'), res.get('tilt'))})")


class Operator:
    """Subscribes to status, feedback, result and overlay of one namespace; publishes instructions."""

    def __init__(self, node: Node, executor=None, on_event: Callable[[str, object], None] | None = None,
                 remember: bool = True):
        """``on_event(kind, payload)`` hears each message as it arrives: ``status``, ``feedback``, ``result``
        (dicts) and ``overlay`` (the Image); ``remember=False`` keeps no history (a long-running client)."""
        self.node = node
        self.on_event = on_event
        self.remember = remember
        if executor is None:
            executor = rclpy.executors.SingleThreadedExecutor(context=node.context)
            executor.add_node(node)
        self.executor = executor
        self.events: list[tuple[str, float, dict]] = []  # (status | feedback, arrival s, payload), in order
        self.statuses: list[tuple[float, dict]] = []
        self.results: list[tuple[float, dict]] = []
        self.overlays: dict[int, Image] = {}
        self.pub = node.create_publisher(String, api.INSTRUCTION, api.COMMAND_QOS)
        self.alive = 0  # status publishers alive (liveliness): 0 after one was seen means the graph is gone
        self.lost = False
        self.subs = {
            "policy_node": node.create_subscription(
                String, api.STATUS, lambda m: self._keep(self.statuses, m, "status"), api.STATUS_QOS,
                event_callbacks=SubscriptionEventCallbacks(liveliness=self._on_liveliness)),
            "policy_node feedback": node.create_subscription(String, api.FEEDBACK,
                                                             lambda m: self._keep(None, m, "feedback"),
                                                             api.HISTORY_QOS),
            "policy_node result": node.create_subscription(String, api.RESULT,
                                                           lambda m: self._keep(self.results, m, "result"),
                                                           api.LATCHED_QOS),
            "policy_node overlay": node.create_subscription(Image, api.RESULT_OVERLAY, self._on_overlay,
                                                            api.LATCHED_QOS),
        }


    def _on_liveliness(self, info) -> None:
        self.lost = self.lost or (info.alive_count == 0 and info.not_alive_count > 0)
        self.alive = info.alive_count
        if self.alive:
            self.lost = False

    def gone(self) -> str | None:
        """Why the graph cannot be reached right now (one line), or None while a policy node listens and lives."""
        if self.lost:  # the policy node's liveliness lease ran out: killed, or its machine is gone
            return f"policy_node stopped answering (liveliness lost after {api.LIVELINESS_LEASE_S:g} s)"
        if self.pub.get_subscription_count() == 0:
            return f"no policy_node listens on {self.node.get_namespace()}/{api.INSTRUCTION}"
        return None

    def _now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def _keep(self, store: list | None, msg: String, kind: str | None = None) -> None:
        payload = api.loads(msg.data)
        if payload is None:
            return
        now = self._now()
        if self.remember and store is not None:
            store.append((now, payload))
        if self.remember and kind in ("status", "feedback"):
            self.events.append((kind, now, payload))
        if self.on_event is not None:
            self.on_event(kind, payload)

    def _on_overlay(self, msg: Image) -> None:
        self.overlays[stamp_ns(msg.header.stamp)] = msg
        for old in sorted(self.overlays)[:-4]:
            del self.overlays[old]
        if self.on_event is not None:
            self.on_event("overlay", msg)

    def send(self, instruction: str, request_id: str | None = None) -> str:
        """Publish ``instruction`` in the JSON form with an id (``request_id``, else a new unique one); the id."""
        rid = request_id or f"{self.node.get_name()}-{uuid.uuid4().hex[:12]}"  # unique across clients and runs
        self.pub.publish(String(data=api.dumps({"id": rid, "instruction": instruction})))
        return rid

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
            if (listening and matched and last is not None and last.get("state") != "inactive"
                    and not last.get("graph") and not self.lost):
                return None
        ns = self.node.get_namespace()
        if self.pub.get_subscription_count() == 0:
            return (f"no policy_node listens on {ns}/{api.INSTRUCTION} after {timeout:g} s; start the graph "
                    f"('panoseeker launch') or pass the right --namespace")
        missing = [who for who, sub in self.subs.items() if sub.get_publisher_count() == 0]
        if missing:
            return f"{', '.join(missing)} not found in {ns} after {timeout:g} s; is the whole graph running?"
        last = self.statuses[-1][1] if self.statuses else {}
        if last.get("graph") or self.lost:
            return f"the graph is not running: {last.get('message', 'its policy_node is gone')}"
        return f"policy_node is not active after {timeout:g} s: {last.get('message', 'no status')}"

    def seek(self, instruction: str, timeout: float, on_line: Callable[[str], None] = print,
             overlay_path=None, ready_timeout: float = 10.0,
             abort: Callable[[], str | None] | None = None, request_id: str | None = None,
             gone_after_s: float = 3.0) -> SeekOutcome:
        """Send ``instruction`` and follow it to its result (or rejection, cancellation, timeout).
        ``abort`` is polled: a non-empty reason ends the wait (e.g. a node process died); so does a
        graph whose policy node has stopped listening for ``gone_after_s``."""
        reason = self.wait_ready(ready_timeout, abort)
        if reason is not None:
            return SeekOutcome("unreachable", reason)
        sent = self._now()
        rid = self.send(instruction, request_id)
        outcome = SeekOutcome("timeout", f"no result within {timeout:g} s of the instruction")
        end = time.monotonic() + timeout
        seen, ended, alone_since = 0, None, None
        while time.monotonic() < end:
            self.spin_for(0.05)
            if abort is not None and (why := abort()):
                return SeekOutcome("unreachable", why, feedback=outcome.feedback)
            why = self.gone()
            if why is None:
                alone_since = None
            else:  # liveliness lost counts at once; a policy node not listening for gone_after_s
                alone_since = alone_since or time.monotonic()
                if self.lost or time.monotonic() - alone_since > gone_after_s:
                    return SeekOutcome("unreachable", f"the graph is gone: {why}", feedback=outcome.feedback)
            for kind, arrived, payload in self.events[seen:]:
                if arrived < sent:
                    continue
                if kind == "status" and payload.get("graph"):  # the launcher: a node of the graph exited
                    return SeekOutcome("unreachable", payload.get("message", "a node exited"), feedback=outcome.feedback)
                if payload.get("id") != rid:
                    continue
                state = payload.get("state")
                if kind == "feedback":
                    outcome.feedback.append(payload)
                    on_line(feedback_line(payload))
                elif state == "rejected":
                    return SeekOutcome("rejected", f"rejected: {payload.get('message')}")
                elif state in ("accepted", "paused", "resumed"):
                    on_line(f"{'searching' if state == 'accepted' else state}: {payload.get('message')}")
                elif state in ("cancelled", "preempted"):
                    on_line(f"{state}: {payload.get('message')}")
                    return SeekOutcome(state, payload.get("message", state), feedback=outcome.feedback)
                elif state in ("done", "failed") and ended is None:
                    ended = (time.monotonic(), payload)
            seen = len(self.events)
            mine = [r for _, r in self.results if r.get("id") == rid]
            if mine:
                res = mine[-1]
                on_line(result_line(res))
                outcome = SeekOutcome("success" if res.get("success") else "failure", res.get("message", ""), res,
                                      outcome.feedback)
                if overlay_path is not None:
                    outcome.overlay_path = self._save_overlay(res["stamp"], Path(overlay_path), on_line)
                return outcome
            # a search that failed before its result (a timeout, a backend error) has none: one more
            # moment for a result that took another path, then the failure
            if ended is not None and time.monotonic() - ended[0] > 2.0:
                on_line(f"failed: {ended[1].get('message')}")
                return SeekOutcome("failure", ended[1].get("message", "failed"), feedback=outcome.feedback)
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
