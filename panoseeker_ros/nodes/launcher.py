"""``panoseeker launch``: the graph's nodes as separate processes, for installs without ``ros2 launch``.

Each node runs as ``python -m panoseeker_ros.nodes.<node> --ros-args -r __ns:=NS --params-file YAML
[--params-file OVERRIDES]``, the same parameters ``launch/seek.launch.py`` passes. Command-line choices
(dataset, episode, backends, models) go into a small overrides YAML held in memory (a memfd the nodes
read through ``/proc/self/fd``: nothing is left on disk; a node's own section outranks ``-p``, and YAML
keeps values like ``001`` strings). Ctrl-C or SIGTERM stops every node (SIGINT, so each says goodbye,
then SIGKILL after a grace period); the nodes also get SIGTERM if this process dies, so none is
orphaned. When a node exits on its own, a ``failed`` status naming it is published, then the node is
restarted (``respawn``) or the rest are stopped and its exit code is returned.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from .interface import NODES

STOP_GRACE_S = 5.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def overrides_yaml(shared: dict, per_node: dict[str, dict]) -> str | None:
    """A ROS params YAML with the command line's choices; None when there are none."""
    doc = {}
    if shared:
        doc["/**"] = {"ros__parameters": shared}
    for node, params in per_node.items():
        if params:
            doc[f"/**/{node}"] = {"ros__parameters": params}
    return yaml.safe_dump(doc, sort_keys=False) if doc else None


def write_overrides(directory: Path, shared: dict, per_node: dict[str, dict]) -> Path | None:
    """The overrides YAML as a file in ``directory`` (for a node started by hand); None when empty."""
    text = overrides_yaml(shared, per_node)
    if text is None:
        return None
    path = Path(directory) / "overrides.yaml"
    path.write_text(text)
    return path


ENCLAVES = "/panoseeker"  # SROS2: node X runs in enclave /panoseeker/X (config/security/panoseeker_policy.xml)


def node_command(node: str, params: list[Path], namespace: str, log_level: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", f"panoseeker_ros.nodes.{node}", "--ros-args", "-r", f"__ns:={namespace}",
           "--enclave", f"{ENCLAVES}/{node}"]  # used only when ROS_SECURITY_ENABLE=true
    for p in params:
        cmd += ["--params-file", str(p)]
    if log_level:
        cmd += ["--log-level", log_level]
    return cmd


