"""Typed settings with documented defaults, loadable from the package's ROS parameter YAML.

The YAML is the ROS 2 form (``/**: ros__parameters: {camera: {...}, episode: {...}, reward: {...}}``),
so nodes, the CLI and training read one file.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .egosphere import CANVAS_STYLES
from .geometry import Intrinsics


# The official APRS environment's success radius (``SUCCESS_TAU_RAD`` of FudanCVL/APRS aprs/config.py)
SUCCESS_TAU_RAD = 0.3
SUCCESS_TAU_DEG = math.degrees(SUCCESS_TAU_RAD)  # 17.19°


class ConfigError(ValueError):
    """A settings file or value a user must fix; the message is one line naming the key and the fix."""


@dataclass
class CameraConfig:
    fov_deg: tuple[float, float] = (120.0, 90.0)  # horizontal, vertical field of view
    width: int = 1024  # view size in pixels
    height: int = 768
    tilt_min_deg: float = -90.0  # mechanical tilt limits of the pan-tilt head
    tilt_max_deg: float = 90.0

    def intrinsics(self) -> Intrinsics:
        return Intrinsics.from_fov(self.fov_deg, (self.width, self.height))


@dataclass
class EpisodeConfig:
    max_steps: int = 20  # T: policy decisions per episode, the final STOP included
    canvas_width: int = 1024  # EgoSphere canvas size
    canvas_height: int = 512
    canvas_style: str = "official"  # the picture the policy reads: official (relative longitude) | world


ALIGNMENT_MODES = ("track", "carried-box")


@dataclass
class AlignmentConfig:
    """Active alignment after STOP: centre the mask's centroid (see README, Metrics).

    ``track`` (the official PanoSeeker alignment): move to the STOP mask's centroid, then up to
    ``centering_moves`` more while the tracked object's centroid is ``tolerance_deg`` or more off the view
    centre on either axis; each new view is segmented by tracking the object from the first mask.
    ``carried-box``: re-segment each new view with the box carried over, at most ``max_looks`` looks.
    """

    enabled: bool = True  # False: the STOP view's mask is final
    mode: str = "track"  # track | carried-box
    centering_moves: int = 5  # track: centring moves after the move to the centroid
    max_looks: int = 3  # carried-box: looks in all; more than one only while the mask is cut by the border ...
    tolerance_deg: float = 2.0  # ... and its centroid is farther than this off centre (track: on either axis)


POINT_PROMPTS = ("none", "entropy", "vbr")


@dataclass
class SegmentationConfig:
    """How the STOP box becomes the mask the alignment starts from (README, Segmentation as an agent).

    ``point_prompts``: ``none`` (the box alone), ``entropy`` (the segmenter adds entropy-ranked points of its
    own, SAM-3 only) or ``vbr`` (verify by looking: candidate points are drawn as markers on the view, the
    policy answers one yes/no question per marker, and the points it is sure of prompt the segmenter with
    the box). ``max_refinements``: after each mask the policy reviews it (ACCEPT | REFINE [box] | MOVE) until
    it accepts or this many refinements were made (0: no review, the first mask is final)."""

    point_prompts: str = "none"  # none | entropy | vbr
    max_refinements: int = 2  # review turns that may change the mask (REFINE or MOVE); 0: no review
    refinement_cost: float = 0.05  # subtracted from the return per refinement made
    vbr_candidates: int = 6  # vbr: candidate points (markers) at most ...
    vbr_batch: int = 3  # ... asked this many per round (one batched call), until 2 positives and 1 negative
    vbr_threshold: float = 0.7  # vbr: P(yes) >= this: a positive point; P(yes) <= 1 - this: a negative one
REWARD_KINDS = ("method", "hierarchical")  # core/rewards.py


@dataclass
class RewardConfig:
    """Reward and success constants; METHOD.md leaves them open, these are the package's choices."""

    tau_deg: float = SUCCESS_TAU_DEG  # success radius: final pose within τ of the target centroid (0.3 rad)
    iou_success: float = 0.5  # and mask IoU at least this
    gamma: float = 1.0 / 30.0  # R_eff per degree of progress: one lattice step (30°) closer earns 1
    eta: float = 0.05  # R_eff step cost
    r_base: float = 1.0  # R_term when stopping within τ ...
    alpha: float = 1.0  # ... plus α·IoU
    r_pen: float = 1.0  # R_term = −R_pen when stopping farther than τ
    kind: str = "method"  # per-move reward: method (R_eff) | hierarchical (core/rewards.py)
    guidance_steps: int = 2  # hierarchical: the first moves get ±guidance (toward the target or not)
    guidance: float = 0.5
    step_bonus: float = 0.2  # hierarchical: move t earns step_bonus · bonus_decay^(t−1)
    bonus_decay: float = 0.5


