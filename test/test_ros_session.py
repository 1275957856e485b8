"""core.session: the policy node's episode bookkeeping and the result scoring, without ROS."""
from __future__ import annotations

import numpy as np
import pytest

from panoseeker_ros.core.actions import Action
from panoseeker_ros.core.config import SeekConfig
from panoseeker_ros.core.dataset import load_dataset
from panoseeker_ros.core.environment import SeekEnv
from panoseeker_ros.core.episode import Decision
from panoseeker_ros.core.geometry import Pose, project_erp_mask
from panoseeker_ros.core.session import SearchSession, score_against_truth


class Scripted:
    name = "scripted"

    def __init__(self, actions):
        self.actions = list(actions)
        self.seen = []
        self.reset_with = None

    def reset(self, instruction, initial_pose):
        self.reset_with = (instruction, initial_pose)

    def act(self, obs):
        self.seen.append(obs)
        return Decision(self.actions.pop(0))


VIEW = np.zeros((4, 4, 3), np.uint8)


def test_empty_instruction_is_refused():
    for text in ("", "   ", "\n\t"):
        with pytest.raises(ValueError, match="instruction is empty"):
            SearchSession(Scripted([]), text)


def test_only_observations_after_the_request_count():
    policy = Scripted([Action.move(30, 0), Action.stop_at((1, 2, 3, 4))])
    s = SearchSession(policy, "  the red chair ", max_steps=5, episode=3)
    assert s.state == "starting" and not s.wants(10.0)
    s.expect_after(10.0)
    assert not s.wants(10.0) and not s.wants(9.0) and s.wants(10.001)
    d = s.decide(VIEW, VIEW, Pose(-90.0, 0.0), 10.5)
    assert d.action == Action.move(30, 0) and s.state == "moving"
    assert policy.reset_with == ("the red chair", Pose(-90.0, 0.0))
    assert not s.wants(11.0)  # the move has not been requested yet
    s.expect_after(11.0)
    assert s.state == "observing" and not s.wants(10.9)
    s.decide(VIEW, VIEW, Pose(-60.0, 0.0), 11.2)
    assert s.state == "stopped" and s.box == (1, 2, 3, 4) and not s.active
    obs = policy.seen[-1]
    assert obs.step == 1 and obs.trajectory == (Pose(-90.0, 0.0), Pose(-60.0, 0.0))
    assert obs.initial_pose == Pose(-90.0, 0.0) and obs.instruction == "the red chair" and obs.stamp == 11.2
    with pytest.raises(RuntimeError):
        s.decide(VIEW, VIEW, Pose(0.0, 0.0), 12.0)


def test_step_limit_ends_without_a_box():
    s = SearchSession(Scripted([Action.move(30, 0)] * 2), "x", max_steps=2)
    for t in (1.0, 2.0):
        s.expect_after(t - 0.5)
        s.decide(VIEW, VIEW, Pose(0.0, 0.0), t)
    assert s.state == "stopped" and s.agent.truncated and s.box is None


def test_a_cancelled_session_takes_no_observation():
    s = SearchSession(Scripted([Action.move(30, 0)]), "x")
    s.expect_after(0.0)
    s.end("cancelled")
    assert not s.wants(1.0) and not s.active
    s.expect_after(2.0)
    assert s.state == "cancelled"
    with pytest.raises(ValueError):
        s.end("done")


def test_policy_errors_fail_the_session():
    class Broken(Scripted):
        def act(self, obs):
            raise RuntimeError("out of memory")

    s = SearchSession(Broken([]), "x")
    s.expect_after(0.0)
    with pytest.raises(RuntimeError):
        s.decide(VIEW, VIEW, Pose(0.0, 0.0), 1.0)
    assert s.state == "failed"


def test_score_matches_the_ground_truth(cube_dataset):
    config = SeekConfig()
    env = SeekEnv(load_dataset(cube_dataset).episodes[0], config)
    intr = config.camera.intrinsics()
    at = env.truth.centroid
    seen = project_erp_mask(env.truth.mask, at, intr)
    good = score_against_truth(seen, at, env.truth, intr, config.reward)
    assert good.success and good.iou > 0.9 and good.distance_deg < 1.0
    away = Pose(at.theta - 90.0, 0.0)
    bad = score_against_truth(np.zeros_like(seen), away, env.truth, intr, config.reward)
    assert not bad.success and bad.iou == 0.0 and bad.distance_deg == pytest.approx(90.0, abs=1.0)
