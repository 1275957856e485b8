"""``panoseeker console``: the graph in a browser. A thin rclpy node feeds the web side
(:mod:`panoseeker_ros.console.web`) and carries the page's instruction and cancel back to the graph.

The node hears the camera view, the EgoSphere canvas, the camera's status and, through the operator
client (:class:`~panoseeker_ros.nodes.operator.Operator`), the statuses, decisions, results and the final
overlay of one namespace. Image callbacks only hand the newest frame over (no encoding, no copy of
rgb8): the web side encodes at its capped rate, so a slow browser never slows the graph. rclpy spins
in a thread of its own; the web server runs in the main thread until Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import asyncio
import os
import threading
import uuid

import rclpy
from rclpy.exceptions import InvalidNamespaceException
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rclpy.validate_namespace import validate_namespace
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from ..console.web import ConsoleError, ConsoleSettings, Hub, serve, settings_for
from . import interface as api
from .conversions import image_to_rgb
from .operator import Operator, feedback_line, result_line
from .runtime import WarnOnce

GRAPH_CHECK_S = 0.5  # how often the graph's presence is looked at (its liveliness lease is 2 s)


class ConsoleNode(Node):
    """Subscribes to what the page shows; publishes the page's instructions; calls ``cancel``."""

    def __init__(self, hub: Hub, namespace: str, executor, context=None):
        super().__init__(f"console_{os.getpid()}", namespace=namespace, context=context)
        self.hub = hub
        self.warn = WarnOnce(self)
        self.operator = Operator(self, executor, on_event=self._on_event, remember=False)
        self.create_subscription(Image, api.IMAGE, lambda m: self._on_frame("view", m, api.IMAGE), api.IMAGE_QOS)
        self.create_subscription(Image, api.CANVAS, lambda m: self._on_frame("canvas", m, api.CANVAS), api.IMAGE_QOS)
        self.create_subscription(String, api.CAMERA_STATUS, self._on_camera_status, api.LATCHED_QOS)
        self.cancel_client = self.create_client(Trigger, api.CANCEL)
        self.graph_state: tuple[str, str] | None = None
        self.create_timer(GRAPH_CHECK_S, self._check_graph)

    # ---- graph → page ---------------------------------------------------------------------------

    def _on_frame(self, channel: str, msg: Image, topic: str) -> None:
        if self.warn.image_ok(msg, None, "image", topic):
            self.hub.offer_frame(channel, image_to_rgb(msg))

    def _on_event(self, kind: str, payload) -> None:
        if kind == "overlay":
            self._on_frame("overlay", payload, api.RESULT_OVERLAY)
        elif kind == "feedback":
            self.hub.post({"type": kind, "data": payload, "line": feedback_line(payload)})
        elif kind == "result":
            self.hub.post({"type": kind, "data": payload, "line": result_line(payload)})
        else:
            self.hub.post({"type": kind, "data": payload})

    def _on_camera_status(self, msg: String) -> None:
        payload = api.loads(msg.data)
        if payload is not None:
            self.hub.post({"type": "camera", "data": payload})

    def _check_graph(self) -> None:
        """Connected while a policy node listens for instructions and its liveliness holds."""
        why = self.operator.gone()
        state = ("connected", "") if why is None else ("disconnected", why)
        if state != self.graph_state:
            self.graph_state = state
            self.hub.post({"type": "graph", "state": state[0], "message": state[1]})

    # ---- page → graph (called from the web thread) ----------------------------------------------

    def command(self, command: dict) -> dict | None:
        if command["type"] == "instruction":
            rid = self.operator.send(command["text"].strip(), f"console-{uuid.uuid4().hex[:12]}")
            return {"type": "sent", "id": rid, "instruction": command["text"].strip()}
        if not self.cancel_client.service_is_ready():
            return {"type": "cancel", "success": False,
                    "message": f"no policy_node offers {self.get_namespace()}/{api.CANCEL}; is the graph running?"}
        future = self.cancel_client.call_async(Trigger.Request())
        future.add_done_callback(self._on_cancelled)
        return None

    def _on_cancelled(self, future) -> None:
        response = future.result()
        if response is None:
            self.hub.post({"type": "cancel", "success": False, "message": "cancel got no answer"})
        else:
            self.hub.post({"type": "cancel", "success": bool(response.success),
                           "message": response.message or ("cancelled" if response.success else "nothing to cancel")})


def run_console(namespace: str, settings: ConsoleSettings, on_line=print) -> int:
    """Serve the console until Ctrl-C / SIGTERM; always destroys the node and shuts rclpy down."""
    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    node, spinner, stop = None, None, threading.Event()
    try:
        hub = Hub(settings)
        try:
            validate_namespace(namespace if namespace.startswith("/") else "/" + namespace)
        except InvalidNamespaceException as exc:
            reason = str(exc).splitlines()[0].split(": ", 1)[-1].rstrip(":")
            raise ConsoleError(f"--namespace {namespace}: {reason}; pass e.g. --namespace {api.DEFAULT_NAMESPACE}") from None
        executor = SingleThreadedExecutor(context=context)
        node = ConsoleNode(hub, namespace, executor, context)
        executor.add_node(node)
        hub.on_command = node.command

        def spin() -> None:
            while not stop.is_set() and context.ok():
                executor.spin_once(timeout_sec=0.1)

        spinner = threading.Thread(target=spin, name="console-rclpy", daemon=True)
        spinner.start()

        def started(url: str) -> None:
            on_line(f"panoseeker console for {node.get_namespace()}: open {url}")
            if settings.token:
                on_line("the page and its websocket need that token; keep the console behind the robot's VPN")

        asyncio.run(serve(hub, started))
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        stop.set()
        if spinner is not None:
            spinner.join(timeout=5.0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=context)


def cmd_console(args) -> int:
    settings = settings_for(args.bind, args.port, args.token_file, args.max_fps)
    return run_console(args.namespace, settings, on_line=lambda line: print(line, flush=True))


def register(subparsers) -> None:
    p = subparsers.add_parser("console", help="the graph in a web browser: live views, decisions, result; "
                                              "type an instruction, cancel",
                              description="Serve the operator console (one page) for a running graph. On an "
                                          "address other than localhost a token is required (printed at start).")
    p.add_argument("--namespace", default=api.DEFAULT_NAMESPACE, help="namespace of the graph (default %(default)s)")
    p.add_argument("--port", type=int, default=ConsoleSettings.port,
                   help="TCP port (default %(default)s; 0: any free port)")
    p.add_argument("--bind", default=ConsoleSettings.bind,
                   help="address to listen on (default %(default)s: this machine only); any other address "
                        "requires the token")
    p.add_argument("--token-file", help="read the token from this file (default: a new random token on a "
                                        "non-local --bind)")
    p.add_argument("--max-fps", type=float, default=ConsoleSettings.max_fps,
                   help="images per second per view to each browser, at most (default %(default)s)")
    p.set_defaults(func=cmd_console)
