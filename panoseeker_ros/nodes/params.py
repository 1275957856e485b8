"""Parameter declaration: the shared settings of ``config/seek.yaml`` and each node's own ones.

The shared sections (``camera.*``, ``episode.*``, ``reward.*``) are declared from the core dataclasses,
read-only, and turned into a :class:`~panoseeker_ros.core.config.SeekConfig` by the same
``config_from_dict`` that ``panoseeker eval`` uses, so every node and the CLI agree on one file.
"""
from __future__ import annotations

import dataclasses

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import ParameterException
from rclpy.node import Node

from ..core.config import CameraConfig, ConfigError, EpisodeConfig, RewardConfig, SeekConfig, config_from_dict

SECTIONS = {"camera": CameraConfig, "episode": EpisodeConfig, "reward": RewardConfig}

SHARED_DESCRIPTIONS = {
    "camera.fov_deg": "horizontal and vertical field of view [deg], each in (0, 180)",
    "camera.width": "view width [px]",
    "camera.height": "view height [px]",
    "camera.tilt_min_deg": "lowest elevation the head reaches [deg] (moves are clamped)",
    "camera.tilt_max_deg": "highest elevation the head reaches [deg] (moves are clamped)",
    "episode.max_steps": "T: policy decisions per episode, the final STOP included",
    "episode.canvas_width": "EgoSphere canvas width [px]",
    "episode.canvas_height": "EgoSphere canvas height [px]",
    "reward.tau_deg": "success radius τ: final pose within τ of the target centroid [deg]",
    "reward.iou_success": "success also needs mask IoU at least this [0-1]",
    "reward.gamma": "R_eff per degree of progress towards the target [1/deg]",
    "reward.eta": "R_eff cost per step",
    "reward.r_base": "R_term when stopping within τ",
    "reward.alpha": "R_term weight of the IoU",
    "reward.r_pen": "R_term penalty when stopping farther than τ",
}

SIM_DESCRIPTIONS = {
    "dataset": "simulation: APRS dataset.json (or its directory) of the scene; empty on a robot",
    "episode_id": "simulation: episode id in the dataset; empty: the first episode",
}


def _fail(node: Node, name: str, exc: Exception) -> ConfigError:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ConfigError(f"{node.get_name()}: parameter '{name}': {text}; fix it in the params file "
                       f"or with -p {node.get_name()}:{name}:=...")


def declare_seek_config(node: Node) -> SeekConfig:
    """Declare ``camera.*``, ``episode.*``, ``reward.*`` (read-only) and return the SeekConfig they make."""
    values: dict = {}
    for section, cls in SECTIONS.items():
        defaults = cls()
        for f in dataclasses.fields(cls):
            name = f"{section}.{f.name}"
            default = getattr(defaults, f.name)
            if isinstance(default, tuple):
                default = [float(v) for v in default]
            desc = ParameterDescriptor(description=SHARED_DESCRIPTIONS.get(name, ""), read_only=True,
                                       dynamic_typing=True)  # 90 and 90.0 both mean degrees
            try:
                values.setdefault(section, {})[f.name] = node.declare_parameter(name, default, desc).value
            except ParameterException as exc:
                raise _fail(node, name, exc) from None
    try:
        return config_from_dict(values)
    except ConfigError as exc:
        raise ConfigError(f"{node.get_name()}: {exc}") from None


def declare_sim_episode(node: Node) -> tuple[str, str]:
    """Declare the shared ``dataset`` and ``episode_id`` (read-only); returns them."""
    return (declare(node, "dataset", "", SIM_DESCRIPTIONS["dataset"], read_only=True),
            declare(node, "episode_id", "", SIM_DESCRIPTIONS["episode_id"], read_only=True))


def declare(node: Node, name: str, default, description: str, *, lo=None, hi=None, choices=None,
            read_only: bool = False):
    """Declare one node parameter with a descriptor (range, choices, read-only) and return its value."""
    desc = ParameterDescriptor(description=description, read_only=read_only)
    if choices:
        desc.additional_constraints = "one of: " + ", ".join(choices)
    if lo is not None or hi is not None:
        if isinstance(default, float):
            desc.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi))]
        elif isinstance(default, int) and not isinstance(default, bool):
            desc.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi))]
    if isinstance(default, float):
        desc.dynamic_typing = True  # accept 1 for 1.0; the value is checked below
    try:
        value = node.declare_parameter(name, default, desc).value
    except ParameterException as exc:
        raise _fail(node, name, exc) from None
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{node.get_name()}: parameter '{name}' must be a number, got {value!r}")
        value = float(value)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ConfigError(f"{node.get_name()}: parameter '{name}' = {value} is outside [{lo}, {hi}]")
    if choices and value not in choices:
        raise ConfigError(f"{node.get_name()}: parameter '{name}' = {value!r}; choose one of {', '.join(choices)}")
    return value
