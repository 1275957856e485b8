"""Policies and segmenters by name, as the CLI, the nodes and training choose them.

A factory is built once (a learned model loads once) and called per episode with the simulated
environment, which oracle components need for the ground truth.
"""
from __future__ import annotations

from typing import Callable

from ..core.environment import SeekEnv
from ..core.episode import Policy, Segmenter
from .baselines import ExpertPolicy, RandomPolicy, ScanPolicy
from .oracle import OracleDetector, OracleSegmenter

POLICIES = ("expert", "scan", "random", "qwen")
SEGMENTERS = ("oracle", "sam3")


def policy_factory(name: str, seed: int = 0, **model_options) -> Callable[[SeekEnv], Policy]:
    """``expert`` and ``scan`` read the scene's ground truth (expert directly, scan through the oracle
    detector); ``qwen`` takes ``model`` (directory or hub id) and optional ``adapter``."""
    if name == "expert":
        return lambda env: ExpertPolicy(OracleDetector(env.truth, env.intrinsics), env.truth.centroid,
                                        (env.config.camera.tilt_min_deg, env.config.camera.tilt_max_deg),
                                        stop_radius_deg=env.config.reward.tau_deg)
    if name == "scan":
        return lambda env: ScanPolicy(OracleDetector(env.truth, env.intrinsics))
    if name == "random":
        policy = RandomPolicy(seed)
        return lambda env: policy
    if name == "qwen":
        from .qwen_policy import QwenPolicy  # torch and transformers load only when asked for

        policy = QwenPolicy.from_pretrained(**model_options)
        return lambda env: policy
    raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}")


def segmenter_factory(name: str, **model_options) -> Callable[[SeekEnv], Segmenter]:
    if name == "oracle":
        return lambda env: OracleSegmenter(env.truth, env.intrinsics)
    if name == "sam3":
        from .sam3_segmenter import Sam3Segmenter

        segmenter = Sam3Segmenter.from_pretrained(**model_options)
        return lambda env: segmenter
    raise ValueError(f"unknown segmenter {name!r}; choose one of {', '.join(SEGMENTERS)}")
