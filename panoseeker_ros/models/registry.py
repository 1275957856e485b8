"""Policies, detectors and segmenters by name, as the CLI, the nodes and training choose them.

Backends that read the simulated scene's ground truth (:func:`needs_truth`: the ``expert`` policy, the
``oracle`` detector and segmenter, and ``scan`` / ``static`` searching with the oracle detector) need
``truth``; the others read only pixels and the instruction, so they run on a robot. A learned model
loads once per call of :func:`make_policy` / :func:`make_detector` / :func:`make_segmenter`;
:func:`per_scene` keeps one for a whole run.
"""
from __future__ import annotations

from typing import Callable

from ..core.config import ConfigError, SeekConfig
from ..core.episode import GroundTruth, Policy, Segmenter
from .baselines import ExpertPolicy, RandomPolicy, ScanPolicy, StaticSearch
from .detection import Detector
from .oracle import OracleDetector, OracleSegmenter

POLICIES = ("expert", "scan", "random", "qwen")  # step by step: what the ROS policy node can serve
ONE_SHOT = ("static",)  # one decision over views covering the sphere: run by the evaluation, not a node
DETECTORS = ("oracle", "sam3-text")
SEGMENTERS = ("oracle", "sam3")
ORACLE = {"policy": ("expert",), "detector": ("oracle",), "segmenter": ("oracle",)}  # they read ground truth
SEARCHING = ("scan", "static")  # policies that search with a detector
DEFAULT_MIN_SCORE = 0.3  # sam3-text: the detection threshold of transformers' SAM-3 post-processing


def needs_truth(kind: str, name: str, detector: str = "oracle", **_options) -> bool:
    """Whether the backend reads ground truth (a searching policy does when its detector does)."""
    if kind == "policy" and name in SEARCHING:
        return needs_truth("detector", detector)
    return name in ORACLE[kind]


def _truth(kind: str, name: str, truth: GroundTruth | None) -> GroundTruth:
    if truth is None:
        raise ConfigError(f"{kind} {name} reads the simulated scene's ground truth; give a dataset episode "
                          f"(simulation) or choose a {kind} that reads pixels only")
    return truth


def make_detector(name: str, config: SeekConfig | None = None, truth: GroundTruth | None = None,
                  **model_options) -> Detector:
    """``oracle`` needs ``truth``; ``sam3-text`` (SAM-3 concept segmentation of the target phrase) takes
    ``model`` (directory or hub id) and the :meth:`Sam3TextDetector.from_pretrained` options."""
    config = config or SeekConfig()
    if name == "oracle":
        return OracleDetector(_truth("detector", name, truth), config.camera.intrinsics())
    if name == "sam3-text":
        from .sam3_text import Sam3TextDetector  # torch and transformers load only when asked for

        return Sam3TextDetector.from_pretrained(**model_options)
    raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")


def make_policy(name: str, config: SeekConfig | None = None, truth: GroundTruth | None = None, seed: int = 0,
                detector: str = "oracle", min_score: float | None = None, detector_options: dict | None = None,
                **model_options) -> Policy:
    """``expert`` needs ``truth`` (it plans on it); ``scan`` and ``static`` search with ``detector``
    (``oracle``, which needs ``truth``, or ``sam3-text`` with ``detector_options``) and accept a match
    with a score of at least ``min_score`` (default 0 for the oracle, ``DEFAULT_MIN_SCORE`` otherwise);
    ``static`` is a :class:`StaticSearch`, which the evaluation runs as a one-shot episode; ``qwen`` takes
    ``model`` (directory or hub id), optional ``adapter`` and the other :meth:`QwenPolicy.from_pretrained`
    options; its prompt states ``config``'s field of view."""
    config = config or SeekConfig()
    intr = config.camera.intrinsics()
    if name == "expert":
        truth = _truth("policy", name, truth)
        return ExpertPolicy(OracleDetector(truth, intr), truth.centroid,
                            (config.camera.tilt_min_deg, config.camera.tilt_max_deg),
                            stop_radius_deg=config.reward.tau_deg)
    if name in SEARCHING:
        found = make_detector(detector, config, truth, **(detector_options or {}))
        threshold = (0.0 if detector == "oracle" else DEFAULT_MIN_SCORE) if min_score is None else float(min_score)
        return (ScanPolicy if name == "scan" else StaticSearch)(found, threshold)
    if name == "random":
        return RandomPolicy(seed)
    if name == "qwen":
        from .qwen_policy import QwenPolicy  # torch and transformers load only when asked for

        return QwenPolicy.from_pretrained(fov_deg=config.camera.fov_deg, **model_options)
    raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES + ONE_SHOT)}")


def make_segmenter(name: str, config: SeekConfig | None = None, truth: GroundTruth | None = None,
                   **model_options) -> Segmenter:
    """``oracle`` needs ``truth``; ``sam3`` takes ``model`` and the :meth:`Sam3Segmenter.from_pretrained` options
    (its own entropy point prompts when ``config.segmentation.point_prompts`` is ``entropy``)."""
    config = config or SeekConfig()
    if name == "oracle":
        return OracleSegmenter(_truth("segmenter", name, truth), config.camera.intrinsics())
    if name == "sam3":
        from .sam3_segmenter import Sam3Segmenter

        model_options.setdefault("point_prompts", config.segmentation.point_prompts == "entropy")
        return Sam3Segmenter.from_pretrained(**model_options)
    raise ValueError(f"unknown segmenter {name!r}; choose one of {', '.join(SEGMENTERS)}")


def per_scene(kind: str, name: str, config: SeekConfig | None = None, **options) -> Callable[[GroundTruth], object]:
    """A backend for each scene of a run: those that read ground truth are built from each scene's truth,
    the others are built once here and shared by every scene."""
    make = {"policy": make_policy, "detector": make_detector, "segmenter": make_segmenter}[kind]
    if needs_truth(kind, name, **options):
        return lambda truth: make(name, config, truth, **options)
    shared = make(name, config, **options)
    return lambda truth: shared
