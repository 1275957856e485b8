"""Parameter declaration: the shared settings of ``config/seek.yaml`` and each node's own ones.

The shared sections (``camera.*``, ``episode.*``, ``reward.*``, ``alignment.*``, ``segmentation.*``) are declared from the
core dataclasses and turned into a :class:`~panoseeker_ros.core.config.SeekConfig` by the same
``config_from_dict`` that ``panoseeker eval`` uses, so every node and the CLI agree on one file.

A parameter is either applied at run time (declared with ``on_change``: ``ros2 param set`` takes
effect at once, a bad value is refused with the reason) or read-only (``ros2 param set`` is refused).
"""
from __future__ import annotations

import dataclasses

from typing import Callable

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.node import Node

from ..core.config import SECTIONS, ConfigError, SeekConfig, config_from_dict

LIVE_SECTIONS = ("alignment", "segmentation")  # shared sections a node may apply at run time (its next search)

SHARED_DESCRIPTIONS = {
    "camera.fov_deg": "horizontal and vertical field of view [deg], each in (0, 180)",
    "camera.width": "view width [px]",
    "camera.height": "view height [px]",
    "camera.tilt_min_deg": "lowest elevation the head reaches [deg] (moves are clamped)",
    "camera.tilt_max_deg": "highest elevation the head reaches [deg] (moves are clamped)",
    "episode.max_steps": "T: policy decisions per episode, the final STOP included",
    "episode.canvas_width": "EgoSphere canvas width [px]",
    "episode.canvas_height": "EgoSphere canvas height [px]",
    "episode.canvas_style": "the EgoSphere picture the policy reads: official (longitude relative to the start) "
                            "| world",
    "reward.tau_deg": "success radius τ: final pose within τ of the target centroid [deg]",
    "reward.iou_success": "success also needs mask IoU at least this [0-1]",
    "reward.gamma": "R_eff per degree of progress towards the target [1/deg]",
    "reward.eta": "R_eff cost per step",
    "reward.r_base": "R_term when stopping within τ",
    "reward.alpha": "R_term weight of the IoU",
    "reward.r_pen": "R_term penalty when stopping farther than τ",
    "alignment.enabled": "centre the STOP mask's centroid before the final mask",
    "alignment.mode": "track (the official alignment: track the object into each new view) | carried-box",
    "alignment.centering_moves": "track: centring moves after the move to the centroid",
    "alignment.max_looks": "carried-box: looks at most (more than one only while the mask is cut by the border)",
    "alignment.tolerance_deg": "move again only while the centroid is this far or farther off centre [deg]",
    "segmentation.point_prompts": "none | entropy (SAM-3's own entropy-ranked points, read by the segmentation "
                                  "node) | vbr (the policy verifies candidate points by looking)",
    "segmentation.max_refinements": "review turns after a mask may change it this often (REFINE, MOVE); 0: no review",
    "segmentation.refinement_cost": "subtracted from the return per refinement",
    "segmentation.vbr_candidates": "vbr: candidate points at most",
    "segmentation.vbr_batch": "vbr: points asked per round (one batched forward pass)",
    "segmentation.vbr_threshold": "vbr: P(yes) at least this makes a positive point, at most 1 - this a negative one",
}

SIM_DESCRIPTIONS = {
    "dataset": "simulation: APRS dataset.json (or its directory), or the official benchmark's folder (with split); "
               "empty on a robot",
    "split": "simulation: test or train when dataset is the official benchmark's folder; empty for a dataset.json",
    "episode_id": "simulation: episode id in the dataset; empty: the first episode",
}


def _fail(node: Node, name: str, exc: Exception) -> ConfigError:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ConfigError(f"{node.get_name()}: parameter '{name}': {text}; fix it in the params file "
                       f"or with -p {node.get_name()}:{name}:=...")


