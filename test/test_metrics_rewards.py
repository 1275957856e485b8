"""Rewards and every metric against hand-computed cases."""
import math

import numpy as np
import pytest

from panoseeker_ros.core.config import RewardConfig
from panoseeker_ros.core.geometry import Pose
from panoseeker_ros.core.metrics import EpisodeOutcome, format_table, mask_iou, path_length_deg, summarize
from panoseeker_ros.core.rewards import step_reward, terminal_reward

CFG = RewardConfig()  # τ = 0.3 rad (17.19°), γ = 1/30, η = 0.05, R_base = 1, α = 1, R_pen = 1


def test_the_hierarchical_reward_guides_early_moves_and_its_bonus_tapers():
    from dataclasses import replace

    cfg = replace(CFG, kind="hierarchical")
    target = Pose(90, 0)
    toward, away = (Pose(0, 0), Pose(30, 0)), (Pose(30, 0), Pose(0, 0))
    assert step_reward(*toward, target, cfg, 1) == pytest.approx(cfg.guidance + cfg.step_bonus)
    assert step_reward(*away, target, cfg, 1) == pytest.approx(-cfg.guidance + cfg.step_bonus)
    late = [step_reward(*away, target, cfg, t) for t in range(cfg.guidance_steps + 1, cfg.guidance_steps + 6)]
    assert late[0] > 0 and all(b == pytest.approx(a * cfg.bonus_decay) for a, b in zip(late, late[1:]))
    assert sum(late) < cfg.step_bonus * 2  # a loop of moves earns a bounded bonus


def test_step_reward_is_progress_minus_step_cost():
    target = Pose(90, 0)
    assert step_reward(Pose(0, 0), Pose(30, 0), target, CFG) == pytest.approx(30 / 30 - 0.05)
    assert step_reward(Pose(30, 0), Pose(0, 0), target, CFG) == pytest.approx(-1 - 0.05)
    assert step_reward(Pose(0, 0), Pose(0, 0), target, CFG) == pytest.approx(-0.05)


def test_terminal_reward():
    target = Pose(90, 0)
    assert terminal_reward(Pose(80, 10), target, 0.8, CFG) == pytest.approx(1 + 0.8)
    assert terminal_reward(Pose(30, 0), target, 0.9, CFG) == pytest.approx(-1.0)  # 60° away: penalty whatever the IoU
    custom = RewardConfig(tau_deg=10, r_base=2, alpha=3, r_pen=5)
    assert terminal_reward(Pose(85, 0), target, 0.5, custom) == pytest.approx(3.5)
    assert terminal_reward(Pose(70, 0), target, 0.5, custom) == pytest.approx(-5)


def test_path_length_and_iou():
    assert path_length_deg([Pose(0, 0), Pose(90, 0), Pose(90, 90)]) == pytest.approx(180)
    assert path_length_deg([Pose(0, 0)]) == 0
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True
    b[1:3] = True
    assert mask_iou(a, b) == pytest.approx(4 / 12)
    assert mask_iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 0.0


def test_summary_by_hand():
    outcomes = [
        # success: L=90, P=120 → SPL 0.75, 3 steps, IoU 0.8
        EpisodeOutcome("EGO", 3, 90.0, 120.0, 5.0, 0.8),
        # success: L=60, P=60 → SPL 1, 5 steps, IoU 0.6
        EpisodeOutcome("UNIQ", 5, 60.0, 60.0, 1.0, 0.6),
        # close enough but IoU 0.4 < 0.5 → failure, counts 0 in mIoU
        EpisodeOutcome("UNIQ", 2, 60.0, 60.0, 1.0, 0.4),
        # IoU fine but 40° away → failure
        EpisodeOutcome("ALLO", 20, 100.0, 300.0, 40.0, 0.9),
    ]
    s = summarize(outcomes, tau_deg=30.0)
    assert s["n"] == 4
    assert s["sr"] == pytest.approx(0.5)
    assert s["as"] == pytest.approx(4.0)  # over successes only
    assert s["spl"] == pytest.approx((0.75 + 1.0) / 4)
    assert s["miou"] == pytest.approx((0.8 + 0.6) / 4)
    assert s["per_category"]["UNIQ"] == {"n": 2, "sr": 0.5, "as": 5.0, "spl": 0.5, "miou": pytest.approx(0.3)}
    assert s["per_category"]["ALLO"]["as"] is None and s["per_category"]["ALLO"]["sr"] == 0.0
    assert s["per_category"]["MULTIHOP"]["n"] == 0
    table = format_table(s)
    assert "overall" in table and "50.0" in table and "—" in table


def test_spl_when_the_path_is_shorter_than_the_geodesic_is_capped_at_one():
    s = summarize([EpisodeOutcome("EGO", 1, 90.0, 30.0, 1.0, 0.9)], tau_deg=30.0)
    assert s["spl"] == pytest.approx(1.0)


def test_default_success_radius_is_the_official_0_3_rad():
    from pathlib import Path

    from panoseeker_ros.core.config import SeekConfig, load_config

    assert SeekConfig().reward.tau_deg == pytest.approx(math.degrees(0.3))  # 17.19°, SUCCESS_TAU_RAD
    shipped = load_config(Path(__file__).parents[1] / "config" / "seek.yaml")
    assert shipped.reward.tau_deg == pytest.approx(math.degrees(0.3))
    # an episode 17.0° off succeeds, one 17.4° off fails (with τ = 30° both would succeed)
    near, far = EpisodeOutcome("UNIQ", 2, 90.0, 90.0, 17.0, 0.9), EpisodeOutcome("UNIQ", 2, 90.0, 90.0, 17.4, 0.9)
    assert near.success(SeekConfig().reward.tau_deg) and not far.success(SeekConfig().reward.tau_deg)
