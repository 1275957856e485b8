"""``panoseeker launch``: the four nodes as separate processes, for installs without ``ros2 launch``.

Each node runs as ``python -m panoseeker_ros.nodes.<node> --ros-args -r __ns:=NS --params-file YAML
[--params-file OVERRIDES]``, the same parameters ``launch/seek.launch.py`` passes. Command-line choices
(dataset, episode, backends, models) go into a small overrides YAML in a temporary directory (a
node's own section outranks ``-p``, and YAML keeps values like ``001`` strings). Ctrl-C or SIGTERM stops every node
(SIGINT, then SIGKILL after a grace period); the nodes also get SIGTERM if this process dies, so none
is orphaned. When a node exits on its own, the rest are stopped and its exit code is returned.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

NODES = ("camera_node", "egosphere_node", "policy_node", "segmentation_node")
STOP_GRACE_S = 5.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def write_overrides(directory: Path, shared: dict, per_node: dict[str, dict]) -> Path | None:
    """A ROS params YAML with the command line's choices; None when there are none."""
    doc = {}
    if shared:
        doc["/**"] = {"ros__parameters": shared}
    for node, params in per_node.items():
        if params:
            doc[f"/**/{node}"] = {"ros__parameters": params}
    if not doc:
        return None
    path = directory / "overrides.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def node_command(node: str, params: list[Path], namespace: str, log_level: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", f"panoseeker_ros.nodes.{node}", "--ros-args", "-r", f"__ns:={namespace}"]
    for p in params:
        cmd += ["--params-file", str(p)]
    if log_level:
        cmd += ["--log-level", log_level]
    return cmd


class Graph:
    """The four node processes of one namespace. Use as a context manager or call start()/stop()."""

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
        self._tmp: tempfile.TemporaryDirectory | None = None

    def start(self) -> "Graph":
        self._tmp = tempfile.TemporaryDirectory(prefix="panoseeker_launch_")
        files = [self.params]
        overrides = write_overrides(Path(self._tmp.name), self.shared, self.per_node)
        if overrides is not None:
            files.append(overrides)
        for node in self.nodes:
            self.procs[node] = subprocess.Popen(node_command(node, files, self.namespace, self.log_level),
                                                env=self.env, stdout=self.stdout, stderr=self.stderr,
                                                stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        return self

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
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "Graph":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise _Stop()


def run_graph(graph: Graph, body=None, on_line=print) -> int:
    """Start ``graph``, run ``body(graph)`` (or wait) until done, a node exits, or SIGINT/SIGTERM; stop
    every node on the way out. Returns body's exit code, a crashed node's code, or 0 when stopped."""
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        graph.start()
        on_line(f"started {', '.join(f'{n} (pid {p})' for n, p in graph.pids.items())} in {graph.namespace}")
        if body is not None:
            code = body(graph)
        else:
            while True:
                dead = graph.exited()
                if dead:
                    name, rc = next(iter(dead.items()))
                    on_line(f"{name} exited with code {rc}; stopping the graph")
                    code = rc or 1
                    break
                time.sleep(0.2)
    except (_Stop, KeyboardInterrupt):
        on_line("stopping the graph")
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        graph.stop()
    return code


def environment_for(domain_id: int | None = None) -> dict:
    env = dict(os.environ)
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(domain_id)
    return env
