"""Rewards of the APRS task: a per-move reward and R_term at STOP (constants in RewardConfig).

Two kinds (``reward.kind``):

* ``method`` (default): R_eff = γ·[d(V_{t−1}, V*) − d(V_t, V*)] − η per move, the method's.
* ``hierarchical`` (the Seg-ReSearch idea: guidance, then a tapering bonus, then the outcome): the
  first ``guidance_steps`` moves earn +``guidance`` when they bring the camera closer to the target
  (toward its side) and −``guidance`` otherwise; every move t (1-based) earns a bonus
  ``step_bonus``·``bonus_decay``^(t−1), which tapers so that a loop of moves stops paying; the
  outcome is R_term as for ``method``.
"""
from __future__ import annotations

from .config import RewardConfig
from .geometry import Pose, pose_distance


def step_reward(prev: Pose, new: Pose, target: Pose, cfg: RewardConfig, step: int = 1) -> float:
    """The reward of move ``step`` (1-based) from ``prev`` to ``new``, distances in degrees (module docstring)."""
    progress = pose_distance(prev, target) - pose_distance(new, target)
    if cfg.kind == "hierarchical":
        guidance = (cfg.guidance if progress > 0 else -cfg.guidance) if step <= cfg.guidance_steps else 0.0
        return guidance + cfg.step_bonus * cfg.bonus_decay ** (step - 1)
    return cfg.gamma * progress - cfg.eta


def terminal_reward(stop_pose: Pose, target: Pose, iou: float, cfg: RewardConfig) -> float:
    """R_term = R_base + α·IoU if d(V_T, V*) < τ else −R_pen, with V_T the pose at STOP."""
    if pose_distance(stop_pose, target) < cfg.tau_deg:
        return cfg.r_base + cfg.alpha * float(iou)
    return -cfg.r_pen
