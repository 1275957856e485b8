"""Rewards of the APRS task: R_eff per move and R_term at STOP (constants in RewardConfig)."""
from __future__ import annotations

from .config import RewardConfig
from .geometry import Pose, pose_distance


def step_reward(prev: Pose, new: Pose, target: Pose, cfg: RewardConfig) -> float:
    """R_eff = γ·[d(V_{t−1}, V*) − d(V_t, V*)] − η, distances in degrees."""
    return cfg.gamma * (pose_distance(prev, target) - pose_distance(new, target)) - cfg.eta


def terminal_reward(stop_pose: Pose, target: Pose, iou: float, cfg: RewardConfig) -> float:
    """R_term = R_base + α·IoU if d(V_T, V*) < τ else −R_pen, with V_T the pose at STOP."""
    if pose_distance(stop_pose, target) < cfg.tau_deg:
        return cfg.r_base + cfg.alpha * float(iou)
    return -cfg.r_pen