class Graph:
    """The node processes of one namespace. Use as a context manager or call start()/stop()."""

    def __init__(self, params: Path, namespace: str = "/panoseeker", shared: dict | None = None,
                 per_node: dict[str, dict] | None = None, log_level: str | None = None, env: dict | None = None,
                 stdout=None, stderr=None, nodes=NODES):
        self.params = Path(params)
        self.namespace = namespace
        self.shared = shared or {}
        self.per_node = per_node or {}
        self.log_level = log_level
        self.env = env
        self.stdout, self.stderr = stdout, stderr
        self.nodes = tuple(nodes)
        self.procs: dict[str, subprocess.Popen] = {}
        self.restarts: dict[str, int] = {}
        self._overrides: int | None = None  # memfd of the overrides YAML

    def start(self) -> "Graph":
        text = overrides_yaml(self.shared, self.per_node)
        if text is not None:
            self._overrides = os.memfd_create("panoseeker_overrides", 0)  # inherited, never on disk
            os.write(self._overrides, text.encode())
        for node in self.nodes:
            self.start_node(node)
        return self

    def start_node(self, node: str) -> None:
        files = [self.params] + ([Path(f"/proc/self/fd/{self._overrides}")] if self._overrides is not None else [])
        self.procs[node] = subprocess.Popen(node_command(node, files, self.namespace, self.log_level),
                                            env=self.env, stdout=self.stdout, stderr=self.stderr,
                                            stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
                                            pass_fds=() if self._overrides is None else (self._overrides,))

    @property
    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.items()}

    def exited(self) -> dict[str, int]:
        """{node: exit code} of the nodes that are no longer running."""
        return {name: p.returncode for name, p in self.procs.items() if p.poll() is not None}

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGINT every node (each destroys itself and shuts rclpy down), SIGKILL what is left after ``grace_s``."""
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        end = time.monotonic() + grace_s
        for p in self.procs.values():
            try:
                p.wait(timeout=max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self._overrides is not None:
            os.close(self._overrides)
            self._overrides = None

    def __enter__(self) -> "Graph":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise _Stop()


class FailureAnnouncer:
    """The launcher's own ``status`` publisher in the graph's namespace, alive from the graph's start, so
    that when a node dies the others already know it (discovery is long done) and its final ``failed``
    status reaches them at once (the policy node cannot say it when it is the one that died)."""

    def __init__(self, namespace: str, env: dict | None = None):
        import rclpy
        from rclpy.node import Node
        from rclpy.signals import SignalHandlerOptions
        from std_msgs.msg import String

        from . import interface as api

        self._api, self._String = api, String
        self.context = rclpy.Context()
        domain = (env or os.environ).get("ROS_DOMAIN_ID")
        rclpy.init(context=self.context, domain_id=int(domain) if domain else None,
                   signal_handler_options=SignalHandlerOptions.NO)
        self.node = Node(f"launcher_{os.getpid()}", namespace=namespace, context=self.context)
        self.publisher = self.node.create_publisher(String, api.STATUS, api.STATUS_QOS)

    def announce(self, message: str) -> None:
        """Publish a ``failed`` status naming what happened; wait (2 s at most) until subscribers have it."""
        from rclpy.duration import Duration

        self.publisher.publish(self._String(data=self._api.dumps({
            "state": "failed", "message": message, "id": None, "instruction": None, "episode": None,
            "graph": "node exited"})))
        self.publisher.wait_for_all_acked(Duration(seconds=2.0))

    def close(self) -> None:
        import rclpy

        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def watch(graph: Graph, respawn: bool, on_line=print, announcer: FailureAnnouncer | None = None) -> int | None:
    """One look at the node processes: a node that exited is announced, then restarted (``respawn``)
    or the graph's exit code is returned (None: all is well)."""
    for name, rc in graph.exited().items():
        what = f"{name} exited with code {rc}; " + ("restarting it" if respawn else "stopping the graph")
        on_line(what)
        if announcer is not None:
            announcer.announce(what)
        if not respawn:
            return rc or 1
        graph.restarts[name] = graph.restarts.get(name, 0) + 1
        graph.start_node(name)
    return None


def run_graph(graph: Graph, body=None, on_line=print, respawn: bool = False) -> int:
    """Start ``graph``, run ``body(graph)`` (or watch it) until done, a node exits (without
    ``respawn``), or SIGINT/SIGTERM; stop every node on the way out. Returns body's exit code, a
    crashed node's code, or 0 when stopped."""
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    announcer = None
    try:
        if body is None:
            announcer = FailureAnnouncer(graph.namespace, graph.env)
        graph.start()
        on_line(f"started {', '.join(f'{n} (pid {p})' for n, p in graph.pids.items())} in {graph.namespace}")
        if body is not None:
            code = body(graph)
        else:
            while (code := watch(graph, respawn, on_line, announcer)) is None:
                time.sleep(0.2)
    except (_Stop, KeyboardInterrupt):
        on_line("stopping the graph")
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        graph.stop()
        if announcer is not None:
            announcer.close()
    return code


DISCOVERY_VARIABLES = ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_STATIC_PEERS", "ROS_LOCALHOST_ONLY")


def default_discovery(env) -> None:
    """Discovery on this machine only (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``) unless ``env`` already
    chooses (any of :data:`DISCOVERY_VARIABLES` set): the graph drives a camera, and by default nobody else
    on the network should find it. README "Securing the graph" says how to admit operator machines."""
    if not any(env.get(name) for name in DISCOVERY_VARIABLES):
        env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"


TRANSPORT_PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")


def default_transport(env) -> None:
    """The graph's Fast DDS profile (``config/fastdds_views.xml``: shared memory that holds whole views) unless
    ``env`` names a profile file already."""
    from ..paths import share_dir

    if not any(env.get(name) for name in TRANSPORT_PROFILE_VARIABLES):
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(share_dir() / "config" / "fastdds_views.xml")


def environment_for(domain_id: int | None = None) -> dict:
    env = dict(os.environ)
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(domain_id)
    return env
