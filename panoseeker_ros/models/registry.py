"""Policies and segmenters by name, as the CLI, the nodes and training choose them.

Backends named in :data:`ORACLE` read the simulated scene's ground truth and need ``truth``; the
others read only pixels and the instruction, so they run on a robot. A learned model loads once per
call of :func:`make_policy` / :func:`make_segmenter`; :func:`per_scene` keeps one for a whole run.
"""
from __future__ import annotations

from typing import Callable

from ..core.config import ConfigError, SeekConfig
from ..core.episode import GroundTruth, Policy, Segmenter
from .baselines import ExpertPolicy, RandomPolicy, ScanPolicy
from .oracle import OracleDetector, OracleSegmenter

POLICIES = ("expert", "scan", "random", "qwen")
SEGMENTERS = ("oracle", "sam3")
ORACLE = {"policy": ("expert", "scan"), "segmenter": ("oracle",)}  # simulation only: they read ground truth


def needs_truth(kind: str, name: str) -> bool:
    return name in ORACLE[kind]


def _truth(kind: str, name: str, truth: GroundTruth | None) -> GroundTruth:
    if truth is None:
        raise ConfigError(f"{kind} {name} reads the simulated scene's ground truth; give a dataset episode "
                          f"(simulation) or choose a {kind} that reads pixels only")
    return truth


def make_policy(name: str, config: SeekConfig | None = None, truth: GroundTruth | None = None, seed: int = 0,
                **model_options) -> Policy:
    """``expert`` and ``scan`` need ``truth`` (expert plans on it, scan uses the oracle detector);
    ``qwen`` takes ``model`` (directory or hub id), optional ``adapter`` and the other
    :meth:`QwenPolicy.from_pretrained` options; its prompt states ``config``'s field of view."""
    config = config or SeekConfig()
    intr = config.camera.intrinsics()
    if name == "expert":
        truth = _truth("policy", name, truth)
        return ExpertPolicy(OracleDetector(truth, intr), truth.centroid,
                            (config.camera.tilt_min_deg, config.camera.tilt_max_deg),
                            stop_radius_deg=config.reward.tau_deg)
    if name == "scan":
        return ScanPolicy(OracleDetector(_truth("policy", name, truth), intr))
    if name == "random":
        return RandomPolicy(seed)
    if name == "qwen":
        from .qwen_policy import QwenPolicy  # torch and transformers load only when asked for

        return QwenPolicy.from_pretrained(fov_deg=config.camera.fov_deg, **model_options)
    raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}")


def make_segmenter(name: str, config: SeekConfig | None = None, truth: GroundTruth | None = None,
                   **model_options) -> Segmenter:
    """``oracle`` needs ``truth``; ``sam3`` takes ``model`` and the :meth:`Sam3Segmenter.from_pretrained` options."""
    config = config or SeekConfig()
    if name == "oracle":
        return OracleSegmenter(_truth("segmenter", name, truth), config.camera.intrinsics())
    if name == "sam3":
        from .sam3_segmenter import Sam3Segmenter

        return Sam3Segmenter.from_pretrained(**model_options)
    raise ValueError(f"unknown segmenter {name!r}; choose one of {', '.join(SEGMENTERS)}")


def per_scene(kind: str, name: str, config: SeekConfig | None = None, **options) -> Callable[[GroundTruth], object]:
    """A backend for each scene of a run: oracle ones are built from each scene's truth, the others
    are built once here and shared by every scene."""
    make = {"policy": make_policy, "segmenter": make_segmenter}[kind]
    if needs_truth(kind, name):
        return lambda truth: make(name, config, truth, **options)
    shared = make(name, config, **options)
    return lambda truth: shared