def declare_seek_config(node: Node, live: Callable[[SeekConfig], None] | None = None) -> SeekConfig:
    """Declare the shared sections and return the SeekConfig they make. ``camera``, ``episode`` and
    ``reward`` are read-only (every node must agree on them); with ``live``, ``alignment.*`` and
    ``segmentation.*`` are applied at run time: ``live`` gets the new SeekConfig (a search in progress
    keeps the one it started with)."""
    values: dict = {}
    for section, cls in SECTIONS.items():
        defaults = cls()
        for f in dataclasses.fields(cls):
            name = f"{section}.{f.name}"
            default = getattr(defaults, f.name)
            if isinstance(default, tuple):
                default = [float(v) for v in default]
            runtime = live is not None and section in LIVE_SECTIONS
            desc = ParameterDescriptor(description=SHARED_DESCRIPTIONS.get(name, ""), read_only=not runtime,
                                       dynamic_typing=True)  # 90 and 90.0 both mean degrees
            try:
                values.setdefault(section, {})[f.name] = node.declare_parameter(name, default, desc).value
            except ParameterException as exc:
                raise _fail(node, name, exc) from None
    try:
        config = config_from_dict(values)
    except ConfigError as exc:
        raise ConfigError(f"{node.get_name()}: {exc}") from None
    if live is not None:
        def apply(changes: dict) -> str | None:
            merged = {sec: dict(vals) for sec, vals in values.items()}
            for name, value in changes.items():
                sec, key = name.split(".", 1)
                merged[sec][key] = value
            try:
                new = config_from_dict(merged)
            except ConfigError as exc:
                return str(exc)
            values.update(merged)
            live(new)
            return None

        _live(node).groups.append((tuple(f"{sec}.{f.name}" for sec in LIVE_SECTIONS
                                         for f in dataclasses.fields(SECTIONS[sec])), apply))
    return config


class _LiveParameters:
    """The parameters of one node applied at run time: name → setter, plus groups checked together."""

    def __init__(self, node: Node):
        self.setters: dict[str, Callable] = {}
        self.groups: list[tuple[tuple[str, ...], Callable[[dict], str | None]]] = []
        node.add_on_set_parameters_callback(self.on_set)

    def on_set(self, params) -> SetParametersResult:
        changes = {p.name: p.value for p in params}
        for name, value in changes.items():
            setter = self.setters.get(name)
            if setter is not None and (why := setter(value, dry_run=True)):
                return SetParametersResult(successful=False, reason=why)
        for names, apply in self.groups:
            mine = {n: v for n, v in changes.items() if n in names}
            if mine and (why := apply(mine)):
                return SetParametersResult(successful=False, reason=why)
        for name, value in changes.items():
            if name in self.setters:
                self.setters[name](value, dry_run=False)
        return SetParametersResult(successful=True)


def _live(node: Node) -> _LiveParameters:
    if not hasattr(node, "_panoseeker_live"):
        node._panoseeker_live = _LiveParameters(node)
    return node._panoseeker_live


def declare_sim_episode(node: Node) -> tuple[str, str, str]:
    """Declare the shared ``dataset``, ``episode_id`` and ``split`` (read-only); returns them."""
    return (declare(node, "dataset", "", SIM_DESCRIPTIONS["dataset"]),
            declare(node, "episode_id", "", SIM_DESCRIPTIONS["episode_id"]),
            declare(node, "split", "", SIM_DESCRIPTIONS["split"]))


def declare(node: Node, name: str, default, description: str, *, lo=None, hi=None, choices=None,
            on_change: Callable | None = None):
    """Declare one node parameter with a descriptor (range, choices) and return its value.

    Read-only unless ``on_change`` is given: then ``on_change(value)`` runs for every accepted
    ``ros2 param set`` (checked like the start-up value: type, range, choices)."""
    desc = ParameterDescriptor(description=description, read_only=on_change is None)
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

    def check(v):
        """(value, None) or (None, one-line reason)."""
        if isinstance(default, float):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return None, f"parameter '{name}' must be a number, got {v!r}"
            v = float(v)
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                return None, f"parameter '{name}' = {v} is outside [{lo}, {hi}]"
        elif type(v) is not type(default):
            return None, f"parameter '{name}' must be a {type(default).__name__}, got {v!r}"
        if choices and v not in choices:
            return None, f"parameter '{name}' = {v!r}; choose one of {', '.join(choices)}"
        return v, None

    value, why = check(value)
    if why:
        raise ConfigError(f"{node.get_name()}: {why}")
    if on_change is not None:
        def setter(v, dry_run: bool):
            checked, reason = check(v)
            if reason or dry_run:
                return reason
            on_change(checked)
            return None

        _live(node).setters[name] = setter
    return value
