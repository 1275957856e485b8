"""What every node shares: the ``main`` runner, lifecycle autostart, warn-once logging, and loading a
simulated episode by parameters."""
from __future__ import annotations

import gc
import re
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from ..core.config import ConfigError, SeekConfig
from ..core.dataset import DatasetError, load_dataset
from ..core.limits import BoundedSet


class WarnOnce:
    """Log a warning the first time a ``key`` is seen: a stream of bad messages logs one line, not thousands.
    The keys remembered are bounded (:data:`KEYS`, oldest forgotten first): keys built from message text
    cannot grow memory without end."""

    KEYS = 256

    def __init__(self, node: Node):
        self._logger = node.get_logger()
        self._seen = BoundedSet(self.KEYS)
        self._lock = threading.Lock()

    def __call__(self, key, text: str) -> None:
        with self._lock:
            if not self._seen.add(key):
                return
        self._logger.warning(text + " (logged once; further ones are dropped silently)")

    def image_ok(self, msg, size, kind: str, topic: str) -> bool:
        """Whether an Image message has a supported encoding and ``size``; a bad one is logged once per problem."""
        from .conversions import MessageError, check_image

        try:
            check_image(msg, size)
        except MessageError as exc:
            self((kind, str(exc).split(";")[0]), f"dropped {kind} on {topic}: {exc}")
            return False
        return True


def load_sim_env(dataset: str, episode_id: str, config: SeekConfig, who: str, split: str = ""):
    """The simulated episode named by the ``dataset`` / ``episode_id`` / ``split`` parameters (a core SimScene)."""
    from ..core.environment import SimScene

    if not dataset:
        raise ConfigError(f"{who}: parameter 'dataset' is empty; set it to a dataset.json "
                          f"(e.g. -p dataset:=sim/bedroom/dataset.json)")
    try:
        ds = load_dataset(dataset, split or None)
        spec = ds.by_id(episode_id) if episode_id else ds.episodes[0]
    except DatasetError as exc:
        raise ConfigError(f"{who}: parameter 'dataset' / 'split' / 'episode_id': {exc}") from None
    return SimScene(spec, config)


class AutostartMixin:
    """Lifecycle nodes with an ``autostart`` parameter configure and activate themselves, so the graph
    needs no lifecycle manager; ``ros2 lifecycle set`` still works when it is false."""

    def autostart(self: LifecycleNode) -> None:
        if not self.get_parameter("autostart").value:
            return
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return
        self.trigger_activate()


def spin_forever(executor, node: Node) -> None:
    """Spin until shutdown; a callback that raises is logged and the node goes on (one bad message or
    one bug in a rarely used path must not take the graph down)."""
    while node.context.ok():
        try:
            executor.spin_once(timeout_sec=0.5)
        except (KeyboardInterrupt, ExternalShutdownException):
            raise
        except Exception as exc:  # noqa: BLE001
            node.get_logger().error(f"a callback raised {type(exc).__name__}: {exc}; the node goes on\n"
                                    + traceback.format_exc())


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run_node(make_node: Callable[[], Node], args=None, threads: int = 1, name: str = "node") -> int:
    """Init rclpy, build and spin one node until Ctrl-C / SIGTERM / shutdown; always destroy the node
    and shut rclpy down. On SIGINT and SIGTERM a node's ``farewell()`` runs first, while rclpy still
    works (e.g. the last status says the search was cancelled). Settings errors print one line and
    give exit code 1."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    node = None
    code = 0
    try:
        node = make_node()
        executor = MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
        executor.add_node(node)
        if isinstance(node, AutostartMixin):
            node.autostart()
        spin_forever(executor, node)
    except (KeyboardInterrupt, ExternalShutdownException):
        if node is not None and hasattr(node, "farewell") and node.context.ok():
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the farewell short
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            node.farewell()
    except (ConfigError, DatasetError) as exc:
        rclpy.logging.get_logger(name).error(str(exc))
        code = 1
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code


_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(@(?P<revision>[0-9a-f]{40}))?$")


def resolve_model_param(who: str, param: str, value: str, what: str, required: bool = False) -> str | None:
    """A model parameter's value checked before anything loads, as a local directory: the path when it exists,
    or a hub id pinned to a commit (``org/name@<40-hex commit>``) resolved in the local hub cache, never
    fetched (a robot loads exactly the weights that were checked, and no one can swap them on the hub). An
    unpinned hub id, a missing path, or (``required``) an empty value fails with one line; empty otherwise
    gives None (none)."""
    value = (value or "").strip()
    fix = f"set it to {what} or to a hub id pinned to a commit, org/name@<commit> (-p {who}:{param}:=...)"
    if not value:
        if required:
            raise ConfigError(f"{who}: parameter '{param}' is empty; {fix}")
        return None
    path = Path(value).expanduser()
    if path.exists():
        return str(path)
    hub = _HUB_ID.match(value)
    if hub is None or value.startswith((".", "/", "~")):
        raise ConfigError(f"{who}: parameter '{param}' = {value}: no such directory; {fix}")
    if hub["revision"] is None:
        raise ConfigError(f"{who}: parameter '{param}' = {value} is a hub id without a pinned revision; {fix}")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(hub["repo"], revision=hub["revision"], local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError):
        raise ConfigError(f"{who}: parameter '{param}' = {value} is not in the local hub cache; download it once "
                          f"('hf download {hub['repo']} --revision {hub['revision']}') or give its directory") from None


def free_accelerator_memory() -> None:
    """Return cached GPU memory after a model was dropped (only when torch is already loaded)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
