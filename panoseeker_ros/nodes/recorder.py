"""``panoseeker record``: record the graph's topics into a rosbag2 (mcap or sqlite3) without ``ros2 bag``.

Messages are taken serialized (``raw=True`` subscriptions) and written as they came, with the receive
time as the bag timestamp, which is what ``ros2 bag record`` does. By default the topics a training bag
needs (``interface.TRAINING_TOPICS``): views, camera info, poses, canvas, instructions, moves and
looks, feedback, status, targets, results and masks. On a ROS 2 install the same bag comes from
``ros2 bag record`` with those topic names under the namespace.
"""
from __future__ import annotations

import importlib
import os
import time
from pathlib import Path
from typing import Callable

import rclpy
import rclpy.executors
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from . import interface as api


DEFAULT_MAX_BYTES = 4_000_000_000  # 4 GB of messages: about 1,700 full views, a long session of searches


class RecordError(ValueError):
    """A recording request a user must fix; one line."""


def message_class(type_name: str):
    """``sensor_msgs/msg/Image`` → the rclpy message class."""
    package, kind, name = type_name.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


def _fully_qualified(namespace: str, topic: str) -> str:
    if topic.startswith("/"):
        return topic
    return "/" + "/".join(p for p in (namespace.strip("/"), topic) if p)


class BagRecorder:
    """Subscribes to ``topics`` (relative names of :data:`interface.TOPICS`) and writes them to ``out``, at
    most ``max_bytes`` of message data (then ``full`` is set and further messages are dropped: anyone on the
    graph can publish, so a bag must not fill the disk)."""

    def __init__(self, node: Node, out: Path, topics, storage: str = "mcap", on_line=print,
                 max_bytes: int = DEFAULT_MAX_BYTES):
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        unknown = [t for t in topics if t not in api.TOPIC_BY_NAME]
        if unknown:
            raise RecordError(f"unknown topic {unknown[0]!r}; record any of: {', '.join(api.TOPIC_BY_NAME)}")
        plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
        if storage not in plugins:
            raise RecordError(f"storage {storage!r} is not supported; use mcap or sqlite3")
        out = Path(out)
        if out.exists():
            raise RecordError(f"{out} exists already; rosbag2 writes a new directory, choose another --out")
        self.node = node
        self.on_line = on_line
        self.typestore = get_typestore(Stores.ROS2_KILTED)
        self.writer = Writer(out, version=Writer.VERSION_LATEST, storage_plugin=plugins[storage])
        self.writer.open()
        self.path = out
        self.max_bytes, self.bytes, self.full = int(max_bytes), 0, False
        self.counts: dict[str, int] = {}
        self.subscriptions = []
        for topic in topics:
            spec = api.TOPIC_BY_NAME[topic]
            name = _fully_qualified(node.get_namespace(), topic)
            conn = self.writer.add_connection(name, spec.type, typestore=self.typestore)
            self.counts[name] = 0
            self.subscriptions.append(node.create_subscription(message_class(spec.type), topic,
                                                               self._writer_for(conn, name), api.QOS[spec.qos],
                                                               raw=True))

    def _writer_for(self, conn, name: str) -> Callable[[bytes], None]:
        def write(data: bytes) -> None:
            if self.full:
                return
            if self.bytes + len(data) > self.max_bytes:
                self.full = True
                self.on_line(f"{self.path} reached the size cap of {self.max_bytes / 1e6:g} MB; recording stops "
                             f"(raise it with --max-size)")
                return
            self.bytes += len(data)
            self.writer.write(conn, self.node.get_clock().now().nanoseconds, data)
            self.counts[name] += 1
            if self.counts[name] == 1:
                self.on_line(f"first message on {name}")
        return write

    def close(self) -> None:
        self.writer.close()


def record(out, topics=None, duration: float | None = None, namespace: str = api.DEFAULT_NAMESPACE,
           storage: str = "mcap", on_line=print, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, int]:
    """Record until ``duration`` seconds pass (None: until Ctrl-C) or ``max_bytes`` of messages are written;
    returns message counts per topic."""
    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = recorder = None
    try:
        node = Node(f"recorder_{os.getpid()}", namespace=namespace, context=context)
        recorder = BagRecorder(node, Path(out), list(topics or api.TRAINING_TOPICS), storage, on_line, max_bytes)
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(node)
        on_line(f"recording {len(recorder.counts)} topics of {namespace} into {recorder.path} "
                f"({'for %g s' % duration if duration else 'until Ctrl-C'})")
        end = None if duration is None else time.monotonic() + duration
        matched = False
        try:
            while (end is None or time.monotonic() < end) and not recorder.full:
                executor.spin_once(timeout_sec=0.1)
                if not matched and all(sub.get_publisher_count() > 0 for sub in recorder.subscriptions):
                    matched = True  # from here on nothing published on these topics passes the bag by
                    on_line("every topic has a publisher")
        except KeyboardInterrupt:
            pass
        return dict(recorder.counts)
    finally:
        if recorder is not None:
            recorder.close()
            on_line(f"wrote {recorder.path}: " + ", ".join(f"{t} {n}" for t, n in recorder.counts.items()))
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=context)