@dataclass
class SeekConfig:
    camera: CameraConfig = field(default_factory=CameraConfig)
    episode: EpisodeConfig = field(default_factory=EpisodeConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    alignment: AlignmentConfig = field(default_factory=AlignmentConfig)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)


SECTIONS = {f.name: f.default_factory for f in dataclasses.fields(SeekConfig)}  # YAML section -> dataclass


def _fill(cls, values: dict, where: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping of keys to values; check the YAML indentation")
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"unknown setting {where}.{key}; known keys: {', '.join(known)}")
        default = getattr(cls(), key)
        if isinstance(default, tuple):
            if not isinstance(value, (list, tuple)) or len(value) != len(default):
                raise ConfigError(f"{where}.{key} must be a list of {len(default)} numbers, got {value!r}")
            value = tuple(float(v) for v in value)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{where}.{key} must be true or false, got {value!r}")
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise ConfigError(f"{where}.{key} must be a string, got {value!r}")
        elif not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}.{key} must be a number, got {value!r}")
        else:
            value = type(default)(value)
        kwargs[key] = value
    return cls(**kwargs)


def config_from_dict(params: dict) -> SeekConfig:
    """Build a SeekConfig from a ``ros__parameters`` mapping; other keys (node settings) are ignored."""
    cfg = SeekConfig(**{name: _fill(cls, params.get(name, {}), name) for name, cls in SECTIONS.items()})
    if cfg.episode.max_steps < 1:
        raise ConfigError("episode.max_steps must be at least 1")
    if cfg.reward.kind not in REWARD_KINDS:
        raise ConfigError(f"reward.kind {cfg.reward.kind!r} is unknown; choose one of {', '.join(REWARD_KINDS)}")
    if cfg.alignment.max_looks < 0:
        raise ConfigError("alignment.max_looks must be 0 or more")
    if cfg.alignment.centering_moves < 0:
        raise ConfigError("alignment.centering_moves must be 0 or more")
    if cfg.episode.canvas_style not in CANVAS_STYLES:
        raise ConfigError(f"episode.canvas_style = {cfg.episode.canvas_style!r}; use one of {', '.join(CANVAS_STYLES)}")
    if cfg.alignment.mode not in ALIGNMENT_MODES:
        raise ConfigError(f"alignment.mode = {cfg.alignment.mode!r}; use one of {', '.join(ALIGNMENT_MODES)}")
    seg = cfg.segmentation
    if seg.point_prompts not in POINT_PROMPTS:
        raise ConfigError(f"segmentation.point_prompts = {seg.point_prompts!r}; use one of {', '.join(POINT_PROMPTS)}")
    if seg.max_refinements < 0:
        raise ConfigError("segmentation.max_refinements must be 0 or more (0: the first mask is final)")
    if seg.vbr_candidates < 1 or seg.vbr_batch < 1:
        raise ConfigError("segmentation.vbr_candidates and segmentation.vbr_batch must be at least 1")
    if not 0.5 <= seg.vbr_threshold <= 1.0:
        raise ConfigError(f"segmentation.vbr_threshold = {seg.vbr_threshold}; use a probability in [0.5, 1]")
    cfg.camera.intrinsics()  # validates the field of view
    return cfg


def read_ros_parameters(path, node: str = "/**") -> dict:
    """The ``ros__parameters`` mapping of ``node`` in a ROS 2 parameter YAML (``/**`` merged under it)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"parameter file {path} does not exist; pass the path of a YAML like config/seek.yaml")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path} is not valid YAML{at}; fix the syntax there") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path} must map node names to 'ros__parameters' (e.g. '/**: ros__parameters: ...')")
    merged: dict = {}
    for key in ("/**", node):
        section = doc.get(key) or {}
        params = section.get("ros__parameters", {}) if isinstance(section, dict) else None
        if not isinstance(params, dict):
            raise ConfigError(f"{path}: '{key}' needs a 'ros__parameters' mapping")
        for k, v in params.items():
            if isinstance(v, dict) and isinstance(merged.get(k), dict):
                merged[k] = {**merged[k], **v}
            else:
                merged[k] = v
    return merged


def load_config(path=None) -> SeekConfig:
    """SeekConfig from a parameter YAML, or the defaults when ``path`` is None."""
    return SeekConfig() if path is None else config_from_dict(read_ros_parameters(path))
